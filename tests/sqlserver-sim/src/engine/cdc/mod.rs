//! Change data capture as SQL Server does it (see tests/sqlserver-sim/CDC.md for every
//! behaviour and every choice made where Microsoft's documentation is silent).
//!
//! # How it fits the engine
//! - The engine records every row change of a CDC-enabled database with its seqval and
//!   command id, and hands each committed transaction to [`Cdc`] (the commit observer) under
//!   the global commit lock. [`Cdc`] turns the changes of tracked tables into change-table
//!   rows right there (the row images are exact as of the statement) and either applies them
//!   at once (synchronous mode) or queues them for the capture job (agent and manual modes).
//! - The capture "scan" appends queued transactions, in commit-LSN order, to the
//!   `cdc.<instance>_CT` tables and `cdc.lsn_time_mapping` in one installation of the
//!   committed store: readers see whole transactions only. Appending is O(log n) per row;
//!   nothing is re-scanned.
//! - The `cdc` tables are real engine tables (queried with ordinary SQL); this module keeps
//!   the authoritative state (instances, columns, validity intervals, the LSN-time mapping)
//!   in memory and mirrors it into those tables.
//!
//! Lock order: engine commit lock, then a database's CDC state lock. Never call into the
//! engine's SQL while holding a CDC state lock.

mod agent;
mod capture;
mod ddl;
mod functions;
mod instance;
mod mask;
mod procs;
mod tables;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::NaiveDateTime;
use parking_lot::Mutex;

use super::hooks::{CommitObserver, CommittedTransaction};
use super::lsn::Lsn;
use super::Engine;
use crate::api::SqlError;

pub use capture::ScanOutcome;
pub use instance::{CaptureInstance, CapturedColumn};
pub use mask::{is_bit_set, mask_len};

/// When the capture job moves committed changes into the change tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureMode {
    /// At commit, before the committing statement returns (deterministic; the test default).
    Synchronous,
    /// A background job that wakes every `pollinginterval` and processes up to `maxtrans`
    /// transactions per scan and `maxscans` scans per cycle, writing an idle (heartbeat)
    /// `cdc.lsn_time_mapping` row when a cycle finds nothing.
    Agent,
    /// Only when asked: [`Cdc::scan`] or `EXEC sys.sp_cdc_scan`.
    Manual,
}

/// Which columns an UPDATE marks in `__$update_mask` (the docs are silent; see CDC.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMaskRule {
    /// Columns in the SET list, whether or not the value changed (default).
    Assigned,
    /// Only columns whose value differs.
    Changed,
}

/// Behaviour switches where SQL Server's documentation is silent or where tests want control.
#[derive(Debug, Clone)]
pub struct CdcConfig {
    pub mode: CaptureMode,
    pub update_mask: UpdateMaskRule,
    /// An UPDATE whose mask comes out empty (possible with `UpdateMaskRule::Changed`) writes
    /// no rows.
    pub skip_empty_updates: bool,
    /// Also NULL unchanged varchar(max)/nvarchar(max)/varbinary(max) columns in the op-4 after
    /// image (documented: only op 3).
    pub null_unchanged_lobs_in_after_image: bool,
    /// Retention cleanup also deletes `cdc.lsn_time_mapping` rows below the new low watermark.
    pub cleanup_trims_lsn_time_mapping: bool,
    /// Agent mode writes an idle mapping row on a cycle that found no transaction.
    pub heartbeat_on_idle_cycle: bool,
    /// Polling interval of the agent in tests (overrides `@pollinginterval` seconds when set).
    pub agent_poll_override: Option<Duration>,
}

impl Default for CdcConfig {
    fn default() -> Self {
        CdcConfig {
            mode: CaptureMode::Synchronous,
            update_mask: UpdateMaskRule::Assigned,
            skip_empty_updates: true,
            null_unchanged_lobs_in_after_image: false,
            cleanup_trims_lsn_time_mapping: true,
            heartbeat_on_idle_cycle: true,
            agent_poll_override: None,
        }
    }
}

