//! Incremental sync of a table group: follows capture's change stream from the stored
//! position (or L0 after a full sync) and applies it with [`ChangeApplier`].
//!
//! 1. The position comes from `dbsync.stream_position`; without one, from the assignment's
//!    start LSN (changes strictly after it).
//! 2. Messages are applied as they arrive; whenever the stream has nothing ready, the open
//!    PostgreSQL transaction is committed with the position (so lag stays low under light load
//!    and several small source transactions share one commit under heavy load).
//! 3. `SchemaChange`: pending work is committed, the target table altered and re-read, then
//!    later changes use the new columns.
//! 4. `TableNeedsResnapshot`: reported loudly (table phase RESNAPSHOT with the reason), the
//!    table is truncated and loaded again; its later changes are applied idempotently up to
//!    the new snapshot end. The stream is not read during the reload (its messages wait in
//!    capture and the gRPC window), so no change of any table is lost; the other tables of the
//!    group wait meanwhile, which is the price of that guarantee. A repeated notice for a
//!    position the new snapshot already covers is ignored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dbsync_core::lsn::{Lsn, Position};
use dbsync_core::sink::{ChangeSink, CheckpointStore};
use dbsync_proto::v1::change_message::Kind as MessageKind;
use dbsync_proto::v1::{
    SourceConnection, StreamChangesRequest, TablePhase, TablePlan, TargetConnection, Throttle,
};
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::capture::CaptureClient;
use crate::error::{ApplyError, Result};
use crate::full::{run_full_sync, FullSyncContext, FullSyncTable};
use crate::pg::catalog::{unique_index_count, ResolvedTable};
use crate::pg::changes::{check_filter, ApplyLimits, ChangeApplier, TableApply};
use crate::pg::checkpoint::{load_table_state, record_step, PgCheckpoints, TableStep};
use crate::pg::ddl::alter_table_ddl;
use crate::plan::TableTarget;
use crate::progress::TableTracker;

pub struct StreamTable {
    pub plan: TablePlan,
    pub table: Arc<ResolvedTable>,
    pub tracker: Arc<TableTracker>,
}

pub struct StreamContext {
    pub task_id: String,
    pub group_id: String,
    pub source: SourceConnection,
    pub target: TargetConnection,
    pub capture: CaptureClient,
    pub capture_address: String,
    pub incremental_mode: String,
    pub throttle: Option<Throttle>,
    pub start_lsn: Option<Lsn>,
    pub overwrite_inserts: bool,
    /// `StreamChangesRequest.poll_interval_ms` (0: 200 ms).
    pub poll_interval_ms: u32,
    /// Sessions set `session_replication_role = replica` (false when FKs are deferred).
    pub replication_role: bool,
    /// For re-snapshots after a retention overrun.
    pub full: Arc<FullSyncContext>,
}

const REPORT_EVERY: Duration = Duration::from_millis(500);

