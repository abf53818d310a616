//! Incremental sync of a table group: follows capture's change stream from the stored
//! position (or L0 after a full sync) and applies it with [`ChangeApplier`].
//!
//! 1. The position comes from `dbsync.stream_position`; without one, from the assignment's
//!    start LSN (changes strictly after it).
//! 2. Messages are applied as they arrive; whenever the stream has nothing ready, the open
//!    PostgreSQL transaction is committed with the position (so lag stays low under light load
//!    and several small source transactions share one commit under heavy load).
//! 3. `SchemaChange`: pending work is committed, then the target table is altered and the new
//!    source schema recorded in `dbsync.source_schemas` in one transaction
//!    ([`follow_schema_change`]); the table is re-read and later changes use the new columns.
//!    The recorded schema outranks the assignment's when the group starts again
//!    ([`adopt_followed_schemas`], the target has that shape) and is reported
//!    (`TableProgress.source_schema`) so that the coordinator plans with it. A replayed schema
//!    change alters nothing.
//! 4. `TableNeedsResnapshot` (retention cleanup removed changes the stream still needs, or
//!    columns were added to a keyless table that no capture instance recorded): only
//!    that table is loaded again while the other tables of the group keep streaming.
//!    - Recorded first: at a transaction boundary the table is written to
//!      `dbsync.resnapshots` with `S`, the source's max LSN read before the reload, and
//!      truncated, in one transaction. From then on the main stream skips the table's changes.
//!    - A side task reloads it (the full-sync chunk path), then follows a side stream of that
//!      table alone from `S`, applying idempotently (inserts are upserts), with its own
//!      checkpoint. It applies a transaction only once the main stream has committed past it,
//!      so it never runs ahead of the main stream and holds at most one message.
//!    - When the main stream has committed a position `P >= S` and the side stream has
//!      delivered everything up to `P`, the side task commits and ends; in the main stream's
//!      transaction the record goes, and the main stream is reopened from `P` with the table
//!      (capture drops a table from a stream once it reported it).
//!    - After a crash the record makes the group redo the rest: the reload resumes at its
//!      first unfinished chunk, the side stream at its checkpoint (the assignment's full-sync
//!      stage leaves the table to the side task, so the other tables stream meanwhile). A side
//!      stream that overruns retention again starts the table's re-snapshot over.
//!    - Source schema changes: before (re)loading, the table's schema is read from the source
//!      and followed if it changed (the announcement of a change below `S` went with the lost
//!      change data); the side stream follows later ones like the main stream, and the table
//!      rejoins in its new shape. The main stream leaves a paused table's schema changes to
//!      the side.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dbsync_core::lsn::{Lsn, Position};
use dbsync_core::sink::{ChangeSink, CheckpointStore};
use dbsync_proto::v1::change_message::Kind as MessageKind;
use dbsync_proto::v1::{
    Assignment, ObjectSelection, ReadSchemaRequest, ResnapshotCause, SourceConnection,
    StreamChangesRequest, TablePhase, TablePlan, TableProgress, TableRef, TableSchema,
    TargetConnection, Throttle, TransactionFragment,
};
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::capture::CaptureClient;
use crate::error::{ApplyError, Result};
use crate::full::{read_max_lsn, run_full_sync, FullSyncContext, FullSyncTable};
use crate::pg::catalog::{unique_index_count, ResolvedTable};
use crate::pg::changes::{check_filter, ApplyLimits, ChangeApplier, TableApply};
use crate::pg::checkpoint::{
    begin_resnapshot, end_resnapshot, ensure_schema, load_resnapshots, load_source_schemas,
    load_table_state, save_source_schema, side_group_id, PgCheckpoints,
};
use crate::pg::ddl::{alter_table_ddl, rename_columns};
use crate::plan::TableTarget;
use crate::progress::{ProgressSink, TableTracker};

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
    /// `StreamChangesRequest.object_prefix`: hybrid mode's source object prefix (empty: default).
    pub object_prefix: String,
    /// `incremental.on_retention_overrun: fail`: a retention overrun fails the task instead of
    /// re-snapshotting the table.
    pub fail_on_retention_overrun: bool,
    /// Sessions set `session_replication_role = replica` (false when FKs are deferred).
    pub replication_role: bool,
    /// For re-snapshots after a retention overrun.
    pub full: Arc<FullSyncContext>,
}

const REPORT_EVERY: Duration = Duration::from_millis(500);

/// Gives the assignment's tables the source schemas recorded when their source schema changes
/// were followed (`dbsync.source_schemas`): the target tables have that shape, while the
/// coordinator's plan may still be older (its report was lost, or it predates the change).
pub async fn adopt_followed_schemas(assignment: &mut Assignment) -> Result<()> {
    if !assignment.incremental_sync {
        return Ok(());
    }
    let Some(target) = assignment.target.as_ref() else {
        return Ok(());
    };
    let mut client = crate::pg::connect_plain(target).await?;
    ensure_schema(&mut client).await?;
    let followed = load_source_schemas(&client, &assignment.task_id).await?;
    for plan in &mut assignment.tables {
        let name = plan
            .source
            .as_ref()
            .and_then(|s| s.table.as_ref())
            .map(crate::plan::source_name);
        if let Some(schema) = name.and_then(|n| followed.get(&n)) {
            plan.source = Some(schema.clone());
        }
    }
    Ok(())
}