/// `msdb.dbo.cdc_jobs` settings of one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSettings {
    pub maxtrans: i64,
    pub maxscans: i64,
    pub continuous: bool,
    /// Seconds.
    pub pollinginterval: i64,
    /// Minutes.
    pub retention: i64,
    pub threshold: i64,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            maxtrans: 500,
            maxscans: 10,
            continuous: true,
            pollinginterval: 5,
            retention: 4320,
            threshold: 5000,
        }
    }
}

/// One row of `cdc.lsn_time_mapping`.
#[derive(Debug, Clone, PartialEq)]
pub struct LsnTimeRow {
    pub start_lsn: Lsn,
    pub tran_begin_time: NaiveDateTime,
    pub tran_end_time: NaiveDateTime,
    /// `0x00` (one byte) for idle entries.
    pub tran_id: Vec<u8>,
}

/// A committed transaction waiting for the capture scan, with its change-table rows built.
#[derive(Debug)]
pub(crate) struct PendingTransaction {
    pub mapping: LsnTimeRow,
    /// (change-table object id, storage key, row).
    pub rows: Vec<capture::CtRow>,
}

/// An instance plus its validity-interval start (moved by cleanup).
#[derive(Debug, Clone)]
pub(crate) struct InstanceEntry {
    pub def: Arc<CaptureInstance>,
    pub start_lsn: Lsn,
}

/// CDC state of one database.
#[derive(Debug)]
pub(crate) struct DbState {
    pub database: String,
    pub database_id: i32,
    pub instances: Vec<InstanceEntry>,
    pub pending: VecDeque<PendingTransaction>,
    /// Mirror of `cdc.lsn_time_mapping` (ascending start_lsn).
    pub mapping: VecDeque<LsnTimeRow>,
    pub jobs: JobSettings,
    /// `sp_cdc_stop_job @job_type = 'capture'` pauses capture (changes queue up).
    pub capture_running: bool,
    pub mode: CaptureMode,
    pub mask_cache: HashMap<i32, capture::LayoutCache>,
    pub handles: Handles,
    /// The capture and cleanup jobs exist (created with the first capture instance).
    pub jobs_created: bool,
}

/// Store locations of the metadata tables written on hot paths.
#[derive(Debug, Clone)]
pub(crate) struct Handles {
    pub change_tables: tables::TableHandle,
    pub lsn_time_mapping: tables::TableHandle,
}

impl DbState {
    pub fn instance(&self, name: &str) -> Option<&InstanceEntry> {
        self.instances
            .iter()
            .find(|i| i.def.name.eq_ignore_ascii_case(name))
    }

    pub fn max_lsn(&self) -> Option<Lsn> {
        self.mapping.back().map(|m| m.start_lsn)
    }
}

/// The CDC module of one engine. Install it once with [`Cdc::install`].
pub struct Cdc {
    engine: Weak<super::EngineInner>,
    config: Mutex<CdcConfig>,
    /// database_id → state (present while the database is enabled for CDC).
    databases: Mutex<HashMap<i32, Arc<Mutex<DbState>>>>,
    agent: agent::AgentHandle,
}

impl std::fmt::Debug for Cdc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cdc")
            .field("config", &*self.config.lock())
            .finish_non_exhaustive()
    }
}

/// Engines with CDC installed (so that `install` is idempotent and `Cdc::of` finds it).
static INSTALLED: Mutex<Vec<(Weak<super::EngineInner>, Weak<Cdc>)>> =
    parking_lot::const_mutex(Vec::new());

/// Error for a database that is not enabled for CDC.
pub(crate) fn not_enabled(database: &str) -> SqlError {
    crate::engine::value::err(
        22901,
        format!(
            "The database '{database}' is not enabled for Change Data Capture. Ensure that the correct database context is set and retry the operation. To report on the databases enabled for Change Data Capture, query the is_cdc_enabled column in the sys.databases catalog view."
        ),
    )
}

