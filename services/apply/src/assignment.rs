//! One assignment (a task's table group) from start to end: schema, full sync, post-load
//! DDL, then the change stream until shutdown.

use std::sync::Arc;

use dbsync_core::error::{Classify, ErrorClass};
use dbsync_core::lsn::Lsn;
use dbsync_core::Secret;
use dbsync_proto::v1::{Assignment, TablePhase};
use tokio_util::sync::CancellationToken;

use crate::error::{ApplyError, Result};
use crate::full::{run_full_sync, FullSyncContext, FullSyncTable};
use crate::pg::catalog::ResolvedTable;
use crate::pg::checkpoint::{ensure_schema, load_resnapshots, load_table_state};
use crate::pg::ddl::DdlOptions;
use crate::plan::{normalize_ops, TableTarget};
use crate::progress::{class_name, ProgressSink, TableTracker};
use crate::schema::{create_objects, keeps_existing, post_load};
use crate::stream::{
    follow_schema_change, read_source_schemas, run_stream, same_columns, StreamContext, StreamTable,
};

/// Settings of the applier that are not part of an assignment.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Upper bound on chunks loaded at once (the assignment's `parallel_chunks` may lower it).
    pub max_parallel_chunks: usize,
    /// Bearer token for the capture service.
    pub auth_token: Option<Secret>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            max_parallel_chunks: 4,
            auth_token: None,
        }
    }
}

/// What became of an assignment that returned without error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignmentOutcome {
    /// Schema and/or full sync finished; no incremental phase was asked for.
    Completed,
}

/// Runs one assignment. Without incremental sync it returns when the data is in; with it, it
/// streams until `shutdown` (then `Err(ApplyError::Cancelled)`) or an error. An error that
/// names one of the tables is also reported on that table (phase FAILED when definite).
pub async fn run_assignment(
    assignment: Assignment,
    options: &RunOptions,
    progress: Arc<dyn ProgressSink>,
    shutdown: CancellationToken,
) -> Result<AssignmentOutcome> {
    let mut plans = assignment.tables.clone();
    plans.iter_mut().for_each(normalize_ops);
    let targets = plans
        .iter()
        .map(TableTarget::from_plan)
        .collect::<Result<Vec<_>>>()?;
    let trackers: Vec<Arc<TableTracker>> = targets
        .iter()
        .map(|t| {
            Arc::new(TableTracker::new(
                t.source.table.clone().unwrap_or_default(),
                Arc::clone(&progress),
            ))
        })
        .collect();
    let result = run(assignment, plans, &targets, &trackers, options, shutdown).await;
    if let Err(e) = &result {
        if !matches!(e, ApplyError::Cancelled) {
            let text = e.to_string();
            let class = e.class();
            for (t, tracker) in targets.iter().zip(&trackers) {
                if text.contains(t.qualified.as_str()) || text.contains(t.source_name.as_str()) {
                    tracker.update(|p| {
                        if class == ErrorClass::Definite {
                            p.phase = TablePhase::Failed as i32;
                        }
                        p.error = text.clone();
                        p.error_transient = class.is_retryable();
                        p.error_class = class_name(class).to_string();
                    });
                }
            }
        }
    }
    result
}