/// The change stream request of `tables`, resuming after `start`.
// `..Default::default()` stays so that fields added to the request later default to off.
#[allow(clippy::needless_update)]
fn change_request(
    ctx: &StreamContext,
    tables: Vec<dbsync_proto::v1::TableSchema>,
    start: Option<Position>,
) -> StreamChangesRequest {
    StreamChangesRequest {
        source: Some(ctx.source.clone()),
        task_id: ctx.task_id.clone(),
        tables,
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
        object_prefix: ctx.object_prefix.clone(),
        heartbeat_interval_ms: 1000,
        ..Default::default()
    }
}

async fn open_stream(
    ctx: &StreamContext,
    request: StreamChangesRequest,
    what: &str,
) -> Result<tonic::Streaming<dbsync_proto::v1::ChangeMessage>> {
    Ok(ctx
        .capture
        .clone()
        .stream_changes(request)
        .await
        .map_err(|s| {
            ApplyError::capture_status(&ctx.capture_address, what, "starting the change stream", s)
        })?
        .into_inner())
}

/// The next message of a change stream; the end of the stream is an error.
fn stream_message(
    ctx: &StreamContext,
    what: &str,
    next: Option<std::result::Result<dbsync_proto::v1::ChangeMessage, tonic::Status>>,
) -> Result<dbsync_proto::v1::ChangeMessage> {
    match next {
        Some(Ok(m)) => Ok(m),
        Some(Err(status)) => Err(ApplyError::capture_status(
            &ctx.capture_address,
            what,
            "streaming changes",
            status,
        )),
        None => Err(ApplyError::CaptureUnavailable {
            address: ctx.capture_address.clone(),
            action: "streaming changes",
            detail: "the stream ended".into(),
        }),
    }
}

/// The main stream asks a side task to stop at `at` (its committed position).
struct Rejoin {
    at: Position,
    reply: oneshot::Sender<bool>,
}

/// A table being re-snapshotted, seen from the main stream.
struct Side {
    /// The side stream starts after this LSN (the main stream must have passed it).
    from: Lsn,
    /// Everything of the table up to this position has been applied by the side task.
    through: watch::Receiver<Option<Position>>,
    commands: mpsc::Sender<Rejoin>,
    /// What the side task hands back when it ended.
    handle: JoinHandle<Result<Rejoined>>,
    /// The main position of the previous rejoin check.
    checked_at: Option<Position>,
}