impl Cdc {
    /// Registers the CDC procedures, functions, the commit observer and the DDL observer on
    /// `engine`. Returns the handle tests use as the control API.
    /// Installing twice returns the first installation (with its configuration).
    pub fn install(engine: &Engine, config: CdcConfig) -> Arc<Cdc> {
        let mut registry = INSTALLED.lock();
        registry.retain(|(e, c)| e.strong_count() > 0 && c.strong_count() > 0);
        if let Some(existing) = Cdc::find(&registry, engine) {
            return existing;
        }
        let cdc = Arc::new(Cdc {
            engine: Arc::downgrade(&engine.inner),
            config: Mutex::new(config),
            databases: Mutex::new(HashMap::new()),
            agent: agent::AgentHandle::default(),
        });
        engine.set_commit_observer(Some(cdc.clone() as Arc<dyn CommitObserver>));
        engine.add_ddl_observer(Arc::new(ddl::CdcDdlObserver(Arc::downgrade(&cdc))));
        procs::register(engine, &cdc);
        functions::register(engine, &cdc);
        agent::start(&cdc);
        registry.push((Arc::downgrade(&engine.inner), Arc::downgrade(&cdc)));
        cdc
    }

    /// The CDC module installed on `engine`, if any.
    pub fn of(engine: &Engine) -> Option<Arc<Cdc>> {
        Cdc::find(&INSTALLED.lock(), engine)
    }

    fn find(
        registry: &[(Weak<super::EngineInner>, Weak<Cdc>)],
        engine: &Engine,
    ) -> Option<Arc<Cdc>> {
        registry
            .iter()
            .find(|(e, _)| std::ptr::eq(e.as_ptr(), Arc::as_ptr(&engine.inner)))
            .and_then(|(_, c)| c.upgrade())
    }

    pub(crate) fn engine(&self) -> Option<Engine> {
        self.engine.upgrade().map(|inner| Engine { inner })
    }

    pub fn config(&self) -> CdcConfig {
        self.config.lock().clone()
    }

    /// Changes the behaviour switches; the mode applies to databases enabled later too.
    pub fn set_config(&self, config: CdcConfig) {
        let mode = config.mode;
        *self.config.lock() = config;
        for db in self.databases.lock().values() {
            db.lock().mode = mode;
        }
        self.agent.wake();
    }

    pub(crate) fn state(&self, database_id: i32) -> Option<Arc<Mutex<DbState>>> {
        self.databases.lock().get(&database_id).cloned()
    }

    pub(crate) fn state_by_name(
        &self,
        engine: &Engine,
        database: &str,
    ) -> Option<Arc<Mutex<DbState>>> {
        self.state(engine.database_id(database)?)
    }

    pub(crate) fn all_states(&self) -> Vec<Arc<Mutex<DbState>>> {
        self.databases.lock().values().cloned().collect()
    }

    /// Sets the capture mode of one database.
    pub fn set_mode(&self, database: &str, mode: CaptureMode) -> Result<(), SqlError> {
        let engine = self.engine().ok_or_else(engine_gone)?;
        let state = self
            .state_by_name(&engine, database)
            .ok_or_else(|| not_enabled(database))?;
        state.lock().mode = mode;
        if mode == CaptureMode::Synchronous {
            self.scan(database, None)?;
        }
        self.agent.wake();
        Ok(())
    }

    /// Pauses (`false`) or resumes (`true`) the capture job, like sp_cdc_stop_job /
    /// sp_cdc_start_job. Resuming in synchronous mode captures the backlog at once.
    pub fn set_capture_running(&self, database: &str, running: bool) -> Result<(), SqlError> {
        let engine = self.engine().ok_or_else(engine_gone)?;
        let state = self
            .state_by_name(&engine, database)
            .ok_or_else(|| not_enabled(database))?;
        let mode = {
            let mut s = state.lock();
            s.capture_running = running;
            s.mode
        };
        if running && mode == CaptureMode::Synchronous {
            self.scan(database, None)?;
        }
        self.agent.wake();
        Ok(())
    }

    /// Runs one capture scan over everything queued (or at most `max_transactions`), even
    /// when the capture job is stopped (like `sys.sp_cdc_scan`). Writes an idle mapping row
    /// when nothing was queued and `heartbeat_if_idle` is configured for the agent.
    pub fn scan(
        &self,
        database: &str,
        max_transactions: Option<usize>,
    ) -> Result<ScanOutcome, SqlError> {
        let engine = self.engine().ok_or_else(engine_gone)?;
        let state = self
            .state_by_name(&engine, database)
            .ok_or_else(|| not_enabled(database))?;
        Ok(capture::scan(
            &engine,
            &state,
            max_transactions.unwrap_or(usize::MAX),
            false,
        ))
    }

