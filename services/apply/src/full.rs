//! Full sync of a table group: plan chunks once, load the unfinished ones in parallel with
//! binary COPY, record each table's snapshot end.
//!
//! 1. Each table's chunk plan comes from the checkpoint, or from capture's `PlanChunks` and is
//!    stored before any row is loaded, so a restart loads the same ranges.
//! 2. Unfinished chunks of all tables form one queue; `parallel` workers, each with its own
//!    PostgreSQL session (`session_replication_role = replica`), read a chunk with `ReadChunk`
//!    and write it with [`ChunkWriter`] (rows and done flag in one transaction).
//! 3. When a table's last chunk is in, the source's max LSN is read and stored as the table's
//!    snapshot end: changes up to it may already be in the snapshot and are applied
//!    idempotently by the stream (see [`crate::pg::changes`]).
//!
//! The first error stops every worker; the retry starts over from the checkpoints.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dbsync_core::lsn::Lsn;
use dbsync_core::sink::CheckpointStore;
use dbsync_proto::v1::{
    Chunk, GetMaxLsnRequest, PlanChunksRequest, ReadChunkRequest, SourceConnection, TablePhase,
    TargetConnection, Throttle,
};
use tokio::task::JoinSet;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::capture::CaptureClient;
use crate::error::{ApplyError, Result};
use crate::pg::catalog::ResolvedTable;
use crate::pg::checkpoint::{load_table_state, record_step, PgCheckpoints, TableStep};
use crate::pg::copy::ChunkWriter;
use crate::progress::TableTracker;

/// Everything the chunk workers share.
pub struct FullSyncContext {
    pub task_id: String,
    pub source: SourceConnection,
    pub target: TargetConnection,
    pub capture: CaptureClient,
    pub capture_address: String,
    /// Conflict mode `ignore`: existing target rows win on key conflict.
    pub keep_existing: bool,
    pub chunk_rows: u64,
    pub parallel: usize,
    pub throttle: Option<Throttle>,
    /// Record the source max LSN at each table's end (an incremental phase follows).
    pub record_end_lsn: bool,
    /// Sessions set `session_replication_role = replica` (false when FKs are deferred).
    pub replication_role: bool,
}

pub struct FullSyncTable {
    pub table: Arc<ResolvedTable>,
    pub tracker: Arc<TableTracker>,
}

struct Work {
    table: usize,
    chunk: Chunk,
}

