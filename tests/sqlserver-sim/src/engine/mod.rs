//! The T-SQL engine: a typed in-memory engine over sqlparser's MsSqlDialect AST (plus a small
//! hand-written parser for the T-SQL statements sqlparser does not accept).
//!
//! # Shape
//! - [`Engine`] (cheap to clone) holds the catalog ([`catalog`]), the committed data
//!   ([`store`]), the lock manager, the per-database LSN generators and the extension
//!   registries. It implements [`crate::api::SessionFactory`]; [`Engine::session`] opens a
//!   session in-process without TDS.
//! - A session runs batches statement by statement; every statement reads a consistent
//!   snapshot of committed data plus its own transaction's private writes.
//!
//! # Transactions
//! Writes go to a private overlay of the transaction and take exclusive key locks (storage
//! key and every unique key). Other sessions never see uncommitted rows. A writer that meets
//! another transaction's lock waits (SET LOCK_TIMEOUT → error 1222; a wait cycle → 1205 for
//! the requester). READ COMMITTED reads the latest committed data at each statement
//! (READ_COMMITTED_SNAPSHOT semantics; see ENGINE.md for the locking variant), SNAPSHOT reads
//! the data as of the transaction's first statement and fails with 3960 when it updates a row
//! that another transaction changed after that. Commit applies the overlay under the global
//! commit lock; transactions can interleave and commit in any order.
//!
//! # CDC hooks (contract for `engine::cdc`)
//! 1. **Row changes.** In a database with change recording on ([`Engine::set_record_changes`],
//!    turned on by `sys.sp_cdc_enable_db`), every row change of a transaction is recorded as a
//!    [`hooks::RowChange`] at the moment the statement executes: a fresh LSN from the
//!    database's generator (its seqval), the statement's command id (1-based within the
//!    transaction), the table definition, the operation, before/after images and, for
//!    updates, the columns the SET list assigned. An update that changes a storage-key or
//!    unique-key column is recorded as Delete + Insert sharing one seqval. LSNs are allocated
//!    for every row change in every database (also with recording off), so rollbacks burn them.
//! 2. **Commit.** At commit, under the global commit lock, a commit LSN is allocated per
//!    database touched and the [`hooks::CommittedTransaction`] (commit LSN, tran_id,
//!    begin/end time from the engine clock, changes in seqval order) is passed to the
//!    registered [`hooks::CommitObserver`] ([`Engine::set_commit_observer`]). Transactions
//!    without recorded changes are not passed. Rollback produces nothing.
//! 3. **Objects.** The CDC module creates its tables (`cdc.change_tables`, `cdc.<ci>_CT`, …)
//!    as real tables through SQL ([`Engine::system_session`] / [`ProcContext::run`]) or the
//!    fast path [`Engine::insert_rows`] (no change recording, own transaction), and registers
//!    system procedures ([`Engine::register_procedure`]), scalar functions
//!    ([`Engine::register_function`]) and table-valued functions
//!    ([`Engine::register_table_function_resolver`], for `cdc.fn_cdc_get_all_changes_<ci>`).
//!    Flags shown in catalog views: [`Engine::set_cdc_enabled`] (sys.databases.is_cdc_enabled)
//!    and [`Engine::set_tracked_by_cdc`] (sys.tables.is_tracked_by_cdc).
//! 4. **DDL.** After each DDL statement on a table (CREATE/ALTER/DROP TABLE, sp_rename,
//!    CREATE/DROP INDEX, TRUNCATE) the registered [`hooks::DdlObserver`]s are called inside the
//!    session with a [`hooks::DdlEvent`] (statement text, LSN allocated for the DDL, time,
//!    definitions before/after). `CREATE TRIGGER … ON DATABASE FOR <events> AS <body>` is
//!    parsed and stored ([`catalog::DdlTriggerDef`], [`Engine::ddl_triggers`]); the CDC module
//!    gives it meaning (running the body through [`ProcContext::run`] after
//!    [`ProcContext::set_event_data`] so `EVENTDATA()` returns the event XML).

pub mod catalog;
pub mod cdc;
mod ddl;
mod dml;
mod eval;
mod functions;
pub mod hooks;
pub mod lsn;
mod parse;
mod query;
mod session;
pub mod store;
mod sysviews;
pub mod value;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{Local, NaiveDateTime, Utc};
use parking_lot::{Mutex, RwLock};

