//! The `sys.fn_cdc_*` scalar functions and the per-instance table-valued functions
//! `cdc.fn_cdc_get_all_changes_<ci>` and `cdc.fn_cdc_get_net_changes_<ci>`.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use chrono::NaiveDateTime;

use super::mask::is_bit_set;
use super::procs::{as_i64, as_lsn};
use super::tables::{self, lsn_value, opt_lsn_value};
use super::{Cdc, InstanceEntry};
use crate::api::{ResultColumn, SqlError};
use crate::engine::hooks::{
    FunctionContext, RowStream, ScalarFunction, StreamedTable, TableFunction,
    TableFunctionResolver, TableResult,
};
use crate::engine::lsn::Lsn;
use crate::engine::store::{Key, Snapshot};
use crate::engine::value::{datetime_parts, err, naive_from_parts, parse_datetime_string};
use crate::engine::{Engine, ProcContext};
use crate::types::{SqlType, Value};

const BINARY10: SqlType = SqlType::Binary { len: 10 };

#[derive(Clone, Copy)]
enum Scalar {
    MinLsn,
    MaxLsn,
    IncrementLsn,
    DecrementLsn,
    MapLsnToTime,
    MapTimeToLsn,
    ColumnOrdinal,
    IsBitSet,
    HasColumnChanged,
}

struct CdcFunction {
    cdc: Weak<Cdc>,
    kind: Scalar,
    name: &'static str,
    arity: usize,
}

pub(super) fn register(engine: &Engine, cdc: &Arc<Cdc>) {
    let list = [
        ("sys.fn_cdc_get_min_lsn", Scalar::MinLsn, 1),
        ("sys.fn_cdc_get_max_lsn", Scalar::MaxLsn, 0),
        ("sys.fn_cdc_increment_lsn", Scalar::IncrementLsn, 1),
        ("sys.fn_cdc_decrement_lsn", Scalar::DecrementLsn, 1),
        ("sys.fn_cdc_map_lsn_to_time", Scalar::MapLsnToTime, 1),
        ("sys.fn_cdc_map_time_to_lsn", Scalar::MapTimeToLsn, 2),
        ("sys.fn_cdc_get_column_ordinal", Scalar::ColumnOrdinal, 2),
        ("sys.fn_cdc_is_bit_set", Scalar::IsBitSet, 2),
        ("sys.fn_cdc_has_column_changed", Scalar::HasColumnChanged, 3),
    ];
    for (name, kind, arity) in list {
        engine.register_function(
            name,
            Arc::new(CdcFunction {
                cdc: Arc::downgrade(cdc),
                kind,
                name,
                arity,
            }),
        );
    }
    engine.register_table_function_resolver(Arc::new(ChangeFunctions {
        cdc: Arc::downgrade(cdc),
    }));
}

fn binary_arg(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Binary(b) => Some(b),
        _ => None,
    }
}

fn string_arg(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        other => Some(crate::engine::value::to_display_string(other)),
    }
}

impl CdcFunction {
    fn instance(&self, ctx: &FunctionContext<'_>, name: &Value) -> Option<InstanceEntry> {
        let cdc = self.cdc.upgrade()?;
        let name = string_arg(name)?;
        let state = cdc.state_by_name(ctx.engine, ctx.database)?;
        let entry = state.lock().instance(&name).cloned();
        entry
    }
}

impl ScalarFunction for CdcFunction {
    fn return_type(&self, args: &[SqlType]) -> Result<SqlType, SqlError> {
        if args.len() != self.arity {
            return Err(err(
                174,
                format!(
                    "The {} function requires {} argument(s).",
                    self.name.trim_start_matches("sys."),
                    self.arity
                ),
            ));
        }
        Ok(match self.kind {
            Scalar::MinLsn
            | Scalar::MaxLsn
            | Scalar::IncrementLsn
            | Scalar::DecrementLsn
            | Scalar::MapTimeToLsn => BINARY10,
            Scalar::MapLsnToTime => SqlType::DateTime,
            Scalar::ColumnOrdinal => SqlType::Int,
            Scalar::IsBitSet | Scalar::HasColumnChanged => SqlType::Bit,
        })
    }

