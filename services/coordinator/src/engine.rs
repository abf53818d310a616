//! The control plane's logic behind both gRPC services: task lifecycle, prechecks, worker
//! leases, group assignment and rebalancing, progress, retry windows and alerts.
//!
//! Concurrency: every change to tasks, groups or leases that spans several store rows runs under
//! one async lifecycle lock, so a start, a lease expiry and a rebalance never interleave.
//! Heartbeats and progress reports take the lock only briefly. The store is the single source
//! of truth; in memory there is only what may be lost on restart (rate samples for ETAs,
//! lag-alert hysteresis, task-level failure episodes).
//!
//! Assignments: a group is owned by at most one applier. Its `generation` bumps whenever its
//! data path must restart (owner, tables, pause, state), so an applier can use it as a fencing
//! token for its checkpoints and knows when to reload. Throttles and alert settings change
//! without a bump: heartbeat responses carry them to running captures and appliers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dbsync_core::secret::redact;
use dbsync_proto::v1 as pb;
use dbsync_proto::v1::capture_service_client::CaptureServiceClient;
use pb::{PrecheckStatus, TablePhase, TaskState};
use prost::Message;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::alert::{post_webhook, AlertPayload};
use crate::error::{CoordinatorError, Result};
use crate::plan::{build_plans, group_tables, plan_sequences, source_key, PlannedTable};
use crate::spec::{StartPoint, TaskSpec};
use crate::store::{EventRow, GroupRow, TableRow, TaskRow, TaskStore, WorkerRow};
use crate::{metrics as m, target};

/// Time source, so tests can move time forward (leases, retry windows) without sleeping.
pub trait Clock: Send + Sync {
    fn now_us(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to.
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock(AtomicI64::new(SystemClock.now_us()))
    }
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_micros() as i64, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Engine settings (the serde/CLI side lives in [`crate::CoordinatorConfig`]).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// How long a worker's lease lasts without a heartbeat.
    pub lease_seconds: u32,
    /// Timeout of control calls to capture (schema reads can be slow on big catalogs).
    pub capture_timeout: Duration,
    /// Bearer token sent to capture services (which check it when they have one configured).
    pub capture_token: Option<dbsync_core::Secret>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            lease_seconds: 15,
            capture_timeout: Duration::from_secs(300),
            capture_token: None,
        }
    }
}

#[derive(Default)]
struct RuntimeState {
    /// task -> (first sample time, rows done then) for ETAs.
    rate_samples: HashMap<String, (i64, u64)>,
    /// tasks whose lag alert has fired and not yet recovered.
    lag_alerted: HashMap<String, bool>,
    /// task -> its current task-level failure episode (appliers report it until a retry works).
    task_error_since: HashMap<String, Episode>,
    /// tasks whose verification after full sync has started since this process started.
    verified_after_full: std::collections::HashSet<String>,
}

/// A task-level failure that appliers keep reporting while they retry.
struct Episode {
    class: String,
    since_us: i64,
    /// When it was last reported.
    last_us: i64,
    message: String,
}

pub struct Coordinator {
    store: Arc<dyn TaskStore>,
    settings: EngineSettings,
    clock: Arc<dyn Clock>,
    lifecycle: tokio::sync::Mutex<()>,
    changed: tokio::sync::watch::Sender<u64>,
    runtime: Mutex<RuntimeState>,
}

fn state_name(state: i32) -> &'static str {
    match TaskState::try_from(state).unwrap_or(TaskState::Unspecified) {
        TaskState::Unspecified => "unknown",
        TaskState::Created => "created",
        TaskState::Prechecked => "prechecked",
        TaskState::Running => "running",
        TaskState::Paused => "paused",
        TaskState::Stopped => "stopped",
        TaskState::Failed => "failed",
        TaskState::Completed => "completed",
    }
}