impl Drop for Side {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// What side tasks share with the main stream.
struct SideShared {
    /// The main stream's committed position.
    main: watch::Receiver<Option<Position>>,
    /// Woken when a side task's `through` moves.
    moved: Arc<Notify>,
    /// A failed side task fails the group (its retry redoes the rest from the record).
    errors: mpsc::UnboundedSender<ApplyError>,
}

pub async fn run_stream(
    ctx: &StreamContext,
    mut tables: Vec<StreamTable>,
    shutdown: CancellationToken,
) -> Result<()> {
    let ctx_arc = Arc::new(StreamContext {
        task_id: ctx.task_id.clone(),
        group_id: ctx.group_id.clone(),
        source: ctx.source.clone(),
        target: ctx.target.clone(),
        capture: ctx.capture.clone(),
        capture_address: ctx.capture_address.clone(),
        incremental_mode: ctx.incremental_mode.clone(),
        throttle: ctx.throttle,
        start_lsn: ctx.start_lsn,
        overwrite_inserts: ctx.overwrite_inserts,
        poll_interval_ms: ctx.poll_interval_ms,
        object_prefix: ctx.object_prefix.clone(),
        fail_on_retention_overrun: ctx.fail_on_retention_overrun,
        replication_role: ctx.replication_role,
        full: Arc::clone(&ctx.full),
    });
    let client = crate::pg::connect_data(&ctx.target, ctx.replication_role).await?;
    let stored = PgCheckpoints {
        client: &client,
        task_id: &ctx.task_id,
    }
    .load_position(&ctx.group_id)
    .await?;
    let start = stored.or(ctx.start_lsn.map(Position::end_of));
    let resnapshots = load_resnapshots(&client, &ctx.task_id).await?;
    // Followed schema changes are reported until the coordinator's plan has them (its plan
    // may predate them after a restart; the assignment was given the recorded schema).
    let followed = load_source_schemas(&client, &ctx.task_id).await?;
    for t in &tables {
        if let Some(schema) = followed.get(&t.table.target.source_name) {
            t.tracker.update(|p| p.source_schema = Some(schema.clone()));
        }
    }
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
        apply.paused = resnapshots
            .iter()
            .any(|(name, _)| *name == t.table.target.source_name);
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
    let (main_position, main_rx) = watch::channel(applier.committed());
    let (errors, mut side_errors) = mpsc::unbounded_channel();
    let shared = Arc::new(SideShared {
        main: main_rx,
        moved: Arc::new(Notify::new()),
        errors,
    });
    let mut sides: HashMap<usize, Side> = HashMap::new();
    for (name, from) in resnapshots {
        if let Some(i) = tables
            .iter()
            .position(|t| t.table.target.source_name == name)
        {
            tracing::warn!(table = %name, from = %from, "resuming the re-snapshot of this table");
            sides.insert(
                i,
                spawn_side(&ctx_arc, &shared, &tables[i], from, &shutdown),
            );
        }
    }
    report(&applier, &tables);
    let mut last_report = Instant::now();
    // Each round reads one main stream; a table that rejoins ends the round (capture drops a
    // reported table from its stream, so the stream is reopened with it).
    'rounds: loop {
        let from = applier.committed();
        let request = change_request(
            ctx,
            tables
                .iter()
                .map(|t| t.table.target.source.clone())
                .collect(),
            from,
        );
        tracing::info!(task_id = %ctx.task_id, group = %ctx.group_id, from = ?from, "streaming changes");
        let mut stream = open_stream(ctx, request, &ctx.group_id).await?;
        loop {
            main_position.send_if_modified(|p| {
                let changed = *p != applier.committed();
                *p = applier.committed();
                changed
            });
            let next = match stream.next().now_or_never() {
                Some(m) => m,
                None => {
                    // Nothing ready: make what we have durable, then wait.
                    if applier.flush().await?.is_some() || last_report.elapsed() >= REPORT_EVERY {
                        report(&applier, &tables);
                        last_report = Instant::now();
                    }
                    main_position.send_if_modified(|p| {
                        let changed = *p != applier.committed();
                        *p = applier.committed();
                        changed
                    });
                    if try_rejoin(ctx, &mut applier, &mut tables, &mut sides).await? {
                        continue 'rounds;
                    }
                    tokio::select! {
                        m = stream.next() => m,
                        _ = shared.moved.notified(), if !sides.is_empty() => continue,
                        Some(e) = side_errors.recv() => {
                            applier.flush().await?;
                            return Err(e);
                        }
                        _ = shutdown.cancelled() => {
                            applier.flush().await?;
                            report(&applier, &tables);
                            return Err(ApplyError::Cancelled);
                        }
                    }
                }
            };
            let message = stream_message(ctx, &ctx.group_id, next)?;
            match message.kind {
                Some(MessageKind::Transaction(fragment)) => {
                    let committed = applier.apply_fragment(fragment).await?.is_some();
                    if committed {
                        if last_report.elapsed() >= REPORT_EVERY {
                            report(&applier, &tables);
                            last_report = Instant::now();
                        }
                        main_position.send_replace(applier.committed());
                        if try_rejoin(ctx, &mut applier, &mut tables, &mut sides).await? {
                            continue 'rounds;
                        }
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
                    if applier.tables[i].as_ref().is_some_and(|a| a.paused) {
                        // Being re-snapshotted: its side stream follows the change (and the
                        // table comes back in the new shape when it rejoins).
                        continue;
                    }
                    applier.flush().await?;
                    let lsn = Lsn::from_slice(&sc.lsn).unwrap_or(Lsn::ZERO);
                    let (plan, resolved) = follow_schema_change(
                        &ctx.task_id,
                        applier.client(),
                        applier.inside_transaction(),
                        &t.plan,
                        &t.table,
                        new_schema,
                        lsn,
                        &sc.ddl_command,
                    )
                    .await?;
                    let old = applier.tables[i].take();
                    let apply = altered(old, Arc::clone(&resolved), ctx.overwrite_inserts);
                    applier.replace_table(i, apply).await?;
                    t.tracker.update(|p| p.source_schema = plan.source.clone());
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
                    let Some(t) = tables.get(i) else {
                        return Err(ApplyError::Protocol {
                            detail: format!("re-snapshot notice for unknown table index {i}"),
                        });
                    };
                    if sides.contains_key(&i) {
                        // Already being re-snapshotted (the record survived a restart).
                        continue;
                    }
                    if ctx.fail_on_retention_overrun && n.cause() == ResnapshotCause::Retention {
                        let lsn_text = |bytes: &[u8]| {
                            Lsn::from_slice(bytes)
                                .map_or_else(|| "(unknown)".into(), |l| l.to_string())
                        };
                        let error = ApplyError::RetentionOverrun {
                            table: t.table.target.source_name.clone(),
                            requested: lsn_text(&n.requested_lsn),
                            min: lsn_text(&n.min_lsn),
                            reason: n.reason.clone(),
                        };
                        tracing::error!(%error, "retention overrun; failing the task (incremental.on_retention_overrun: fail)");
                        t.tracker.update(|p| {
                            p.phase = TablePhase::Failed as i32;
                            p.error = error.to_string();
                            p.error_transient = false;
                        });
                        return Err(error);
                    }
                    applier.flush().await?;
                    let from = start_resnapshot(ctx, applier.client(), t, &n.reason).await?;
                    if let Some(Some(apply)) = applier.tables.get_mut(i) {
                        apply.paused = true;
                    }
                    sides.insert(i, spawn_side(&ctx_arc, &shared, t, from, &shutdown));
                }
                None => {}
            }
        }
    }
}

/// Follows a source schema change of one table: alters the target table from `current` to
/// `new_schema` and records the new schema (`dbsync.source_schemas`) in one PostgreSQL
/// transaction, or inside the open one when `in_transaction` (the DDL shared a source
/// transaction with changes, which then commit with it). Replaying a change the target has
/// already followed alters nothing. Returns the new plan and the table re-read.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn follow_schema_change(
    task_id: &str,
    client: &tokio_postgres::Client,
    in_transaction: bool,
    plan: &TablePlan,
    current: &ResolvedTable,
    new_schema: TableSchema,
    lsn: Lsn,
    ddl_command: &str,
) -> Result<(TablePlan, Arc<ResolvedTable>)> {
    let mut plan = plan.clone();
    plan.source = Some(new_schema);
    let new_target = TableTarget::from_plan(&plan)?;
    let (mut statements, renamed) = rename_columns(&current.target, &new_target);
    statements.extend(alter_table_ddl(&renamed, &new_target).map_err(|detail| {
        ApplyError::InvalidPlan {
            object: new_target.source_name.clone(),
            detail,
        }
    })?);
    let fail = |e| ApplyError::target(&new_target.qualified, "following a source schema change", e);
    if !in_transaction {
        client.batch_execute("BEGIN").await.map_err(fail)?;
    }
    let mut work = async {
        for sql in &statements {
            client.batch_execute(sql).await.map_err(fail)?;
        }
        save_source_schema(
            client,
            task_id,
            &new_target.source_name,
            &new_target.source,
            lsn,
            ddl_command,
        )
        .await
    }
    .await;
    if !in_transaction {
        work = match work {
            Ok(()) => client.batch_execute("COMMIT").await.map_err(fail),
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                Err(e)
            }
        };
    }
    work?;
    tracing::info!(table = %new_target.source_name, ddl = %ddl_command, lsn = %lsn, statements = statements.len(), "schema change applied");
    let resolved = Arc::new(ResolvedTable::load(client, new_target).await?);
    Ok((plan, resolved))
}

