//! The gRPC handlers: convert the request, call one function, convert the result. Streaming
//! RPCs run their producer in a task that feeds a bounded channel; the bound is the
//! back-pressure (a slow client stops the reads on the source).

use std::sync::Arc;

use dbsync_proto::v1::capture_service_server::CaptureService;
use dbsync_proto::v1::{
    ChangeMessage, ChecksumChunksRequest, ChecksumChunksResponse, CleanupSourceRequest,
    CleanupSourceResponse, EnableCdcRequest, EnableCdcResponse, GetMaxLsnRequest,
    GetMaxLsnResponse, GetSourceInfoRequest, PlanChunksRequest, PlanChunksResponse, PrecheckReport,
    ReadChunkRequest, ReadRowsRequest, ReadSchemaRequest, ReadSchemaResponse, RowBatch,
    SourceConnection, SourceInfo, SourcePrecheckRequest, StreamChangesRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::error::{CaptureError, Result};
use crate::mssql::cdc::CdcStream;
use crate::mssql::{decode, hybrid, inspect};
use crate::throttle::Phase;
use crate::{digests, precheck, setup, snapshot, CaptureState};

/// Row batches in flight per streaming call.
const STREAM_BUFFER: usize = 4;

/// `CaptureService` over the shared [`CaptureState`].
#[derive(Clone)]
pub struct CaptureGrpc {
    state: Arc<CaptureState>,
}

impl CaptureGrpc {
    pub fn new(state: Arc<CaptureState>) -> Self {
        CaptureGrpc { state }
    }
}

fn source(s: &Option<SourceConnection>) -> Result<&SourceConnection> {
    s.as_ref()
        .ok_or_else(|| CaptureError::InvalidRequest("The request has no source connection".into()))
}

type BatchStream = ReceiverStream<std::result::Result<RowBatch, Status>>;

/// Runs `work` in a task that streams into a fresh channel; an error ends the stream with it.
fn spawn_stream<T, F>(
    span: tracing::Span,
    work: impl FnOnce(mpsc::Sender<std::result::Result<T, Status>>) -> F,
) -> ReceiverStream<std::result::Result<T, Status>>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let fut = work(tx.clone());
    tokio::spawn(
        async move {
            if let Err(e) = fut.await {
                let _ = tx.send(Err(e.into())).await;
            }
        }
        .instrument(span),
    );
    ReceiverStream::new(rx)
}

/// The position to report for GetMaxLsn: the CDC high-water mark, raised to the newest
/// capture instance's start (right after enabling, an instance can start above the max LSN;
/// Materialize does the same), or, before CDC is enabled, the end of the log.
async fn max_lsn(state: &CaptureState, req: &GetMaxLsnRequest) -> Result<GetMaxLsnResponse> {
    let pool = state.pools.pool(source(&req.source)?, &req.database)?;
    let mut conn = pool.get().await?;
    let client = conn.client();
    let db = inspect::current_database(client).await?;
    let mut lsn = None;
    let mut now = 0;
    if db.is_cdc_enabled && req.at_unix_micros != 0 {
        // An incremental-only task starting at a point in time: lsn_time_mapping holds server
        // local times, so shift by the server's current offset.
        let m = inspect::max_lsn(client).await?;
        let local =
            decode::unix_micros_to_ticks(req.at_unix_micros) + m.tz_offset_minutes * 600_000_000;
        let lsn = inspect::lsn_at_time(client, local).await?.ok_or_else(|| {
            CaptureError::Precondition(format!(
                "No change was captured in {} at or before the requested start time: choose a later time or start from now",
                db.name
            ))
        })?;
        conn.mark_clean();
        return Ok(GetMaxLsnResponse {
            lsn: lsn.as_bytes().to_vec(),
            source_time_unix_micros: req.at_unix_micros,
        });
    }
    if db.is_cdc_enabled {
        let m = inspect::max_lsn(client).await?;
        now = m.utc_now_ticks;
        let newest_instance = inspect::capture_instances(client)
            .await?
            .into_iter()
            .filter_map(|i| i.start_lsn)
            .max();
        // With nothing captured yet (max NULL) the newest instance start is a safe start: no
        // change table holds a row, and the snapshot read afterwards sees every earlier commit.
        lsn = m.lsn.max(newest_instance);
    }
    if lsn.is_none() {
        lsn = inspect::log_end_lsn(client).await?;
    }
    conn.mark_clean();
    let lsn = lsn.ok_or_else(|| {
        CaptureError::Precondition(format!(
            "No LSN is available for database {}: CDC has not captured anything yet (is SQL Server Agent running?)",
            db.name
        ))
    })?;
    Ok(GetMaxLsnResponse {
        lsn: lsn.as_bytes().to_vec(),
        source_time_unix_micros: if now == 0 {
            0
        } else {
            decode::ticks_to_unix_micros(now)
        },
    })
}