fn normalize_address(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

fn lsn_text(bytes: &[u8]) -> String {
    dbsync_core::Lsn::from_slice(bytes)
        .map(|l| l.to_string())
        .unwrap_or_else(|| "(none)".into())
}

impl Coordinator {
    pub fn new(
        store: Arc<dyn TaskStore>,
        settings: EngineSettings,
        clock: Arc<dyn Clock>,
    ) -> Arc<Coordinator> {
        let coordinator = Coordinator::new_standby(store, settings, clock);
        coordinator.after_restart();
        coordinator
    }

    /// A coordinator that does not drive anything until [`Coordinator::take_over`] (a standby
    /// on a shared store: it must not touch the leader's leases).
    pub fn new_standby(
        store: Arc<dyn TaskStore>,
        settings: EngineSettings,
        clock: Arc<dyn Clock>,
    ) -> Arc<Coordinator> {
        let (changed, _) = tokio::sync::watch::channel(0);
        Arc::new(Coordinator {
            store,
            settings,
            clock,
            lifecycle: tokio::sync::Mutex::new(()),
            changed,
            runtime: Mutex::new(RuntimeState::default()),
        })
    }

    /// Becomes the driving coordinator of its store (a standby whose leader went away): state
    /// comes from the store, in-memory samples start afresh, workers get fresh leases.
    pub fn take_over(&self) {
        *self.runtime.lock().unwrap_or_else(|p| p.into_inner()) = RuntimeState::default();
        self.after_restart();
        self.notify();
    }

    /// Workers could not heartbeat while the coordinator was down: give every known worker a
    /// fresh lease so nothing is moved just because the coordinator restarted.
    fn after_restart(&self) {
        let until = self.now() + self.lease_us();
        if let Ok(workers) = self.store.workers() {
            for mut w in workers {
                w.lease_expires_us = w.lease_expires_us.max(until);
                let _ = self.store.upsert_worker(&w);
            }
        }
        self.update_task_gauges();
    }

    fn now(&self) -> i64 {
        self.clock.now_us()
    }

    fn lease_us(&self) -> i64 {
        i64::from(self.settings.lease_seconds) * 1_000_000
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn load(&self, task_ref: &str) -> Result<(TaskRow, TaskSpec)> {
        let row = self
            .store
            .task(task_ref)?
            .ok_or_else(|| CoordinatorError::TaskNotFound(task_ref.to_string()))?;
        let spec = TaskSpec::from_store_json(&row.spec_json)?;
        Ok((row, spec))
    }

    pub fn task_info(&self, row: &TaskRow) -> pb::TaskInfo {
        let spec_redacted = TaskSpec::from_store_json(&row.spec_json)
            .map(|s| s.to_redacted_yaml())
            .unwrap_or_default();
        pb::TaskInfo {
            task_id: row.id.clone(),
            name: row.name.clone(),
            state: row.state,
            spec_redacted,
            last_error: row.last_error.clone(),
            created_unix_micros: row.created_us,
            updated_unix_micros: row.updated_us,
        }
    }

    fn event(&self, task_id: &str, kind: &str, message: &str) {
        let _ = self.store.add_event(&EventRow {
            task_id: task_id.to_string(),
            at_us: self.now(),
            kind: kind.to_string(),
            message: message.to_string(),
        });
    }

    fn set_state(
        &self,
        row: &mut TaskRow,
        state: TaskState,
        last_error: Option<String>,
    ) -> Result<()> {
        let from = state_name(row.state);
        row.state = state as i32;
        if let Some(e) = last_error {
            row.last_error = e;
        }
        row.updated_us = self.now();
        self.store.update_task(row)?;
        tracing::info!(task = %row.name, from, to = state_name(row.state), "task state changed");
        self.event(
            &row.id,
            "state",
            &format!("{from} -> {}", state_name(row.state)),
        );
        self.update_task_gauges();
        self.notify();
        Ok(())
    }

    fn wrong_state(row: &TaskRow, action: &'static str, hint: &str) -> CoordinatorError {
        CoordinatorError::WrongState {
            task: row.name.clone(),
            state: state_name(row.state),
            action,
            hint: if hint.is_empty() {
                String::new()
            } else {
                format!(": {hint}")
            },
        }
    }

    // ---- lifecycle -------------------------------------------------------------------------

    pub async fn create_task(&self, spec_text: &str) -> Result<pb::TaskInfo> {
        let spec = TaskSpec::parse(spec_text)?;
        let _guard = self.lifecycle.lock().await;
        if self.store.task(&spec.name)?.is_some() {
            return Err(CoordinatorError::TaskExists(spec.name));
        }
        let now = self.now();
        let row = TaskRow {
            id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            name: spec.name.clone(),
            state: TaskState::Created as i32,
            spec_json: spec.to_store_json(),
            last_error: String::new(),
            created_us: now,
            updated_us: now,
            precheck: Vec::new(),
            defer_foreign_keys: false,
            started_us: 0,
        };
        self.store.insert_task(&row)?;
        self.event(&row.id, "state", "created");
        tracing::info!(task = %row.name, id = %row.id, environment = %spec.environment, "task created");
        self.update_task_gauges();
        self.notify();
        Ok(self.task_info(&row))
    }

    pub fn get_task(&self, task_ref: &str) -> Result<pb::TaskInfo> {
        Ok(self.task_info(&self.load(task_ref)?.0))
    }

    pub fn list_tasks(&self) -> Result<Vec<pb::TaskInfo>> {
        Ok(self
            .store
            .tasks()?
            .iter()
            .map(|r| self.task_info(r))
            .collect())
    }

    /// Address of the capture service for a task: its own, else the first live capture worker.
    fn capture_address(&self, spec: &TaskSpec) -> Result<String> {
        if !spec.capture_address.is_empty() {
            return Ok(spec.capture_address.clone());
        }
        let now = self.now();
        self.store
            .workers()?
            .into_iter()
            .find(|w| w.kind == "capture" && w.lease_expires_us > now)
            .map(|w| normalize_address(&w.address))
            .ok_or_else(|| CoordinatorError::NoCapture {
                task: spec.name.clone(),
            })
    }

    async fn capture(&self, spec: &TaskSpec) -> Result<Capture> {
        let address = self.capture_address(spec)?;
        let endpoint = tonic::transport::Endpoint::from_shared(address.clone())
            .map_err(|e| CoordinatorError::Capture {
                address: address.clone(),
                operation: "connect",
                message: e.to_string(),
                code: tonic::Code::InvalidArgument,
            })?
            .connect_timeout(Duration::from_secs(10))
            .timeout(self.settings.capture_timeout);
        let channel =
            dbsync_telemetry::connect(endpoint)
                .await
                .map_err(|e| CoordinatorError::Capture {
                    address: address.clone(),
                    operation: "connect",
                    message: e.to_string(),
                    code: tonic::Code::Unavailable,
                })?;
        let secrets = [
            spec.source.password.resolve("source.password").ok(),
            spec.target.password.resolve("target.password").ok(),
        ]
        .into_iter()
        .flatten()
        .map(|s| s.expose().to_string())
        .collect();
        let client = CaptureServiceClient::with_interceptor(
            channel,
            crate::ClientToken(self.settings.capture_token.clone()),
        );
        Ok(Capture {
            address,
            client,
            secrets,
        })
    }

    /// ReadSchema for the task's selection (or only `only` tables), planned.
    async fn read_and_plan(
        &self,
        spec: &TaskSpec,
        capture: &mut Capture,
        only: Option<&[String]>,
    ) -> Result<Vec<PlannedTable>> {
        Ok(self.read_and_plan_all(spec, capture, only).await?.0)
    }

    /// [`Self::read_and_plan`], also giving the selected sequences named for the target.
    async fn read_and_plan_all(
        &self,
        spec: &TaskSpec,
        capture: &mut Capture,
        only: Option<&[String]>,
    ) -> Result<(Vec<PlannedTable>, Vec<pb::SequenceSchema>)> {
        let mut tables = Vec::new();
        let mut sequences = Vec::new();
        for database in &spec.objects.databases {
            let include = match only {
                Some(keys) => keys
                    .iter()
                    .filter(|k| {
                        k.split('.')
                            .next()
                            .is_some_and(|d| d.eq_ignore_ascii_case(database))
                    })
                    .cloned()
                    .collect(),
                None => spec.objects.include.clone(),
            };
            if only.is_some() && include.is_empty() {
                continue;
            }
            let request = pb::ReadSchemaRequest {
                source: Some(spec.source_connection(database)?),
                selection: Some(pb::ObjectSelection {
                    databases: vec![database.clone()],
                    include,
                    exclude: spec.objects.exclude.clone(),
                }),
            };
            let response = capture
                .client
                .read_schema(request)
                .await
                .map_err(|s| capture.error("read the schema", s))?
                .into_inner();
            tables.extend(response.tables);
            sequences.extend(response.sequences);
        }
        if let Some(keys) = only {
            tables.retain(|t| {
                t.table
                    .as_ref()
                    .is_some_and(|r| keys.iter().any(|k| k.eq_ignore_ascii_case(&source_key(r))))
            });
        }
        let planned = build_plans(spec, tables).map_err(|message| CoordinatorError::Plan {
            task: spec.name.clone(),
            message,
        })?;
        let sequences = plan_sequences(spec, sequences, &planned);
        Ok((planned, sequences))
    }

    pub async fn precheck(
        &self,
        task_ref: &str,
        acknowledge: &[String],
    ) -> Result<pb::PrecheckReport> {
        let _guard = self.lifecycle.lock().await;
        let (mut row, spec) = self.load(task_ref)?;
        if matches!(
            TaskState::try_from(row.state),
            Ok(TaskState::Running | TaskState::Paused)
        ) {
            return Err(Self::wrong_state(
                &row,
                "precheck",
                "prechecks run before start; stop the task first",
            ));
        }
        let previous = pb::PrecheckReport::decode(row.precheck.as_slice()).unwrap_or_default();
        let mut report = self.run_precheck(&spec).await?;
        let mut unknown_acks = Vec::new();
        for ack in acknowledge {
            if !report
                .items
                .iter()
                .any(|i| &i.id == ack && i.status == PrecheckStatus::Warn as i32)
            {
                unknown_acks.push(ack.clone());
            }
        }
        if !unknown_acks.is_empty() {
            return Err(CoordinatorError::InvalidArgument(format!(
                "No warning with id {} in this precheck: only warnings can be acknowledged",
                unknown_acks.join(", ")
            )));
        }
        for item in report
            .items
            .iter_mut()
            .filter(|i| i.status == PrecheckStatus::Warn as i32)
        {
            let was_acked = previous
                .items
                .iter()
                .any(|p| p.acknowledged && p.id == item.id && p.object == item.object);
            item.acknowledged = was_acked || acknowledge.contains(&item.id);
        }
        row.defer_foreign_keys = report.items.iter().any(|i| {
            i.id == "target.session_replication_role" && i.status != PrecheckStatus::Pass as i32
        });
        row.precheck = report.encode_to_vec();
        let failed = report
            .items
            .iter()
            .filter(|i| i.status == PrecheckStatus::Fail as i32)
            .count();
        let warned = report
            .items
            .iter()
            .filter(|i| i.status == PrecheckStatus::Warn as i32)
            .count();
        self.event(
            &row.id,
            "precheck",
            &format!(
                "{} items, {failed} failed, {warned} warnings",
                report.items.len()
            ),
        );
        let state = TaskState::try_from(row.state).unwrap_or(TaskState::Created);
        let next = match (state, failed) {
            (TaskState::Created | TaskState::Prechecked, 0) => TaskState::Prechecked,
            (TaskState::Created | TaskState::Prechecked, _) => TaskState::Created,
            (other, _) => other,
        };
        self.set_state(&mut row, next, None)?;
        Ok(report)
    }

    async fn run_precheck(&self, spec: &TaskSpec) -> Result<pb::PrecheckReport> {
        use PrecheckStatus::{Fail, Pass};
        let mut items = Vec::new();
        let mut planned = Vec::new();
        match self.capture(spec).await {
            Err(e) => items.push(target::item(
                "capture.available",
                "A capture service is reachable",
                Fail,
                &spec.capture_address,
                e.to_string(),
                "start dbsync-capture near the source and set capture_address or let it register with the coordinator",
            )),
            Ok(mut capture) => {
                match self.read_and_plan(spec, &mut capture, None).await {
                    Ok(p) => planned = p,
                    Err(e) => items.push(target::item(
                        "source.schema",
                        "Read the selected tables from the source",
                        Fail,
                        &spec.objects.databases.join(","),
                        e.to_string(),
                        "check the source connection and the object selection",
                    )),
                }
                if planned.is_empty() && items.is_empty() {
                    items.push(target::item(
                        "objects.selection",
                        "The selection matches tables",
                        Fail,
                        &spec.objects.databases.join(","),
                        "no source table matches objects.databases/include/exclude".into(),
                        "fix objects.include/exclude",
                    ));
                }
                if spec.sync.incremental && planned.len() > spec.incremental.max_cdc_tables as usize {
                    items.push(target::item(
                        "objects.cdc_table_limit",
                        "Tables within the CDC table limit",
                        Fail,
                        &spec.objects.databases.join(","),
                        format!("{} tables selected, incremental.max_cdc_tables is {}", planned.len(), spec.incremental.max_cdc_tables),
                        "select fewer tables or raise incremental.max_cdc_tables",
                    ));
                }
                if !planned.is_empty() {
                    for database in &spec.objects.databases {
                        let tables: Vec<pb::TableRef> = planned
                            .iter()
                            .filter(|t| t.database.eq_ignore_ascii_case(database))
                            .filter_map(|t| t.plan.source.as_ref().and_then(|s| s.table.clone()))
                            .collect();
                        let request = pb::SourcePrecheckRequest {
                            source: Some(spec.source_connection(database)?),
                            tables,
                            full_sync: spec.sync.full,
                            incremental: spec.sync.incremental,
                            incremental_mode: spec.incremental.mode.as_str().into(),
                            max_cdc_tables: spec.incremental.max_cdc_tables,
                            ..Default::default()
                        };
                        match capture.client.precheck(request).await {
                            Ok(r) => items.extend(r.into_inner().items),
                            Err(s) => items.push(target::item(
                                "source.precheck",
                                "Source prechecks ran",
                                Fail,
                                database,
                                capture.error("run the source precheck", s).to_string(),
                                "check the source connection and the capture service log",
                            )),
                        }
                    }
                }
                if items.iter().all(|i| i.id != "capture.available") {
                    items.insert(
                        0,
                        target::item("capture.available", "A capture service is reachable", Pass, &capture.address, String::new(), ""),
                    );
                }
            }
        }
        match spec.target_connection() {
            Ok(conn) => {
                let (target_items, _) =
                    target::precheck(&conn, &planned, spec.sync.schema, spec.conflict_mode).await;
                items.extend(target_items);
            }
            Err(e) => items.push(target::item(
                "target.password",
                "Target password is available",
                Fail,
                &spec.target.host,
                e.to_string(),
                "set the environment variable or file named in target.password_env/password_file",
            )),
        }
        Ok(pb::PrecheckReport { items })
    }

    pub async fn start(&self, task_ref: &str) -> Result<pb::TaskInfo> {
        let (row, _) = self.load(task_ref)?;
        let state = TaskState::try_from(row.state).unwrap_or(TaskState::Unspecified);
        match state {
            TaskState::Running | TaskState::Paused => {
                return Err(Self::wrong_state(&row, "start", "it has already started"))
            }
            TaskState::Completed => {
                return Err(Self::wrong_state(
                    &row,
                    "start",
                    "create a new task to sync again",
                ))
            }
            _ => {}
        }
        // A task that ran before keeps its plan and groups: restarting resumes from the
        // checkpoints in the target.
        if !self.store.tables(&row.id)?.is_empty() {
            let _guard = self.lifecycle.lock().await;
            let (mut row, _) = self.load(&row.id)?;
            self.table_episodes_reset(&row.id)?;
            self.runtime
                .lock()
                .unwrap()
                .task_error_since
                .remove(&row.id);
            self.set_state(&mut row, TaskState::Running, Some(String::new()))?;
            self.bump_generations(&row.id)?;
            self.rebalance()?;
            return Ok(self.task_info(&row));
        }
        if row.precheck.is_empty() {
            self.precheck(&row.id, &[]).await?;
        }
        let _guard = self.lifecycle.lock().await;
        let (mut row, spec) = self.load(&row.id)?;
        let report = pb::PrecheckReport::decode(row.precheck.as_slice()).unwrap_or_default();
        let failures: Vec<String> = report
            .items
            .iter()
            .filter(|i| i.status == PrecheckStatus::Fail as i32)
            .map(|i| format!("{} ({}): {}", i.id, i.object, i.detail))
            .collect();
        if !failures.is_empty() {
            return Err(CoordinatorError::PrecheckFailed {
                task: row.name.clone(),
                items: failures.join("; "),
            });
        }
        let mut capture = self.capture(&spec).await?;
        let (planned, sequences) = self.read_and_plan_all(&spec, &mut capture, None).await?;
        if planned.is_empty() {
            return Err(CoordinatorError::Plan {
                task: row.name.clone(),
                message: "no source table matches objects.databases/include/exclude".into(),
            });
        }
        let start_lsns = self
            .prepare_incremental(&spec, &mut capture, &planned)
            .await?;
        self.store_groups(&row, &planned, &sequences, &start_lsns, 1)?;
        row.started_us = self.now();
        self.set_state(&mut row, TaskState::Running, Some(String::new()))?;
        self.rebalance()?;
        Ok(self.task_info(&row))
    }

    /// Enables CDC and records each database's start LSN *before* any snapshot read, so every
    /// change made during the snapshot is streamed afterwards.
    async fn prepare_incremental(
        &self,
        spec: &TaskSpec,
        capture: &mut Capture,
        planned: &[PlannedTable],
    ) -> Result<BTreeMap<String, Vec<u8>>> {
        let mut start = BTreeMap::new();
        if !spec.sync.incremental {
            return Ok(start);
        }
        let mut databases: Vec<&str> = planned.iter().map(|t| t.database.as_str()).collect();
        databases.dedup();
        for database in databases {
            let source = spec.source_connection(database)?;
            let tables = planned
                .iter()
                .filter(|t| t.database == database)
                .filter_map(|t| t.plan.source.as_ref().and_then(|s| s.table.clone()))
                .collect();
            let enabled = capture
                .client
                .enable_cdc(pb::EnableCdcRequest {
                    source: Some(source.clone()),
                    tables,
                    incremental_mode: spec.incremental.mode.as_str().into(),
                    max_cdc_tables: spec.incremental.max_cdc_tables,
                    object_prefix: spec.incremental.object_prefix.clone(),
                    ..Default::default()
                })
                .await
                .map_err(|s| capture.error("enable CDC", s))?
                .into_inner();
            for note in &enabled.notes {
                tracing::info!(task = %spec.name, database, note = %note, "enable CDC");
            }
            let lsn = match spec.start_point() {
                StartPoint::Lsn => dbsync_core::Lsn::parse_hex(
                    spec.incremental.start_lsn.as_deref().unwrap_or_default(),
                )
                .map(|l| l.0.to_vec())
                .unwrap_or_default(),
                point => {
                    let at = match point {
                        StartPoint::Time => chrono::DateTime::parse_from_rfc3339(
                            spec.incremental.start_time.as_deref().unwrap_or_default(),
                        )
                        .map(|t| t.timestamp_micros())
                        .unwrap_or_default(),
                        _ => 0,
                    };
                    let response = capture
                        .client
                        .get_max_lsn(pb::GetMaxLsnRequest {
                            source: Some(source),
                            database: database.to_string(),
                            at_unix_micros: at,
                            ..Default::default()
                        })
                        .await
                        .map_err(|s| capture.error("read the max LSN", s))?
                        .into_inner();
                    // A capture service that ignores at_unix_micros would answer with the current
                    // max LSN: never start later than asked.
                    if at != 0 && response.source_time_unix_micros > at + 1_000_000 {
                        return Err(CoordinatorError::Capture {
                            address: capture.address.clone(),
                            operation: "map incremental.start_time to an LSN",
                            message:
                                "the capture service returned a position after the requested time"
                                    .into(),
                            code: tonic::Code::FailedPrecondition,
                        });
                    }
                    response.lsn
                }
            };
            tracing::info!(task = %spec.name, database, start_lsn = %lsn_text(&lsn), "incremental start position recorded");
            self.event_by_name(
                spec,
                &format!(
                    "{database}: incremental sync starts after {}",
                    lsn_text(&lsn)
                ),
            );
            start.insert(database.to_string(), lsn);
        }
        Ok(start)
    }

    fn event_by_name(&self, spec: &TaskSpec, message: &str) {
        if let Ok(Some(row)) = self.store.task(&spec.name) {
            self.event(&row.id, "info", message);
        }
    }

    /// Writes planned tables as new groups numbered from `first_group`. Each database's
    /// sequences go to its first group (one applier creates them, once).
    fn store_groups(
        &self,
        row: &TaskRow,
        planned: &[PlannedTable],
        sequences: &[pb::SequenceSchema],
        start_lsns: &BTreeMap<String, Vec<u8>>,
        first_group: usize,
    ) -> Result<()> {
        let now = self.now();
        let mut rows = Vec::with_capacity(planned.len());
        let mut databases_with_sequences = std::collections::HashSet::new();
        for (n, members) in group_tables(planned).into_iter().enumerate() {
            let group_id = format!("g{}", first_group + n);
            let database = planned[members[0]].database.clone();
            let own: Vec<pb::SequenceSchema> =
                if databases_with_sequences.insert(database.to_lowercase()) {
                    sequences
                        .iter()
                        .filter(|q| q.database.eq_ignore_ascii_case(&database))
                        .cloned()
                        .collect()
                } else {
                    Vec::new()
                };
            self.store.upsert_group(&GroupRow {
                sequences: if own.is_empty() {
                    Vec::new()
                } else {
                    pb::ReadSchemaResponse {
                        sequences: own,
                        ..Default::default()
                    }
                    .encode_to_vec()
                },
                task_id: row.id.clone(),
                group_id: group_id.clone(),
                start_lsn: start_lsns.get(&database).cloned().unwrap_or_default(),
                database,
                worker_id: String::new(),
                generation: 1,
            })?;
            for i in members {
                let t = &planned[i];
                rows.push(TableRow {
                    task_id: row.id.clone(),
                    source_key: t.key.clone(),
                    group_id: group_id.clone(),
                    plan: t.plan.encode_to_vec(),
                    target: t.target(),
                    phase: TablePhase::Pending as i32,
                    rows_total: t
                        .plan
                        .source
                        .as_ref()
                        .map(|s| s.approximate_rows.max(0) as u64)
                        .unwrap_or(0),
                    updated_us: now,
                    ..Default::default()
                });
            }
        }
        self.store.upsert_tables(&rows)?;
        Ok(())
    }

    fn bump_generations(&self, task_id: &str) -> Result<()> {
        for mut g in self.store.groups(Some(task_id))? {
            g.generation += 1;
            self.store.upsert_group(&g)?;
        }
        Ok(())
    }

    fn table_episodes_reset(&self, task_id: &str) -> Result<()> {
        let mut tables = self.store.tables(task_id)?;
        for t in &mut tables {
            t.error_class.clear();
            t.error_since_us = 0;
            if t.phase == TablePhase::Failed as i32 {
                t.phase = TablePhase::Pending as i32;
            }
        }
        self.store.upsert_tables(&tables)?;
        Ok(())
    }

    async fn transition(
        &self,
        task_ref: &str,
        action: &'static str,
        allowed: &[TaskState],
        to: TaskState,
        hint: &str,
    ) -> Result<pb::TaskInfo> {
        let _guard = self.lifecycle.lock().await;
        let (mut row, _) = self.load(task_ref)?;
        let state = TaskState::try_from(row.state).unwrap_or(TaskState::Unspecified);
        if !allowed.contains(&state) {
            return Err(Self::wrong_state(&row, action, hint));
        }
        self.set_state(&mut row, to, None)?;
        self.bump_generations(&row.id)?;
        Ok(self.task_info(&row))
    }

    pub async fn pause(&self, task_ref: &str) -> Result<pb::TaskInfo> {
        self.transition(
            task_ref,
            "pause",
            &[TaskState::Running],
            TaskState::Paused,
            "only running tasks can be paused",
        )
        .await
    }

    pub async fn resume(&self, task_ref: &str) -> Result<pb::TaskInfo> {
        self.transition(
            task_ref,
            "resume",
            &[TaskState::Paused],
            TaskState::Running,
            "only paused tasks can be resumed",
        )
        .await
    }

    pub async fn stop(&self, task_ref: &str) -> Result<pb::TaskInfo> {
        self.transition(
            task_ref,
            "stop",
            &[TaskState::Running, TaskState::Paused],
            TaskState::Stopped,
            "only running or paused tasks can be stopped",
        )
        .await
    }

    pub async fn modify(&self, request: pb::ModifyTaskRequest) -> Result<pb::TaskInfo> {
        let (row, mut spec) = self.load(&request.task_id)?;
        let started = !self.store.tables(&row.id)?.is_empty();
        let qualify = |names: &[String], field: &str| -> Result<Vec<String>> {
            names
                .iter()
                .map(|n| {
                    spec.qualify_table(n)
                        .map_err(|e| CoordinatorError::InvalidArgument(format!("{field}: {e}")))
                })
                .collect()
        };
        let add = qualify(&request.add_tables, "add_tables")?;
        let remove = qualify(&request.remove_tables, "remove_tables")?;
        for t in add.iter().chain(&remove) {
            let db = t.split('.').next().unwrap_or_default();
            if !spec
                .objects
                .databases
                .iter()
                .any(|d| d.eq_ignore_ascii_case(db))
            {
                return Err(CoordinatorError::InvalidArgument(format!(
                    "{t}: database {db} is not in objects.databases of task {}",
                    spec.name
                )));
            }
        }
        if let Some(t) = request.full_throttle {
            spec.throttle.full.queries_per_second = t.queries_per_second;
            spec.throttle.full.rows_per_second = t.rows_per_second;
            spec.throttle.full.mb_per_second = t.megabytes_per_second;
        }
        if let Some(t) = request.incremental_throttle {
            spec.throttle.incremental.rows_per_second = t.rows_per_second;
            spec.throttle.incremental.mb_per_second = t.megabytes_per_second;
        }
        if !request.alert_webhook.is_empty() {
            spec.alerts.webhook_url = Some(request.alert_webhook.clone()).filter(|u| u != "none");
        }
        if let Some(lag) = request.lag_alert_seconds {
            spec.alerts.lag_seconds = Some(lag).filter(|l| *l > 0);
        }
        // Keep the definition in step with the selection so a restart or a re-read agrees.
        for t in &add {
            spec.objects.exclude.retain(|p| !p.eq_ignore_ascii_case(t));
            if !spec.objects.include.is_empty()
                && !spec
                    .objects
                    .include
                    .iter()
                    .any(|p| crate::spec::glob_match(p, t))
            {
                spec.objects.include.push(t.clone());
            }
        }
        for t in &remove {
            if !spec
                .objects
                .exclude
                .iter()
                .any(|p| p.eq_ignore_ascii_case(t))
            {
                spec.objects.exclude.push(t.clone());
            }
        }
        spec.validate()?;

        let mut new_tables = Vec::new();
        let mut start_lsns = BTreeMap::new();
        if started && !add.is_empty() {
            let existing: Vec<String> = self
                .store
                .tables(&row.id)?
                .into_iter()
                .map(|t| t.source_key.to_lowercase())
                .collect();
            let fresh: Vec<String> = add
                .iter()
                .filter(|k| !existing.contains(&k.to_lowercase()))
                .cloned()
                .collect();
            if !fresh.is_empty() {
                let mut capture = self.capture(&spec).await?;
                new_tables = self
                    .read_and_plan(&spec, &mut capture, Some(&fresh))
                    .await?;
                let found: Vec<String> = new_tables.iter().map(|t| t.key.to_lowercase()).collect();
                let missing: Vec<&String> = fresh
                    .iter()
                    .filter(|k| !found.contains(&k.to_lowercase()))
                    .collect();
                if !missing.is_empty() {
                    return Err(CoordinatorError::InvalidArgument(format!(
                        "add_tables: no such source table: {}",
                        missing
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                // Added tables get schema + full sync, then join incremental sync from a
                // position recorded before their snapshot.
                start_lsns = self
                    .prepare_incremental(&spec, &mut capture, &new_tables)
                    .await?;
            }
        }

        let _guard = self.lifecycle.lock().await;
        let (mut row, _) = self.load(&row.id)?;
        row.spec_json = spec.to_store_json();
        if started {
            if !new_tables.is_empty() {
                let next_group = self
                    .store
                    .groups(Some(&row.id))?
                    .iter()
                    .filter_map(|g| {
                        g.group_id
                            .strip_prefix('g')
                            .and_then(|n| n.parse::<usize>().ok())
                    })
                    .max()
                    .unwrap_or(0)
                    + 1;
                // The task's sequences came with its first groups.
                self.store_groups(&row, &new_tables, &[], &start_lsns, next_group)?;
            }
            let tables = self.store.tables(&row.id)?;
            let mut removed = 0;
            for key in &remove {
                if let Some(t) = tables
                    .iter()
                    .find(|t| t.source_key.eq_ignore_ascii_case(key))
                {
                    self.store.delete_table(&row.id, &t.source_key)?;
                    removed += 1;
                }
            }
            let remaining = self.store.tables(&row.id)?;
            for g in self.store.groups(Some(&row.id))? {
                if !remaining.iter().any(|t| t.group_id == g.group_id) {
                    self.store.delete_group(&row.id, &g.group_id)?;
                }
            }
            // Only a change of the table set restarts the appliers' data paths. Throttles and
            // alert settings travel in heartbeat responses (captures enforce throttles live,
            // appliers see them in the unchanged-generation assignment), so a running stream
            // keeps going.
            if !new_tables.is_empty() || removed > 0 {
                self.bump_generations(&row.id)?;
            }
        }
        row.updated_us = self.now();
        self.store.update_task(&row)?;
        self.event(
            &row.id,
            "modify",
            &format!(
                "added {} table(s), removed {}; throttles and alerts updated",
                add.len(),
                remove.len()
            ),
        );
        if row.state == TaskState::Running as i32 {
            self.rebalance()?;
        }
        self.notify();
        Ok(self.task_info(&row))
    }

    pub async fn delete(&self, task_ref: &str, cleanup_source: bool) -> Result<()> {
        let (row, spec) = self.load(task_ref)?;
        if cleanup_source {
            let mut capture = self.capture(&spec).await?;
            let tables = self.store.tables(&row.id)?;
            for database in &spec.objects.databases {
                let refs = tables
                    .iter()
                    .filter_map(|t| pb::TablePlan::decode(t.plan.as_slice()).ok())
                    .filter_map(|p| p.source.and_then(|s| s.table))
                    .filter(|r| r.database.eq_ignore_ascii_case(database))
                    .collect();
                let removed = capture
                    .client
                    .cleanup_source(pb::CleanupSourceRequest {
                        source: Some(spec.source_connection(database)?),
                        tables: refs,
                        object_prefix: spec.incremental.object_prefix.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| capture.error("clean up the source", s))?
                    .into_inner()
                    .removed;
                tracing::info!(task = %row.name, database, removed = ?removed, "source cleaned up");
            }
        }
        let _guard = self.lifecycle.lock().await;
        self.store.delete_task(&row.id)?;
        {
            let mut rt = self.runtime.lock().unwrap();
            rt.rate_samples.remove(&row.id);
            rt.lag_alerted.remove(&row.id);
            rt.task_error_since.remove(&row.id);
        }
        tracing::info!(task = %row.name, "task deleted");
        self.update_task_gauges();
        self.notify();
        Ok(())
    }

    // ---- status ----------------------------------------------------------------------------

    pub fn status(&self, task_ref: &str) -> Result<pb::TaskStatus> {
        let (row, _) = self.load(task_ref)?;
        let now = self.now();
        let groups: HashMap<String, GroupRow> = self
            .store
            .groups(Some(&row.id))?
            .into_iter()
            .map(|g| (g.group_id.clone(), g))
            .collect();
        let mut tables = Vec::new();
        let (mut rows_done, mut rows_total, mut lag) = (0u64, 0u64, 0f64);
        let mut applied_lsn: Vec<u8> = Vec::new();
        for t in self.store.tables(&row.id)? {
            let schema = pb::TablePlan::decode(t.plan.as_slice())
                .ok()
                .and_then(|p| p.source);
            let source_columns = schema
                .as_ref()
                .map(|s| s.columns.iter().map(|c| c.name.clone()).collect())
                .unwrap_or_default();
            let source = schema.and_then(|s| s.table);
            let table_lag = table_lag_seconds(&t, now);
            lag = lag.max(table_lag);
            rows_done += t.rows_done;
            rows_total += t.rows_total.max(t.rows_done);
            if !t.applied_lsn.is_empty() && (applied_lsn.is_empty() || t.applied_lsn < applied_lsn)
            {
                applied_lsn = t.applied_lsn.clone();
            }
            tables.push(pb::TableStatus {
                source,
                target: t.target.clone(),
                phase: t.phase,
                rows_done: t.rows_done,
                rows_total: t.rows_total.max(t.rows_done),
                bytes_done: t.bytes_done,
                chunks_done: t.chunks_done,
                chunks_total: t.chunks_total,
                changes_applied: t.changes_applied,
                lag_seconds: table_lag,
                last_error: t.last_error.clone(),
                worker_id: groups
                    .get(&t.group_id)
                    .map(|g| g.worker_id.clone())
                    .unwrap_or_default(),
                source_columns,
            });
        }
        let eta_seconds = {
            let rt = self.runtime.lock().unwrap();
            match rt.rate_samples.get(&row.id) {
                Some((since, first_rows)) if rows_done > *first_rows && now > *since => {
                    let rate = (rows_done - first_rows) as f64 / ((now - since) as f64 / 1e6);
                    rows_total.saturating_sub(rows_done) as f64 / rate
                }
                _ => 0.0,
            }
        };
        let alerts = self
            .store
            .events(&row.id, 200)?
            .into_iter()
            .filter(|e| e.kind == "alert")
            .map(|e| e.message)
            .rev()
            .take(20)
            .collect();
        let mut task = self.task_info(&row);
        if row.state == TaskState::Running as i32 {
            // A failure being retried shows as the task's last error until the retry works.
            if let Some(e) = self.runtime.lock().unwrap().task_error_since.get(&row.id) {
                task.last_error = format!(
                    "{} failure, retrying for {} s: {}",
                    e.class,
                    (e.last_us - e.since_us) / 1_000_000,
                    e.message
                );
            }
        }
        Ok(pb::TaskStatus {
            task: Some(task),
            tables,
            rows_done,
            rows_total,
            eta_seconds,
            lag_seconds: lag,
            applied_lsn,
            alerts,
        })
    }

    pub fn list_workers(&self) -> Result<Vec<pb::WorkerInfo>> {
        let now = self.now();
        let groups = self.store.groups(None)?;
        Ok(self
            .store
            .workers()?
            .into_iter()
            .map(|w| pb::WorkerInfo {
                assignments: groups
                    .iter()
                    .filter(|g| g.worker_id == w.worker_id)
                    .map(|g| format!("{}/{}", g.task_id, g.group_id))
                    .collect(),
                alive: w.lease_expires_us > now,
                lease_expires_unix_micros: w.lease_expires_us,
                worker_id: w.worker_id,
                kind: w.kind,
                address: w.address,
            })
            .collect())
    }

    // ---- workers ---------------------------------------------------------------------------

    pub async fn register(&self, request: pb::RegisterRequest) -> Result<pb::RegisterResponse> {
        if request.kind != "capture" && request.kind != "apply" {
            return Err(CoordinatorError::InvalidArgument(format!(
                "kind '{}' is not a worker kind: use capture or apply",
                request.kind
            )));
        }
        let _guard = self.lifecycle.lock().await;
        let worker_id = if request.worker_id.is_empty() {
            format!(
                "{}-{}",
                request.kind,
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            )
        } else {
            request.worker_id.clone()
        };
        let now = self.now();
        let registered_us = self
            .store
            .worker(&worker_id)?
            .map(|w| w.registered_us)
            .unwrap_or(now);
        self.store.upsert_worker(&WorkerRow {
            worker_id: worker_id.clone(),
            kind: request.kind.clone(),
            address: request.address.clone(),
            lease_expires_us: now + self.lease_us(),
            registered_us,
        })?;
        tracing::info!(worker = %worker_id, kind = %request.kind, address = %request.address, "worker registered");
        if request.kind == "apply" {
            self.rebalance()?;
        }
        self.notify();
        Ok(pb::RegisterResponse {
            worker_id,
            lease_seconds: self.settings.lease_seconds,
        })
    }

    pub async fn heartbeat(&self, worker_id: &str) -> Result<pb::HeartbeatResponse> {
        let Some(mut worker) = self.store.worker(worker_id)? else {
            return Ok(pb::HeartbeatResponse {
                reregister: true,
                ..Default::default()
            });
        };
        let now = self.now();
        let was_expired = worker.lease_expires_us <= now;
        worker.lease_expires_us = now + self.lease_us();
        self.store.upsert_worker(&worker)?;
        if was_expired && worker.kind == "apply" {
            // Came back after its groups moved: it may get some again when the spread is uneven.
            let _guard = self.lifecycle.lock().await;
            self.rebalance()?;
        }
        let mut response = pb::HeartbeatResponse::default();
        let tasks: HashMap<String, TaskRow> = self
            .store
            .tasks()?
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect();
        let active = |t: &TaskRow| {
            t.state == TaskState::Running as i32 || t.state == TaskState::Paused as i32
        };
        if worker.kind == "apply" {
            for group in self
                .store
                .groups(None)?
                .into_iter()
                .filter(|g| g.worker_id == worker.worker_id)
            {
                let Some(task) = tasks.get(&group.task_id).filter(|t| active(t)) else {
                    continue;
                };
                match self.assignment(task, &group) {
                    Ok(a) => response.assignments.push(a),
                    Err(e) => {
                        let _guard = self.lifecycle.lock().await;
                        self.fail_task(&task.id, &format!("cannot hand out the task: {e}"))?;
                    }
                }
            }
        } else {
            for task in tasks.values().filter(|t| active(t)) {
                let Ok(spec) = TaskSpec::from_store_json(&task.spec_json) else {
                    continue;
                };
                if !spec.capture_address.is_empty()
                    && normalize_address(&spec.capture_address)
                        != normalize_address(&worker.address)
                {
                    continue;
                }
                response.throttles.push(pb::TaskThrottle {
                    task_id: task.id.clone(),
                    full: Some(spec.throttle.full_proto()),
                    incremental: Some(spec.throttle.incremental_proto()),
                });
            }
        }
        Ok(response)
    }

    fn assignment(&self, task: &TaskRow, group: &GroupRow) -> Result<pb::Assignment> {
        let spec = TaskSpec::from_store_json(&task.spec_json)?;
        let tables = self
            .store
            .tables(&task.id)?
            .into_iter()
            .filter(|t| t.group_id == group.group_id)
            .filter_map(|t| pb::TablePlan::decode(t.plan.as_slice()).ok())
            .collect();
        let capture_address = self.capture_address(&spec).unwrap_or_default();
        Ok(pb::Assignment {
            task_id: task.id.clone(),
            generation: group.generation,
            source: Some(spec.source_connection(&group.database)?),
            target: Some(spec.target_connection()?),
            capture_address,
            schema_sync: spec.sync.schema,
            full_sync: spec.sync.full,
            incremental_sync: spec.sync.incremental,
            incremental_mode: spec.incremental.mode.as_str().into(),
            start_lsn: group.start_lsn.clone(),
            tables,
            conflict_mode: spec.conflict_mode.as_str().into(),
            full_throttle: Some(spec.throttle.full_proto()),
            incremental_throttle: Some(spec.throttle.incremental_proto()),
            paused: task.state == TaskState::Paused as i32,
            chunk_rows: spec.chunk_rows,
            parallel_chunks: spec.parallel_chunks,
            group_id: group.group_id.clone(),
            defer_foreign_keys: task.defer_foreign_keys,
            poll_interval_ms: spec.incremental.poll_interval_ms,
            object_prefix: spec.incremental.object_prefix.clone(),
            on_retention_overrun: spec.incremental.on_retention_overrun.as_str().into(),
            default_collations: spec.objects.default_collations,
            sequences: pb::ReadSchemaResponse::decode(group.sequences.as_slice())
                .map(|r| r.sequences)
                .unwrap_or_default(),
            ..Default::default()
        })
    }

    /// Gives unowned groups of running or paused tasks to live appliers, then evens out the
    /// spread by moving one group at a time from the busiest to the idlest. Call under the
    /// lifecycle lock.
    fn rebalance(&self) -> Result<()> {
        let now = self.now();
        let live: Vec<String> = self
            .store
            .workers()?
            .into_iter()
            .filter(|w| w.kind == "apply" && w.lease_expires_us > now)
            .map(|w| w.worker_id)
            .collect();
        let active: Vec<String> = self
            .store
            .tasks()?
            .into_iter()
            .filter(|t| t.state == TaskState::Running as i32 || t.state == TaskState::Paused as i32)
            .map(|t| t.id)
            .collect();
        let mut groups: Vec<GroupRow> = self
            .store
            .groups(None)?
            .into_iter()
            .filter(|g| active.contains(&g.task_id))
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        let mut load: BTreeMap<String, usize> = live.iter().map(|w| (w.clone(), 0)).collect();
        for g in &groups {
            if let Some(n) = load.get_mut(&g.worker_id) {
                *n += 1;
            }
        }
        let mut changed = false;
        let unowned: Vec<usize> = (0..groups.len())
            .filter(|i| !load.contains_key(&groups[*i].worker_id))
            .collect();
        for i in unowned {
            let g = &mut groups[i];
            let (idlest, _) = load
                .iter()
                .min_by_key(|(w, n)| (**n, (*w).clone()))
                .expect("live appliers");
            let idlest = idlest.clone();
            tracing::info!(task = %g.task_id, group = %g.group_id, worker = %idlest, "group assigned");
            g.worker_id = idlest.clone();
            g.generation += 1;
            *load.get_mut(&idlest).expect("known worker") += 1;
            self.store.upsert_group(g)?;
            changed = true;
        }
        loop {
            let (busiest, most) = load
                .iter()
                .max_by_key(|(w, n)| (**n, std::cmp::Reverse((*w).clone())))
                .map(|(w, n)| (w.clone(), *n))
                .expect("live");
            let (idlest, least) = load
                .iter()
                .min_by_key(|(w, n)| (**n, (*w).clone()))
                .map(|(w, n)| (w.clone(), *n))
                .expect("live");
            if most <= least + 1 {
                break;
            }
            let Some(g) = groups.iter_mut().rev().find(|g| g.worker_id == busiest) else {
                break;
            };
            tracing::info!(task = %g.task_id, group = %g.group_id, from = %busiest, to = %idlest, "group moved to even out appliers");
            g.worker_id = idlest.clone();
            g.generation += 1;
            self.store.upsert_group(g)?;
            *load.get_mut(&busiest).expect("known") -= 1;
            *load.get_mut(&idlest).expect("known") += 1;
            changed = true;
        }
        if changed {
            self.notify();
        }
        Ok(())
    }

    /// Takes groups away from appliers whose lease expired and hands them to live ones.
    pub async fn expire_leases(&self) -> Result<()> {
        let _guard = self.lifecycle.lock().await;
        let now = self.now();
        let expired: Vec<WorkerRow> = self
            .store
            .workers()?
            .into_iter()
            .filter(|w| w.kind == "apply" && w.lease_expires_us <= now)
            .collect();
        for w in &expired {
            for mut g in self
                .store
                .groups(None)?
                .into_iter()
                .filter(|g| g.worker_id == w.worker_id)
            {
                tracing::warn!(worker = %w.worker_id, task = %g.task_id, group = %g.group_id, "applier lease expired; moving its group");
                self.event(
                    &g.task_id,
                    "worker",
                    &format!(
                        "applier {} lease expired; group {} moves",
                        w.worker_id, g.group_id
                    ),
                );
                g.worker_id.clear();
                g.generation += 1;
                self.store.upsert_group(&g)?;
            }
        }
        self.rebalance()
    }

    // ---- progress, retry windows and alerts -----------------------------------------------

    pub async fn report_progress(&self, request: pb::ReportProgressRequest) -> Result<()> {
        let worker = self
            .store
            .worker(&request.worker_id)?
            .ok_or_else(|| CoordinatorError::UnknownWorker(request.worker_id.clone()))?;
        let (task, spec) = self.load(&request.task_id)?;
        let groups: HashMap<String, GroupRow> = self
            .store
            .groups(Some(&task.id))?
            .into_iter()
            .map(|g| (g.group_id.clone(), g))
            .collect();
        let mut tables: HashMap<String, TableRow> = self
            .store
            .tables(&task.id)?
            .into_iter()
            .map(|t| (t.source_key.to_lowercase(), t))
            .collect();
        let now = self.now();
        let mut updated = Vec::with_capacity(request.tables.len());
        let mut to_fail: Option<String> = None;
        for p in &request.tables {
            let key = p.source.as_ref().map(source_key).unwrap_or_default();
            let Some(t) = tables.get_mut(&key.to_lowercase()) else {
                return Err(CoordinatorError::InvalidArgument(format!(
                    "task {} has no table {key}",
                    task.name
                )));
            };
            let owner = groups
                .get(&t.group_id)
                .map(|g| g.worker_id.as_str())
                .unwrap_or_default();
            if owner != worker.worker_id {
                return Err(CoordinatorError::NotOwner {
                    worker: worker.worker_id.clone(),
                    task: task.name.clone(),
                    table: key,
                });
            }
            let resnapshot = p.phase == TablePhase::Resnapshot as i32;
            let entering_resnapshot = resnapshot && t.phase != TablePhase::Resnapshot as i32;
            t.phase = p.phase;
            t.rows_done = p.rows_done;
            t.rows_total = if p.rows_total > 0 {
                p.rows_total
            } else {
                t.rows_total
            };
            t.bytes_done = p.bytes_done;
            t.chunks_done = p.chunks_done;
            t.chunks_total = p.chunks_total;
            t.changes_applied = p.changes_applied;
            if !p.applied_lsn.is_empty() {
                t.applied_lsn = p.applied_lsn.clone();
            }
            if p.applied_source_time_unix_micros > 0 {
                t.applied_source_time_us = p.applied_source_time_unix_micros;
            }
            t.updated_us = now;
            if let Some(schema) = &p.source_schema {
                if let Some(columns) = follow_source_schema(t, schema) {
                    self.event(
                        &task.id,
                        "schema",
                        &format!("table {key} follows a source schema change; its columns now: {columns}"),
                    );
                }
            }
            let secrets = secrets_of(&spec);
            if p.error.is_empty() {
                t.error_class.clear();
                t.error_since_us = 0;
            } else {
                t.last_error = redact(
                    &p.error,
                    &secrets.iter().map(String::as_str).collect::<Vec<_>>(),
                );
            }
            if resnapshot && !p.error.is_empty() {
                // A re-snapshot after a retention overrun is reported, not retried: its note
                // must not run the retry window out while the table reloads.
                t.error_class.clear();
                t.error_since_us = 0;
                if entering_resnapshot {
                    self.alert(
                        &task,
                        &spec,
                        "table_resnapshot",
                        &format!(
                            "table {key}: change data is gone from the source; re-snapshotting it while the other tables keep streaming ({})",
                            t.last_error
                        ),
                    );
                }
            } else if !p.error.is_empty() {
                let class = error_class(&p.error_class, p.error_transient);
                metrics::counter!(m::ERRORS, "task" => task.name.clone(), "table" => key.clone(), "class" => class.clone()).increment(1);
                if class == "definite" {
                    t.phase = TablePhase::Failed as i32;
                    t.error_class = class;
                    self.alert(
                        &task,
                        &spec,
                        "table_failed",
                        &format!("table {key} failed: {}", t.last_error),
                    );
                } else {
                    if t.error_class != class || t.error_since_us == 0 {
                        t.error_class = class;
                        t.error_since_us = now;
                    }
                    if let Some(reason) =
                        window_exceeded(&spec, &t.error_class, t.error_since_us, now)
                    {
                        to_fail = Some(format!("table {key}: {reason}: {}", t.last_error));
                    }
                }
            }
            let labels = [("task", task.name.clone()), ("table", key.clone())];
            metrics::gauge!(m::TABLE_ROWS, &labels).set(t.rows_done as f64);
            metrics::gauge!(m::TABLE_BYTES, &labels).set(t.bytes_done as f64);
            metrics::gauge!(m::TABLE_CHANGES, &labels).set(t.changes_applied as f64);
            metrics::gauge!(m::TABLE_LAG, &labels).set(table_lag_seconds(t, now));
            updated.push(t.clone());
        }
        self.store.upsert_tables(&updated)?;
        {
            let mut rt = self.runtime.lock().unwrap();
            let done: u64 = tables.values().map(|t| t.rows_done).sum();
            rt.rate_samples
                .entry(task.id.clone())
                .or_insert((now, done));
            if request.task_error.is_empty() {
                rt.task_error_since.remove(&task.id);
            } else {
                let class = error_class(&request.task_error_class, request.task_error_transient);
                let message = redact(
                    &request.task_error,
                    &secrets_of(&spec)
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                );
                if class == "definite" {
                    to_fail = Some(message);
                } else {
                    let entry = rt
                        .task_error_since
                        .entry(task.id.clone())
                        .or_insert_with(|| Episode {
                            class: class.clone(),
                            since_us: now,
                            last_us: now,
                            message: String::new(),
                        });
                    if entry.class != class {
                        entry.class = class.clone();
                        entry.since_us = now;
                    }
                    entry.last_us = now;
                    if let Some(reason) = window_exceeded(&spec, &entry.class, entry.since_us, now)
                    {
                        to_fail = Some(format!("{reason}: {message}"));
                    }
                    entry.message = message;
                }
            }
        }
        if let Some(reason) = to_fail {
            let _guard = self.lifecycle.lock().await;
            self.fail_task(&task.id, &reason)?;
        } else if !spec.sync.incremental
            && task.state == TaskState::Running as i32
            && tables.values().all(|t| t.phase == TablePhase::Done as i32)
        {
            let _guard = self.lifecycle.lock().await;
            let (mut row, _) = self.load(&task.id)?;
            if row.state == TaskState::Running as i32 {
                self.set_state(&mut row, TaskState::Completed, None)?;
            }
        }
        self.notify();
        Ok(())
    }

    /// Fails a task with its reason and alerts. Call under the lifecycle lock.
    fn fail_task(&self, task_id: &str, reason: &str) -> Result<()> {
        let (mut row, spec) = self.load(task_id)?;
        if row.state == TaskState::Failed as i32 {
            return Ok(());
        }
        self.set_state(&mut row, TaskState::Failed, Some(reason.to_string()))?;
        self.bump_generations(&row.id)?;
        if spec.alerts.on_failure {
            self.alert(
                &row,
                &spec,
                "task_failed",
                &format!("task {} failed: {reason}", row.name),
            );
        }
        Ok(())
    }

    fn alert(&self, task: &TaskRow, spec: &TaskSpec, kind: &str, message: &str) {
        self.event(&task.id, "alert", message);
        metrics::counter!(m::ALERTS, "task" => task.name.clone(), "kind" => kind.to_string())
            .increment(1);
        if spec.alerts.log {
            tracing::warn!(target: "dbsync_alert", task = %task.name, environment = %spec.environment, kind, "{message}");
        }
        if let Some(url) = spec.alerts.webhook_url.clone() {
            let (task_id, name, environment, kind, message) = (
                task.id.clone(),
                task.name.clone(),
                spec.environment.clone(),
                kind.to_string(),
                message.to_string(),
            );
            let at = self.now();
            tokio::spawn(async move {
                let payload = AlertPayload {
                    task_id: &task_id,
                    task_name: &name,
                    environment: &environment,
                    kind: &kind,
                    message: &message,
                    unix_micros: at,
                };
                if let Err(e) = post_webhook(&url, &payload).await {
                    tracing::warn!(task = %name, error = %e, "alert webhook failed");
                }
            });
        }
    }

    /// Periodic work: lease expiry, retry windows of tables that stopped reporting, lag alerts.
    pub async fn tick(&self) -> Result<()> {
        self.expire_leases().await?;
        let now = self.now();
        let workers = self.store.workers()?;
        for kind in ["capture", "apply"] {
            let live = workers
                .iter()
                .filter(|w| w.kind == kind && w.lease_expires_us > now)
                .count();
            metrics::gauge!(m::WORKERS, "kind" => kind).set(live as f64);
        }
        for task in self.store.tasks()? {
            if task.state != TaskState::Running as i32 {
                continue;
            }
            let Ok(spec) = TaskSpec::from_store_json(&task.spec_json) else {
                continue;
            };
            let tables = self.store.tables(&task.id)?;
            if let Some((t, reason)) =
                tables
                    .iter()
                    .filter(|t| t.error_since_us > 0)
                    .find_map(|t| {
                        window_exceeded(&spec, &t.error_class, t.error_since_us, now)
                            .map(|r| (t, r))
                    })
            {
                let _guard = self.lifecycle.lock().await;
                self.fail_task(
                    &task.id,
                    &format!("table {}: {reason}: {}", t.source_key, t.last_error),
                )?;
                continue;
            }
            if let Some(threshold) = spec.alerts.lag_seconds {
                let lag = tables
                    .iter()
                    .map(|t| table_lag_seconds(t, now))
                    .fold(0.0, f64::max);
                let was = self
                    .runtime
                    .lock()
                    .unwrap()
                    .lag_alerted
                    .get(&task.id)
                    .copied()
                    .unwrap_or(false);
                if !was && lag > threshold as f64 {
                    self.runtime
                        .lock()
                        .unwrap()
                        .lag_alerted
                        .insert(task.id.clone(), true);
                    self.alert(
                        &task,
                        &spec,
                        "lag_exceeded",
                        &format!("task {} lag {lag:.1} s exceeds {threshold} s", task.name),
                    );
                } else if was && lag <= threshold as f64 {
                    self.runtime
                        .lock()
                        .unwrap()
                        .lag_alerted
                        .insert(task.id.clone(), false);
                    self.alert(
                        &task,
                        &spec,
                        "lag_recovered",
                        &format!("task {} lag back to {lag:.1} s", task.name),
                    );
                }
                metrics::gauge!(m::TASK_LAG, "task" => task.name.clone()).set(lag);
            }
        }
        Ok(())
    }

    fn update_task_gauges(&self) {
        let Ok(tasks) = self.store.tasks() else {
            return;
        };
        for state in [
            TaskState::Created,
            TaskState::Prechecked,
            TaskState::Running,
            TaskState::Paused,
            TaskState::Stopped,
            TaskState::Failed,
            TaskState::Completed,
        ] {
            let n = tasks.iter().filter(|t| t.state == state as i32).count();
            metrics::gauge!(m::TASKS, "state" => state_name(state as i32)).set(n as f64);
        }
    }

    // ---- verification ----------------------------------------------------------------------

    /// Verifies the task's tables with `dbsync-verify`: counts, per-range canonical
    /// checksums, differing rows, optional repair. Incremental mode waits out the current lag.
    /// Tasks with `sync.verify_after_full` whose every table has finished its full sync and
    /// whose verification has not started yet; they are marked as started. (After a
    /// coordinator restart a task is verified once more.)
    pub fn due_verifications(&self) -> Result<Vec<String>> {
        let mut due = Vec::new();
        for task in self.store.tasks()? {
            let running = task.state == TaskState::Running as i32
                || task.state == TaskState::Completed as i32;
            if !running
                || self
                    .runtime
                    .lock()
                    .unwrap()
                    .verified_after_full
                    .contains(&task.id)
            {
                continue;
            }
            let (_, spec) = self.load(&task.id)?;
            if !(spec.sync.full && spec.sync.verify_after_full) {
                continue;
            }
            let tables = self.store.tables(&task.id)?;
            let loaded = |p: i32| p == TablePhase::Streaming as i32 || p == TablePhase::Done as i32;
            if !tables.is_empty() && tables.iter().all(|t| loaded(t.phase)) {
                self.runtime
                    .lock()
                    .unwrap()
                    .verified_after_full
                    .insert(task.id.clone());
                due.push(task.id);
            }
        }
        Ok(due)
    }

    /// Runs the verification after full sync of one task and records its result in the task's
    /// status (an alert when rows differ or verification could not run).
    pub async fn verify_after_full_sync(&self, task_id: &str) {
        let Ok((row, spec)) = self.load(task_id) else {
            return;
        };
        let mode = if spec.sync.incremental {
            "incremental"
        } else {
            "full"
        };
        let request = pb::VerifyTaskRequest {
            task_id: task_id.to_string(),
            mode: mode.to_string(),
            ..Default::default()
        };
        match self.verify(request).await {
            Ok(report) if report.equal => {
                let rows: u64 = report.tables.iter().map(|t| t.rows_compared).sum();
                let message = format!(
                    "verification after full sync: equal ({} tables, {rows} rows compared)",
                    report.tables.len()
                );
                tracing::info!(task = %row.name, "{message}");
                self.event(&row.id, "alert", &message);
            }
            Ok(report) => {
                let differing: Vec<String> = report
                    .tables
                    .iter()
                    .filter(|t| !t.equal)
                    .map(|t| format!("{} ({} differences)", t.target, t.differences.len()))
                    .collect();
                let message = format!(
                    "verification after full sync: rows differ in {}; run `dbsync verify {}` for the rows",
                    differing.join(", "),
                    row.name
                );
                self.alert(&row, &spec, "verify_mismatch", &message);
            }
            Err(e) => {
                let message = format!("verification after full sync could not run: {e}");
                self.alert(&row, &spec, "verify_failed", &message);
            }
        }
        self.notify();
    }

    pub async fn verify(&self, request: pb::VerifyTaskRequest) -> Result<pb::VerifyReport> {
        self.verify_with_progress(request, |_| {}).await
    }

    /// [`Coordinator::verify`], telling `progress` where it is (the streaming rpc's events).
    pub async fn verify_with_progress(
        &self,
        request: pb::VerifyTaskRequest,
        progress: impl FnMut(dbsync_verify::VerifyProgress) + Send,
    ) -> Result<pb::VerifyReport> {
        let (row, spec) = self.load(&request.task_id)?;
        let address = self.capture_address(&spec)?;
        let now = self.now();
        let mut plans = Vec::new();
        let mut lag = 0.0f64;
        for t in self.store.tables(&row.id)? {
            if !request.tables.is_empty()
                && !request
                    .tables
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(&t.source_key))
            {
                continue;
            }
            lag = lag.max(table_lag_seconds(&t, now));
            if let Ok(plan) = pb::TablePlan::decode(t.plan.as_slice()) {
                plans.push(plan);
            }
        }
        let database = spec.objects.databases.first().cloned().unwrap_or_default();
        let lag = Duration::from_secs_f64(lag);
        let fail = |e: dbsync_verify::VerifyError| {
            let code = match dbsync_core::error::Classify::class(&e) {
                dbsync_core::error::ErrorClass::Definite => tonic::Code::FailedPrecondition,
                _ => tonic::Code::Unavailable,
            };
            let secrets = secrets_of(&spec);
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            CoordinatorError::Capture {
                address: address.clone(),
                operation: "verify the task",
                message: redact(&e.to_string(), &secrets),
                code,
            }
        };
        let mut verify = dbsync_verify::VerifyRequest::new(
            &row.id,
            spec.source_connection(&database)?,
            spec.target_connection()?,
            &address,
            plans,
        );
        verify.capture_token = self.settings.capture_token.clone();
        verify.mode =
            dbsync_verify::Mode::parse(&request.mode, request.sample_percent, lag).map_err(fail)?;
        verify.repair = request.repair;
        verify.throttle = spec.throttle.full_proto();
        let report = dbsync_verify::verify(verify, progress)
            .await
            .map_err(fail)?;
        Ok(report.into())
    }
}

/// A connected capture client and the secrets to scrub from its error messages.
struct Capture {
    address: String,
    client: CaptureServiceClient<InterceptedService<Channel, crate::ClientToken>>,
    secrets: Vec<String>,
}

impl Capture {
    fn error(&self, operation: &'static str, status: tonic::Status) -> CoordinatorError {
        let secrets: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        CoordinatorError::Capture {
            address: self.address.clone(),
            operation,
            message: redact(status.message(), &secrets),
            code: status.code(),
        }
    }
}

fn secrets_of(spec: &TaskSpec) -> Vec<String> {
    [
        spec.source.password.resolve("s").ok(),
        spec.target.password.resolve("t").ok(),
    ]
    .into_iter()
    .flatten()
    .map(|s| s.expose().to_string())
    .collect()
}

fn error_class(explicit: &str, transient: bool) -> String {
    match explicit {
        "connection" | "transient" | "definite" => explicit.to_string(),
        _ if transient => "transient".into(),
        _ => "definite".into(),
    }
}

/// The reason to give up when a failure episode of `class` has lasted beyond its window.
fn window_exceeded(spec: &TaskSpec, class: &str, since_us: i64, now_us: i64) -> Option<String> {
    let (minutes, what) = match class {
        "connection" => (spec.retry.connection_minutes, "connection failures"),
        "transient" => (spec.retry.other_minutes, "failures"),
        _ => return None,
    };
    let elapsed = now_us - since_us;
    (since_us > 0 && elapsed > i64::from(minutes) * 60_000_000).then(|| {
        format!("{what} kept recurring for more than {minutes} minutes (the retry window)")
    })
}

/// Puts the source schema that apply followed (after a source schema change) into the
/// table's plan, so later assignments, status and verify use the table's current columns.
/// Returns the new column list when the plan changed.
fn follow_source_schema(t: &mut TableRow, schema: &pb::TableSchema) -> Option<String> {
    let mut plan = pb::TablePlan::decode(t.plan.as_slice()).ok()?;
    if plan.source.as_ref() == Some(schema) {
        return None;
    }
    plan.source = Some(schema.clone());
    t.plan = plan.encode_to_vec();
    let columns: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
    Some(columns.join(", "))
}

fn table_lag_seconds(t: &TableRow, now_us: i64) -> f64 {
    let incremental =
        t.phase == TablePhase::CatchingUp as i32 || t.phase == TablePhase::Streaming as i32;
    if incremental && t.applied_source_time_us > 0 {
        ((now_us - t.applied_source_time_us) as f64 / 1e6).max(0.0)
    } else {
        0.0
    }
}