/// The table's schema on the source now; `None` when it is not there.
pub(crate) async fn read_source_schema(
    capture: &CaptureClient,
    source: &SourceConnection,
    capture_address: &str,
    t: &ResolvedTable,
) -> Result<Option<TableSchema>> {
    let mut one = read_source_schemas(capture, source, capture_address, &[t]).await?;
    Ok(one.pop().flatten())
}

/// The schemas of `tables` on the source now, in their order (one ReadSchema call); `None`
/// for a table that is not there.
pub(crate) async fn read_source_schemas(
    capture: &CaptureClient,
    source: &SourceConnection,
    capture_address: &str,
    tables: &[&ResolvedTable],
) -> Result<Vec<Option<TableSchema>>> {
    let Some(first) = tables.first() else {
        return Ok(Vec::new());
    };
    let refs: Vec<TableRef> = tables
        .iter()
        .map(|t| t.target.source.table.clone().unwrap_or_default())
        .collect();
    let mut databases: Vec<String> = refs.iter().map(|r| r.database.clone()).collect();
    databases.sort();
    databases.dedup();
    let response = capture
        .clone()
        .read_schema(ReadSchemaRequest {
            source: Some(source.clone()),
            selection: Some(ObjectSelection {
                databases,
                include: refs
                    .iter()
                    .map(|r| format!("{}.{}", r.schema, r.name))
                    .collect(),
                exclude: vec![],
            }),
        })
        .await
        .map_err(|s| {
            ApplyError::capture_status(
                capture_address,
                &first.target.source_name,
                "reading its schema",
                s,
            )
        })?
        .into_inner();
    let same = |a: &TableRef, b: &TableRef| {
        (a.database.is_empty()
            || b.database.is_empty()
            || a.database.eq_ignore_ascii_case(&b.database))
            && a.schema.eq_ignore_ascii_case(&b.schema)
            && a.name.eq_ignore_ascii_case(&b.name)
    };
    Ok(refs
        .iter()
        .map(|r| {
            response
                .tables
                .iter()
                .find(|s| s.table.as_ref().is_some_and(|t| same(t, r)))
                .cloned()
        })
        .collect())
}