    fn call(&self, ctx: &FunctionContext<'_>, args: &[Value]) -> Result<Value, SqlError> {
        let cdc = self.cdc.upgrade().ok_or_else(super::engine_gone)?;
        let state = || cdc.state_by_name(ctx.engine, ctx.database);
        Ok(match self.kind {
            // All zeros when the instance does not exist (documented).
            Scalar::MinLsn => lsn_value(
                self.instance(ctx, &args[0])
                    .map_or(Lsn::ZERO, |e| e.start_lsn),
            ),
            Scalar::MaxLsn => opt_lsn_value(state().and_then(|s| s.lock().max_lsn())),
            Scalar::IncrementLsn => opt_lsn_value(as_lsn(&args[0]).map(Lsn::increment)),
            Scalar::DecrementLsn => opt_lsn_value(as_lsn(&args[0]).map(Lsn::decrement)),
            Scalar::MapLsnToTime => {
                let (Some(lsn), Some(s)) = (as_lsn(&args[0]), state()) else {
                    return Ok(Value::Null);
                };
                let s = s.lock();
                let found = s
                    .mapping
                    .binary_search_by(|m| m.start_lsn.cmp(&lsn))
                    .ok()
                    .map(|i| s.mapping[i].tran_end_time);
                found.map_or(Value::Null, tables::datetime_value)
            }
            Scalar::MapTimeToLsn => {
                let op = string_arg(&args[0])
                    .unwrap_or_default()
                    .trim()
                    .to_lowercase();
                let parts = match &args[1] {
                    Value::String(text) => parse_datetime_string(text).map(|(d, t, _, _)| (d, t)),
                    other => datetime_parts(other).map(|(d, t, _)| (d, t)),
                };
                let Some(time) = parts.map(|(d, t)| naive_from_parts(d, t)) else {
                    return Ok(Value::Null);
                };
                let Some(s) = state() else {
                    return Ok(Value::Null);
                };
                let s = s.lock();
                opt_lsn_value(map_time_to_lsn(
                    s.mapping.iter().map(|m| (m.start_lsn, m.tran_end_time)),
                    &op,
                    time,
                )?)
            }
            Scalar::ColumnOrdinal => {
                let Some(entry) = self.instance(ctx, &args[0]) else {
                    return Ok(Value::Null);
                };
                let column = string_arg(&args[1]).unwrap_or_default();
                Value::Int(entry.def.column(&column).map_or(-1, |c| c.ordinal as i32))
            }
            Scalar::IsBitSet => match (as_i64(&args[0]), binary_arg(&args[1])) {
                (Some(pos), Some(mask)) if pos > 0 => Value::Bit(is_bit_set(mask, pos as usize)),
                (Some(_), Some(_)) => Value::Bit(false),
                _ => Value::Null,
            },
            Scalar::HasColumnChanged => {
                let Some(entry) = self.instance(ctx, &args[0]) else {
                    return Ok(Value::Null);
                };
                let column = string_arg(&args[1]).unwrap_or_default();
                let Some(mask) = binary_arg(&args[2]) else {
                    return Ok(Value::Null);
                };
                let c = entry.def.column(&column).ok_or_else(|| {
                    err(
                        22924,
                        format!(
                            "The column '{column}' is not captured by capture instance '{}'.",
                            entry.def.name
                        ),
                    )
                })?;
                Value::Bit(is_bit_set(mask, c.ordinal))
            }
        })
    }
}

/// `sys.fn_cdc_map_time_to_lsn` over (start_lsn, tran_end_time) in ascending LSN order.
/// "smallest …" forms return the smallest LSN at the boundary time, "largest …" the largest.
fn map_time_to_lsn(
    rows: impl Iterator<Item = (Lsn, NaiveDateTime)>,
    op: &str,
    time: NaiveDateTime,
) -> Result<Option<Lsn>, SqlError> {
    let test: fn(NaiveDateTime, NaiveDateTime) -> bool = match op {
        "largest less than" => |t, x| t < x,
        "largest less than or equal" => |t, x| t <= x,
        "smallest greater than" => |t, x| t > x,
        "smallest greater than or equal" => |t, x| t >= x,
        _ => {
            return Err(err(
                22915,
                format!("The relational operator '{op}' is not valid. Specify 'largest less than', 'largest less than or equal', 'smallest greater than', or 'smallest greater than or equal'."),
            ))
        }
    };
    let largest = op.starts_with("largest");
    let mut best: Option<(NaiveDateTime, Lsn)> = None;
    for (lsn, t) in rows.filter(|(_, t)| test(*t, time)) {
        best = Some(match best {
            None => (t, lsn),
            Some((bt, bl)) if largest => {
                if (t, lsn) > (bt, bl) {
                    (t, lsn)
                } else {
                    (bt, bl)
                }
            }
            Some((bt, bl)) => {
                if t < bt || (t == bt && lsn < bl) {
                    (t, lsn)
                } else {
                    (bt, bl)
                }
            }
        });
    }
    Ok(best.map(|(_, l)| l))
}

