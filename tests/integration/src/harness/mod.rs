//! The end-to-end environment: stand-in, PostgreSQL, coordinator, capture and appliers, each
//! on 127.0.0.1 over its real protocol, and the helpers tests use to drive and check a task.

pub mod compare;
pub mod cpu;
pub mod lag;
pub mod retention;
pub mod service;
pub mod standin;
pub mod tasks;
pub mod wait;
pub mod workload;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{anyhow, Context};
use dbsync_pgtest::PgCluster;
use dbsync_proto::v1 as pb;
use dbsync_proto::v1::coordinator_service_client::CoordinatorServiceClient;
use dbsync_sqlserver_sim::sample::{SAMPLE_DATABASE, SAMPLE_TABLES, UNSUPPORTED_TYPE_TABLES};
use tonic::transport::Channel;

pub use compare::{compare_tables, Case, Comparison, TableComparison, TableMapping};
pub use lag::{measure_lag, LagStats};
pub use service::{Service, ServiceKind};
pub use standin::{CdcTiming, StandIn};
pub use wait::wait_for;

/// What to start.
#[derive(Clone, Debug)]
pub struct EnvOptions {
    /// Rows per ordinary table of the sample database `shop`; `None`: no sample database.
    pub sample_rows: Option<usize>,
    pub appliers: usize,
    pub cdc: CdcTiming,
    /// Coordinator lease: how long a silent worker keeps its tables.
    pub lease_seconds: u32,
    /// Run the services as child processes of the `dbsync-*` binaries in this directory
    /// (per-service memory); `None`: in-process.
    pub service_binaries: Option<std::path::PathBuf>,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            sample_rows: Some(200),
            appliers: 1,
            cdc: CdcTiming::Job(Duration::from_millis(100)),
            lease_seconds: 4,
            service_binaries: None,
        }
    }
}

/// Everything one end-to-end test runs against. Dropping it kills the services.
// Fields drop in declaration order: appliers go before the capture service they stream
// from, so a finished environment does not log appliers losing their capture.
pub struct TestEnv {
    pub appliers: Vec<Service>,
    pub capture: Service,
    pub coordinator: Service,
    pub standin: StandIn,
    pub pg: &'static PgCluster,
    /// The (fresh, empty) target database of this environment.
    pub target_db: String,
    _dir: tempfile::TempDir,
}

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