pub async fn run_stream(
    ctx: &StreamContext,
    mut tables: Vec<StreamTable>,
    shutdown: CancellationToken,
) -> Result<()> {
    let client = crate::pg::connect_data(&ctx.target, ctx.replication_role).await?;
    let stored = PgCheckpoints {
        client: &client,
        task_id: &ctx.task_id,
    }
    .load_position(&ctx.group_id)
    .await?;
    let start = stored.or(ctx.start_lsn.map(Position::end_of));
    let mut applies = Vec::with_capacity(tables.len());
    for t in &tables {
        let state = load_table_state(&client, &ctx.task_id, &t.table.target.source_name)
            .await?
            .unwrap_or_default();
        check_filter(&t.table)?;
        let mut apply = TableApply::new(
            Arc::clone(&t.table),
            state.snapshot_end_lsn,
            ctx.overwrite_inserts,
        );
        // Regrouping statements needs FK checks off and no unique constraint besides the key.
        apply.reorder = ctx.replication_role
            && unique_index_count(&client, &t.table.target.qualified).await? <= 1;
        applies.push(Some(apply));
    }
    let mut applier = ChangeApplier::start(
        client,
        &ctx.task_id,
        &ctx.group_id,
        applies,
        start,
        ApplyLimits::default(),
    )
    .await?;
    let request = StreamChangesRequest {
        source: Some(ctx.source.clone()),
        task_id: ctx.task_id.clone(),
        tables: tables
            .iter()
            .map(|t| t.table.target.source.clone())
            .collect(),
        from_lsn: start.map(|p| p.commit_lsn.0.to_vec()).unwrap_or_default(),
        from_seqval: start.map(|p| p.seqval.0.to_vec()).unwrap_or_default(),
        from_operation: start.map(|p| p.operation).unwrap_or_default(),
        poll_interval_ms: if ctx.poll_interval_ms == 0 {
            200
        } else {
            ctx.poll_interval_ms
        },
        max_batch_rows: 5000,
        max_batch_bytes: 4 << 20,
        throttle: ctx.throttle,
        incremental_mode: ctx.incremental_mode.clone(),
        heartbeat_interval_ms: 1000,
        ..Default::default()
    };
    tracing::info!(task_id = %ctx.task_id, group = %ctx.group_id, from = ?start, "streaming changes");
    let mut stream = ctx
        .capture
        .clone()
        .stream_changes(request)
        .await
        .map_err(|s| {
            ApplyError::capture_status(
                &ctx.capture_address,
                &ctx.group_id,
                "starting the change stream",
                s,
            )
        })?
        .into_inner();
    report(&applier, &tables);
    let mut last_report = Instant::now();
    loop {
        let next = match stream.next().now_or_never() {
            Some(m) => m,
            None => {
                // Nothing ready: make what we have durable, then wait.
                if applier.flush().await?.is_some() || last_report.elapsed() >= REPORT_EVERY {
                    report(&applier, &tables);
                    last_report = Instant::now();
                }
                tokio::select! {
                    m = stream.next() => m,
                    _ = shutdown.cancelled() => {
                        applier.flush().await?;
                        report(&applier, &tables);
                        return Err(ApplyError::Cancelled);
                    }
                }
            }
        };
        let message = match next {
            Some(Ok(m)) => m,
            Some(Err(status)) => {
                return Err(ApplyError::capture_status(
                    &ctx.capture_address,
                    &ctx.group_id,
                    "streaming changes",
                    status,
                ))
            }
            None => {
                return Err(ApplyError::CaptureUnavailable {
                    address: ctx.capture_address.clone(),
                    action: "streaming changes",
                    detail: "the stream ended".into(),
                })
            }
        };
        match message.kind {
            Some(MessageKind::Transaction(fragment)) => {
                let committed = applier.apply_fragment(fragment).await?.is_some();
                if committed && last_report.elapsed() >= REPORT_EVERY {
                    report(&applier, &tables);
                    last_report = Instant::now();
                }
            }
            Some(MessageKind::Progress(p)) => {
                if let Some(lsn) = Lsn::from_slice(&p.lsn) {
                    applier.advance(lsn, p.source_time_unix_micros).await?;
                }
            }
            Some(MessageKind::Columns(c)) => {
                if let Some(Some(t)) = applier.tables.get_mut(c.table_index as usize) {
                    t.set_change_columns(&c.columns);
                }
            }
            Some(MessageKind::SchemaChange(sc)) => {
                let i = sc.table_index as usize;
                let (Some(new_schema), Some(t)) = (sc.new_schema, tables.get_mut(i)) else {
                    return Err(ApplyError::Protocol {
                        detail: format!("schema change for unknown table index {i}"),
                    });
                };
                applier.flush().await?;
                let mut plan = t.plan.clone();
                plan.source = Some(new_schema);
                let new_target = TableTarget::from_plan(&plan)?;
                let statements =
                    alter_table_ddl(&t.table.target, &new_target).map_err(|detail| {
                        ApplyError::InvalidPlan {
                            object: new_target.source_name.clone(),
                            detail,
                        }
                    })?;
                for sql in &statements {
                    applier.client().batch_execute(sql).await.map_err(|e| {
                        ApplyError::target(
                            &new_target.qualified,
                            "following a source schema change",
                            e,
                        )
                    })?;
                }
                tracing::info!(table = %new_target.source_name, ddl = %sc.ddl_command, statements = statements.len(), "schema change applied");
                let resolved = Arc::new(ResolvedTable::load(applier.client(), new_target).await?);
                let old = applier.tables[i].take();
                let mut apply = TableApply::new(
                    Arc::clone(&resolved),
                    old.as_ref().and_then(|o| o.snapshot_end_lsn),
                    ctx.overwrite_inserts,
                );
                apply.reorder = old.as_ref().is_some_and(|o| o.reorder);
                apply.changes_applied = old.map_or(0, |o| o.changes_applied);
                applier.replace_table(i, apply).await?;
                t.plan = plan;
                t.table = resolved;
            }
            Some(MessageKind::NeedsResnapshot(n)) => {
                let i = n.table_index as usize;
                if applier.inside_transaction() {
                    return Err(ApplyError::Protocol {
                        detail: "re-snapshot notice inside a transaction".into(),
                    });
                }
                let min_lsn = Lsn::from_slice(&n.min_lsn);
                let covered = applier
                    .tables
                    .get(i)
                    .and_then(|t| t.as_ref())
                    .and_then(|t| t.snapshot_end_lsn);
                if let (Some(covered), Some(min)) = (covered, min_lsn) {
                    if covered >= min {
                        continue;
                    }
                }
                let Some(t) = tables.get(i) else {
                    return Err(ApplyError::Protocol {
                        detail: format!("re-snapshot notice for unknown table index {i}"),
                    });
                };
                applier.flush().await?;
                let end = resnapshot(ctx, applier.client(), t, &n.reason).await?;
                if let Some(Some(apply)) = applier.tables.get_mut(i) {
                    apply.snapshot_end_lsn = end;
                }
            }
            None => {}
        }
    }
}

