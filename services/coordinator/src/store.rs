//! The coordinator's durable state: tasks, their tables and progress, table groups and who
//! runs them, workers and their leases, and events (alerts, lifecycle changes).
//!
//! [`TaskStore`] is the seam; [`SqliteStore`] is the default (one file, no server, WAL mode so
//! readers never wait on the single writer). Everything the coordinator needs after a restart is
//! here: a restarted coordinator reloads tasks, groups and leases and keeps handing out the same
//! assignments, so running data paths are not disturbed. Protobuf messages (table plans, precheck
//! reports) are stored as their encoded bytes.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Row};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Store error in {operation}: {source}")]
    Sqlite {
        operation: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// A PostgreSQL store failed; `detail` has the server's message, never the store URL.
    #[error("Store error in {operation}: {detail}")]
    Postgres {
        operation: &'static str,
        detail: String,
    },
}

/// Opens the store named by `store`: a `postgres://` / `postgresql://` URL gives a
/// [`PgStore`](crate::pg_store::PgStore), anything else is the path of a SQLite file.
pub fn open_store(store: &str) -> StoreResult<std::sync::Arc<dyn TaskStore>> {
    if crate::pg_store::is_postgres_url(store) {
        Ok(std::sync::Arc::new(crate::pg_store::PgStore::open(store)?))
    } else {
        Ok(std::sync::Arc::new(SqliteStore::open(store)?))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

fn err(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { operation, source }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    pub id: String,
    pub name: String,
    /// `dbsync_proto::v1::TaskState` as i32.
    pub state: i32,
    /// The task definition as JSON including secrets (only the store ever holds them).
    pub spec_json: String,
    pub last_error: String,
    pub created_us: i64,
    pub updated_us: i64,
    /// Encoded `PrecheckReport` of the last precheck; empty: never prechecked.
    pub precheck: Vec<u8>,
    /// Add foreign keys at cut-over because the target role may not set
    /// `session_replication_role` (found by the precheck).
    pub defer_foreign_keys: bool,
    /// When the task was last started (for ETA), 0 if never.
    pub started_us: i64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TableRow {
    pub task_id: String,
    /// `db.schema.table` as the source spells it.
    pub source_key: String,
    pub group_id: String,
    /// Encoded `TablePlan`.
    pub plan: Vec<u8>,
    pub target: String,
    pub phase: i32,
    pub rows_done: u64,
    pub rows_total: u64,
    pub bytes_done: u64,
    pub chunks_done: u32,
    pub chunks_total: u32,
    pub changes_applied: u64,
    pub applied_lsn: Vec<u8>,
    pub applied_source_time_us: i64,
    pub last_error: String,
    /// connection | transient | definite, empty when no error is outstanding.
    pub error_class: String,
    /// Start of the current failure episode (first error since the last success), 0 if none.
    pub error_since_us: i64,
    pub updated_us: i64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct GroupRow {
    pub task_id: String,
    pub group_id: String,
    pub database: String,
    /// The LSN incremental sync of this group starts from (L0 or the configured start).
    pub start_lsn: Vec<u8>,
    /// The applier running the group; empty while unassigned.
    pub worker_id: String,
    pub generation: u64,
    /// Encoded `ReadSchemaResponse` holding only the sequences this group creates (already
    /// selected and named for the target); empty: none.
    pub sequences: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkerRow {
    pub worker_id: String,
    /// capture | apply
    pub kind: String,
    pub address: String,
    pub lease_expires_us: i64,
    pub registered_us: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub task_id: String,
    pub at_us: i64,
    /// e.g. alert, state, error
    pub kind: String,
    pub message: String,
}

/// Durable coordinator state. Implementations are shared across threads; each call is atomic.
pub trait TaskStore: Send + Sync {
    fn insert_task(&self, task: &TaskRow) -> StoreResult<()>;
    fn update_task(&self, task: &TaskRow) -> StoreResult<()>;
    /// By id, else by name.
    fn task(&self, id_or_name: &str) -> StoreResult<Option<TaskRow>>;
    fn tasks(&self) -> StoreResult<Vec<TaskRow>>;
    /// Removes the task with its tables, groups and events.
    fn delete_task(&self, id: &str) -> StoreResult<()>;

    fn upsert_tables(&self, tables: &[TableRow]) -> StoreResult<()>;
    fn tables(&self, task_id: &str) -> StoreResult<Vec<TableRow>>;
    fn delete_table(&self, task_id: &str, source_key: &str) -> StoreResult<()>;

    fn upsert_group(&self, group: &GroupRow) -> StoreResult<()>;
    /// Groups of one task, or of every task when `task_id` is `None`.
    fn groups(&self, task_id: Option<&str>) -> StoreResult<Vec<GroupRow>>;
    fn delete_group(&self, task_id: &str, group_id: &str) -> StoreResult<()>;

    fn upsert_worker(&self, worker: &WorkerRow) -> StoreResult<()>;
    fn worker(&self, worker_id: &str) -> StoreResult<Option<WorkerRow>>;
    fn workers(&self) -> StoreResult<Vec<WorkerRow>>;
    fn delete_worker(&self, worker_id: &str) -> StoreResult<()>;

    fn add_event(&self, event: &EventRow) -> StoreResult<()>;
    /// The newest `limit` events of a task, oldest first.
    fn events(&self, task_id: &str, limit: usize) -> StoreResult<Vec<EventRow>>;
}

/// [`TaskStore`] in one SQLite file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    state INTEGER NOT NULL,
    spec_json TEXT NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    created_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL,
    precheck BLOB NOT NULL DEFAULT x'',
    defer_foreign_keys INTEGER NOT NULL DEFAULT 0,
    started_us INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS task_tables (
    task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    source_key TEXT NOT NULL,
    group_id TEXT NOT NULL,
    plan BLOB NOT NULL,
    target TEXT NOT NULL,
    phase INTEGER NOT NULL,
    rows_done INTEGER NOT NULL DEFAULT 0,
    rows_total INTEGER NOT NULL DEFAULT 0,
    bytes_done INTEGER NOT NULL DEFAULT 0,
    chunks_done INTEGER NOT NULL DEFAULT 0,
    chunks_total INTEGER NOT NULL DEFAULT 0,
    changes_applied INTEGER NOT NULL DEFAULT 0,
    applied_lsn BLOB NOT NULL DEFAULT x'',
    applied_source_time_us INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    error_class TEXT NOT NULL DEFAULT '',
    error_since_us INTEGER NOT NULL DEFAULT 0,
    updated_us INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, source_key)
);
CREATE TABLE IF NOT EXISTS task_groups (
    task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    group_id TEXT NOT NULL,
    database TEXT NOT NULL,
    start_lsn BLOB NOT NULL,
    worker_id TEXT NOT NULL DEFAULT '',
    generation INTEGER NOT NULL,
    sequences BLOB NOT NULL DEFAULT x'',
    PRIMARY KEY (task_id, group_id)
);
CREATE TABLE IF NOT EXISTS workers (
    worker_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    address TEXT NOT NULL,
    lease_expires_us INTEGER NOT NULL,
    registered_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    at_us INTEGER NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_task ON events(task_id, id);
"#;

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`; `:memory:` gives a private in-memory store.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<SqliteStore> {
        let conn = Connection::open(path).map_err(err("open"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err("enable WAL"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err("set synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err("enable foreign keys"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err("set busy timeout"))?;
        conn.execute_batch(SCHEMA).map_err(err("create schema"))?;
        // Stores written before groups carried sequences.
        let has_sequences: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM pragma_table_info('task_groups') WHERE name = 'sequences'",
                [],
                |r| r.get(0),
            )
            .map_err(err("read the store schema"))?;
        if !has_sequences {
            conn.execute_batch(
                "ALTER TABLE task_groups ADD COLUMN sequences BLOB NOT NULL DEFAULT x''",
            )
            .map_err(err("add task_groups.sequences"))?;
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
        operation: &'static str,
    ) -> StoreResult<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).map_err(err(operation))
    }
}

const TASK_COLUMNS: &str =
    "id, name, state, spec_json, last_error, created_us, updated_us, precheck, defer_foreign_keys, started_us";

fn task_from(r: &Row<'_>) -> rusqlite::Result<TaskRow> {
    Ok(TaskRow {
        id: r.get(0)?,
        name: r.get(1)?,
        state: r.get(2)?,
        spec_json: r.get(3)?,
        last_error: r.get(4)?,
        created_us: r.get(5)?,
        updated_us: r.get(6)?,
        precheck: r.get(7)?,
        defer_foreign_keys: r.get(8)?,
        started_us: r.get(9)?,
    })
}

const TABLE_COLUMNS: &str = "task_id, source_key, group_id, plan, target, phase, rows_done, rows_total, bytes_done, \
     chunks_done, chunks_total, changes_applied, applied_lsn, applied_source_time_us, last_error, error_class, \
     error_since_us, updated_us";

fn table_from(r: &Row<'_>) -> rusqlite::Result<TableRow> {
    Ok(TableRow {
        task_id: r.get(0)?,
        source_key: r.get(1)?,
        group_id: r.get(2)?,
        plan: r.get(3)?,
        target: r.get(4)?,
        phase: r.get(5)?,
        rows_done: r.get::<_, i64>(6)? as u64,
        rows_total: r.get::<_, i64>(7)? as u64,
        bytes_done: r.get::<_, i64>(8)? as u64,
        chunks_done: r.get(9)?,
        chunks_total: r.get(10)?,
        changes_applied: r.get::<_, i64>(11)? as u64,
        applied_lsn: r.get(12)?,
        applied_source_time_us: r.get(13)?,
        last_error: r.get(14)?,
        error_class: r.get(15)?,
        error_since_us: r.get(16)?,
        updated_us: r.get(17)?,
    })
}

fn group_from(r: &Row<'_>) -> rusqlite::Result<GroupRow> {
    Ok(GroupRow {
        task_id: r.get(0)?,
        group_id: r.get(1)?,
        database: r.get(2)?,
        start_lsn: r.get(3)?,
        worker_id: r.get(4)?,
        generation: r.get::<_, i64>(5)? as u64,
        sequences: r.get(6)?,
    })
}

fn worker_from(r: &Row<'_>) -> rusqlite::Result<WorkerRow> {
    Ok(WorkerRow {
        worker_id: r.get(0)?,
        kind: r.get(1)?,
        address: r.get(2)?,
        lease_expires_us: r.get(3)?,
        registered_us: r.get(4)?,
    })
}

impl TaskStore for SqliteStore {
    fn insert_task(&self, t: &TaskRow) -> StoreResult<()> {
        self.with(
            |c| {
                c.execute(
                    &format!("INSERT INTO tasks ({TASK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                    params![
                        t.id,
                        t.name,
                        t.state,
                        t.spec_json,
                        t.last_error,
                        t.created_us,
                        t.updated_us,
                        t.precheck,
                        t.defer_foreign_keys,
                        t.started_us
                    ],
                )
                .map(|_| ())
            },
            "insert task",
        )
    }

    fn update_task(&self, t: &TaskRow) -> StoreResult<()> {
        self.with(
            |c| {
                c.execute(
                    "UPDATE tasks SET name = ?2, state = ?3, spec_json = ?4, last_error = ?5, updated_us = ?6, \
                     precheck = ?7, defer_foreign_keys = ?8, started_us = ?9 WHERE id = ?1",
                    params![
                        t.id,
                        t.name,
                        t.state,
                        t.spec_json,
                        t.last_error,
                        t.updated_us,
                        t.precheck,
                        t.defer_foreign_keys,
                        t.started_us
                    ],
                )
                .map(|_| ())
            },
            "update task",
        )
    }

    fn task(&self, id_or_name: &str) -> StoreResult<Option<TaskRow>> {
        self.with(
            |c| {
                c.query_row(
                    &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1"),
                    params![id_or_name],
                    task_from,
                )
                .optional()
            },
            "read task",
        )
    }

    fn tasks(&self) -> StoreResult<Vec<TaskRow>> {
        self.with(
            |c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {TASK_COLUMNS} FROM tasks ORDER BY created_us, id"
                ))?;
                let rows = stmt.query_map([], task_from)?.collect();
                rows
            },
            "list tasks",
        )
    }

    fn delete_task(&self, id: &str) -> StoreResult<()> {
        self.with(
            |c| {
                c.execute("DELETE FROM tasks WHERE id = ?1", params![id])
                    .map(|_| ())
            },
            "delete task",
        )
    }

    fn upsert_tables(&self, tables: &[TableRow]) -> StoreResult<()> {
        self.with(
            |c| {
                let tx = c.transaction()?;
                {
                    let mut stmt = tx.prepare_cached(&format!(
                        "INSERT OR REPLACE INTO task_tables ({TABLE_COLUMNS}) VALUES \
                         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
                    ))?;
                    for t in tables {
                        stmt.execute(params![
                            t.task_id,
                            t.source_key,
                            t.group_id,
                            t.plan,
                            t.target,
                            t.phase,
                            t.rows_done as i64,
                            t.rows_total as i64,
                            t.bytes_done as i64,
                            t.chunks_done,
                            t.chunks_total,
                            t.changes_applied as i64,
                            t.applied_lsn,
                            t.applied_source_time_us,
                            t.last_error,
                            t.error_class,
                            t.error_since_us,
                            t.updated_us
                        ])?;
                    }
                }
                tx.commit()
            },
            "write tables",
        )
    }

    fn tables(&self, task_id: &str) -> StoreResult<Vec<TableRow>> {
        self.with(
            |c| {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {TABLE_COLUMNS} FROM task_tables WHERE task_id = ?1 ORDER BY source_key"
                ))?;
                let rows = stmt.query_map(params![task_id], table_from)?.collect();
                rows
            },
            "read tables",
        )
    }

    fn delete_table(&self, task_id: &str, source_key: &str) -> StoreResult<()> {
        self.with(
            |c| {
                c.execute(
                    "DELETE FROM task_tables WHERE task_id = ?1 AND source_key = ?2",
                    params![task_id, source_key],
                )
                .map(|_| ())
            },
            "delete table",
        )
    }

    fn upsert_group(&self, g: &GroupRow) -> StoreResult<()> {
        self.with(
            |c| {
                c.execute(
                    "INSERT OR REPLACE INTO task_groups (task_id, group_id, database, start_lsn, worker_id, generation, sequences) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![g.task_id, g.group_id, g.database, g.start_lsn, g.worker_id, g.generation as i64, g.sequences],
                )
                .map(|_| ())
            },
            "write group",
        )
    }

    fn groups(&self, task_id: Option<&str>) -> StoreResult<Vec<GroupRow>> {
        self.with(
            |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT task_id, group_id, database, start_lsn, worker_id, generation, sequences FROM task_groups \
                     WHERE ?1 IS NULL OR task_id = ?1 ORDER BY task_id, group_id",
                )?;
                let rows = stmt.query_map(params![task_id], group_from)?.collect();
                rows
            },
            "read groups",
        )
    }

    fn delete_group(&self, task_id: &str, group_id: &str) -> StoreResult<()> {
        self.with(
            |c| {
                c.execute(
                    "DELETE FROM task_groups WHERE task_id = ?1 AND group_id = ?2",
                    params![task_id, group_id],
                )
                .map(|_| ())
            },
            "delete group",
        )
    }

    fn upsert_worker(&self, w: &WorkerRow) -> StoreResult<()> {
        self.with(
            |c| {
                c.execute(
                    "INSERT OR REPLACE INTO workers (worker_id, kind, address, lease_expires_us, registered_us) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![w.worker_id, w.kind, w.address, w.lease_expires_us, w.registered_us],
                )
                .map(|_| ())
            },
            "write worker",
        )
    }

    fn worker(&self, worker_id: &str) -> StoreResult<Option<WorkerRow>> {
        self.with(
            |c| {
                c.query_row(
                    "SELECT worker_id, kind, address, lease_expires_us, registered_us FROM workers WHERE worker_id = ?1",
                    params![worker_id],
                    worker_from,
                )
                .optional()
            },
            "read worker",
        )
    }

    fn workers(&self) -> StoreResult<Vec<WorkerRow>> {
        self.with(
            |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT worker_id, kind, address, lease_expires_us, registered_us FROM workers ORDER BY registered_us, worker_id",
                )?;
                let rows = stmt.query_map([], worker_from)?.collect();
                rows
            },
            "list workers",
        )
    }

    fn delete_worker(&self, worker_id: &str) -> StoreResult<()> {
        self.with(
            |c| {
                c.execute(
                    "DELETE FROM workers WHERE worker_id = ?1",
                    params![worker_id],
                )
                .map(|_| ())
            },
            "delete worker",
        )
    }

    fn add_event(&self, e: &EventRow) -> StoreResult<()> {
        self.with(
            |c| {
                c.execute(
                    "INSERT INTO events (task_id, at_us, kind, message) VALUES (?1, ?2, ?3, ?4)",
                    params![e.task_id, e.at_us, e.kind, e.message],
                )
                .map(|_| ())
            },
            "write event",
        )
    }

    fn events(&self, task_id: &str, limit: usize) -> StoreResult<Vec<EventRow>> {
        self.with(
            |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT task_id, at_us, kind, message FROM (SELECT * FROM events WHERE task_id = ?1 \
                     ORDER BY id DESC LIMIT ?2) ORDER BY at_us, kind, id",
                )?;
                let rows = stmt
                    .query_map(params![task_id, limit as i64], |r| {
                        Ok(EventRow { task_id: r.get(0)?, at_us: r.get(1)?, kind: r.get(2)?, message: r.get(3)? })
                    })?
                    .collect();
                rows
            },
            "read events",
        )
    }
}

#[cfg(test)]
mod tests {
    //! One suite, run against both backends: SQLite (a file in a temp dir) and PostgreSQL (a
    //! fresh database on the shared ephemeral cluster).
    use super::*;
    use std::sync::Arc;

    fn task(id: &str, name: &str) -> TaskRow {
        TaskRow {
            id: id.into(),
            name: name.into(),
            state: 1,
            spec_json: "{}".into(),
            last_error: String::new(),
            created_us: 1,
            updated_us: 1,
            precheck: vec![],
            defer_foreign_keys: false,
            started_us: 0,
        }
    }

    /// A store URL of a fresh PostgreSQL database.
    fn pg_url() -> String {
        let pg = dbsync_pgtest::PgCluster::shared();
        let db = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(pg.fresh_database("coord_store"))
            .unwrap();
        format!(
            "postgres://{}@{}:{}/{db}",
            pg.superuser(),
            pg.host(),
            pg.port()
        )
    }

    /// Writes every kind of row, reopens the store, reads them back, deletes the task.
    fn state_survives_reopening(open: impl Fn() -> Arc<dyn TaskStore>) {
        {
            let s = open();
            s.insert_task(&task("t1", "orders")).unwrap();
            s.upsert_tables(&[
                TableRow {
                    task_id: "t1".into(),
                    source_key: "db.dbo.b".into(),
                    group_id: "g1".into(),
                    rows_done: 7,
                    ..Default::default()
                },
                TableRow {
                    task_id: "t1".into(),
                    source_key: "db.dbo.a".into(),
                    group_id: "g1".into(),
                    rows_done: 42,
                    plan: vec![1, 2, 3],
                    applied_lsn: vec![0, 0, 0, 0x2A],
                    chunks_total: 9,
                    ..Default::default()
                },
            ])
            .unwrap();
            s.upsert_group(&GroupRow {
                task_id: "t1".into(),
                group_id: "g1".into(),
                worker_id: "w1".into(),
                generation: 3,
                sequences: vec![9, 9],
                ..Default::default()
            })
            .unwrap();
            s.upsert_worker(&WorkerRow {
                worker_id: "w1".into(),
                kind: "apply".into(),
                ..Default::default()
            })
            .unwrap();
            for (at, message) in [(5, "first"), (6, "second"), (7, "third")] {
                s.add_event(&EventRow {
                    task_id: "t1".into(),
                    at_us: at,
                    kind: "alert".into(),
                    message: message.into(),
                })
                .unwrap();
            }
        }
        let s = open();
        assert_eq!(s.task("orders").unwrap().unwrap().id, "t1");
        assert_eq!(s.task("t1").unwrap().unwrap().name, "orders");
        let tables = s.tables("t1").unwrap();
        assert_eq!(
            tables
                .iter()
                .map(|t| t.source_key.as_str())
                .collect::<Vec<_>>(),
            ["db.dbo.a", "db.dbo.b"]
        );
        assert_eq!(tables[0].rows_done, 42);
        assert_eq!(tables[0].plan, [1, 2, 3]);
        assert_eq!(tables[0].applied_lsn, [0, 0, 0, 0x2A]);
        assert_eq!(tables[0].chunks_total, 9);
        // An upsert replaces the row.
        let mut a = tables[0].clone();
        a.rows_done = 43;
        s.upsert_tables(&[a]).unwrap();
        assert_eq!(s.tables("t1").unwrap()[0].rows_done, 43);
        let g = &s.groups(None).unwrap()[0];
        assert_eq!((g.generation, g.sequences.as_slice()), (3, &[9u8, 9][..]));
        assert_eq!(s.worker("w1").unwrap().unwrap().kind, "apply");
        let newest: Vec<String> = s
            .events("t1", 2)
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(newest, ["second", "third"]);
        s.delete_task("t1").unwrap();
        assert!(s.task("t1").unwrap().is_none());
        assert!(
            s.tables("t1").unwrap().is_empty(),
            "tables go with their task"
        );
        assert!(s.groups(Some("t1")).unwrap().is_empty());
        assert!(s.events("t1", 10).unwrap().is_empty());
        s.delete_worker("w1").unwrap();
        assert!(s.workers().unwrap().is_empty());
    }

    fn task_names_are_unique(s: Arc<dyn TaskStore>) {
        s.insert_task(&task("t1", "orders")).unwrap();
        assert!(s.insert_task(&task("t2", "orders")).is_err());
        let mut t = s.task("orders").unwrap().unwrap();
        t.state = 3;
        t.defer_foreign_keys = true;
        s.update_task(&t).unwrap();
        let back = s.task("t1").unwrap().unwrap();
        assert_eq!((back.state, back.defer_foreign_keys), (3, true));
        assert_eq!(s.tasks().unwrap().len(), 1);
    }

    #[test]
    fn sqlite_state_survives_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        state_survives_reopening(|| Arc::new(SqliteStore::open(&path).unwrap()));
    }

    #[test]
    fn sqlite_task_names_are_unique() {
        task_names_are_unique(Arc::new(SqliteStore::open(":memory:").unwrap()));
    }

    #[test]
    fn postgres_state_survives_reconnecting() {
        let url = pg_url();
        state_survives_reopening(|| open_store(&url).unwrap());
    }

    #[test]
    fn postgres_task_names_are_unique() {
        task_names_are_unique(open_store(&pg_url()).unwrap());
    }

    #[test]
    fn sqlite_files_from_before_group_sequences_are_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE task_groups (task_id TEXT NOT NULL, group_id TEXT NOT NULL, \
                 database TEXT NOT NULL, start_lsn BLOB NOT NULL, worker_id TEXT NOT NULL DEFAULT '', \
                 generation INTEGER NOT NULL, PRIMARY KEY (task_id, group_id))",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        s.insert_task(&task("t1", "orders")).unwrap();
        s.upsert_group(&GroupRow {
            task_id: "t1".into(),
            group_id: "g1".into(),
            sequences: vec![1],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.groups(None).unwrap()[0].sequences, [1]);
    }
}
