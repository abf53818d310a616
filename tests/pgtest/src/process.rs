//! Running PostgreSQL programs: which binaries, as which OS user, and how child processes are
//! tied to the test process so that none outlives it.

use std::ffi::CString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use crate::PgTestError;

/// The OS user that runs initdb and postgres when the tests run as root (initdb refuses root).
pub const UNPRIVILEGED_USER: &str = "dbsync-pg";

/// The directory holding `initdb` and `postgres`: `$DBSYNC_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin`, else the directory of `initdb` on PATH.
pub fn bin_dir() -> Result<&'static Path, PgTestError> {
    static BIN_DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN_DIR
        .get_or_init(find_bin_dir)
        .as_deref()
        .ok_or(PgTestError::BinariesNotFound)
}

fn find_bin_dir() -> Option<PathBuf> {
    let has_binaries = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("DBSYNC_PG_BIN").map(PathBuf::from) {
        return has_binaries(&dir).then_some(dir);
    }
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let dir = entry.path().join("bin");
            has_binaries(&dir).then_some((version, dir))
        })
        .collect();
    versioned.sort();
    if let Some((_, dir)) = versioned.pop() {
        return Some(dir);
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| has_binaries(dir)))
}

/// Which OS identity the PostgreSQL processes get.
#[derive(Debug, Clone, Copy)]
pub struct RunAs {
    /// `Some((uid, gid))` when we must drop root privileges.
    pub switch_to: Option<(libc::uid_t, libc::gid_t)>,
}

impl RunAs {
    /// Root → the unprivileged user (created if missing); anyone else → themselves.
    pub fn current() -> Result<RunAs, PgTestError> {
        static RUN_AS: OnceLock<Result<RunAs, String>> = OnceLock::new();
        RUN_AS
            .get_or_init(|| {
                // SAFETY: geteuid has no preconditions.
                if unsafe { libc::geteuid() } != 0 {
                    return Ok(RunAs { switch_to: None });
                }
                ensure_user(UNPRIVILEGED_USER).map(|ids| RunAs {
                    switch_to: Some(ids),
                })
            })
            .clone()
            .map_err(PgTestError::User)
    }

    /// Gives `path` (recursively not needed: callers chown fresh, empty dirs) to the run user.
    pub fn chown(&self, path: &Path) -> Result<(), PgTestError> {
        let Some((uid, gid)) = self.switch_to else {
            return Ok(());
        };
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| PgTestError::Io {
            what: format!("chown {}", path.display()),
            source: e,
        })
    }

    /// Prepares `command` to run as the run user and to die with this process.
    pub fn configure(&self, command: &mut Command) {
        let switch_to = self.switch_to;
        let parent_pid = std::process::id() as libc::pid_t;
        // SAFETY: the closure only makes async-signal-safe system calls.
        unsafe {
            command.pre_exec(move || {
                if let Some((uid, gid)) = switch_to {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                // After setuid: changing credentials clears the parent-death signal.
                // SIGQUIT makes the postmaster do an immediate shutdown, which also
                // removes its shared memory; SIGKILL would leak it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl.
                if libc::getppid() != parent_pid {
                    return Err(io::Error::other("test process exited during spawn"));
                }
                Ok(())
            });
        }
    }
}

/// Looks up `name` in the user database, creating it as a system user when missing.
fn ensure_user(name: &str) -> Result<(libc::uid_t, libc::gid_t), String> {
    for _attempt in 0..20 {
        if let Some(ids) = lookup_user(name) {
            return Ok(ids);
        }
        // Concurrent test processes may race here: useradd fails for all but one (user exists
        // or /etc/passwd is locked), so look again after any failure.
        let output = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .output();
        match output {
            Ok(out) if out.status.success() => continue,
            Ok(_) | Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    lookup_user(name).ok_or_else(|| {
        format!("could not create the OS user {name:?} that runs PostgreSQL when tests run as root; create it with `useradd --system {name}`")
    })
}

fn lookup_user(name: &str) -> Option<(libc::uid_t, libc::gid_t)> {
    let c_name = CString::new(name).ok()?;
    let mut passwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; getpwnam_r is thread-safe.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut passwd,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some((passwd.pw_uid, passwd.pw_gid))
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `command` from a thread that lives as long as the process. PR_SET_PDEATHSIG fires
/// when the *thread* that forked the child exits, and test threads exit after every test, so
/// children are never forked from them.
pub fn spawn(command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = SPAWNER
        .get_or_init(|| {
            let (sender, receiver) = mpsc::channel::<SpawnRequest>();
            std::thread::Builder::new()
                .name("pgtest-spawner".into())
                .spawn(move || {
                    for (mut command, reply) in receiver {
                        let _ = reply.send(command.spawn());
                    }
                })
                .expect("spawn the pgtest spawner thread");
            Mutex::new(sender)
        })
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    let (reply_sender, reply) = mpsc::channel();
    sender
        .send((command, reply_sender))
        .map_err(|_| io::Error::other("pgtest spawner thread is gone"))?;
    reply
        .recv()
        .map_err(|_| io::Error::other("pgtest spawner thread is gone"))?
}

/// Runs `command` to completion (through [`spawn`]) and collects its output.
pub fn run(mut command: Command, what: &str) -> Result<Output, PgTestError> {
    command.stdin(std::process::Stdio::null());
    command.stdout(std::process::Stdio::piped());
    command.stderr(std::process::Stdio::piped());
    let child = spawn(command).map_err(|e| PgTestError::Io {
        what: what.to_string(),
        source: e,
    })?;
    let output = child.wait_with_output().map_err(|e| PgTestError::Io {
        what: what.to_string(),
        source: e,
    })?;
    if !output.status.success() {
        return Err(PgTestError::Command {
            what: what.to_string(),
            status: output.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        });
    }
    Ok(output)
}
