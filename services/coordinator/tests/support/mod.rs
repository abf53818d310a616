//! Test harness: the coordinator served in-process on 127.0.0.1:0 with a SQLite store in a temp
//! dir and a manual clock; a small CaptureService double with a fixed catalog that records the
//! calls it receives; helpers for fake workers (plain WorkerService clients).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dbsync_coordinator::{Coordinator, EngineSettings, ManualClock};
use dbsync_proto::v1 as pb;
use dbsync_proto::v1::capture_service_server::{CaptureService, CaptureServiceServer};
use dbsync_proto::v1::coordinator_service_client::CoordinatorServiceClient;
use dbsync_proto::v1::worker_service_client::WorkerServiceClient;
use dbsync_telemetry::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

pub const LEASE_SECONDS: u32 = 10;

pub struct Server {
    pub url: String,
    pub clock: Arc<ManualClock>,
    pub shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Serves a coordinator on the store file `store` (reopened across restarts).
    pub async fn start(
        store: &std::path::Path,
        token: Option<&str>,
        clock: Arc<ManualClock>,
    ) -> Server {
        Server::start_on(&store.to_string_lossy(), token, clock).await
    }

    /// Serves a coordinator on `store`: a SQLite path or a PostgreSQL URL.
    pub async fn start_on(store: &str, token: Option<&str>, clock: Arc<ManualClock>) -> Server {
        Server::start_with_lease(store, token, clock, LEASE_SECONDS).await
    }

    /// [`Server::start_on`] with worker leases of `lease_seconds`.
    pub async fn start_with_lease(
        store: &str,
        token: Option<&str>,
        clock: Arc<ManualClock>,
        lease_seconds: u32,
    ) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let store = {
            let store = store.to_string();
            tokio::task::spawn_blocking(move || dbsync_coordinator::open_store(&store))
                .await
                .unwrap()
                .unwrap()
        };
        let settings = EngineSettings {
            lease_seconds,
            capture_timeout: Duration::from_secs(20),
            capture_token: None,
        };
        let coordinator = Coordinator::new(store, settings, clock.clone());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(dbsync_coordinator::serve_engine(
            coordinator,
            token.map(dbsync_core::Secret::new),
            Duration::from_millis(20),
            listener,
            shutdown.clone(),
        ));
        Server {
            url,
            clock,
            shutdown,
            handle,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }

    pub async fn client(&self) -> CoordinatorServiceClient<Channel> {
        CoordinatorServiceClient::connect(self.url.clone())
            .await
            .unwrap()
    }

    pub async fn workers(&self) -> WorkerServiceClient<Channel> {
        WorkerServiceClient::connect(self.url.clone())
            .await
            .unwrap()
    }
}

/// Polls `check` until it returns `Some` or 10 s pass.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn table_ref(db: &str, schema: &str, name: &str) -> pb::TableRef {
    pb::TableRef {
        database: db.into(),
        schema: schema.into(),
        name: name.into(),
    }
}

pub fn table(db: &str, name: &str, fk_to: &[&str]) -> pb::TableSchema {
    pb::TableSchema {
        table: Some(table_ref(db, "dbo", name)),
        columns: vec![
            pb::ColumnSchema {
                name: "Id".into(),
                column_id: 1,
                type_name: "int".into(),
                ..Default::default()
            },
            pb::ColumnSchema {
                name: "Name".into(),
                column_id: 2,
                type_name: "nvarchar".into(),
                ..Default::default()
            },
        ],
        foreign_keys: fk_to
            .iter()
            .map(|t| pb::ForeignKeySchema {
                name: format!("fk_{name}_{t}"),
                columns: vec!["Id".into()],
                referenced_table: Some(table_ref(db, "dbo", t)),
                referenced_columns: vec!["Id".into()],
                ..Default::default()
            })
            .collect(),
        key_columns: vec!["Id".into()],
        key_source: "primary_key".into(),
        approximate_rows: 1000,
        ..Default::default()
    }
}

/// What the capture double saw, in order.
#[derive(Default)]
pub struct CaptureLog {
    pub calls: Vec<String>,
    pub passwords_seen: Vec<String>,
}