use crate::api::{LoginRequest, ResultColumn, Session, SessionFactory, SqlError};
use crate::types::Value;
use catalog::{DatabaseDef, DdlTriggerDef, RecoveryModel, SchemaDef, TableDef};
use hooks::{CommitObserver, DdlObserver, ScalarFunction, SystemProcedure, TableFunctionResolver};
use lsn::{Lsn, LsnGenerator};
pub use session::EngineSession;
use store::Store;

/// Source of time for GETDATE(), commit times and CDC (injectable for tests).
pub trait Clock: Send + Sync {
    /// Server local time (GETDATE, SYSDATETIME, lsn_time_mapping times).
    fn now_local(&self) -> NaiveDateTime;
    /// UTC (GETUTCDATE, SYSUTCDATETIME).
    fn now_utc(&self) -> NaiveDateTime;
}

/// The machine clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_local(&self) -> NaiveDateTime {
        Local::now().naive_local()
    }
    fn now_utc(&self) -> NaiveDateTime {
        Utc::now().naive_utc()
    }
}

/// A clock tests set and advance. Local time = UTC (offset 0).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<NaiveDateTime>,
}

impl ManualClock {
    pub fn new(start: NaiveDateTime) -> Self {
        ManualClock {
            now: Mutex::new(start),
        }
    }
    pub fn set(&self, t: NaiveDateTime) {
        *self.now.lock() = t;
    }
    pub fn advance(&self, d: chrono::Duration) {
        let mut n = self.now.lock();
        *n += d;
    }
}

impl Clock for ManualClock {
    fn now_local(&self) -> NaiveDateTime {
        *self.now.lock()
    }
    fn now_utc(&self) -> NaiveDateTime {
        *self.now.lock()
    }
}

/// Engine settings.
#[derive(Clone)]
pub struct EngineConfig {
    /// SERVERPROPERTY('ServerName') and @@SERVERNAME.
    pub server_name: String,
    /// Password of the `sa` login.
    pub sa_password: String,
    pub clock: Arc<dyn Clock>,
    /// SERVERPROPERTY('ProductVersion').
    pub product_version: String,
    /// SERVERPROPERTY('Edition').
    pub edition: String,
    /// SERVERPROPERTY('EngineEdition'): 3 = Enterprise/Developer.
    pub engine_edition: i32,
    /// First LSN of each database (make it near a boundary to catch LSN parsing bugs).
    pub first_lsn: Lsn,
    /// Extra SQL logins: (name, password, sysadmin).
    pub logins: Vec<(String, String, bool)>,
    /// READ COMMITTED readers wait for writers' row locks in databases with
    /// READ_COMMITTED_SNAPSHOT OFF, as SQL Server does. Off by default: readers then read the
    /// last committed version without waiting (see ENGINE.md).
    pub locking_read_committed: bool,
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("server_name", &self.server_name)
            .field("sa_password", &"<redacted>")
            .field("product_version", &self.product_version)
            .finish_non_exhaustive()
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            server_name: "STANDIN".into(),
            sa_password: "Standin!Passw0rd".into(),
            clock: Arc::new(SystemClock),
            product_version: "16.0.4135.4".into(),
            edition: "Developer Edition (64-bit)".into(),
            engine_edition: 3,
            first_lsn: Lsn(0x0000_0025_0000_0F00_0001),
            logins: Vec::new(),
            locking_read_committed: false,
        }
    }
}

/// Per-database runtime state that is not catalog metadata.
pub(crate) struct DbRuntime {
    pub lsn: LsnGenerator,
    pub record_changes: AtomicBool,
}

#[derive(Default)]
pub(crate) struct Registry {
    pub procedures: HashMap<String, Arc<dyn SystemProcedure>>,
    pub functions: HashMap<String, Arc<dyn ScalarFunction>>,
    pub tvf_resolvers: Vec<Arc<dyn TableFunctionResolver>>,
}

pub(crate) struct EngineInner {
    pub config: EngineConfig,
    pub catalog: RwLock<BTreeMap<String, DatabaseDef>>,
    pub runtimes: RwLock<HashMap<i32, Arc<DbRuntime>>>,
    pub store: Store,
    pub registry: RwLock<Registry>,
    pub commit_observer: RwLock<Option<Arc<dyn CommitObserver>>>,
    pub ddl_observers: RwLock<Vec<Arc<dyn DdlObserver>>>,
    pub next_object_id: AtomicI32,
    pub next_database_id: AtomicI32,
    pub next_session_id: AtomicI32,
    pub next_txn_id: AtomicU64,
    /// @@IDENTITY-like server-wide counters are per session; this is the tran_id source.
    pub next_tran_id: AtomicU64,
}

