//! Ephemeral PostgreSQL clusters for tests and benchmarks.
//!
//! [`PgCluster::start`] copies a cached initdb template into a fresh temp directory and starts
//! `postgres` on a free loopback port as a direct child process. The cluster is stopped and its
//! directory removed when the `PgCluster` is dropped; if the test process dies first, the
//! kernel sends the postmaster SIGQUIT (PR_SET_PDEATHSIG), so no server outlives its tests.
//!
//! When the tests run as root, initdb and postgres run as the system user `dbsync-pg`
//! (created on first use), because initdb refuses to run as root.
//!
//! Loopback connections use trust authentication, except for roles made with
//! [`PgCluster::create_password_role`], which must log in with their SCRAM password.

mod process;
mod template;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use dbsync_core::error::{Classify, ErrorClass};

pub use process::UNPRIVILEGED_USER;

/// The bootstrap superuser of every cluster.
pub const SUPERUSER: &str = "postgres";
const HOST: &str = "127.0.0.1";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// A free port can be taken by someone else before postgres binds it; then we try another.
const START_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum PgTestError {
    #[error("PostgreSQL server binaries (initdb, postgres) not found in $DBSYNC_PG_BIN, /usr/lib/postgresql/*/bin or PATH; run `make deps`")]
    BinariesNotFound,
    #[error("{0}")]
    User(String),
    #[error("building the initdb template failed: {0}")]
    Template(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} failed ({status}): {output}")]
    Command {
        what: String,
        status: String,
        output: String,
    },
    #[error("postgres did not start: {reason}; server log:\n{log}")]
    Start { reason: String, log: String },
    #[error("{what}: {source}")]
    Postgres {
        what: String,
        source: tokio_postgres::Error,
    },
}

impl Classify for PgTestError {
    fn class(&self) -> ErrorClass {
        match self {
            PgTestError::Postgres { .. } => ErrorClass::Connection,
            _ => ErrorClass::Definite,
        }
    }
}

pub type Result<T, E = PgTestError> = std::result::Result<T, E>;

/// A running throwaway PostgreSQL cluster. Dropping it stops the server and deletes its files.
#[derive(Debug)]
pub struct PgCluster {
    port: u16,
    root: PathBuf,
    /// `None` once stopped.
    postmaster: Mutex<Option<Child>>,
    _dir: tempfile::TempDir,
}

