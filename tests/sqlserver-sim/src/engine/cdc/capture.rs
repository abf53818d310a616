//! The capture process: change-table rows from committed transactions, the scan that makes
//! them visible, idle (heartbeat) mapping rows and retention cleanup.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::NaiveDateTime;
use parking_lot::Mutex;

use super::instance::CaptureInstance;
use super::mask::{all_bits, mask_len, set_bit};
use super::tables::{self, lsn_value, mapping_row, DirectWrite};
use super::{CaptureMode, CdcConfig, DbState, LsnTimeRow, PendingTransaction, UpdateMaskRule};
use crate::api::SqlError;
use crate::engine::catalog::TableDef;
use crate::engine::hooks::{ChangeOp, CommittedTransaction, Row, RowChange};
use crate::engine::lsn::Lsn;
use crate::engine::store::Key;
use crate::engine::value::err;
use crate::engine::Engine;
use crate::types::Value;

/// One change-table row ready for the store.
#[derive(Debug)]
pub(crate) struct CtRow {
    pub table: i32,
    pub key: Key,
    pub row: Row,
}

/// Where each captured column sits in one version of the source table (None = dropped),
/// cached per capture instance and table definition.
#[derive(Debug, Clone)]
pub(crate) struct LayoutCache {
    table: Arc<TableDef>,
    positions: Arc<[Option<usize>]>,
    all_mask: Value,
}

/// What a scan did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanOutcome {
    pub transactions: usize,
    pub rows: usize,
    /// The idle mapping row written, if any.
    pub heartbeat: Option<Lsn>,
}

fn layout<'a>(
    cache: &'a mut HashMap<i32, LayoutCache>,
    instance: &CaptureInstance,
    table: &Arc<TableDef>,
) -> &'a LayoutCache {
    let fresh = cache
        .get(&instance.object_id)
        .is_some_and(|c| Arc::ptr_eq(&c.table, table));
    if !fresh {
        let positions: Vec<Option<usize>> = instance
            .columns
            .iter()
            .map(|c| {
                table
                    .columns
                    .iter()
                    .position(|tc| tc.column_id == c.column_id)
            })
            .collect();
        cache.insert(
            instance.object_id,
            LayoutCache {
                table: table.clone(),
                positions: positions.into(),
                all_mask: tables::binary(&all_bits(instance.columns.len())),
            },
        );
    }
    cache.get(&instance.object_id).expect("inserted above")
}

/// Builds the change-table rows of one source-row change for one instance.
fn build_rows(
    instance: &CaptureInstance,
    layout: &LayoutCache,
    change: &RowChange,
    commit: &Value,
    config: &CdcConfig,
    out: &mut Vec<CtRow>,
) {
    let seqval = lsn_value(change.seqval);
    let command_id = Value::Int(change.command_id as i32);
    let row = |op: i32, mask: &Value, image: &[Value], null_col: &dyn Fn(usize) -> bool| -> CtRow {
        let captured =
            instance
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| match layout.positions[i] {
                    Some(p) if !c.is_computed && !null_col(i) => {
                        image.get(p).cloned().unwrap_or(Value::Null)
                    }
                    _ => Value::Null,
                });
        // One allocation: every part of the chain knows its exact length.
        let values: Row = [
            commit.clone(),
            Value::Null,
            seqval.clone(),
            Value::Int(op),
            mask.clone(),
        ]
        .into_iter()
        .chain(captured)
        .chain(std::iter::once(command_id.clone()))
        .collect();
        let key = Key::from_row(&values, &instance.ct_storage_key);
        CtRow {
            table: instance.object_id,
            key,
            row: values,
        }
    };
    let legacy_lob = |i: usize| instance.columns[i].is_legacy_lob();
    let keep = |_: usize| false;
    match change.op {
        ChangeOp::Insert => {
            if let Some(after) = &change.after {
                out.push(row(2, &layout.all_mask, after, &keep));
            }
        }
        ChangeOp::Delete => {
            if let Some(before) = &change.before {
                out.push(row(1, &layout.all_mask, before, &legacy_lob));
            }
        }
        ChangeOp::Update => {
            let (Some(before), Some(after)) = (&change.before, &change.after) else {
                return;
            };
            let mut mask = vec![0u8; mask_len(instance.columns.len())];
            let mut any = false;
            for (i, c) in instance.columns.iter().enumerate() {
                let Some(p) = layout.positions[i] else {
                    continue;
                };
                let marked = match config.update_mask {
                    UpdateMaskRule::Assigned => {
                        change.assigned.as_ref().map_or(before[p] != after[p], |a| {
                            a.get(p).copied().unwrap_or(false)
                        })
                    }
                    UpdateMaskRule::Changed => before[p] != after[p],
                };
                if marked {
                    set_bit(&mut mask, c.ordinal);
                    any = true;
                }
            }
            if !any && config.skip_empty_updates {
                return;
            }
            let marked = |i: usize| super::mask::is_bit_set(&mask, instance.columns[i].ordinal);
            let mask_value = tables::binary(&mask);
            // Op 3: text/ntext/image always NULL; (max) types NULL unless changed.
            let before_null = |i: usize| {
                let c = &instance.columns[i];
                c.is_legacy_lob() || (c.is_max_lob() && !marked(i))
            };
            let after_null = |i: usize| {
                config.null_unchanged_lobs_in_after_image
                    && instance.columns[i].is_max_lob()
                    && !marked(i)
            };
            out.push(row(3, &mask_value, before, &before_null));
            out.push(row(4, &mask_value, after, &after_null));
        }
    }
}

