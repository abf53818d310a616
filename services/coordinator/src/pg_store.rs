//! [`TaskStore`] in PostgreSQL, for coordinators run in a highly available setup (several
//! coordinators share one store; [`crate::leader`] makes sure only one drives tasks).
//!
//! The store trait is synchronous (the SQLite store does blocking file I/O under a mutex), so
//! this store runs its own thread with a single-threaded tokio runtime and one PostgreSQL
//! session; calls are handed to that thread and waited for. That works from any caller, inside
//! or outside a tokio runtime, and keeps the calls strictly ordered like the SQLite store. A
//! broken session is reconnected on the next call.
//!
//! The tables live in schema `dbsync_coordinator`, created on first start (under an advisory
//! lock, so two coordinators starting at once do not race). Semantics match [`SqliteStore`]:
//! the same rows, the same orderings, tasks cascade to their tables, groups and events.
//!
//! [`SqliteStore`]: crate::store::SqliteStore

use std::str::FromStr;
use std::sync::mpsc;

use dbsync_telemetry::pg_tls::PgTls;
use tokio_postgres::{Client, Row};

use crate::store::{
    EventRow, GroupRow, StoreError, StoreResult, TableRow, TaskRow, TaskStore, WorkerRow,
};

/// Advisory lock key (any constant) serializing schema creation across coordinators.
const SCHEMA_LOCK_KEY: i64 = 0x6462_7379_6e63_0001;

const SCHEMA: &str = r#"
CREATE SCHEMA IF NOT EXISTS dbsync_coordinator;
CREATE TABLE IF NOT EXISTS dbsync_coordinator.tasks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    state INTEGER NOT NULL,
    spec_json TEXT NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    created_us BIGINT NOT NULL,
    updated_us BIGINT NOT NULL,
    precheck BYTEA NOT NULL DEFAULT '',
    defer_foreign_keys BOOLEAN NOT NULL DEFAULT false,
    started_us BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS dbsync_coordinator.task_tables (
    task_id TEXT NOT NULL REFERENCES dbsync_coordinator.tasks(id) ON DELETE CASCADE,
    source_key TEXT NOT NULL,
    group_id TEXT NOT NULL,
    plan BYTEA NOT NULL,
    target TEXT NOT NULL,
    phase INTEGER NOT NULL,
    rows_done BIGINT NOT NULL DEFAULT 0,
    rows_total BIGINT NOT NULL DEFAULT 0,
    bytes_done BIGINT NOT NULL DEFAULT 0,
    chunks_done BIGINT NOT NULL DEFAULT 0,
    chunks_total BIGINT NOT NULL DEFAULT 0,
    changes_applied BIGINT NOT NULL DEFAULT 0,
    applied_lsn BYTEA NOT NULL DEFAULT '',
    applied_source_time_us BIGINT NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    error_class TEXT NOT NULL DEFAULT '',
    error_since_us BIGINT NOT NULL DEFAULT 0,
    updated_us BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, source_key)
);
CREATE TABLE IF NOT EXISTS dbsync_coordinator.task_groups (
    task_id TEXT NOT NULL REFERENCES dbsync_coordinator.tasks(id) ON DELETE CASCADE,
    group_id TEXT NOT NULL,
    database TEXT NOT NULL,
    start_lsn BYTEA NOT NULL,
    worker_id TEXT NOT NULL DEFAULT '',
    generation BIGINT NOT NULL,
    sequences BYTEA NOT NULL DEFAULT '',
    PRIMARY KEY (task_id, group_id)
);
CREATE TABLE IF NOT EXISTS dbsync_coordinator.workers (
    worker_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    address TEXT NOT NULL,
    lease_expires_us BIGINT NOT NULL,
    registered_us BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS dbsync_coordinator.events (
    id BIGSERIAL PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES dbsync_coordinator.tasks(id) ON DELETE CASCADE,
    at_us BIGINT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_task ON dbsync_coordinator.events(task_id, id);
"#;

/// True when `store` names a PostgreSQL store (`postgres://…` or `postgresql://…`) rather
/// than a SQLite file.
pub fn is_postgres_url(store: &str) -> bool {
    let lower = store.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// The store location fit for logs: a PostgreSQL URL without its password (and without query
/// parameters, which may carry one too); a SQLite path as it is.
pub fn store_label(store: &str) -> String {
    if !is_postgres_url(store) {
        return store.to_string();
    }
    let (scheme, rest) = store.split_once("://").unwrap_or(("postgres", store));
    let rest = rest.split('?').next().unwrap_or_default();
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host = match authority.rfind('@') {
        Some(i) => {
            let user = authority[..i].split(':').next().unwrap_or_default();
            format!("{user}@{}", &authority[i + 1..])
        }
        None => authority.to_string(),
    };
    format!("{scheme}://{host}{path}")
}

/// Parses a PostgreSQL store URL. The error never repeats the URL (it may hold a password).
pub fn parse_url(url: &str) -> StoreResult<tokio_postgres::Config> {
    let mut config =
        tokio_postgres::Config::from_str(url.trim()).map_err(|e| StoreError::Postgres {
            operation: "parse the store URL",
            detail: format!(
                "{e} (expected postgres://user:password@host:port/database; the URL is not shown because it may contain a password)"
            ),
        })?;
    if config.get_application_name().is_none() {
        config.application_name("dbsync-coordinator");
    }
    config.connect_timeout(std::time::Duration::from_secs(10));
    Ok(config)
}

/// The TLS connector for the store URL's `sslmode` (see [`dbsync_telemetry::pg_tls`]).
pub fn store_tls(config: &tokio_postgres::Config) -> StoreResult<PgTls> {
    PgTls::for_config(config).map_err(|e| StoreError::Postgres {
        operation: "set up TLS for the store",
        detail: e.to_string(),
    })
}

/// The server's message and SQLSTATE (tokio-postgres' Display says only "db error").
pub(crate) fn pg_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

fn pg_err(operation: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::Postgres {
        operation,
        detail: pg_detail(&e),
    }
}

type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// The store thread's state: its runtime and (re)connectable session.
struct Session {
    runtime: tokio::runtime::Runtime,
    config: tokio_postgres::Config,
    /// TLS per the URL's `sslmode` (root certificate from `PGSSLROOTCERT`).
    tls: PgTls,
    client: Option<Client>,
}

impl Session {
    fn connect(&mut self) -> Result<&mut Client, tokio_postgres::Error> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let (client, connection) = self
                .runtime
                .block_on(self.config.connect(self.tls.clone()))?;
            // The connection task only runs while the thread is inside `block_on`, which is
            // exactly when the client is used.
            self.runtime.spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %pg_detail(&e), "coordinator store connection closed");
                }
            });
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }
}