impl PgCluster {
    /// Starts a new cluster (blocking; about 100–300 ms once the template exists).
    pub fn start() -> Result<PgCluster> {
        let run_as = process::RunAs::current()?;
        let bin = process::bin_dir()?;
        let template = template::template_dir(run_as)?;
        remove_stale_cluster_dirs();

        let dir = tempfile::Builder::new()
            .prefix(&format!("dbsync-pg-{}-", std::process::id()))
            .tempdir()
            .map_err(|e| io_error("create cluster temp dir", e))?;
        run_as.chown(dir.path())?;
        let root = dir.path().to_path_buf();
        let data = root.join("data");
        template::copy_template(template, &data)?;

        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            match start_postmaster(bin, run_as, &root, port) {
                Ok(child) => {
                    return Ok(PgCluster {
                        port,
                        root,
                        postmaster: Mutex::new(Some(child)),
                        _dir: dir,
                    });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one start attempt"))
    }

    /// A cluster shared by the whole test process, started on first use and stopped when the
    /// process exits (an `atexit` hook; PR_SET_PDEATHSIG covers abnormal exits).
    /// Give each test its own database ([`PgCluster::create_database`]) for isolation.
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = PgCluster::start().expect("start the shared PostgreSQL cluster");
            extern "C" fn stop_shared_at_exit() {
                if let Some(cluster) = SHARED.get() {
                    cluster.stop();
                    let _ = std::fs::remove_dir_all(&cluster.root);
                }
            }
            // SAFETY: registering a plain extern "C" function.
            unsafe { libc::atexit(stop_shared_at_exit) };
            cluster
        })
    }

    pub fn host(&self) -> &str {
        HOST
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The directory holding the data directory, the Unix socket and `server.log`.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The Unix socket directory (also usable as `host=` in connection strings).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// Process id of the postmaster, `None` after [`PgCluster::stop`].
    pub fn postmaster_pid(&self) -> Option<u32> {
        self.lock_postmaster().as_ref().map(Child::id)
    }

    /// libpq-style connection string for `db` as the superuser over TCP.
    pub fn connection_string(&self, db: &str) -> String {
        format!(
            "host={HOST} port={} user={SUPERUSER} dbname={}",
            self.port,
            quote_conn_value(db)
        )
    }

    /// libpq-style connection string for `db` as `user` with `password` over TCP.
    pub fn connection_string_with_password(&self, db: &str, user: &str, password: &str) -> String {
        format!(
            "host={HOST} port={} user={} password={} dbname={}",
            self.port,
            quote_conn_value(user),
            quote_conn_value(password),
            quote_conn_value(db)
        )
    }

    /// Connects to `db` as the superuser; the connection task runs on the current runtime.
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client> {
        connect_with(&self.connection_string(db), db).await
    }

    /// Creates database `name` (owned by the superuser).
    pub async fn create_database(&self, name: &str) -> Result<()> {
        let client = self.connect("postgres").await?;
        client
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(name)))
            .await
            .map_err(|e| PgTestError::Postgres {
                what: format!("create database {name:?}"),
                source: e,
            })
    }

    /// Creates a database with a name unique in this process (`<prefix>_<pid>_<n>`) and returns
    /// the name: per-test isolation on the [`PgCluster::shared`] cluster.
    pub async fn fresh_database(&self, prefix: &str) -> Result<String> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{prefix}_{}_{n}", std::process::id());
        self.create_database(&name).await?;
        Ok(name)
    }

    /// Creates a LOGIN role that must authenticate with `password` (SCRAM-SHA-256) over TCP.
    /// It gets CREATE on database `postgres`'s public schema like any role; grant more as needed.
    pub async fn create_password_role(&self, name: &str, password: &str) -> Result<()> {
        let client = self.connect("postgres").await?;
        let group = template::PASSWORD_GROUP;
        let sql = format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{group}') THEN
                 CREATE ROLE {group} NOLOGIN;
               END IF;
             END $$;
             SET password_encryption = 'scram-sha-256';
             CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {group};",
            quote_ident(name),
            quote_literal(password)
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| PgTestError::Postgres {
                what: format!("create role {name:?}"),
                source: e,
            })
    }

    /// Stops the server now (immediate shutdown). Idempotent; `Drop` calls it too.
    pub fn stop(&self) {
        let Some(mut child) = self.lock_postmaster().take() else {
            return;
        };
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGQUIT) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    fn lock_postmaster(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.postmaster
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
        // The TempDir field removes the directory after this.
    }
}

async fn connect_with(connection_string: &str, db: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(connection_string, tokio_postgres::NoTls)
        .await
        .map_err(|e| PgTestError::Postgres {
            what: format!("connect to database {db:?}"),
            source: e,
        })?;
    tokio::spawn(async move {
        // Errors here surface to the client as closed-connection errors.
        let _ = connection.await;
    });
    Ok(client)
}

fn start_postmaster(bin: &Path, run_as: process::RunAs, root: &Path, port: u16) -> Result<Child> {
    let data = root.join("data");
    let log_path = root.join("server.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| io_error("open server.log", e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| io_error("open server.log", e))?;
    let mut command = Command::new(bin.join("postgres"));
    command
        .arg("-D")
        .arg(&data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(root)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    run_as.configure(&mut command);
    let mut child = process::spawn(command).map_err(|e| io_error("spawn postgres", e))?;

    let pid_file = data.join("postmaster.pid");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(PgTestError::Start {
                reason: format!("postgres exited with {status}"),
                log: log_tail(&log_path),
            });
        }
        // Line 8 of postmaster.pid turns to "ready" once connections are accepted.
        if let Ok(text) = std::fs::read_to_string(&pid_file) {
            if text
                .lines()
                .nth(7)
                .is_some_and(|status| status.trim() == "ready")
            {
                return Ok(child);
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(PgTestError::Start {
                reason: "not ready within 60 s".into(),
                log: log_tail(&log_path),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind((HOST, 0)).map_err(|e| io_error("find a free port", e))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| io_error("find a free port", e))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Removes cluster directories left by test processes that were killed (their servers already
/// died with them through PR_SET_PDEATHSIG).
fn remove_stale_cluster_dirs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("dbsync-pg-")) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
}

fn io_error(what: &str, source: std::io::Error) -> PgTestError {
    PgTestError::Io {
        what: what.to_string(),
        source,
    }
}

/// Double-quotes an identifier for SQL text (dbsync-typemap has the full rules; this crate
/// stays below it).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Single-quotes a string literal for SQL text (standard_conforming_strings is on).
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Quotes a value for a libpq key=value connection string.
fn quote_conn_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}