/// The T-SQL engine. Clones share one engine.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("server_name", &self.inner.config.server_name)
            .finish_non_exhaustive()
    }
}

/// Rows and columns of one result set (for [`ProcContext::run`] and tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryResult {
    pub columns: Vec<ResultColumn>,
    pub rows: Vec<Vec<Value>>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        let engine = Engine {
            inner: Arc::new(EngineInner {
                config,
                catalog: RwLock::new(BTreeMap::new()),
                runtimes: RwLock::new(HashMap::new()),
                store: Store::default(),
                registry: RwLock::new(Registry::default()),
                commit_observer: RwLock::new(None),
                ddl_observers: RwLock::new(Vec::new()),
                next_object_id: AtomicI32::new(1_000_000_000 / 2),
                next_database_id: AtomicI32::new(1),
                next_session_id: AtomicI32::new(51),
                next_txn_id: AtomicU64::new(1),
                next_tran_id: AtomicU64::new(0x3E8),
            }),
        };
        for name in ["master", "tempdb", "model", "msdb"] {
            engine
                .create_database_internal(name)
                .expect("system database");
        }
        let mut s = engine.system_session("msdb");
        s.run(
            "CREATE TABLE dbo.backupset (backup_set_id int IDENTITY(1,1) NOT NULL PRIMARY KEY, database_name nvarchar(128) NULL, \
             type char(1) NULL, backup_start_date datetime NULL, backup_finish_date datetime NULL, first_lsn numeric(25,0) NULL, \
             last_lsn numeric(25,0) NULL, database_backup_lsn numeric(25,0) NULL, recovery_model nvarchar(60) NULL, name nvarchar(128) NULL, \
             server_name nvarchar(128) NULL, user_name nvarchar(128) NULL, is_copy_only bit NOT NULL DEFAULT 0)",
        )
        .expect("msdb.dbo.backupset");
        // CDC (sys.sp_cdc_*, fn_cdc_*, capture) is part of every engine, as in SQL Server;
        // tests reach its control API with `cdc::Cdc::of(&engine)`.
        cdc::Cdc::install(&engine, cdc::CdcConfig::default());
        engine
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.config.clock
    }

    /// A session in `database` logged in as `sa` (in-process use, without TDS).
    pub fn session(&self, database: &str) -> Result<EngineSession, SqlError> {
        EngineSession::open(self.clone(), "sa", database, true)
    }

    /// A session for internal work (CDC module, setup). Same as `session` but panics only in
    /// callers' hands: returns an error for unknown databases.
    pub fn system_session(&self, database: &str) -> EngineSession {
        EngineSession::open(self.clone(), "sa", database, true).unwrap_or_else(|_| {
            EngineSession::open(self.clone(), "sa", "master", true).expect("master exists")
        })
    }

    pub(crate) fn create_database_internal(&self, name: &str) -> Result<i32, SqlError> {
        let mut cat = self.inner.catalog.write();
        if cat.contains_key(&name.to_lowercase()) {
            return Err(value::err(
                1801,
                format!("Database '{name}' already exists. Choose a different database name."),
            ));
        }
        let id = self.inner.next_database_id.fetch_add(1, Ordering::SeqCst);
        let now = self.inner.config.clock.now_local();
        let mut schemas = BTreeMap::new();
        for (sid, sname) in [
            (1, "dbo"),
            (2, "guest"),
            (3, "INFORMATION_SCHEMA"),
            (4, "sys"),
        ] {
            schemas.insert(
                sname.to_lowercase(),
                SchemaDef {
                    schema_id: sid,
                    name: sname.into(),
                    principal_id: sid,
                },
            );
        }
        let system = matches!(
            name.to_lowercase().as_str(),
            "master" | "tempdb" | "model" | "msdb"
        );
        cat.insert(
            name.to_lowercase(),
            DatabaseDef {
                database_id: id,
                name: name.to_string(),
                owner_sid: vec![1],
                created: now,
                recovery: if system && name.eq_ignore_ascii_case("master")
                    || name.eq_ignore_ascii_case("tempdb")
                {
                    RecoveryModel::Simple
                } else {
                    RecoveryModel::Full
                },
                read_committed_snapshot: false,
                allow_snapshot_isolation: name.eq_ignore_ascii_case("master")
                    || name.eq_ignore_ascii_case("msdb"),
                is_cdc_enabled: false,
                schemas,
                tables: BTreeMap::new(),
                sequences: BTreeMap::new(),
                alias_types: BTreeMap::new(),
                ddl_triggers: Vec::new(),
                procedures: BTreeMap::new(),
                views: BTreeMap::new(),
            },
        );
        self.inner.runtimes.write().insert(
            id,
            Arc::new(DbRuntime {
                lsn: LsnGenerator::new(self.inner.config.first_lsn),
                record_changes: AtomicBool::new(false),
            }),
        );
        Ok(id)
    }

    pub(crate) fn runtime(&self, database_id: i32) -> Option<Arc<DbRuntime>> {
        self.inner.runtimes.read().get(&database_id).cloned()
    }

    pub(crate) fn new_object_id(&self) -> i32 {
        self.inner.next_object_id.fetch_add(16, Ordering::SeqCst)
    }

    /// The database definition (a copy of its metadata).
    pub fn database(&self, name: &str) -> Option<DatabaseDef> {
        self.inner.catalog.read().get(&name.to_lowercase()).cloned()
    }

    pub fn database_id(&self, name: &str) -> Option<i32> {
        self.inner
            .catalog
            .read()
            .get(&name.to_lowercase())
            .map(|d| d.database_id)
    }

    pub fn database_names(&self) -> Vec<String> {
        self.inner
            .catalog
            .read()
            .values()
            .map(|d| d.name.clone())
            .collect()
    }

    /// A table definition by database, schema and name (case-insensitive).
    pub fn table(&self, database: &str, schema: &str, name: &str) -> Option<Arc<TableDef>> {
        self.inner
            .catalog
            .read()
            .get(&database.to_lowercase())?
            .table(schema, name)
            .cloned()
    }

    pub fn table_by_id(&self, database: &str, object_id: i32) -> Option<Arc<TableDef>> {
        self.inner
            .catalog
            .read()
            .get(&database.to_lowercase())?
            .table_by_id(object_id)
            .cloned()
    }

    /// Turns row-change recording (hook 1) on or off for a database.
    pub fn set_record_changes(&self, database: &str, on: bool) -> Result<(), SqlError> {
        let id = self
            .database_id(database)
            .ok_or_else(|| value::err(911, format!("Database '{database}' does not exist.")))?;
        if let Some(rt) = self.runtime(id) {
            rt.record_changes.store(on, Ordering::SeqCst);
        }
        Ok(())
    }

    /// sys.databases.is_cdc_enabled.
    pub fn set_cdc_enabled(&self, database: &str, on: bool) -> Result<(), SqlError> {
        let mut cat = self.inner.catalog.write();
        let db = cat
            .get_mut(&database.to_lowercase())
            .ok_or_else(|| value::err(911, format!("Database '{database}' does not exist.")))?;
        db.is_cdc_enabled = on;
        Ok(())
    }

    /// sys.tables.is_tracked_by_cdc.
    pub fn set_tracked_by_cdc(
        &self,
        database: &str,
        object_id: i32,
        on: bool,
    ) -> Result<(), SqlError> {
        let mut cat = self.inner.catalog.write();
        let db = cat
            .get_mut(&database.to_lowercase())
            .ok_or_else(|| value::err(911, format!("Database '{database}' does not exist.")))?;
        let key = db
            .tables
            .iter()
            .find(|(_, t)| t.object_id == object_id)
            .map(|(k, _)| k.clone());
        let key = key.ok_or_else(|| value::err(208, format!("Invalid object id {object_id}.")))?;
        let t = db.tables.get_mut(&key).expect("found above");
        let mut def = (**t).clone();
        def.is_tracked_by_cdc = on;
        *t = Arc::new(def);
        Ok(())
    }

    /// The database's current (last allocated) LSN.
    pub fn current_lsn(&self, database: &str) -> Option<Lsn> {
        self.runtime(self.database_id(database)?)
            .map(|r| r.lsn.current())
    }

    /// Allocates a fresh LSN in a database (for CDC bookkeeping such as heartbeats).
    pub fn allocate_lsn(&self, database: &str) -> Option<Lsn> {
        self.runtime(self.database_id(database)?)
            .map(|r| r.lsn.allocate())
    }

    pub fn set_commit_observer(&self, observer: Option<Arc<dyn CommitObserver>>) {
        *self.inner.commit_observer.write() = observer;
    }

    pub fn add_ddl_observer(&self, observer: Arc<dyn DdlObserver>) {
        self.inner.ddl_observers.write().push(observer);
    }

    /// Registers a system procedure under `schema.name` (e.g. `sys.sp_cdc_enable_db`).
    /// An unqualified `sp_…` call resolves to `sys.sp_…`.
    pub fn register_procedure(&self, qualified_name: &str, proc: Arc<dyn SystemProcedure>) {
        self.inner
            .registry
            .write()
            .procedures
            .insert(qualified_name.to_lowercase(), proc);
    }

    /// Registers a scalar function under `schema.name` (e.g. `sys.fn_cdc_get_max_lsn`).
    pub fn register_function(&self, qualified_name: &str, f: Arc<dyn ScalarFunction>) {
        self.inner
            .registry
            .write()
            .functions
            .insert(qualified_name.to_lowercase(), f);
    }

    pub fn register_table_function_resolver(&self, r: Arc<dyn TableFunctionResolver>) {
        self.inner.registry.write().tvf_resolvers.push(r);
    }

    /// DDL triggers of a database (CREATE TRIGGER … ON DATABASE).
    pub fn ddl_triggers(&self, database: &str) -> Vec<Arc<DdlTriggerDef>> {
        self.database(database)
            .map(|d| d.ddl_triggers.clone())
            .unwrap_or_default()
    }

    /// Fast path for system tables: inserts rows (values in column order, identity and
    /// defaults NOT applied) into `schema.table` in their own committed transaction, without
    /// change recording. Constraints (PK/unique) are enforced.
    pub fn insert_rows(
        &self,
        database: &str,
        schema: &str,
        table: &str,
        rows: Vec<Vec<Value>>,
    ) -> Result<(), SqlError> {
        let mut s = self.system_session(database);
        s.insert_rows_direct(schema, table, rows)
    }

    /// Runs SQL in a fresh system session of `database` and returns its result sets.
    pub fn run(&self, database: &str, sql: &str) -> Result<Vec<QueryResult>, SqlError> {
        let mut s = self.session(database)?;
        s.run(sql)
    }
}