#[tonic::async_trait]
impl CaptureService for CaptureGrpc {
    #[tracing::instrument(skip_all)]
    async fn get_source_info(
        &self,
        req: Request<GetSourceInfoRequest>,
    ) -> std::result::Result<Response<SourceInfo>, Status> {
        let req = req.into_inner();
        let pool = self.state.pools.pool(source(&req.source)?, "")?;
        let mut conn = pool.get().await?;
        let info = inspect::server_info(conn.client()).await?;
        let dbs = inspect::databases(conn.client()).await?;
        conn.mark_clean();
        Ok(Response::new(SourceInfo {
            version: info.version,
            product_version: info.product_version,
            edition: info.edition,
            server_name: info.server_name,
            databases: dbs.into_iter().map(|d| d.name).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn read_schema(
        &self,
        req: Request<ReadSchemaRequest>,
    ) -> std::result::Result<Response<ReadSchemaResponse>, Status> {
        let req = req.into_inner();
        let src = source(&req.source)?;
        let selection = req.selection.unwrap_or_default();
        let databases = if selection.databases.is_empty() {
            vec![src.database.clone()]
        } else {
            selection.databases.clone()
        };
        let mut out = ReadSchemaResponse::default();
        for db in databases {
            let pool = self.state.pools.pool(src, &db)?;
            let mut conn = pool.get().await?;
            let name = pool.database().to_string();
            let (tables, sequences) =
                inspect::read_schema(conn.client(), &name, &selection).await?;
            let own = hybrid::installed_prefixes(conn.client()).await?;
            conn.mark_clean();
            out.tables.extend(tables.into_iter().filter(|t| {
                t.table
                    .as_ref()
                    .is_none_or(|r| !hybrid::is_own_table(&own, &r.schema, &r.name))
            }));
            out.sequences.extend(sequences);
        }
        Ok(Response::new(out))
    }

    #[tracing::instrument(skip_all)]
    async fn precheck(
        &self,
        req: Request<SourcePrecheckRequest>,
    ) -> std::result::Result<Response<PrecheckReport>, Status> {
        Ok(Response::new(
            precheck::run(&self.state.pools, &req.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_max_lsn(
        &self,
        req: Request<GetMaxLsnRequest>,
    ) -> std::result::Result<Response<GetMaxLsnResponse>, Status> {
        Ok(Response::new(
            max_lsn(&self.state, &req.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn enable_cdc(
        &self,
        req: Request<EnableCdcRequest>,
    ) -> std::result::Result<Response<EnableCdcResponse>, Status> {
        Ok(Response::new(
            setup::enable_cdc(&self.state.pools, &req.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn cleanup_source(
        &self,
        req: Request<CleanupSourceRequest>,
    ) -> std::result::Result<Response<CleanupSourceResponse>, Status> {
        Ok(Response::new(
            setup::cleanup_source(&self.state.pools, &req.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn plan_chunks(
        &self,
        req: Request<PlanChunksRequest>,
    ) -> std::result::Result<Response<PlanChunksResponse>, Status> {
        let chunks = snapshot::plan_chunks(&self.state.pools, &req.into_inner()).await?;
        Ok(Response::new(PlanChunksResponse { chunks }))
    }

    type ReadChunkStream = BatchStream;

    async fn read_chunk(
        &self,
        req: Request<ReadChunkRequest>,
    ) -> std::result::Result<Response<Self::ReadChunkStream>, Status> {
        let req = req.into_inner();
        let throttle = self
            .state
            .throttles
            .for_task(&req.task_id, Phase::Full, req.throttle);
        let state = Arc::clone(&self.state);
        let span = tracing::info_span!("read_chunk", task_id = %req.task_id, chunk = req.chunk.as_ref().map(|c| c.index).unwrap_or(0));
        Ok(Response::new(spawn_stream(span, move |tx| async move {
            snapshot::read_chunk(&state.pools, &req, &throttle, &tx).await
        })))
    }

    type StreamChangesStream = ReceiverStream<std::result::Result<ChangeMessage, Status>>;

    async fn stream_changes(
        &self,
        req: Request<StreamChangesRequest>,
    ) -> std::result::Result<Response<Self::StreamChangesStream>, Status> {
        let req = req.into_inner();
        let throttle =
            self.state
                .throttles
                .for_task(&req.task_id, Phase::Incremental, req.throttle);
        // Open before answering, so a bad request or a table without CDC fails the call itself.
        let mut stream = CdcStream::open(&self.state.pools, req.clone(), throttle).await?;
        let span = tracing::info_span!("stream_changes", task_id = %req.task_id);
        Ok(Response::new(spawn_stream(span, move |tx| async move {
            loop {
                let message = stream.next_message().await?;
                if tx.send(Ok(message)).await.is_err() {
                    return Ok(());
                }
            }
        })))
    }

    type ReadRowsStream = BatchStream;

    async fn read_rows(
        &self,
        req: Request<ReadRowsRequest>,
    ) -> std::result::Result<Response<Self::ReadRowsStream>, Status> {
        let req = req.into_inner();
        // The task's full-sync budget: reads for verification and repair must not hurt the
        // source more than full sync may.
        let throttle = self
            .state
            .throttles
            .for_task(&req.task_id, Phase::Full, req.throttle);
        let state = Arc::clone(&self.state);
        let span = tracing::info_span!("read_rows", task_id = %req.task_id);
        Ok(Response::new(spawn_stream(span, move |tx| async move {
            snapshot::read_rows(&state.pools, &req, &throttle, &tx).await
        })))
    }

    #[tracing::instrument(skip_all, fields(task_id = %req.get_ref().task_id))]
    async fn checksum_chunks(
        &self,
        req: Request<ChecksumChunksRequest>,
    ) -> std::result::Result<Response<ChecksumChunksResponse>, Status> {
        let req = req.into_inner();
        let table = req
            .table
            .clone()
            .ok_or_else(|| CaptureError::InvalidRequest("The request has no table".into()))?;
        let throttle = self
            .state
            .throttles
            .for_task(&req.task_id, Phase::Full, req.throttle);
        let chunks = if req.columns.is_empty() {
            snapshot::checksum_chunks(
                &self.state.pools,
                &req.source,
                &table,
                &req.chunks,
                &req.where_filter,
                &throttle,
            )
            .await?
        } else {
            digests::digest_sums(&self.state.pools, &req, &table, &throttle).await?
        };
        Ok(Response::new(ChecksumChunksResponse { chunks }))
    }
}