/// A CaptureService with a fixed catalog: shop.dbo.{customers, orders -> customers, products, audit}.
#[derive(Clone)]
pub struct FakeCapture {
    pub log: Arc<Mutex<CaptureLog>>,
    pub tables: Arc<Mutex<Vec<pb::TableSchema>>>,
    /// Rows ChecksumChunks reports per table name.
    pub source_rows: Arc<Mutex<std::collections::HashMap<String, u64>>>,
    /// Sequences ReadSchema reports (of every database asked for).
    pub sequences: Arc<Mutex<Vec<pb::SequenceSchema>>>,
}

pub const L0: [u8; 10] = [0, 0, 0, 0x2A, 0, 0, 0x01, 0xF8, 0, 3];

impl FakeCapture {
    pub fn new() -> FakeCapture {
        FakeCapture {
            log: Default::default(),
            tables: Arc::new(Mutex::new(vec![
                table("shop", "customers", &[]),
                table("shop", "orders", &["customers"]),
                table("shop", "products", &[]),
                table("shop", "audit", &[]),
            ])),
            source_rows: Default::default(),
            sequences: Default::default(),
        }
    }

    /// Serves on 127.0.0.1:0; returns its URL.
    pub async fn serve(&self, shutdown: CancellationToken) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let service = CaptureServiceServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    dbsync_telemetry::incoming(listener),
                    shutdown.cancelled(),
                )
                .await
                .unwrap();
        });
        url
    }

    pub fn calls(&self) -> Vec<String> {
        self.log.lock().unwrap().calls.clone()
    }

    fn record(&self, call: &str, source: &Option<pb::SourceConnection>) {
        let mut log = self.log.lock().unwrap();
        log.calls.push(call.to_string());
        if let Some(s) = source {
            log.passwords_seen.push(s.password.clone());
        }
    }
}

type Rows = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::RowBatch, Status>> + Send>>;
type Changes =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ChangeMessage, Status>> + Send>>;

#[tonic::async_trait]
impl CaptureService for FakeCapture {
    async fn get_source_info(
        &self,
        r: Request<pb::GetSourceInfoRequest>,
    ) -> Result<Response<pb::SourceInfo>, Status> {
        self.record("GetSourceInfo", &r.get_ref().source);
        Ok(Response::new(pb::SourceInfo {
            databases: vec!["shop".into()],
            ..Default::default()
        }))
    }