impl SessionFactory for Engine {
    fn login(&self, login: &LoginRequest) -> Result<Box<dyn Session>, SqlError> {
        let cfg = &self.inner.config;
        let ok_sa = login.user.eq_ignore_ascii_case("sa") && login.password == cfg.sa_password;
        let other = cfg
            .logins
            .iter()
            .find(|(n, p, _)| n.eq_ignore_ascii_case(&login.user) && *p == login.password);
        let sysadmin = ok_sa || other.is_some_and(|(_, _, s)| *s);
        if !ok_sa && other.is_none() {
            return Err(SqlError::new(
                18456,
                14,
                1,
                format!("Login failed for user '{}'.", login.user),
            ));
        }
        let db = if login.database.is_empty() {
            "master"
        } else {
            login.database.as_str()
        };
        let s = EngineSession::open(self.clone(), &login.user, db, sysadmin).map_err(|_| {
            SqlError::new(
                4060,
                11,
                1,
                format!("Cannot open database \"{db}\" requested by the login. The login failed."),
            )
        })?;
        Ok(Box::new(s))
    }
}

/// What a system procedure, table-valued function or DDL observer can do in the calling
/// session.
pub struct ProcContext<'a> {
    pub(crate) session: &'a mut session::SessionCore,
}

impl ProcContext<'_> {
    pub fn engine(&self) -> &Engine {
        &self.session.engine
    }
    /// The session's current database.
    pub fn database(&self) -> String {
        self.session.database.clone()
    }
    pub fn login(&self) -> String {
        self.session.login.clone()
    }
    pub fn is_sysadmin(&self) -> bool {
        self.session.sysadmin
    }
    pub fn now(&self) -> NaiveDateTime {
        self.session.engine.inner.config.clock.now_local()
    }
    /// Runs SQL in this session (same transaction), with `params` bound as variables
    /// (`("@x", value)`); returns the result sets. Errors stop at the first failing statement.
    pub fn run(
        &mut self,
        sql: &str,
        params: &[(&str, Value)],
    ) -> Result<Vec<QueryResult>, SqlError> {
        self.session.run_nested(sql, params)
    }
    /// Sets what EVENTDATA() returns while a DDL trigger body runs.
    pub fn set_event_data(&mut self, xml: Option<String>) {
        self.session.event_data = xml;
    }
}