/// True when two schemas of a table have the same columns and key (what the target's shape
/// depends on; an identity's current value, say, does not count).
pub(crate) fn same_columns(a: &TableSchema, b: &TableSchema) -> bool {
    let shape = |c: &dbsync_proto::v1::ColumnSchema| {
        (
            c.name.clone(),
            c.type_name.clone(),
            c.max_length,
            c.precision,
            c.scale,
            c.nullable,
            c.collation.clone(),
            c.computed_definition.clone(),
        )
    };
    a.key_columns == b.key_columns
        && a.columns.len() == b.columns.len()
        && a.columns
            .iter()
            .zip(&b.columns)
            .all(|(x, y)| shape(x) == shape(y))
}

/// A table's apply state after its target was altered: as before, with the new columns.
fn altered(
    old: Option<TableApply>,
    table: Arc<ResolvedTable>,
    overwrite_inserts: bool,
) -> TableApply {
    let mut apply = TableApply::new(
        table,
        old.as_ref().and_then(|o| o.snapshot_end_lsn),
        old.as_ref()
            .map_or(overwrite_inserts, |o| o.overwrite_inserts),
    );
    apply.reorder = old.as_ref().is_some_and(|o| o.reorder);
    apply.paused = old.as_ref().is_some_and(|o| o.paused);
    apply.changes_applied = old.map_or(0, |o| o.changes_applied);
    apply
}

/// The source's current max LSN (a re-snapshot's side stream starts after it).
async fn source_max_lsn(ctx: &StreamContext, t: &ResolvedTable) -> Result<Lsn> {
    read_max_lsn(&ctx.capture, &ctx.source, &ctx.capture_address, t)
        .await?
        .ok_or_else(|| ApplyError::CaptureUnavailable {
            address: ctx.capture_address.clone(),
            action: "reading the max LSN",
            detail: "the source has no max LSN yet (is the CDC capture job running?)".into(),
        })
}

/// Records a table's re-snapshot and empties it, in one transaction on `client` (outside any
/// other transaction). Returns the LSN its side stream starts after.
async fn start_resnapshot(
    ctx: &StreamContext,
    client: &tokio_postgres::Client,
    t: &StreamTable,
    reason: &str,
) -> Result<Lsn> {
    let name = &t.table.target.source_name;
    let from = source_max_lsn(ctx, &t.table).await?;
    tracing::error!(table = %name, reason, from = %from, "change data of this table is gone from the source; re-snapshotting it (truncate + reload) while the other tables keep streaming");
    t.tracker.update(|p| {
        p.phase = TablePhase::Resnapshot as i32;
        p.error = format!("re-snapshot required: {reason}");
        p.error_transient = true;
        p.rows_done = 0;
        p.chunks_done = 0;
        p.bytes_done = 0;
    });
    let fail = |e| ApplyError::target(name, "recording its re-snapshot", e);
    client.batch_execute("BEGIN").await.map_err(fail)?;
    let recorded = begin_resnapshot(
        client,
        &ctx.task_id,
        &ctx.group_id,
        name,
        &t.table.target.qualified,
        from,
        reason,
    )
    .await;
    if let Err(e) = recorded {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(e);
    }
    client.batch_execute("COMMIT").await.map_err(fail)?;
    Ok(from)
}

fn spawn_side(
    ctx: &Arc<StreamContext>,
    shared: &Arc<SideShared>,
    t: &StreamTable,
    from: Lsn,
    shutdown: &CancellationToken,
) -> Side {
    let (through_tx, through) = watch::channel(None);
    let (commands, commands_rx) = mpsc::channel(1);
    let (ctx, shared, shutdown) = (Arc::clone(ctx), Arc::clone(shared), shutdown.child_token());
    let (plan, table, tracker) = (t.plan.clone(), Arc::clone(&t.table), Arc::clone(&t.tracker));
    let handle = tokio::spawn(async move {
        let result = run_side(
            &ctx,
            &shared,
            plan,
            table,
            tracker,
            from,
            through_tx,
            commands_rx,
            shutdown,
        )
        .await;
        match result {
            // The main stream fails the group with it.
            Err(e) => {
                let _ = shared.errors.send(e);
                Err(ApplyError::Cancelled)
            }
            ok => ok,
        }
    });
    Side {
        from,
        through,
        commands,
        handle,
        checked_at: None,
    }
}

/// Publishes a reload's progress through the table's tracker as RESNAPSHOT (the chunk path
/// reports SNAPSHOT).
struct ReloadProgress(Arc<TableTracker>);

impl ProgressSink for ReloadProgress {
    fn table(&self, mut progress: TableProgress) {
        if progress.phase == TablePhase::Snapshot as i32 {
            progress.phase = TablePhase::Resnapshot as i32;
        }
        self.0.update(|p| *p = progress);
    }

    fn task_error(&self, _message: String, _class: dbsync_core::ErrorClass) {}
}

fn reload_tracker(tracker: &Arc<TableTracker>) -> Arc<TableTracker> {
    let current = tracker.current();
    let reload = TableTracker::new(
        current.source.clone().unwrap_or_default(),
        Arc::new(ReloadProgress(Arc::clone(tracker))),
    );
    reload.update(|p| *p = current);
    Arc::new(reload)
}