/// Resolves `cdc.fn_cdc_get_all_changes_<ci>` and `cdc.fn_cdc_get_net_changes_<ci>`.
struct ChangeFunctions {
    cdc: Weak<Cdc>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    All,
    Net,
}

struct ChangeFunction {
    cdc: Weak<Cdc>,
    database: String,
    instance: String,
    kind: Kind,
}

impl TableFunctionResolver for ChangeFunctions {
    fn resolve(&self, database: &str, schema: &str, name: &str) -> Option<Arc<dyn TableFunction>> {
        if !schema.eq_ignore_ascii_case("cdc") {
            return None;
        }
        let lower = name.to_lowercase();
        let (kind, prefix) = if lower.starts_with("fn_cdc_get_all_changes_") {
            (Kind::All, "fn_cdc_get_all_changes_".len())
        } else if lower.starts_with("fn_cdc_get_net_changes_") {
            (Kind::Net, "fn_cdc_get_net_changes_".len())
        } else {
            return None;
        };
        let instance = &name[prefix..];
        let cdc = self.cdc.upgrade()?;
        let engine = cdc.engine()?;
        let state = cdc.state_by_name(&engine, database)?;
        let entry = state.lock().instance(instance).cloned()?;
        if kind == Kind::Net && !entry.def.supports_net_changes {
            return None;
        }
        Some(Arc::new(ChangeFunction {
            cdc: self.cdc.clone(),
            database: database.to_string(),
            instance: entry.def.name.clone(),
            kind,
        }))
    }
}

fn error_313(kind: Kind) -> SqlError {
    let f = match kind {
        Kind::All => "cdc.fn_cdc_get_all_changes_",
        Kind::Net => "cdc.fn_cdc_get_net_changes_",
    };
    SqlError::new(313, 16, 3, format!("An insufficient number of arguments were supplied for the procedure or function {f} ... ."))
}

/// A validated call: the instance, the closed LSN range and the row filter.
struct ChangeRange {
    engine: Engine,
    entry: InstanceEntry,
    from: Lsn,
    to: Lsn,
    filter: String,
}

impl ChangeFunction {
    /// Checks the arguments as SQL Server does (313 for a bad range or filter).
    fn prepare(&self, ctx: &ProcContext<'_>, args: &[Value]) -> Result<ChangeRange, SqlError> {
        let cdc = self.cdc.upgrade().ok_or_else(super::engine_gone)?;
        let engine = ctx.engine().clone();
        if args.len() != 3 {
            return Err(err(
                216,
                format!(
                    "Parameters were not supplied for the function 'cdc.fn_cdc_get_{}_changes_{}'.",
                    if self.kind == Kind::All { "all" } else { "net" },
                    self.instance
                ),
            ));
        }
        let state = cdc
            .state_by_name(&engine, &self.database)
            .ok_or_else(|| super::not_enabled(&self.database))?;
        let (entry, max) = {
            let s = state.lock();
            let entry = s.instance(&self.instance).cloned().ok_or_else(|| {
                err(
                    208,
                    format!(
                        "Invalid object name 'cdc.fn_cdc_get_all_changes_{}'.",
                        self.instance
                    ),
                )
            })?;
            (entry, s.max_lsn())
        };
        let from = as_lsn(&args[0]);
        let to = as_lsn(&args[1]);
        let filter = string_arg(&args[2]).map(|f| f.trim().to_lowercase());
        let (Some(from), Some(to), Some(max), Some(filter)) = (from, to, max, filter) else {
            return Err(error_313(self.kind));
        };
        if from > to || from < entry.start_lsn || to > max {
            return Err(error_313(self.kind));
        }
        Ok(ChangeRange {
            engine,
            entry,
            from,
            to,
            filter,
        })
    }