/// [`TaskStore`] in a PostgreSQL database.
pub struct PgStore {
    jobs: mpsc::Sender<Job>,
}

impl PgStore {
    /// Connects to the store at `url` (`postgres://user:password@host:port/database`) and
    /// creates its schema when missing.
    pub fn open(url: &str) -> StoreResult<PgStore> {
        let config = parse_url(url)?;
        let tls = store_tls(&config)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Postgres {
                operation: "start the store thread",
                detail: e.to_string(),
            })?;
        let (jobs, receiver) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("dbsync-pg-store".into())
            .spawn(move || {
                let mut session = Session {
                    runtime,
                    config,
                    tls,
                    client: None,
                };
                // Ends when the store (the only sender) is dropped.
                while let Ok(job) = receiver.recv() {
                    job(&mut session);
                }
            })
            .map_err(|e| StoreError::Postgres {
                operation: "start the store thread",
                detail: e.to_string(),
            })?;
        let store = PgStore { jobs };
        store.call("create schema", |client| {
            Box::pin(async move {
                let tx = client.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK_KEY])
                    .await?;
                tx.batch_execute(SCHEMA).await?;
                tx.commit().await
            })
        })?;
        Ok(store)
    }

    /// Runs `f` on the store thread's session and waits for its result.
    fn call<T, F>(&self, operation: &'static str, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(
                &'c mut Client,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<T, tokio_postgres::Error>> + 'c>,
            > + Send
            + 'static,
    {
        let (reply, result) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |session: &mut Session| {
            let connected = session.connect().map(|_| ());
            let outcome = match connected {
                Ok(()) => {
                    let client = session.client.as_mut().expect("connected");
                    session.runtime.block_on(f(client))
                }
                Err(e) => Err(e),
            };
            let _ = reply.send(outcome.map_err(pg_err(operation)));
        });
        let gone = || StoreError::Postgres {
            operation,
            detail: "the store thread has stopped".into(),
        };
        self.jobs.send(job).map_err(|_| gone())?;
        result.recv().map_err(|_| gone())?
    }
}

const TASK_COLUMNS: &str =
    "id, name, state, spec_json, last_error, created_us, updated_us, precheck, defer_foreign_keys, started_us";