/// A re-snapshotted table handed back to the main stream, in its current shape (source schema
/// changes during the re-snapshot were followed by the side task).
struct Rejoined {
    /// Changes applied by the side stream.
    changes: u64,
    plan: TablePlan,
    table: Arc<ResolvedTable>,
}

/// How a side stream ended.
enum SideEnd {
    /// Caught up; the table rejoined the main stream. Changes applied by the side.
    Rejoined(u64),
    /// Retention overran the side stream too: start over.
    Overrun(String),
}

/// A table's re-snapshot: reload (unless done), then its side stream until it rejoins.
#[allow(clippy::too_many_arguments)]
async fn run_side(
    ctx: &StreamContext,
    shared: &SideShared,
    mut plan: TablePlan,
    mut table: Arc<ResolvedTable>,
    tracker: Arc<TableTracker>,
    mut from: Lsn,
    through: watch::Sender<Option<Position>>,
    mut commands: mpsc::Receiver<Rejoin>,
    shutdown: CancellationToken,
) -> Result<Rejoined> {
    let name = table.target.source_name.clone();
    let side_group = side_group_id(&name);
    loop {
        through.send_replace(None);
        let client = crate::pg::connect_data(&ctx.target, ctx.replication_role).await?;
        let state = load_table_state(&client, &ctx.task_id, &name)
            .await?
            .unwrap_or_default();
        if !state.snapshot_done {
            tracker.update(|p| p.phase = TablePhase::Resnapshot as i32);
            // The reload reads the table as it is now: a schema change since the stream's
            // position (whose announcement went with the change data) is followed first.
            let now =
                read_source_schema(&ctx.capture, &ctx.source, &ctx.capture_address, &table).await?;
            if let Some(now) = now {
                if !same_columns(&now, &table.target.source) {
                    let followed = follow_schema_change(
                        &ctx.task_id,
                        &client,
                        false,
                        &plan,
                        &table,
                        now,
                        from,
                        "",
                    )
                    .await?;
                    (plan, table) = followed;
                    tracker.update(|p| p.source_schema = plan.source.clone());
                }
            }
            run_full_sync(
                Arc::clone(&ctx.full),
                &client,
                vec![FullSyncTable {
                    table: Arc::clone(&table),
                    tracker: reload_tracker(&tracker),
                }],
                shutdown.clone(),
            )
            .await?;
        }
        let end = load_table_state(&client, &ctx.task_id, &name)
            .await?
            .and_then(|s| s.snapshot_end_lsn);
        tracker.update(|p| {
            p.phase = TablePhase::CatchingUp as i32;
            p.error.clear();
            p.error_transient = false;
        });
        let start = PgCheckpoints {
            client: &client,
            task_id: &ctx.task_id,
        }
        .load_position(&side_group)
        .await?
        .unwrap_or(Position::end_of(from));
        // Idempotent throughout: a side stream replayed from an older checkpoint converges.
        let mut apply = TableApply::new(Arc::clone(&table), end, true);
        apply.reorder = ctx.replication_role
            && unique_index_count(&client, &table.target.qualified).await? <= 1;
        let mut applier = ChangeApplier::start(
            client,
            &ctx.task_id,
            &side_group,
            vec![Some(apply)],
            Some(start),
            ApplyLimits::default(),
        )
        .await?;
        tracing::info!(table = %name, from = ?start, snapshot_end = ?end, "table reloaded; following its side stream");
        through.send_replace(Some(start));
        shared.moved.notify_one();
        let end = follow_side(
            ctx,
            shared,
            &mut applier,
            &mut plan,
            &tracker,
            &through,
            &mut commands,
            &shutdown,
        )
        .await?;
        table = Arc::clone(&applier.tables[0].as_ref().expect("one table").table);
        match end {
            SideEnd::Rejoined(changes) => {
                return Ok(Rejoined {
                    changes,
                    plan,
                    table,
                })
            }
            SideEnd::Overrun(reason) => {
                applier.flush().await?;
                from = source_max_lsn(ctx, &table).await?;
                tracing::error!(table = %name, %reason, from = %from, "the side stream of a re-snapshot overran retention too; re-snapshotting the table again");
                tracker.update(|p| {
                    p.phase = TablePhase::Resnapshot as i32;
                    p.error = format!("re-snapshot required: {reason}");
                    p.error_transient = true;
                    p.rows_done = 0;
                    p.chunks_done = 0;
                    p.bytes_done = 0;
                });
                let client = applier.client();
                let fail = |e| ApplyError::target(&name, "recording its re-snapshot", e);
                client.batch_execute("BEGIN").await.map_err(fail)?;
                let recorded = begin_resnapshot(
                    client,
                    &ctx.task_id,
                    &ctx.group_id,
                    &name,
                    &table.target.qualified,
                    from,
                    &reason,
                )
                .await;
                if let Err(e) = recorded {
                    let _ = client.batch_execute("ROLLBACK").await;
                    return Err(e);
                }
                client.batch_execute("COMMIT").await.map_err(fail)?;
            }
        }
    }
}