/// Loads every table of the group that has not finished its snapshot.
pub async fn run_full_sync(
    ctx: Arc<FullSyncContext>,
    control: &Client,
    tables: Vec<FullSyncTable>,
    shutdown: CancellationToken,
) -> Result<()> {
    let store = PgCheckpoints {
        client: control,
        task_id: &ctx.task_id,
    };
    let mut queue = VecDeque::new();
    let mut remaining = Vec::with_capacity(tables.len());
    let mut finished_now = Vec::new();
    for (ti, t) in tables.iter().enumerate() {
        let name = &t.table.target.source_name;
        let state = load_table_state(control, &ctx.task_id, name)
            .await?
            .unwrap_or_default();
        if state.snapshot_done {
            remaining.push(AtomicUsize::new(0));
            t.tracker.update(|p| {
                p.rows_done = state.rows_done;
                p.rows_total = p.rows_total.max(state.rows_done);
            });
            continue;
        }
        let chunks = match store.load_chunks(name).await? {
            Some(chunks) => chunks,
            None => {
                let planned = ctx
                    .capture
                    .clone()
                    .plan_chunks(PlanChunksRequest {
                        source: Some(ctx.source.clone()),
                        table: Some(t.table.target.source.clone()),
                        target_rows: ctx.chunk_rows,
                        where_filter: t.table.target.where_filter.clone(),
                    })
                    .await
                    .map_err(|s| {
                        ApplyError::capture_status(&ctx.capture_address, name, "planning chunks", s)
                    })?
                    .into_inner()
                    .chunks;
                store.save_chunk_plan(name, &planned).await?;
                store.load_chunks(name).await?.unwrap_or_default()
            }
        };
        let (rows_done, bytes_done) = done_totals(control, &ctx.task_id, name).await?;
        let done = chunks.iter().filter(|(_, d)| *d).count();
        t.tracker.update(|p| {
            p.phase = TablePhase::Snapshot as i32;
            p.chunks_total = chunks.len() as u32;
            p.chunks_done = done as u32;
            p.rows_total = chunks
                .iter()
                .map(|(c, _)| c.estimated_rows)
                .sum::<u64>()
                .max(rows_done);
            p.rows_done = rows_done;
            p.bytes_done = bytes_done;
        });
        let open: Vec<Chunk> = chunks
            .into_iter()
            .filter(|(_, d)| !d)
            .map(|(c, _)| c)
            .collect();
        if open.is_empty() {
            finished_now.push(ti);
        }
        remaining.push(AtomicUsize::new(open.len()));
        queue.extend(open.into_iter().map(|chunk| Work { table: ti, chunk }));
    }
    let tables = Arc::new(tables);
    for ti in finished_now {
        finish_table(&ctx, control, &tables[ti]).await?;
    }
    if queue.is_empty() {
        return Ok(());
    }
    let queue = Arc::new(Mutex::new(queue));
    let remaining = Arc::new(remaining);
    let mut workers = JoinSet::new();
    let n = ctx
        .parallel
        .max(1)
        .min(queue.lock().expect("queue lock").len());
    for _ in 0..n {
        let (ctx, queue, remaining, tables, shutdown) = (
            Arc::clone(&ctx),
            Arc::clone(&queue),
            Arc::clone(&remaining),
            Arc::clone(&tables),
            shutdown.clone(),
        );
        workers.spawn(async move {
            let mut client = crate::pg::connect_data(&ctx.target, ctx.replication_role).await?;
            loop {
                let Some(work) = queue.lock().expect("queue lock").pop_front() else {
                    return Ok(());
                };
                let t = &tables[work.table];
                tokio::select! {
                    r = load_chunk(&ctx, &mut client, t, &work.chunk) => r?,
                    _ = shutdown.cancelled() => return Err(ApplyError::Cancelled),
                }
                if remaining[work.table].fetch_sub(1, Ordering::AcqRel) == 1 {
                    finish_table(&ctx, &client, t).await?;
                }
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        let result = joined.unwrap_or_else(|e| {
            Err(ApplyError::Protocol {
                detail: format!("chunk worker panicked: {e}"),
            })
        });
        if let Err(e) = result {
            workers.abort_all();
            return Err(e);
        }
    }
    Ok(())
}

async fn done_totals(client: &Client, task_id: &str, table: &str) -> Result<(u64, u64)> {
    let row = client
        .query_one(
            "SELECT coalesce(sum(rows), 0)::bigint, coalesce(sum(bytes), 0)::bigint FROM dbsync.chunks
              WHERE task_id = $1 AND source_table = $2 AND done",
            &[&task_id, &table],
        )
        .await
        .map_err(|e| ApplyError::target(table, "reading its chunk totals", e))?;
    Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
}

/// Reads one chunk from capture and loads it.
async fn load_chunk(
    ctx: &FullSyncContext,
    client: &mut Client,
    t: &FullSyncTable,
    chunk: &Chunk,
) -> Result<()> {
    let name = &t.table.target.source_name;
    let mut stream = ctx
        .capture
        .clone()
        .read_chunk(ReadChunkRequest {
            source: Some(ctx.source.clone()),
            task_id: ctx.task_id.clone(),
            table: Some(t.table.target.source.clone()),
            chunk: Some(chunk.clone()),
            where_filter: t.table.target.where_filter.clone(),
            max_batch_rows: 10_000,
            max_batch_bytes: 8 << 20,
            throttle: ctx.throttle,
            packed_rows: true,
        })
        .await
        .map_err(|s| ApplyError::capture_status(&ctx.capture_address, name, "reading a chunk", s))?
        .into_inner();
    let mut writer = ChunkWriter::begin(
        client,
        &t.table,
        &ctx.task_id,
        chunk.index,
        ctx.keep_existing,
    )
    .await?;
    while let Some(batch) = stream
        .message()
        .await
        .map_err(|s| ApplyError::capture_status(&ctx.capture_address, name, "reading a chunk", s))?
    {
        writer.write_batch_rows(&batch).await?;
    }
    let (rows, bytes) = writer.commit().await?;
    metrics::counter!("dbsync_apply_rows_written_total").increment(rows);
    metrics::counter!("dbsync_apply_bytes_written_total").increment(bytes);
    t.tracker.update(|p| {
        p.rows_done += rows;
        p.rows_total = p.rows_total.max(p.rows_done);
        p.bytes_done += bytes;
        p.chunks_done += 1;
    });
    Ok(())
}

/// The source's current max LSN in the table's database; `None` while the source has none
/// (the CDC capture job has not run yet).
pub(crate) async fn read_max_lsn(
    capture: &CaptureClient,
    source: &SourceConnection,
    capture_address: &str,
    t: &ResolvedTable,
) -> Result<Option<Lsn>> {
    let database = t
        .target
        .source
        .table
        .as_ref()
        .map(|r| r.database.clone())
        .unwrap_or_default();
    let response = capture
        .clone()
        .get_max_lsn(GetMaxLsnRequest {
            source: Some(source.clone()),
            database,
            ..Default::default()
        })
        .await
        .map_err(|s| {
            ApplyError::capture_status(
                capture_address,
                &t.target.source_name,
                "reading the max LSN",
                s,
            )
        })?
        .into_inner();
    Ok(Lsn::from_slice(&response.lsn))
}

/// A table's snapshot is complete: store its end LSN.
async fn finish_table(ctx: &FullSyncContext, client: &Client, t: &FullSyncTable) -> Result<()> {
    let name = &t.table.target.source_name;
    let end_lsn = if ctx.record_end_lsn {
        read_max_lsn(&ctx.capture, &ctx.source, &ctx.capture_address, &t.table).await?
    } else {
        None
    };
    record_step(
        client,
        &ctx.task_id,
        name,
        &t.table.target.qualified,
        TableStep::SnapshotDone { end_lsn },
    )
    .await?;
    tracing::info!(table = %name, end_lsn = ?end_lsn, "snapshot loaded");
    Ok(())
}