fn task_from(r: &Row) -> TaskRow {
    TaskRow {
        id: r.get(0),
        name: r.get(1),
        state: r.get(2),
        spec_json: r.get(3),
        last_error: r.get(4),
        created_us: r.get(5),
        updated_us: r.get(6),
        precheck: r.get(7),
        defer_foreign_keys: r.get(8),
        started_us: r.get(9),
    }
}

const TABLE_COLUMNS: &str = "task_id, source_key, group_id, plan, target, phase, rows_done, rows_total, bytes_done, \
     chunks_done, chunks_total, changes_applied, applied_lsn, applied_source_time_us, last_error, error_class, \
     error_since_us, updated_us";

fn table_from(r: &Row) -> TableRow {
    TableRow {
        task_id: r.get(0),
        source_key: r.get(1),
        group_id: r.get(2),
        plan: r.get(3),
        target: r.get(4),
        phase: r.get(5),
        rows_done: r.get::<_, i64>(6) as u64,
        rows_total: r.get::<_, i64>(7) as u64,
        bytes_done: r.get::<_, i64>(8) as u64,
        chunks_done: r.get::<_, i64>(9) as u32,
        chunks_total: r.get::<_, i64>(10) as u32,
        changes_applied: r.get::<_, i64>(11) as u64,
        applied_lsn: r.get(12),
        applied_source_time_us: r.get(13),
        last_error: r.get(14),
        error_class: r.get(15),
        error_since_us: r.get(16),
        updated_us: r.get(17),
    }
}

const GROUP_COLUMNS: &str =
    "task_id, group_id, database, start_lsn, worker_id, generation, sequences";

fn group_from(r: &Row) -> GroupRow {
    GroupRow {
        task_id: r.get(0),
        group_id: r.get(1),
        database: r.get(2),
        start_lsn: r.get(3),
        worker_id: r.get(4),
        generation: r.get::<_, i64>(5) as u64,
        sequences: r.get(6),
    }
}

const WORKER_COLUMNS: &str = "worker_id, kind, address, lease_expires_us, registered_us";

fn worker_from(r: &Row) -> WorkerRow {
    WorkerRow {
        worker_id: r.get(0),
        kind: r.get(1),
        address: r.get(2),
        lease_expires_us: r.get(3),
        registered_us: r.get(4),
    }
}