/// Applies the side stream, never past the main stream's committed position, until the main
/// stream asks to take the table back at a position the side has reached. Source schema
/// changes of the table are followed as the main stream follows them.
#[allow(clippy::too_many_arguments)]
async fn follow_side(
    ctx: &StreamContext,
    shared: &SideShared,
    applier: &mut ChangeApplier,
    plan: &mut TablePlan,
    tracker: &TableTracker,
    through: &watch::Sender<Option<Position>>,
    commands: &mut mpsc::Receiver<Rejoin>,
    shutdown: &CancellationToken,
) -> Result<SideEnd> {
    let table = Arc::clone(&applier.tables[0].as_ref().expect("one table").table);
    let what = table.target.source_name.as_str();
    let request = change_request(ctx, vec![table.target.source.clone()], applier.committed());
    let mut stream = open_stream(ctx, request, what).await?;
    let mut main = shared.main.clone();
    let set_through = |p: Position| {
        let moved = through.send_if_modified(|t| {
            let newer = t.is_none_or(|t| p > t);
            if newer {
                *t = Some(p);
            }
            newer
        });
        if moved {
            shared.moved.notify_one();
        }
    };
    // The first fragment of a transaction the main stream has not committed past yet.
    let mut held: Option<TransactionFragment> = None;
    loop {
        if let Some(f) = &held {
            let lsn = Lsn::from_slice(&f.commit_lsn).unwrap_or(Lsn::MAX);
            if main.borrow().is_some_and(|m| Position::end_of(lsn) <= m) {
                let f = held.take().expect("checked");
                let last = f.last_fragment;
                applier.apply_fragment(f).await?;
                if last {
                    set_through(Position::end_of(lsn));
                }
                continue;
            }
            applier.flush().await?;
            tokio::select! {
                changed = main.changed() => {
                    if changed.is_err() {
                        return Err(ApplyError::Cancelled);
                    }
                }
                Some(rejoin) = commands.recv() => {
                    if let Some(n) = answer(applier, through, rejoin).await? {
                        return Ok(SideEnd::Rejoined(n));
                    }
                }
                _ = shutdown.cancelled() => return Err(ApplyError::Cancelled),
            }
            continue;
        }
        let next = match stream.next().now_or_never() {
            Some(m) => m,
            None => {
                applier.flush().await?;
                tokio::select! {
                    m = stream.next() => m,
                    Some(rejoin) = commands.recv() => {
                        if let Some(n) = answer(applier, through, rejoin).await? {
                            return Ok(SideEnd::Rejoined(n));
                        }
                        continue;
                    }
                    _ = shutdown.cancelled() => {
                        applier.flush().await?;
                        return Err(ApplyError::Cancelled);
                    }
                }
            }
        };
        let message = stream_message(ctx, what, next)?;
        match message.kind {
            Some(MessageKind::Transaction(fragment)) => {
                if applier.inside_transaction() {
                    let last = fragment.last_fragment;
                    let lsn = Lsn::from_slice(&fragment.commit_lsn);
                    applier.apply_fragment(fragment).await?;
                    if let (true, Some(lsn)) = (last, lsn) {
                        set_through(Position::end_of(lsn));
                    }
                } else {
                    // Everything before this transaction has been delivered.
                    if let Some(lsn) = Lsn::from_slice(&fragment.commit_lsn) {
                        set_through(Position::end_of(lsn.decrement()));
                    }
                    held = Some(fragment);
                }
            }
            Some(MessageKind::Progress(p)) => {
                if let Some(lsn) = Lsn::from_slice(&p.lsn) {
                    applier.advance(lsn, p.source_time_unix_micros).await?;
                    set_through(Position::end_of(lsn.decrement()));
                }
            }
            Some(MessageKind::Columns(c)) => {
                if let Some(Some(t)) = applier.tables.get_mut(0) {
                    t.set_change_columns(&c.columns);
                }
            }
            Some(MessageKind::SchemaChange(sc)) => {
                let Some(new_schema) = sc.new_schema else {
                    return Err(ApplyError::Protocol {
                        detail: format!("schema change of {what} without its new schema"),
                    });
                };
                applier.flush().await?;
                let current = Arc::clone(&applier.tables[0].as_ref().expect("one table").table);
                let (new_plan, resolved) = follow_schema_change(
                    &ctx.task_id,
                    applier.client(),
                    applier.inside_transaction(),
                    plan,
                    &current,
                    new_schema,
                    Lsn::from_slice(&sc.lsn).unwrap_or(Lsn::ZERO),
                    &sc.ddl_command,
                )
                .await?;
                let old = applier.tables[0].take();
                applier
                    .replace_table(0, altered(old, resolved, true))
                    .await?;
                tracker.update(|p| p.source_schema = new_plan.source.clone());
                *plan = new_plan;
            }
            Some(MessageKind::NeedsResnapshot(n)) => {
                applier.flush().await?;
                return Ok(SideEnd::Overrun(n.reason));
            }
            None => {}
        }
    }
}