async fn run(
    assignment: Assignment,
    mut plans: Vec<dbsync_proto::v1::TablePlan>,
    targets: &[TableTarget],
    trackers: &[Arc<TableTracker>],
    options: &RunOptions,
    shutdown: CancellationToken,
) -> Result<AssignmentOutcome> {
    let task_id = assignment.task_id.clone();
    let group_id = if assignment.group_id.is_empty() {
        "default".to_string()
    } else {
        assignment.group_id.clone()
    };
    let target = assignment
        .target
        .clone()
        .ok_or_else(|| ApplyError::InvalidPlan {
            object: task_id.clone(),
            detail: "the assignment has no target connection".into(),
        })?;
    let label = crate::pg::target_label(&target);
    let mut control = crate::pg::connect_plain(&target).await?;
    ensure_schema(&mut control).await?;
    let opts = DdlOptions {
        server_version_num: crate::pg::server_version(&control, &label).await?,
        ci_collations: !assignment.default_collations,
        defer_keys: assignment.full_sync,
    };

    if assignment.schema_sync {
        trackers.iter().for_each(|t| t.phase(TablePhase::Schema));
        // Sequences come with the first schema run of the group (not on restarts, which
        // would move them back).
        let mut first_run = false;
        for t in targets {
            first_run |= !load_table_state(&control, &task_id, &t.source_name)
                .await?
                .is_some_and(|s| s.schema_done);
        }
        create_objects(
            &mut control,
            &task_id,
            &assignment.conflict_mode,
            targets,
            &[],
            &opts,
            assignment.defer_foreign_keys,
        )
        .await?;
        if first_run {
            sync_sequences(&assignment, &control).await;
        }
    }
    let mut resolved = Vec::with_capacity(targets.len());
    for t in targets {
        if !crate::pg::catalog::table_exists(&control, t).await? {
            return Err(ApplyError::InvalidPlan {
                object: t.qualified.clone(),
                detail: "the target table does not exist; enable schema sync or create it first"
                    .into(),
            });
        }
        resolved.push(Arc::new(ResolvedTable::load(&control, t.clone()).await?));
    }

    let needs_capture = assignment.full_sync || assignment.incremental_sync;
    // FKs deferred because the role may not switch FK checks off are created after the load
    // only when no change stream follows (otherwise they wait for cut-over); those waiting
    // for keys built after the load are created then.
    let create_fks = !assignment.defer_foreign_keys || !assignment.incremental_sync;
    if !needs_capture {
        post_load(&mut control, &task_id, targets, &opts, create_fks).await?;
        trackers.iter().for_each(|t| t.phase(TablePhase::Done));
        return Ok(AssignmentOutcome::Completed);
    }
    let capture =
        crate::capture::connect(&assignment.capture_address, options.auth_token.as_ref()).await?;
    let parallel = match assignment.parallel_chunks {
        0 => options.max_parallel_chunks,
        n => (n as usize).min(options.max_parallel_chunks),
    }
    .max(1);
    let source = assignment.source.clone().unwrap_or_default();
    let full_ctx = Arc::new(FullSyncContext {
        task_id: task_id.clone(),
        source: source.clone(),
        target: target.clone(),
        capture: capture.clone(),
        capture_address: assignment.capture_address.clone(),
        keep_existing: keeps_existing(&assignment.conflict_mode),
        chunk_rows: if assignment.chunk_rows == 0 {
            100_000
        } else {
            u64::from(assignment.chunk_rows)
        },
        parallel,
        throttle: assignment.full_throttle,
        record_end_lsn: assignment.incremental_sync,
        replication_role: !assignment.defer_foreign_keys,
    });

    let mut targets = targets.to_vec();
    if assignment.full_sync && assignment.incremental_mode.eq_ignore_ascii_case("hybrid") {
        // A column dropped or renamed on the source since the plan was made fails every read
        // of the table (error 207, retried): tables still loading follow the source's
        // current schema first, as the change stream would (it replays the DDL as a no-op).
        let mut loading = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            let state = load_table_state(&control, &task_id, &t.source_name).await?;
            if !state.is_some_and(|s| s.snapshot_done) {
                loading.push(i);
            }
        }
        let tables: Vec<&ResolvedTable> = loading.iter().map(|i| resolved[*i].as_ref()).collect();
        let current =
            read_source_schemas(&capture, &source, &assignment.capture_address, &tables).await?;
        let start = Lsn::from_slice(&assignment.start_lsn).unwrap_or(Lsn::ZERO);
        for (i, now) in loading.into_iter().zip(current) {
            let Some(now) = now.filter(|now| !same_columns(now, &resolved[i].target.source)) else {
                continue;
            };
            let (plan, table) = follow_schema_change(
                &task_id,
                &control,
                false,
                &plans[i],
                &resolved[i],
                now,
                start,
                "",
            )
            .await?;
            trackers[i].update(|p| p.source_schema = plan.source.clone());
            targets[i] = table.target.clone();
            plans[i] = plan;
            resolved[i] = table;
        }
    }
    let targets = targets.as_slice();

    if assignment.full_sync {
        // A table being re-snapshotted after a retention overrun is reloaded by the stream's
        // side task, so that the group's other tables stream meanwhile.
        let resnapshots = load_resnapshots(&control, &task_id).await?;
        let tables = resolved
            .iter()
            .zip(trackers)
            .filter(|(t, _)| {
                !resnapshots
                    .iter()
                    .any(|(name, _)| *name == t.target.source_name)
            })
            .map(|(t, tr)| FullSyncTable {
                table: Arc::clone(t),
                tracker: Arc::clone(tr),
            })
            .collect();
        run_full_sync(Arc::clone(&full_ctx), &control, tables, shutdown.clone()).await?;
    }
    post_load(&mut control, &task_id, targets, &opts, create_fks).await?;

    if !assignment.incremental_sync {
        for (t, tr) in targets.iter().zip(trackers) {
            let rows = load_table_state(&control, &task_id, &t.source_name)
                .await?
                .map_or(0, |s| s.rows_done);
            tr.update(|p| {
                p.phase = TablePhase::Done as i32;
                p.rows_done = rows;
                p.rows_total = p.rows_total.max(rows);
            });
        }
        return Ok(AssignmentOutcome::Completed);
    }
    drop(control);
    let stream_ctx = StreamContext {
        task_id: task_id.clone(),
        group_id,
        source,
        target,
        capture,
        capture_address: assignment.capture_address.clone(),
        incremental_mode: assignment.incremental_mode.clone(),
        throttle: assignment.incremental_throttle,
        start_lsn: Lsn::from_slice(&assignment.start_lsn),
        overwrite_inserts: keeps_existing(&assignment.conflict_mode),
        poll_interval_ms: assignment.poll_interval_ms,
        object_prefix: assignment.object_prefix.clone(),
        fail_on_retention_overrun: assignment.on_retention_overrun == "fail",
        replication_role: !assignment.defer_foreign_keys,
        full: full_ctx,
    };
    let tables = plans
        .into_iter()
        .zip(resolved)
        .zip(trackers.iter().cloned())
        .map(|((plan, table), tracker)| StreamTable {
            plan,
            table,
            tracker,
        })
        .collect();
    run_stream(&stream_ctx, tables, shutdown).await?;
    Ok(AssignmentOutcome::Completed)
}

/// Creates the group's sequences with their source's current values. The coordinator hands
/// them out already selected and named for the target (schema renames and capitalization
/// applied), so they are created as named. Creation is idempotent. A failure here is
/// reported, not fatal: sequences hold no row data.
async fn sync_sequences(assignment: &Assignment, control: &tokio_postgres::Client) {
    if assignment.sequences.is_empty() {
        return;
    }
    match crate::schema::create_sequences(control, &assignment.sequences, "source").await {
        Ok(()) => {
            tracing::info!(task_id = %assignment.task_id, sequences = assignment.sequences.len(), "sequences created")
        }
        Err(e) => {
            tracing::warn!(task_id = %assignment.task_id, error = %e, "sequences were not synced")
        }
    }
}