/// The commit observer's work (engine commit lock held): build the rows of tracked tables and
/// either install them now (synchronous mode) or queue them for the capture job.
pub(crate) fn on_commit(
    engine: &Engine,
    state: &Mutex<DbState>,
    txn: CommittedTransaction,
    config: &CdcConfig,
) {
    let mut s = state.lock();
    if s.instances.is_empty() {
        return;
    }
    let commit = lsn_value(txn.commit_lsn);
    let mut rows = Vec::new();
    let DbState {
        instances,
        mask_cache,
        ..
    } = &mut *s;
    for change in &txn.changes {
        let source = change.table.object_id;
        for entry in instances
            .iter()
            .filter(|i| i.def.source_object_id == source)
        {
            let layout = layout(mask_cache, &entry.def, &change.table);
            build_rows(&entry.def, layout, change, &commit, config, &mut rows);
        }
    }
    if rows.is_empty() {
        return;
    }
    let pending = PendingTransaction {
        mapping: LsnTimeRow {
            start_lsn: txn.commit_lsn,
            tran_begin_time: txn.begin_time,
            tran_end_time: txn.end_time,
            tran_id: txn.tran_id.to_vec(),
        },
        rows,
    };
    if s.mode == CaptureMode::Synchronous && s.capture_running && s.pending.is_empty() {
        apply(engine, &mut s, vec![pending]);
    } else {
        s.pending.push_back(pending);
    }
}

/// Installs captured transactions (commit lock held by the caller).
fn apply(engine: &Engine, s: &mut DbState, batch: Vec<PendingTransaction>) -> usize {
    let mut writes = Vec::with_capacity(batch.iter().map(|p| p.rows.len() + 1).sum());
    let mut rows = 0;
    for p in batch {
        for r in p.rows {
            // Rows of an instance disabled while they waited are dropped with it.
            if s.instances.iter().any(|i| i.def.object_id == r.table) {
                rows += 1;
                writes.push(DirectWrite::Put {
                    table: r.table,
                    key: r.key,
                    row: r.row,
                });
            }
        }
        push_mapping(s, &mut writes, p.mapping);
    }
    tables::install(engine, writes);
    rows
}

fn push_mapping(s: &mut DbState, writes: &mut Vec<DirectWrite>, mapping: LsnTimeRow) {
    let row = mapping_row(&mapping);
    let key = s.handles.lsn_time_mapping.key(&row);
    writes.push(DirectWrite::Put {
        table: s.handles.lsn_time_mapping.object_id,
        key,
        row: row.into(),
    });
    s.mapping.push_back(mapping);
}

/// A capture scan of up to `max` queued transactions (takes the commit lock).
pub(crate) fn scan(
    engine: &Engine,
    state: &Mutex<DbState>,
    max: usize,
    heartbeat_if_idle: bool,
) -> ScanOutcome {
    let _commit = engine.inner.store.commit_lock.lock();
    let mut s = state.lock();
    let n = max.min(s.pending.len());
    if n == 0 {
        let heartbeat = heartbeat_if_idle
            .then(|| write_heartbeat(engine, &mut s))
            .flatten();
        return ScanOutcome {
            transactions: 0,
            rows: 0,
            heartbeat,
        };
    }
    let batch: Vec<PendingTransaction> = s.pending.drain(..n).collect();
    let rows = apply(engine, &mut s, batch);
    ScanOutcome {
        transactions: n,
        rows,
        heartbeat: None,
    }
}

/// An idle mapping row, written only when nothing committed is waiting (otherwise max_lsn
/// would pass uncaptured commits).
fn write_heartbeat(engine: &Engine, s: &mut DbState) -> Option<Lsn> {
    if !s.pending.is_empty() {
        return None;
    }
    let lsn = engine.allocate_lsn(&s.database)?;
    let now = engine.clock().now_local();
    let mut writes = Vec::new();
    push_mapping(
        s,
        &mut writes,
        LsnTimeRow {
            start_lsn: lsn,
            tran_begin_time: now,
            tran_end_time: now,
            tran_id: vec![0],
        },
    );
    tables::install(engine, writes);
    Some(lsn)
}