impl TaskStore for PgStore {
    fn insert_task(&self, t: &TaskRow) -> StoreResult<()> {
        let t = t.clone();
        self.call("insert task", move |c| {
            Box::pin(async move {
                c.execute(
                    &format!(
                        "INSERT INTO dbsync_coordinator.tasks ({TASK_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                    ),
                    &[
                        &t.id,
                        &t.name,
                        &t.state,
                        &t.spec_json,
                        &t.last_error,
                        &t.created_us,
                        &t.updated_us,
                        &t.precheck,
                        &t.defer_foreign_keys,
                        &t.started_us,
                    ],
                )
                .await
                .map(|_| ())
            })
        })
    }

    fn update_task(&self, t: &TaskRow) -> StoreResult<()> {
        let t = t.clone();
        self.call("update task", move |c| {
            Box::pin(async move {
                c.execute(
                    "UPDATE dbsync_coordinator.tasks SET name = $2, state = $3, spec_json = $4, \
                     last_error = $5, updated_us = $6, precheck = $7, defer_foreign_keys = $8, \
                     started_us = $9 WHERE id = $1",
                    &[
                        &t.id,
                        &t.name,
                        &t.state,
                        &t.spec_json,
                        &t.last_error,
                        &t.updated_us,
                        &t.precheck,
                        &t.defer_foreign_keys,
                        &t.started_us,
                    ],
                )
                .await
                .map(|_| ())
            })
        })
    }

    fn task(&self, id_or_name: &str) -> StoreResult<Option<TaskRow>> {
        let key = id_or_name.to_string();
        self.call("read task", move |c| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        &format!(
                            "SELECT {TASK_COLUMNS} FROM dbsync_coordinator.tasks \
                             WHERE id = $1 OR name = $1 ORDER BY (id = $1) DESC LIMIT 1"
                        ),
                        &[&key],
                    )
                    .await?;
                Ok(row.as_ref().map(task_from))
            })
        })
    }

    fn tasks(&self) -> StoreResult<Vec<TaskRow>> {
        self.call("list tasks", |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        &format!(
                            "SELECT {TASK_COLUMNS} FROM dbsync_coordinator.tasks ORDER BY created_us, id"
                        ),
                        &[],
                    )
                    .await?;
                Ok(rows.iter().map(task_from).collect())
            })
        })
    }

    fn delete_task(&self, id: &str) -> StoreResult<()> {
        let id = id.to_string();
        self.call("delete task", move |c| {
            Box::pin(async move {
                c.execute("DELETE FROM dbsync_coordinator.tasks WHERE id = $1", &[&id])
                    .await
                    .map(|_| ())
            })
        })
    }

    fn upsert_tables(&self, tables: &[TableRow]) -> StoreResult<()> {
        let tables = tables.to_vec();
        self.call("write tables", move |c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                let stmt = tx
                    .prepare(&format!(
                        "INSERT INTO dbsync_coordinator.task_tables ({TABLE_COLUMNS}) VALUES \
                         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
                         ON CONFLICT (task_id, source_key) DO UPDATE SET group_id = EXCLUDED.group_id, \
                         plan = EXCLUDED.plan, target = EXCLUDED.target, phase = EXCLUDED.phase, \
                         rows_done = EXCLUDED.rows_done, rows_total = EXCLUDED.rows_total, \
                         bytes_done = EXCLUDED.bytes_done, chunks_done = EXCLUDED.chunks_done, \
                         chunks_total = EXCLUDED.chunks_total, changes_applied = EXCLUDED.changes_applied, \
                         applied_lsn = EXCLUDED.applied_lsn, \
                         applied_source_time_us = EXCLUDED.applied_source_time_us, \
                         last_error = EXCLUDED.last_error, error_class = EXCLUDED.error_class, \
                         error_since_us = EXCLUDED.error_since_us, updated_us = EXCLUDED.updated_us"
                    ))
                    .await?;
                for t in &tables {
                    tx.execute(
                        &stmt,
                        &[
                            &t.task_id,
                            &t.source_key,
                            &t.group_id,
                            &t.plan,
                            &t.target,
                            &t.phase,
                            &(t.rows_done as i64),
                            &(t.rows_total as i64),
                            &(t.bytes_done as i64),
                            &i64::from(t.chunks_done),
                            &i64::from(t.chunks_total),
                            &(t.changes_applied as i64),
                            &t.applied_lsn,
                            &t.applied_source_time_us,
                            &t.last_error,
                            &t.error_class,
                            &t.error_since_us,
                            &t.updated_us,
                        ],
                    )
                    .await?;
                }
                tx.commit().await
            })
        })
    }

    fn tables(&self, task_id: &str) -> StoreResult<Vec<TableRow>> {
        let task_id = task_id.to_string();
        self.call("read tables", move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        &format!(
                            "SELECT {TABLE_COLUMNS} FROM dbsync_coordinator.task_tables \
                             WHERE task_id = $1 ORDER BY source_key COLLATE \"C\""
                        ),
                        &[&task_id],
                    )
                    .await?;
                Ok(rows.iter().map(table_from).collect())
            })
        })
    }

    fn delete_table(&self, task_id: &str, source_key: &str) -> StoreResult<()> {
        let (task_id, source_key) = (task_id.to_string(), source_key.to_string());
        self.call("delete table", move |c| {
            Box::pin(async move {
                c.execute(
                    "DELETE FROM dbsync_coordinator.task_tables WHERE task_id = $1 AND source_key = $2",
                    &[&task_id, &source_key],
                )
                .await
                .map(|_| ())
            })
        })
    }

    fn upsert_group(&self, g: &GroupRow) -> StoreResult<()> {
        let g = g.clone();
        self.call("write group", move |c| {
            Box::pin(async move {
                c.execute(
                    &format!(
                        "INSERT INTO dbsync_coordinator.task_groups ({GROUP_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (task_id, group_id) DO UPDATE SET database = EXCLUDED.database, \
                         start_lsn = EXCLUDED.start_lsn, worker_id = EXCLUDED.worker_id, \
                         generation = EXCLUDED.generation, sequences = EXCLUDED.sequences"
                    ),
                    &[
                        &g.task_id,
                        &g.group_id,
                        &g.database,
                        &g.start_lsn,
                        &g.worker_id,
                        &(g.generation as i64),
                        &g.sequences,
                    ],
                )
                .await
                .map(|_| ())
            })
        })
    }

    fn groups(&self, task_id: Option<&str>) -> StoreResult<Vec<GroupRow>> {
        let task_id = task_id.map(str::to_string);
        self.call("read groups", move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        &format!(
                            "SELECT {GROUP_COLUMNS} FROM dbsync_coordinator.task_groups \
                             WHERE $1::text IS NULL OR task_id = $1 \
                             ORDER BY task_id COLLATE \"C\", group_id COLLATE \"C\""
                        ),
                        &[&task_id],
                    )
                    .await?;
                Ok(rows.iter().map(group_from).collect())
            })
        })
    }

    fn delete_group(&self, task_id: &str, group_id: &str) -> StoreResult<()> {
        let (task_id, group_id) = (task_id.to_string(), group_id.to_string());
        self.call("delete group", move |c| {
            Box::pin(async move {
                c.execute(
                    "DELETE FROM dbsync_coordinator.task_groups WHERE task_id = $1 AND group_id = $2",
                    &[&task_id, &group_id],
                )
                .await
                .map(|_| ())
            })
        })
    }

    fn upsert_worker(&self, w: &WorkerRow) -> StoreResult<()> {
        let w = w.clone();
        self.call("write worker", move |c| {
            Box::pin(async move {
                c.execute(
                    &format!(
                        "INSERT INTO dbsync_coordinator.workers ({WORKER_COLUMNS}) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (worker_id) DO UPDATE SET kind = EXCLUDED.kind, \
                         address = EXCLUDED.address, lease_expires_us = EXCLUDED.lease_expires_us, \
                         registered_us = EXCLUDED.registered_us"
                    ),
                    &[
                        &w.worker_id,
                        &w.kind,
                        &w.address,
                        &w.lease_expires_us,
                        &w.registered_us,
                    ],
                )
                .await
                .map(|_| ())
            })
        })
    }

    fn worker(&self, worker_id: &str) -> StoreResult<Option<WorkerRow>> {
        let worker_id = worker_id.to_string();
        self.call("read worker", move |c| {
            Box::pin(async move {
                let row = c
                    .query_opt(
                        &format!(
                            "SELECT {WORKER_COLUMNS} FROM dbsync_coordinator.workers WHERE worker_id = $1"
                        ),
                        &[&worker_id],
                    )
                    .await?;
                Ok(row.as_ref().map(worker_from))
            })
        })
    }

    fn workers(&self) -> StoreResult<Vec<WorkerRow>> {
        self.call("list workers", |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        &format!(
                            "SELECT {WORKER_COLUMNS} FROM dbsync_coordinator.workers \
                             ORDER BY registered_us, worker_id COLLATE \"C\""
                        ),
                        &[],
                    )
                    .await?;
                Ok(rows.iter().map(worker_from).collect())
            })
        })
    }

    fn delete_worker(&self, worker_id: &str) -> StoreResult<()> {
        let worker_id = worker_id.to_string();
        self.call("delete worker", move |c| {
            Box::pin(async move {
                c.execute(
                    "DELETE FROM dbsync_coordinator.workers WHERE worker_id = $1",
                    &[&worker_id],
                )
                .await
                .map(|_| ())
            })
        })
    }

    fn add_event(&self, e: &EventRow) -> StoreResult<()> {
        let e = e.clone();
        self.call("write event", move |c| {
            Box::pin(async move {
                c.execute(
                    "INSERT INTO dbsync_coordinator.events (task_id, at_us, kind, message) \
                     VALUES ($1, $2, $3, $4)",
                    &[&e.task_id, &e.at_us, &e.kind, &e.message],
                )
                .await
                .map(|_| ())
            })
        })
    }

    fn events(&self, task_id: &str, limit: usize) -> StoreResult<Vec<EventRow>> {
        let task_id = task_id.to_string();
        let limit = limit as i64;
        self.call("read events", move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT task_id, at_us, kind, message FROM (SELECT * FROM dbsync_coordinator.events \
                         WHERE task_id = $1 ORDER BY id DESC LIMIT $2) newest \
                         ORDER BY at_us, kind COLLATE \"C\", id",
                        &[&task_id, &limit],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| EventRow {
                        task_id: r.get(0),
                        at_us: r.get(1),
                        kind: r.get(2),
                        message: r.get(3),
                    })
                    .collect())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_never_show_the_password() {
        assert_eq!(
            store_label(
                "postgres://dbsync:s3cret@db.internal:5432/coord?sslmode=require&password=x"
            ),
            "postgres://dbsync@db.internal:5432/coord"
        );
        assert_eq!(store_label("/var/lib/dbsync/c.db"), "/var/lib/dbsync/c.db");
        assert!(is_postgres_url("postgresql://h/db"));
        assert!(!is_postgres_url("dbsync-coordinator.db"));
        let Err(e) = parse_url("postgres://u:hunter2@[bad") else {
            panic!("a bad URL must be refused")
        };
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