/// Truncates and reloads one table after its change data was cleaned up on the source.
async fn resnapshot(
    ctx: &StreamContext,
    client: &tokio_postgres::Client,
    t: &StreamTable,
    reason: &str,
) -> Result<Option<Lsn>> {
    let name = &t.table.target.source_name;
    tracing::error!(table = %name, reason, "change data of this table is gone from the source; re-snapshotting it (truncate + reload)");
    t.tracker.update(|p| {
        p.phase = TablePhase::Resnapshot as i32;
        p.error = format!("re-snapshot required: {reason}");
        p.error_transient = true;
        p.rows_done = 0;
        p.chunks_done = 0;
        p.bytes_done = 0;
    });
    client
        .batch_execute(&format!("TRUNCATE {}", t.table.target.qualified))
        .await
        .map_err(|e| {
            ApplyError::target(&t.table.target.qualified, "truncating for a re-snapshot", e)
        })?;
    record_step(
        client,
        &ctx.task_id,
        name,
        &t.table.target.qualified,
        TableStep::Reset,
    )
    .await?;
    run_full_sync(
        Arc::clone(&ctx.full),
        client,
        vec![FullSyncTable {
            table: Arc::clone(&t.table),
            tracker: Arc::clone(&t.tracker),
        }],
        CancellationToken::new(),
    )
    .await?;
    let end = load_table_state(client, &ctx.task_id, name)
        .await?
        .and_then(|s| s.snapshot_end_lsn);
    t.tracker.update(|p| {
        p.phase = TablePhase::CatchingUp as i32;
        p.error.clear();
    });
    Ok(end)
}

/// Publishes per-table progress: changes, applied position and source time (for lag).
fn report(applier: &ChangeApplier, tables: &[StreamTable]) {
    let committed = applier.committed();
    for (i, t) in tables.iter().enumerate() {
        let Some(Some(apply)) = applier.tables.get(i) else {
            continue;
        };
        let caught_up = match (apply.snapshot_end_lsn, committed) {
            (Some(end), Some(c)) => c.commit_lsn >= end,
            (Some(_), None) => false,
            (None, _) => true,
        };
        t.tracker.update(|p| {
            if p.phase != TablePhase::Resnapshot as i32 && p.phase != TablePhase::Failed as i32 {
                p.phase = if caught_up {
                    TablePhase::Streaming
                } else {
                    TablePhase::CatchingUp
                } as i32;
            }
            p.changes_applied = apply.changes_applied;
            if let Some(c) = committed {
                p.applied_lsn = c.commit_lsn.0.to_vec();
            }
            p.applied_source_time_unix_micros = applier.last_source_time();
        });
    }
}