pub(crate) fn heartbeat(engine: &Engine, state: &Mutex<DbState>) -> Option<Lsn> {
    let _commit = engine.inner.store.commit_lock.lock();
    let mut s = state.lock();
    write_heartbeat(engine, &mut s)
}

/// Retention cleanup: the low watermark is the smallest mapping LSN whose commit time is at
/// or after `MAX(tran_end_time) - retention`.
pub(crate) fn cleanup_retention(
    engine: &Engine,
    state: &Mutex<DbState>,
    config: &CdcConfig,
) -> Result<Option<Lsn>, SqlError> {
    let (latest, retention) = {
        let s = state.lock();
        (
            s.mapping.iter().map(|m| m.tran_end_time).max(),
            s.jobs.retention,
        )
    };
    let Some(latest) = latest else {
        return Ok(None);
    };
    cleanup_at_time(
        engine,
        state,
        latest - chrono::Duration::minutes(retention),
        config,
    )
}

/// Cleanup of everything committed before `cutoff`; returns the new low watermark.
pub(crate) fn cleanup_at_time(
    engine: &Engine,
    state: &Mutex<DbState>,
    cutoff: NaiveDateTime,
    config: &CdcConfig,
) -> Result<Option<Lsn>, SqlError> {
    let watermark = {
        let s = state.lock();
        let Some(max) = s.max_lsn() else {
            return Ok(None);
        };
        // Smallest LSN among the rows at the earliest qualifying commit time.
        s.mapping
            .iter()
            .filter(|m| m.tran_end_time >= cutoff)
            .min_by(|a, b| {
                a.tran_end_time
                    .cmp(&b.tran_end_time)
                    .then(a.start_lsn.cmp(&b.start_lsn))
            })
            .map_or(max.increment(), |m| m.start_lsn)
    };
    raise_watermark(engine, state, None, watermark, config, false)?;
    Ok(Some(watermark))
}

/// `sys.sp_cdc_cleanup_change_table` (one instance, explicit watermark, 22957 when it is
/// below the current one) or the cleanup job for all instances.
pub(crate) fn cleanup_instances(
    engine: &Engine,
    state: &Mutex<DbState>,
    instance: Option<&str>,
    watermark: Lsn,
    config: &CdcConfig,
) -> Result<(), SqlError> {
    raise_watermark(
        engine,
        state,
        instance,
        watermark,
        config,
        instance.is_some(),
    )
}

fn raise_watermark(
    engine: &Engine,
    state: &Mutex<DbState>,
    instance: Option<&str>,
    watermark: Lsn,
    config: &CdcConfig,
    strict: bool,
) -> Result<(), SqlError> {
    let _commit = engine.inner.store.commit_lock.lock();
    let mut s = state.lock();
    let mut writes = Vec::new();
    let max = s.max_lsn();
    let change_tables = s.handles.change_tables.clone();
    let mut found = instance.is_none();
    for entry in s.instances.iter_mut() {
        if instance.is_some_and(|n| !entry.def.name.eq_ignore_ascii_case(n)) {
            continue;
        }
        found = true;
        if strict && (watermark < entry.start_lsn || max.is_some_and(|m| watermark > m.increment()))
        {
            return Err(err(
                22957,
                format!(
                    "LSN {watermark}, specified as the new low endpoint for the change table associated with capture instance '{}', is not within the Change Data Capture timeline [{}, {}].",
                    entry.def.name,
                    entry.start_lsn,
                    max.map_or("NULL".to_string(), |m| m.to_string())
                ),
            ));
        }
        if entry.start_lsn >= watermark {
            continue;
        }
        entry.start_lsn = watermark;
        writes.push(DirectWrite::DeleteBefore {
            table: entry.def.object_id,
            key: Key::new(vec![lsn_value(watermark)]),
        });
        let row = tables::change_tables_row(entry);
        writes.push(DirectWrite::Put {
            table: change_tables.object_id,
            key: change_tables.key(&row),
            row: row.into(),
        });
    }
    if !found {
        let name = instance.unwrap_or_default();
        return Err(err(
            22920,
            format!(
                "The named capture instance {name} does not exist for database {}.",
                s.database
            ),
        ));
    }
    if config.cleanup_trims_lsn_time_mapping && instance.is_none() {
        // Keep the newest row so that fn_cdc_get_max_lsn() never goes back to NULL.
        let floor = s
            .instances
            .iter()
            .map(|i| i.start_lsn)
            .min()
            .unwrap_or(watermark)
            .min(watermark);
        let keep_last = s.mapping.back().map(|m| m.start_lsn);
        while s.mapping.len() > 1 && s.mapping.front().is_some_and(|m| m.start_lsn < floor) {
            s.mapping.pop_front();
        }
        let floor = keep_last.map_or(floor, |last| floor.min(last));
        writes.push(DirectWrite::DeleteBefore {
            table: s.handles.lsn_time_mapping.object_id,
            key: Key::new(vec![lsn_value(floor)]),
        });
    }
    tables::install(engine, writes);
    Ok(())
}