impl TestEnv {
    pub async fn start(options: EnvOptions) -> anyhow::Result<TestEnv> {
        init_tracing();
        let standin = StandIn::start(options.sample_rows, options.cdc).await?;
        let pg = tokio::task::spawn_blocking(PgCluster::shared).await?;
        let target_db = format!(
            "target_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        pg.create_database(&target_db)
            .await
            .context("create the target database")?;
        let dir = tempfile::tempdir()?;
        let any: std::net::SocketAddr = "127.0.0.1:0".parse()?;
        let start = |name: String, kind: ServiceKind| {
            let binaries = options.service_binaries.clone();
            async move {
                match binaries {
                    Some(dir) => Service::start_process(name, kind, dir).await,
                    None => Service::start(name, kind, any).await,
                }
            }
        };
        let store = dir.path().join("coordinator.db");
        let coordinator = start(
            "coordinator".into(),
            ServiceKind::Coordinator {
                store,
                lease_seconds: options.lease_seconds,
            },
        )
        .await?;
        let capture = start(
            "capture".into(),
            ServiceKind::Capture {
                coordinator: coordinator.url(),
            },
        )
        .await?;
        let mut appliers = Vec::new();
        for n in 0..options.appliers.max(1) {
            let kind = ServiceKind::Apply {
                coordinator: coordinator.url(),
                worker_id: format!("apply-{}", n + 1),
            };
            appliers.push(start(format!("apply-{}", n + 1), kind).await?);
        }
        let env = TestEnv {
            standin,
            pg,
            target_db,
            coordinator,
            capture,
            appliers,
            _dir: dir,
        };
        env.wait_workers_registered().await?;
        Ok(env)
    }

    /// A gRPC client of the coordinator.
    pub async fn client(&self) -> anyhow::Result<CoordinatorServiceClient<Channel>> {
        let channel = Channel::from_shared(self.coordinator.url())?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .context("connect to the coordinator")?;
        Ok(CoordinatorServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
    }

    /// A connection to the target database.
    pub async fn target(&self) -> anyhow::Result<tokio_postgres::Client> {
        Ok(self.pg.connect(&self.target_db).await?)
    }

    /// The part of a task file that says where things are: name, source, target, capture.
    /// Tests append `sync:`, `objects:` and other sections.
    pub fn task_base(&self, name: &str) -> String {
        format!(
            "name: {name}\nenvironment: test\n\
             source: {{ host: 127.0.0.1, port: {sport}, user: {suser}, password: \"{spass}\" }}\n\
             target: {{ host: {thost}, port: {tport}, user: {tuser}, password: unused, database: {tdb}, sslmode: disable }}\n\
             capture_address: {capture}\n",
            sport = self.standin.addr.port(),
            suser = self.standin.user,
            spass = self.standin.password,
            thost = self.pg.host(),
            tport = self.pg.port(),
            tuser = self.pg.superuser(),
            tdb = self.target_db,
            capture = self.capture.url(),
        )
    }

    /// A task over every supported table of the sample database with the given phases.
    pub fn sample_task(&self, name: &str, full: bool, incremental: bool) -> String {
        self.sample_task_with(name, full, incremental, &[], "", "")
    }

    /// [`TestEnv::sample_task`] excluding more tables (`db.schema.table`), with more lines
    /// inside `objects:` (each indented by two
    /// spaces, e.g. `"  tables:\n    shop.sales.orders: { where: \"status = 'paid'\" }\n"`)
    /// and more top-level sections.
    pub fn sample_task_with(
        &self,
        name: &str,
        full: bool,
        incremental: bool,
        exclude: &[&str],
        objects: &str,
        extra: &str,
    ) -> String {
        let excluded: Vec<String> = UNSUPPORTED_TYPE_TABLES
            .iter()
            .map(|(s, t)| format!("\"{SAMPLE_DATABASE}.{s}.{t}\""))
            .chain(exclude.iter().map(|t| format!("\"{t}\"")))
            .collect();
        format!(
            "{}sync: {{ schema: true, full: {full}, incremental: {incremental} }}\n\
             incremental: {{ mode: cdc-polling, poll_interval_ms: 100 }}\n\
             objects:\n  databases: [{SAMPLE_DATABASE}]\n  exclude: [{}]\n{objects}\
             chunk_rows: 1000\nparallel_chunks: 4\n{extra}",
            self.task_base(name),
            excluded.join(", "),
        )
    }

    /// Creates a task from its YAML text.
    pub async fn create_task(&self, spec: &str) -> Result<pb::TaskInfo, tonic::Status> {
        let mut client = self
            .client()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        client
            .create_task(pb::CreateTaskRequest {
                spec: spec.to_string(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn start_task(&self, task: &str) -> Result<pb::TaskInfo, tonic::Status> {
        let mut client = self
            .client()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        client
            .start_task(pb::TaskRef {
                task_id: task.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Creates and starts a task; returns its id.
    pub async fn run_task(&self, spec: &str) -> anyhow::Result<String> {
        let info = self
            .create_task(spec)
            .await
            .map_err(|s| anyhow!("create task: {}", s.message()))?;
        self.start_task(&info.task_id)
            .await
            .map_err(|s| anyhow!("start task: {}", s.message()))?;
        Ok(info.task_id)
    }

    pub async fn status(&self, task: &str) -> anyhow::Result<pb::TaskStatus> {
        let mut client = self.client().await?;
        Ok(client
            .get_task_status(pb::TaskRef {
                task_id: task.into(),
            })
            .await?
            .into_inner())
    }

    /// Waits until the task is in `state`; fails at once if it fails instead.
    pub async fn wait_task_state(
        &self,
        task: &str,
        state: pb::TaskState,
        timeout: Duration,
    ) -> anyhow::Result<pb::TaskStatus> {
        wait_for(&format!("task {task} to be {state:?}"), timeout, || async {
            let status = self.status(task).await?;
            let info = status.task.clone().unwrap_or_default();
            if info.state == state as i32 {
                return Ok(Ok(status));
            }
            if info.state == pb::TaskState::Failed as i32 && state != pb::TaskState::Failed {
                return Err(anyhow!(
                    "task {task} failed: {}\n{}",
                    info.last_error,
                    describe_tables(&status)
                ));
            }
            Ok(Err(format!(
                "state {:?}, error {:?}\n{}",
                pb::TaskState::try_from(info.state),
                info.last_error,
                describe_tables(&status)
            )))
        })
        .await
    }

    /// Waits until every table of the task is in one of `phases`.
    pub async fn wait_phases(
        &self,
        task: &str,
        phases: &[pb::TablePhase],
        timeout: Duration,
    ) -> anyhow::Result<pb::TaskStatus> {
        wait_for(
            &format!("every table of {task} in {phases:?}"),
            timeout,
            || async {
                let status = self.status(task).await?;
                let info = status.task.clone().unwrap_or_default();
                if info.state == pb::TaskState::Failed as i32 {
                    return Err(anyhow!(
                        "task {task} failed: {}\n{}",
                        info.last_error,
                        describe_tables(&status)
                    ));
                }
                let done = !status.tables.is_empty()
                    && status
                        .tables
                        .iter()
                        .all(|t| phases.iter().any(|p| *p as i32 == t.phase));
                Ok(if done {
                    Ok(status)
                } else {
                    Err(describe_tables(&status))
                })
            },
        )
        .await
    }

    /// Waits until the applied position of every table reached the source's max LSN now.
    pub async fn wait_caught_up(
        &self,
        task: &str,
        database: &str,
        timeout: Duration,
    ) -> anyhow::Result<pb::TaskStatus> {
        let goal = self.standin.max_lsn(database).unwrap_or_default();
        wait_for(
            &format!("task {task} to apply up to the source max LSN"),
            timeout,
            || async {
                let status = self.status(task).await?;
                let info = status.task.clone().unwrap_or_default();
                if info.state == pb::TaskState::Failed as i32 {
                    return Err(anyhow!("task {task} failed: {}", info.last_error));
                }
                let streaming = status
                    .tables
                    .iter()
                    .all(|t| t.phase == pb::TablePhase::Streaming as i32);
                Ok(
                    if streaming && !status.applied_lsn.is_empty() && status.applied_lsn >= goal {
                        Ok(status)
                    } else {
                        Err(format!(
                            "applied {} < {}\n{}",
                            hex(&status.applied_lsn),
                            hex(&goal),
                            describe_tables(&status)
                        ))
                    },
                )
            },
        )
        .await
    }

    /// The mappings of every table the task planned (source → target from the task status),
    /// with lower-cased column names.
    pub async fn task_mappings(&self, task: &str) -> anyhow::Result<Vec<TableMapping>> {
        let status = self.status(task).await?;
        let mut mappings = Vec::new();
        for t in &status.tables {
            let source = t
                .source
                .clone()
                .ok_or_else(|| anyhow!("table status without source"))?;
            let (schema, table) = t
                .target
                .split_once('.')
                .ok_or_else(|| anyhow!("target {} is not schema.table", t.target))?;
            let mut m = TableMapping::lower(&source.database, &source.schema, &source.name);
            m.target_schema = schema.trim_matches('"').to_string();
            m.target_table = table.trim_matches('"').to_string();
            mappings.push(m);
        }
        mappings.sort_by_key(|m| m.name());
        Ok(mappings)
    }

    /// Compares source and target of `mappings` row by row.
    pub async fn compare(&self, mappings: &[TableMapping]) -> anyhow::Result<Comparison> {
        let mut source = self.standin.connect("master").await?;
        let target = self.target().await?;
        compare_tables(&mut source, &target, mappings).await
    }

    /// Polls the comparison until source and target are equal (changes still flowing in are
    /// expected to converge) or the deadline passes; the error carries the last report.
    pub async fn wait_equal(
        &self,
        mappings: &[TableMapping],
        timeout: Duration,
    ) -> anyhow::Result<Comparison> {
        wait_for("target to equal source row by row", timeout, || async {
            let comparison = match self.compare(mappings).await {
                Ok(c) => c,
                // A column the source has and the target does not have yet: a followed schema
                // change is still on its way, not a difference to give up on.
                Err(e) if undefined_column(&e) => return Ok(Err(format!("{e:#}"))),
                Err(e) => return Err(e),
            };
            Ok(if comparison.equal() {
                Ok(comparison)
            } else {
                Err(comparison.report())
            })
        })
        .await
    }

    /// Waits until the coordinator lists the capture and every applier as alive.
    pub async fn wait_workers_registered(&self) -> anyhow::Result<()> {
        let wanted = 1 + self.appliers.iter().filter(|a| a.is_running()).count();
        wait_for(
            "capture and appliers to register",
            Duration::from_secs(30),
            || async {
                let mut client = self.client().await?;
                let workers = client
                    .list_workers(pb::ListWorkersRequest {})
                    .await?
                    .into_inner()
                    .workers;
                let alive = workers.iter().filter(|w| w.alive).count();
                Ok(if alive >= wanted {
                    Ok(())
                } else {
                    Err(format!("{alive} of {wanted} alive: {workers:?}"))
                })
            },
        )
        .await
    }
}

/// Sample tables without a primary key or a unique index on NOT NULL columns: cdc-polling
/// cannot apply their updates and deletes (the hybrid mode handles them).
pub const KEYLESS_SAMPLE_TABLES: &[&str] = &["shop.sales.audit_log"];

/// The sample tables dbsync supports, as `(schema, table)`.
pub fn supported_sample_tables() -> Vec<(&'static str, &'static str)> {
    SAMPLE_TABLES
        .iter()
        .copied()
        .filter(|t| !UNSUPPORTED_TYPE_TABLES.contains(t))
        .collect()
}

/// One line per table: phase, rows, changes, worker, error.
pub fn describe_tables(status: &pb::TaskStatus) -> String {
    status
        .tables
        .iter()
        .map(|t| {
            let source = t.source.clone().unwrap_or_default();
            format!(
                "  {}.{} → {}: {:?} rows {}/{} chunks {}/{} changes {} worker {} {}",
                source.schema,
                source.name,
                t.target,
                pb::TablePhase::try_from(t.phase).unwrap_or(pb::TablePhase::Unspecified),
                t.rows_done,
                t.rows_total,
                t.chunks_done,
                t.chunks_total,
                t.changes_applied,
                t.worker_id,
                t.last_error
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Logs to stderr at `RUST_LOG` (default: warnings), once per process.
pub fn init_tracing() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let filter =
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Whether an error comes from PostgreSQL naming a column that does not exist.
fn undefined_column(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(|pg| pg.code())
            == Some(&tokio_postgres::error::SqlState::UNDEFINED_COLUMN)
    })
}