/// Answers the main stream: the side stops (committed) when it has applied everything up to
/// `rejoin.at` and is between transactions.
async fn answer(
    applier: &mut ChangeApplier,
    through: &watch::Sender<Option<Position>>,
    rejoin: Rejoin,
) -> Result<Option<u64>> {
    let ready = !applier.inside_transaction() && through.borrow().is_some_and(|t| t >= rejoin.at);
    if ready {
        applier.flush().await?;
    }
    let _ = rejoin.reply.send(ready);
    Ok(ready.then(|| applier.tables[0].as_ref().map_or(0, |t| t.changes_applied)))
}

/// Takes back every re-snapshotted table whose side stream has reached the main stream's
/// committed position (at or after its start). Call between transactions with nothing
/// pending. True when a table rejoined (the main stream must be reopened).
async fn try_rejoin(
    ctx: &StreamContext,
    applier: &mut ChangeApplier,
    tables: &mut [StreamTable],
    sides: &mut HashMap<usize, Side>,
) -> Result<bool> {
    let Some(at) = applier.committed() else {
        return Ok(false);
    };
    if sides.is_empty() || applier.inside_transaction() {
        return Ok(false);
    }
    let mut rejoined = false;
    let indexes: Vec<usize> = sides.keys().copied().collect();
    for i in indexes {
        let side = sides.get_mut(&i).expect("listed");
        if at < Position::end_of(side.from) {
            continue;
        }
        let reached = |t: &Option<Position>| t.is_some_and(|t| t >= at);
        if !reached(&side.through.borrow()) {
            // A side that reached the previous check's position lags only by what was just
            // committed: wait for it briefly, so that it can rejoin under steady load.
            let kept_up = side
                .checked_at
                .is_some_and(|p| side.through.borrow().is_some_and(|t| t >= p));
            side.checked_at = Some(at);
            if !kept_up {
                continue;
            }
            let waited =
                tokio::time::timeout(Duration::from_secs(2), side.through.wait_for(reached)).await;
            if !matches!(waited, Ok(Ok(_))) {
                continue;
            }
        }
        let (reply, answer) = oneshot::channel();
        if side.commands.send(Rejoin { at, reply }).await.is_err() {
            continue;
        }
        if !answer.await.unwrap_or(false) {
            continue;
        }
        let mut side = sides.remove(&i).expect("listed");
        let side_end = match (&mut side.handle).await {
            Ok(result) => result?,
            Err(e) => {
                return Err(ApplyError::Protocol {
                    detail: format!("re-snapshot task panicked: {e}"),
                })
            }
        };
        let t = &mut tables[i];
        t.plan = side_end.plan;
        t.table = side_end.table;
        let side_changes = side_end.changes;
        let name = &t.table.target.source_name;
        let client = applier.client();
        let fail = |e| ApplyError::target(name, "ending its re-snapshot", e);
        client.batch_execute("BEGIN").await.map_err(fail)?;
        if let Err(e) = end_resnapshot(client, &ctx.task_id, name).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
        client.batch_execute("COMMIT").await.map_err(fail)?;
        let end = load_table_state(applier.client(), &ctx.task_id, name)
            .await?
            .and_then(|s| s.snapshot_end_lsn);
        let old = applier.tables[i].take();
        let mut apply = TableApply::new(Arc::clone(&t.table), end, ctx.overwrite_inserts);
        apply.reorder = old.as_ref().is_some_and(|o| o.reorder);
        apply.changes_applied = old.map_or(0, |o| o.changes_applied) + side_changes;
        applier.replace_table(i, apply).await?;
        t.tracker.update(|p| {
            p.phase = TablePhase::Streaming as i32;
            p.error.clear();
            p.error_transient = false;
        });
        tracing::warn!(table = %name, at = ?at, "re-snapshot finished; the table rejoined the change stream");
        rejoined = true;
    }
    Ok(rejoined)
}

/// Publishes per-table progress: changes, applied position and source time (for lag).
fn report(applier: &ChangeApplier, tables: &[StreamTable]) {
    let committed = applier.committed();
    for (i, t) in tables.iter().enumerate() {
        let Some(Some(apply)) = applier.tables.get(i) else {
            continue;
        };
        if apply.paused {
            // Its re-snapshot task reports it.
            continue;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_values_do_not_make_another_shape() {
        let a = crate::pg::ddl::tests::plan_with_ids(&[]).source.unwrap();
        let mut b = a.clone();
        b.columns[0].identity = Some(dbsync_proto::v1::Identity {
            seed: 1,
            increment: 1,
            last_value: Some(99),
        });
        assert!(same_columns(&a, &b));
        b.columns[1].max_length = 400;
        assert!(!same_columns(&a, &b));
    }
}