    fn all_changes_stream(
        &self,
        range: ChangeRange,
    ) -> Result<(Vec<ResultColumn>, AllChanges), SqlError> {
        let update_old = match range.filter.as_str() {
            "all" => false,
            "all update old" => true,
            _ => return Err(error_313(self.kind)),
        };
        let mut columns = vec![
            ResultColumn::expr("__$start_lsn", BINARY10, false),
            ResultColumn::expr("__$seqval", BINARY10, false),
            ResultColumn::expr("__$operation", SqlType::Int, false),
            ResultColumn::expr(
                "__$update_mask",
                SqlType::VarBinary { len: Some(128) },
                true,
            ),
        ];
        columns.extend(captured_columns(&range.entry));
        let rows = AllChanges {
            snapshot: range.engine.inner.store.snapshot(),
            table: range.entry.def.object_id,
            captured: range.entry.def.columns.len(),
            from: range.from,
            to: range.to,
            update_old,
        };
        Ok((columns, rows))
    }
}

impl TableFunction for ChangeFunction {
    fn call(&self, ctx: &mut ProcContext<'_>, args: &[Value]) -> Result<TableResult, SqlError> {
        let range = self.prepare(ctx, args)?;
        match self.kind {
            Kind::All => {
                let (columns, stream) = self.all_changes_stream(range)?;
                let mut rows = Vec::new();
                stream.for_each(&mut |r| {
                    rows.push(r.to_vec());
                    Ok(true)
                })?;
                Ok(TableResult { columns, rows })
            }
            Kind::Net => {
                let mode = match range.filter.as_str() {
                    "all" => NetMode::All,
                    "all with mask" => NetMode::WithMask,
                    "all with merge" => NetMode::WithMerge,
                    _ => return Err(error_313(self.kind)),
                };
                Ok(net_changes(
                    &range.engine,
                    &range.entry,
                    range.from,
                    range.to,
                    mode,
                ))
            }
        }
    }

    /// All-changes rows come straight from the change table's clustered order, which is also
    /// `(__$start_lsn, __$seqval, __$operation)` order: a paging `TOP … ORDER BY` stops early.
    fn stream(
        &self,
        ctx: &mut ProcContext<'_>,
        args: &[Value],
    ) -> Result<Option<StreamedTable>, SqlError> {
        if self.kind != Kind::All {
            return Ok(None);
        }
        let range = self.prepare(ctx, args)?;
        let (columns, rows) = self.all_changes_stream(range)?;
        Ok(Some(StreamedTable {
            columns,
            rows: Arc::new(rows),
            sorted_by: vec![0, 1, 2],
        }))
    }
}

/// The rows of `cdc.fn_cdc_get_all_changes_<ci>` over one committed snapshot.
struct AllChanges {
    snapshot: Snapshot,
    table: i32,
    captured: usize,
    from: Lsn,
    to: Lsn,
    update_old: bool,
}

impl RowStream for AllChanges {
    fn for_each(
        &self,
        f: &mut dyn FnMut(&[Value]) -> Result<bool, SqlError>,
    ) -> Result<(), SqlError> {
        let Some(data) = self.snapshot.table(self.table) else {
            return Ok(());
        };
        let upper = self.to.to_bytes();
        let n = self.captured;
        let mut out = Vec::with_capacity(4 + n);
        for (_, stored) in data.rows.range(Key::new(vec![lsn_value(self.from)])..) {
            let r = &stored.row;
            if matches!(&r[0], Value::Binary(b) if b.as_ref() > upper.as_slice()) {
                break;
            }
            if !self.update_old && r[3] == Value::Int(3) {
                continue;
            }
            out.clear();
            out.extend([r[0].clone(), r[2].clone(), r[3].clone(), r[4].clone()]);
            out.extend_from_slice(&r[5..5 + n]);
            if !f(&out)? {
                break;
            }
        }
        Ok(())
    }
}

fn captured_columns(entry: &InstanceEntry) -> impl Iterator<Item = ResultColumn> + '_ {
    entry
        .def
        .columns
        .iter()
        .map(|c| ResultColumn::expr(c.name.clone(), c.ct_type(), true))
}