    /// Writes one idle (`tran_id = 0x00`) `cdc.lsn_time_mapping` row, as the capture job does
    /// in quiet periods; `fn_cdc_get_max_lsn()` moves to it.
    pub fn heartbeat(&self, database: &str) -> Result<Lsn, SqlError> {
        let engine = self.engine().ok_or_else(engine_gone)?;
        let state = self
            .state_by_name(&engine, database)
            .ok_or_else(|| not_enabled(database))?;
        capture::heartbeat(&engine, &state).ok_or_else(engine_gone)
    }

    /// Runs the retention cleanup job: new low watermark from the mapping's latest
    /// `tran_end_time` minus `@retention` minutes.
    pub fn cleanup_by_retention(&self, database: &str) -> Result<Option<Lsn>, SqlError> {
        let engine = self.engine().ok_or_else(engine_gone)?;
        let state = self
            .state_by_name(&engine, database)
            .ok_or_else(|| not_enabled(database))?;
        capture::cleanup_retention(&engine, &state, &self.config())
    }

    /// Cleanup as of an explicit time: everything whose commit time is before `cutoff` goes.
    pub fn cleanup_before_time(
        &self,
        database: &str,
        cutoff: NaiveDateTime,
    ) -> Result<Option<Lsn>, SqlError> {
        let engine = self.engine().ok_or_else(engine_gone)?;
        let state = self
            .state_by_name(&engine, database)
            .ok_or_else(|| not_enabled(database))?;
        capture::cleanup_at_time(&engine, &state, cutoff, &self.config())
    }

    /// Cleanup to an explicit low watermark for every instance (or one instance).
    pub fn cleanup_to_watermark(
        &self,
        database: &str,
        instance: Option<&str>,
        low_water_mark: Lsn,
    ) -> Result<(), SqlError> {
        let engine = self.engine().ok_or_else(engine_gone)?;
        let state = self
            .state_by_name(&engine, database)
            .ok_or_else(|| not_enabled(database))?;
        capture::cleanup_instances(&engine, &state, instance, low_water_mark, &self.config())
    }

    /// `sys.fn_cdc_get_max_lsn()` of a database (None = no mapping row yet).
    pub fn max_lsn(&self, database: &str) -> Option<Lsn> {
        let engine = self.engine()?;
        self.state_by_name(&engine, database)?.lock().max_lsn()
    }

    /// `sys.fn_cdc_get_min_lsn(instance)` (None = no such instance).
    pub fn min_lsn(&self, database: &str, instance: &str) -> Option<Lsn> {
        let engine = self.engine()?;
        self.state_by_name(&engine, database)?
            .lock()
            .instance(instance)
            .map(|i| i.start_lsn)
    }

    /// Committed transactions not yet captured.
    pub fn pending_transactions(&self, database: &str) -> usize {
        let Some(engine) = self.engine() else {
            return 0;
        };
        self.state_by_name(&engine, database)
            .map_or(0, |s| s.lock().pending.len())
    }

    /// The capture instances of a database.
    pub fn instances(&self, database: &str) -> Vec<(Arc<CaptureInstance>, Lsn)> {
        let Some(engine) = self.engine() else {
            return Vec::new();
        };
        self.state_by_name(&engine, database)
            .map(|s| {
                s.lock()
                    .instances
                    .iter()
                    .map(|i| (i.def.clone(), i.start_lsn))
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub(crate) fn engine_gone() -> SqlError {
    crate::engine::value::err(50000, "The engine has shut down.")
}

impl CommitObserver for Cdc {
    fn committed(&self, txn: CommittedTransaction) {
        let Some(state) = self.state(txn.database_id) else {
            return;
        };
        let config = self.config.lock().clone();
        let Some(engine) = self.engine() else { return };
        capture::on_commit(&engine, &state, txn, &config);
    }
}