    async fn read_schema(
        &self,
        r: Request<pb::ReadSchemaRequest>,
    ) -> Result<Response<pb::ReadSchemaResponse>, Status> {
        let r = r.into_inner();
        self.record("ReadSchema", &r.source);
        if let Some(s) = r.source.as_ref().filter(|s| s.password.starts_with("Echo")) {
            // Real drivers sometimes echo connection details; the coordinator must scrub them.
            return Err(Status::unavailable(format!(
                "Login failed for user 'sa' with password '{}'",
                s.password
            )));
        }
        let selection = r.selection.unwrap_or_default();
        let tables = self
            .tables
            .lock()
            .unwrap()
            .iter()
            .filter(|t| {
                let key = format!(
                    "{}.{}.{}",
                    t.table.as_ref().unwrap().database,
                    t.table.as_ref().unwrap().schema,
                    t.table.as_ref().unwrap().name
                );
                selection.include.is_empty()
                    || selection
                        .include
                        .iter()
                        .any(|p| dbsync_coordinator::spec::glob_match(p, &key))
            })
            .cloned()
            .collect();
        let sequences = self
            .sequences
            .lock()
            .unwrap()
            .iter()
            .filter(|q| {
                selection
                    .databases
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(&q.database))
            })
            .cloned()
            .collect();
        Ok(Response::new(pb::ReadSchemaResponse { tables, sequences }))
    }

    async fn precheck(
        &self,
        r: Request<pb::SourcePrecheckRequest>,
    ) -> Result<Response<pb::PrecheckReport>, Status> {
        let r = r.into_inner();
        self.record("Precheck", &r.source);
        Ok(Response::new(pb::PrecheckReport {
            items: vec![
                pb::PrecheckItem {
                    id: "source.recovery_model".into(),
                    title: "Recovery model FULL".into(),
                    status: pb::PrecheckStatus::Pass as i32,
                    object: "shop".into(),
                    ..Default::default()
                },
                pb::PrecheckItem {
                    id: "source.cdc_polling_interval".into(),
                    title: "CDC capture job polling interval".into(),
                    status: pb::PrecheckStatus::Warn as i32,
                    object: "shop".into(),
                    detail: "pollinginterval is 5 s".into(),
                    fix: "EXEC sys.sp_cdc_change_job @job_type = 'capture', @pollinginterval = 1"
                        .into(),
                    acknowledged: false,
                },
            ],
        }))
    }

    async fn get_max_lsn(
        &self,
        r: Request<pb::GetMaxLsnRequest>,
    ) -> Result<Response<pb::GetMaxLsnResponse>, Status> {
        self.record("GetMaxLsn", &r.get_ref().source);
        Ok(Response::new(pb::GetMaxLsnResponse {
            lsn: L0.to_vec(),
            source_time_unix_micros: 1,
        }))
    }

    async fn enable_cdc(
        &self,
        r: Request<pb::EnableCdcRequest>,
    ) -> Result<Response<pb::EnableCdcResponse>, Status> {
        let r = r.into_inner();
        self.record(&format!("EnableCdc:{}", r.tables.len()), &r.source);
        Ok(Response::new(pb::EnableCdcResponse::default()))
    }

    async fn cleanup_source(
        &self,
        r: Request<pb::CleanupSourceRequest>,
    ) -> Result<Response<pb::CleanupSourceResponse>, Status> {
        let r = r.into_inner();
        self.record(&format!("CleanupSource:{}", r.tables.len()), &r.source);
        Ok(Response::new(pb::CleanupSourceResponse {
            removed: vec!["capture instances".into()],
        }))
    }

    async fn plan_chunks(
        &self,
        _r: Request<pb::PlanChunksRequest>,
    ) -> Result<Response<pb::PlanChunksResponse>, Status> {
        Err(Status::unimplemented("not part of this double"))
    }

    type ReadChunkStream = Rows;
    async fn read_chunk(
        &self,
        _r: Request<pb::ReadChunkRequest>,
    ) -> Result<Response<Rows>, Status> {
        Err(Status::unimplemented("not part of this double"))
    }

    type StreamChangesStream = Changes;
    async fn stream_changes(
        &self,
        _r: Request<pb::StreamChangesRequest>,
    ) -> Result<Response<Changes>, Status> {
        Err(Status::unimplemented("not part of this double"))
    }

    type ReadRowsStream = Rows;
    async fn read_rows(&self, _r: Request<pb::ReadRowsRequest>) -> Result<Response<Rows>, Status> {
        Err(Status::unimplemented("not part of this double"))
    }

    async fn checksum_chunks(
        &self,
        r: Request<pb::ChecksumChunksRequest>,
    ) -> Result<Response<pb::ChecksumChunksResponse>, Status> {
        let r = r.into_inner();
        self.record("ChecksumChunks", &r.source);
        let name = r
            .table
            .and_then(|t| t.table)
            .map(|t| t.name)
            .unwrap_or_default();
        let rows = self
            .source_rows
            .lock()
            .unwrap()
            .get(&name)
            .copied()
            .unwrap_or(0);
        Ok(Response::new(pb::ChecksumChunksResponse {
            chunks: vec![pb::ChunkChecksum {
                index: 0,
                rows,
                checksum: vec![],
                ..Default::default()
            }],
        }))
    }
}

/// Registers a fake worker and returns its id.
pub async fn register(
    workers: &mut WorkerServiceClient<Channel>,
    kind: &str,
    address: &str,
) -> String {
    workers
        .register(pb::RegisterRequest {
            kind: kind.into(),
            address: address.into(),
            worker_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .worker_id
}

pub async fn heartbeat(
    workers: &mut WorkerServiceClient<Channel>,
    id: &str,
) -> pb::HeartbeatResponse {
    workers
        .heartbeat(pb::HeartbeatRequest {
            worker_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

pub fn task_ref(id: &str) -> pb::TaskRef {
    pb::TaskRef { task_id: id.into() }
}

/// A task definition writing to database `db` of the shared test PostgreSQL.
pub fn spec_for(
    name: &str,
    capture_url: &str,
    pg: &dbsync_pgtest::PgCluster,
    db: &str,
    extra: &str,
) -> String {
    format!(
        r#"
name: {name}
environment: test
source: {{ host: mssql.test, user: sa, password: "Src-Pa55word!" }}
target: {{ host: {host}, port: {port}, user: {user}, password: "Tgt-Pa55word!", database: {db}, sslmode: disable }}
capture_address: {capture_url}
objects: {{ databases: [shop] }}
{extra}
"#,
        host = pg.host(),
        port = pg.port(),
        user = pg.superuser(),
    )
}