/// Committed change-table rows with `from <= __$start_lsn <= to`, in storage order
/// (start_lsn, command_id, seqval, operation).
fn for_each_row(
    engine: &Engine,
    entry: &InstanceEntry,
    from: Lsn,
    to: Lsn,
    mut f: impl FnMut(&[Value]),
) {
    let snapshot = engine.inner.store.snapshot();
    let Some(data) = snapshot.table(entry.def.object_id) else {
        return;
    };
    let upper = to.to_bytes();
    for (_, stored) in data.rows.range(Key::new(vec![lsn_value(from)])..) {
        if matches!(&stored.row[0], Value::Binary(b) if b.as_ref() > upper.as_slice()) {
            break;
        }
        f(&stored.row);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum NetMode {
    All,
    WithMask,
    WithMerge,
}

/// Net state of one row identifier over the range.
struct NetRow {
    existed_before: bool,
    /// Last image (after image of 2/4, before image of 1) and whether the row exists.
    last: Vec<Value>,
    exists: bool,
    start_lsn: Value,
    seqval: Value,
    mask: Vec<u8>,
}

fn net_changes(
    engine: &Engine,
    entry: &InstanceEntry,
    from: Lsn,
    to: Lsn,
    mode: NetMode,
) -> TableResult {
    let mut columns = vec![
        ResultColumn::expr("__$start_lsn", BINARY10, false),
        ResultColumn::expr("__$operation", SqlType::Int, false),
        ResultColumn::expr(
            "__$update_mask",
            SqlType::VarBinary { len: Some(128) },
            true,
        ),
    ];
    columns.extend(captured_columns(entry));
    let n = entry.def.columns.len();
    let key_positions: Vec<usize> = entry
        .def
        .index_columns
        .iter()
        .filter_map(|(name, _)| {
            entry
                .def
                .columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case(name))
        })
        .collect();
    let mut order: Vec<Key> = Vec::new();
    let mut net: BTreeMap<Key, NetRow> = BTreeMap::new();
    for_each_row(engine, entry, from, to, |r| {
        let op = match r[3] {
            Value::Int(op) => op,
            _ => return,
        };
        if op == 3 {
            return;
        }
        let image = &r[5..5 + n];
        let key = Key::new(key_positions.iter().map(|&p| image[p].clone()).collect());
        let mask = match &r[4] {
            Value::Binary(b) => b.to_vec(),
            _ => Vec::new(),
        };
        let state = net.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            NetRow {
                existed_before: op != 2,
                last: Vec::new(),
                exists: false,
                start_lsn: Value::Null,
                seqval: Value::Null,
                mask: vec![0; mask.len()],
            }
        });
        state.last = image.to_vec();
        state.exists = op != 1;
        state.start_lsn = r[0].clone();
        state.seqval = r[2].clone();
        if op == 4 {
            for (m, b) in state.mask.iter_mut().zip(&mask) {
                *m |= b;
            }
        }
    });
    let mut finished: Vec<(Value, Value, Vec<Value>)> = Vec::new();
    for key in order {
        let s = net.remove(&key).expect("every key in order has a state");
        let (op, mask) = match (s.existed_before, s.exists) {
            (false, false) => continue,
            (false, true) => (2, Value::Null),
            (true, false) => (1, Value::Null),
            (true, true) => (
                4,
                if mode == NetMode::WithMask {
                    tables::binary(&s.mask)
                } else {
                    Value::Null
                },
            ),
        };
        let op = if mode == NetMode::WithMerge && op != 1 {
            5
        } else {
            op
        };
        let mut row = Vec::with_capacity(3 + n);
        row.extend([s.start_lsn.clone(), Value::Int(op), mask]);
        // For a net delete: the identifier and, as in the delete image, the last values.
        row.extend(s.last);
        finished.push((s.start_lsn, s.seqval, row));
    }
    finished.sort_by(|a, b| {
        crate::engine::value::compare_total(&a.0, &b.0)
            .then(crate::engine::value::compare_total(&a.1, &b.1))
    });
    TableResult {
        columns,
        rows: finished.into_iter().map(|(_, _, r)| r).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
            .unwrap()
            .and_hms_opt(h, m, 0)
            .unwrap()
    }

    #[test]
    fn time_to_lsn_picks_the_documented_end_of_ties() {
        let rows = vec![
            (Lsn(10), t(1, 0)),
            (Lsn(11), t(1, 5)),
            (Lsn(12), t(1, 5)),
            (Lsn(13), t(1, 9)),
        ];
        let f = |op: &str, x| map_time_to_lsn(rows.clone().into_iter(), op, x).unwrap();
        assert_eq!(f("largest less than", t(1, 5)), Some(Lsn(10)));
        assert_eq!(f("largest less than or equal", t(1, 5)), Some(Lsn(12)));
        assert_eq!(f("smallest greater than", t(1, 5)), Some(Lsn(13)));
        assert_eq!(f("smallest greater than or equal", t(1, 5)), Some(Lsn(11)));
        assert_eq!(f("smallest greater than", t(2, 0)), None);
        assert_eq!(f("largest less than", t(0, 0)), None);
        assert!(map_time_to_lsn(rows.into_iter(), "closest", t(1, 0)).is_err());
    }
}
