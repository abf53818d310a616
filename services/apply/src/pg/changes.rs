//! Applies change transactions to PostgreSQL in commit order, exactly once.
//!
//! How (the choices and why):
//! 1. Changes are batched into set-based statements whose parameters are binary arrays, one
//!    per column (`INSERT … SELECT * FROM unnest($1::int[], …)`, `UPDATE … FROM unnest(…)`,
//!    `DELETE … USING unnest(…)`). Values are encoded straight into the array buffers by the
//!    same typemap encoders as binary COPY, so full and incremental sync write identical
//!    values. A row is in at most one open batch: a second change of the same row first sends
//!    the batch holding it, so every row sees its changes in order. Tables whose key is their
//!    only unique index (and FK checks off) keep one open batch per statement shape, so
//!    interleaved inserts/updates/deletes of different rows still form large statements;
//!    other tables keep one open batch, i.e. statements in change order. Statements are
//!    pipelined (sent without waiting for the previous result; results are read before
//!    COMMIT). Measured with `examples/change_bench.rs` against a bulk staged COPY + merge of
//!    the same changes: about 160–175k changes/s regrouped (70–90 % of that ceiling), 40k/s in
//!    strict change order, 2.4k/s before pipelining and index-preferring plans. The staged
//!    COPY + merge per batch was the alternative; `unnest` needs no temp table per batch and
//!    keeps one statement per batch, so it was kept.
//! 2. Order within a transaction is `(seqval, operation)` as delivered: a PK-changing update
//!    (delete + insert with one seqval) is applied delete first; an update's before image
//!    (op 3) only supplies the key of the row to change (it differs from the after image's
//!    when a unique-index key changes).
//! 3. `unchanged` values (LOB columns an update did not touch) are left out of the SET list,
//!    so they are never overwritten; LOB-only updates are applied.
//! 4. Transactions: every source transaction is applied inside one PostgreSQL transaction,
//!    and several consecutive complete source transactions may share one (each stays atomic
//!    and in order; it saves a commit per small transaction). The stream position
//!    `(commit_lsn, seqval, operation)` of the last complete source transaction is written in
//!    the same PostgreSQL transaction before COMMIT. A large source transaction arrives in
//!    fragments: each fragment is written as it arrives (memory stays bounded by the batch
//!    caps) inside the still-open PostgreSQL transaction, which commits only after the last
//!    fragment. So no source transaction is ever half visible, and a crash rolls back to the
//!    previous checkpoint, from where the stream is requested again.
//! 5. Catch-up: for a table whose snapshot ended at LSN `S`, changes with commit LSN ≤ `S`
//!    may already be in the snapshot; inserts are then upserts (updates and deletes by key are
//!    idempotent anyway). After `S`, inserts are plain INSERTs, so a divergence surfaces as a
//!    unique violation naming the table instead of being hidden. Conflict mode `ignore` makes
//!    inserts overwrite the existing row always.
//! 6. Tables without a primary key or a unique index on NOT NULL columns (heaps; the source
//!    and the plan pick the key, a usable unique index when there is no primary key): a row
//!    is named by all its comparable values, and an update or delete changes exactly one
//!    matching row, picked by `ctid` with `LIMIT 1` (identical rows are interchangeable).
//!    These are one-row statements in change order that scan the table (no index can serve
//!    an all-columns match); inserts are batched, and during catch-up they are skipped when
//!    an identical row exists (an identical duplicate inserted while the snapshot ran may
//!    therefore collapse into one: without a key nothing tells them apart).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{BufMut, Bytes, BytesMut};
use dbsync_core::lsn::{Lsn, Position};
use dbsync_core::sink::ChangeSink;
use dbsync_proto::v1::value::Kind as ValueKind;
use dbsync_proto::v1::{Operation, RowChange, TransactionFragment, Value};
use dbsync_typemap::encode_value;
use postgres_types::{to_sql_checked, IsNull, Kind, ToSql, Type};
use tokio_postgres::{Client, Statement};

use crate::error::{ApplyError, Result};
use crate::pg::catalog::ResolvedTable;
use crate::pg::checkpoint::save_position;

/// What kind of statement a batch is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StmtKind {
    Insert,
    Upsert,
    Update,
    /// An update of a table with a row filter ([`filtered_update_sql`]).
    UpdateFiltered,
    Delete,
    /// Catch-up insert into a table without a key: skipped when an identical row exists.
    InsertIfAbsent,
    /// Delete of one row of a table without a key, found by all its comparable columns.
    KeylessDelete,
    /// Update of one row of a table without a key: the first `n` columns match the before
    /// image, the rest are set.
    KeylessUpdate(usize),
}

/// `INSERT INTO t (cols) SELECT * FROM unnest($1::type[], …)`, with `ON CONFLICT (key) DO
/// UPDATE` for an upsert. `cols` index `table.write`.
pub fn insert_sql(t: &ResolvedTable, cols: &[usize], upsert: bool) -> Result<String> {
    let names: Vec<&str> = cols.iter().map(|c| t.write[*c].quoted.as_str()).collect();
    let arrays: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}[]", i + 1, t.write[*c].base_type))
        .collect();
    let mut sql = format!(
        "INSERT INTO {} ({}) SELECT * FROM unnest({})",
        t.target.qualified,
        names.join(", "),
        arrays.join(", ")
    );
    if let Some(filter) = filter_sql(t, cols)? {
        let aliases: Vec<String> = (1..=cols.len()).map(|i| format!("dbsync_p{i}")).collect();
        sql.push_str(&format!(" AS u({}) WHERE {filter}", aliases.join(", ")));
    }
    if upsert || t.target.has_filter() {
        let sets: Vec<String> = cols
            .iter()
            .filter(|c| !t.key.contains(c))
            .map(|c| format!("{0} = EXCLUDED.{0}", t.write[*c].quoted))
            .collect();
        if sets.is_empty() {
            sql.push_str(&format!(" ON CONFLICT {} DO NOTHING", t.key_list()));
        } else {
            sql.push_str(&format!(
                " ON CONFLICT {} DO UPDATE SET {}",
                t.key_list(),
                sets.join(", ")
            ));
        }
    }
    Ok(sql)
}

/// The table's row filter over the statement's `dbsync_pN` columns (`cols` index `write`), as
/// `coalesce((…), false)` so that NULL means "outside".
fn filter_sql(t: &ResolvedTable, cols: &[usize]) -> Result<Option<String>> {
    use crate::pg::types::{expr_context, translate_expression, ExprUsage};
    if !t.target.has_filter() {
        return Ok(None);
    }
    // The filter's columns are the statement's unnest columns `dbsync_pN`.
    let mut ctx = expr_context(&t.target, ExprUsage::Check);
    ctx.columns.retain_mut(|c| {
        let Some(pos) = cols
            .iter()
            .position(|w| t.target.columns[t.write[*w].source_index].source_name == c.source_name)
        else {
            return false;
        };
        c.target_name = format!("dbsync_p{}", pos + 1);
        true
    });
    translate_expression(&t.target.where_filter, &ctx)
        .map(|f| Some(format!("coalesce(({f}), false)")))
        .map_err(|e| ApplyError::InvalidPlan {
            object: t.target.source_name.clone(),
            detail: format!(
                "the row filter {:?} cannot be applied to changes: {e}",
                t.target.where_filter
            ),
        })
}

/// Fails early (naming the table) when the table's row filter cannot be applied to changes.
pub fn check_filter(t: &ResolvedTable) -> Result<()> {
    let all: Vec<usize> = (0..t.write.len()).collect();
    filter_sql(t, &all).map(|_| ())
}

/// An update of a filtered table: the new image is upserted when it matches the filter (a row
/// entering the filter is inserted) and the row is deleted when it does not (a row leaving it).
/// `cols` are the after image's present columns (keys included).
pub fn filtered_update_sql(t: &ResolvedTable, cols: &[usize]) -> Result<String> {
    let filter = filter_sql(t, cols)?.unwrap_or_else(|| "true".into());
    let arrays: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}[]", i + 1, t.write[*c].base_type))
        .collect();
    let aliases: Vec<String> = (1..=cols.len()).map(|i| format!("dbsync_p{i}")).collect();
    let mut conds = Vec::new();
    for k in &t.key {
        let pos = cols
            .iter()
            .position(|c| c == k)
            .ok_or_else(|| ApplyError::Protocol {
                detail: format!("an update of {} lacks a key column", t.target.source_name),
            })?;
        conds.push(format!("t.{} = u.dbsync_p{}", t.write[*k].quoted, pos + 1));
    }
    let names: Vec<&str> = cols.iter().map(|c| t.write[*c].quoted.as_str()).collect();
    let sets: Vec<String> = cols
        .iter()
        .filter(|c| !t.key.contains(c))
        .map(|c| format!("{0} = EXCLUDED.{0}", t.write[*c].quoted))
        .collect();
    let on_conflict = if sets.is_empty() {
        format!("ON CONFLICT {} DO NOTHING", t.key_list())
    } else {
        format!(
            "ON CONFLICT {} DO UPDATE SET {}",
            t.key_list(),
            sets.join(", ")
        )
    };
    Ok(format!(
        "WITH u AS (SELECT * FROM unnest({}) AS u({})), \
         d AS (DELETE FROM {} AS t USING u WHERE {} AND NOT {filter}) \
         INSERT INTO {} ({}) SELECT {} FROM u WHERE {filter} {on_conflict}",
        arrays.join(", "),
        aliases.join(", "),
        t.target.qualified,
        conds.join(" AND "),
        t.target.qualified,
        names.join(", "),
        aliases.join(", "),
    ))
}

/// `UPDATE t SET c = u.pN … FROM unnest(keys…, sets…) AS u(p1…) WHERE t.k = u.p1 …`.
pub fn update_sql(t: &ResolvedTable, set_cols: &[usize]) -> String {
    let nkeys = t.key.len();
    let mut arrays = Vec::with_capacity(nkeys + set_cols.len());
    let mut aliases = Vec::with_capacity(nkeys + set_cols.len());
    for (i, k) in t.key.iter().chain(set_cols.iter()).enumerate() {
        arrays.push(format!("${}::{}[]", i + 1, t.write[*k].base_type));
        aliases.push(format!("p{}", i + 1));
    }
    let sets: Vec<String> = set_cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = u.p{}", t.write[*c].quoted, nkeys + i + 1))
        .collect();
    let conds: Vec<String> = t
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("t.{} = u.p{}", t.write[*k].quoted, i + 1))
        .collect();
    format!(
        "UPDATE {} AS t SET {} FROM unnest({}) AS u({}) WHERE {}",
        t.target.qualified,
        sets.join(", "),
        arrays.join(", "),
        aliases.join(", "),
        conds.join(" AND ")
    )
}

/// `DELETE FROM t USING unnest(keys…) AS u(p1…) WHERE t.k = u.p1 …`.
pub fn delete_sql(t: &ResolvedTable) -> String {
    let arrays: Vec<String> = t
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("${}::{}[]", i + 1, t.write[*k].base_type))
        .collect();
    let aliases: Vec<String> = (1..=t.key.len()).map(|i| format!("p{i}")).collect();
    let conds: Vec<String> = t
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("t.{} = u.p{}", t.write[*k].quoted, i + 1))
        .collect();
    format!(
        "DELETE FROM {} AS t USING unnest({}) AS u({}) WHERE {}",
        t.target.qualified,
        arrays.join(", "),
        aliases.join(", "),
        conds.join(" AND ")
    )
}

/// Can a column identify a row of a table without a key? PostgreSQL has no equality
/// operator for these types.
fn comparable(w: &crate::pg::catalog::WriteColumn) -> bool {
    !matches!(
        w.base_type.as_str(),
        "xml" | "json" | "point" | "line" | "lseg" | "box" | "path" | "polygon" | "circle"
    )
}

/// `m.c IS NOT DISTINCT FROM ($n::type[])[1] AND …` for one-row statements (parameters are
/// one-element arrays, like every change parameter), numbered from `first`.
fn match_row(t: &ResolvedTable, cols: &[usize], first: usize) -> String {
    let conds: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "m.{} IS NOT DISTINCT FROM (${}::{}[])[1]",
                t.write[*c].quoted,
                first + i,
                t.write[*c].base_type
            )
        })
        .collect();
    if conds.is_empty() {
        "true".into()
    } else {
        conds.join(" AND ")
    }
}

/// Tables without a primary key or a usable unique index (heaps): a change names its row by
/// all its values, and exactly one matching row is changed, picked by `ctid` with `LIMIT 1`
/// (identical rows are interchangeable, so any one of them is right).
pub fn keyless_delete_sql(t: &ResolvedTable, match_cols: &[usize]) -> String {
    format!(
        "DELETE FROM {0} WHERE ctid = (SELECT m.ctid FROM {0} AS m WHERE {1} LIMIT 1)",
        t.target.qualified,
        match_row(t, match_cols, 1)
    )
}

/// See [`keyless_delete_sql`]; `$1…` match the before image, the following set the columns.
pub fn keyless_update_sql(t: &ResolvedTable, match_cols: &[usize], set_cols: &[usize]) -> String {
    let sets: Vec<String> = set_cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "{} = (${}::{}[])[1]",
                t.write[*c].quoted,
                match_cols.len() + i + 1,
                t.write[*c].base_type
            )
        })
        .collect();
    format!(
        "UPDATE {0} SET {1} WHERE ctid = (SELECT m.ctid FROM {0} AS m WHERE {2} LIMIT 1)",
        t.target.qualified,
        sets.join(", "),
        match_row(t, match_cols, 1)
    )
}

/// Catch-up insert into a table without a key: rows already copied by the snapshot are not
/// inserted twice.
pub fn insert_if_absent_sql(t: &ResolvedTable, cols: &[usize]) -> String {
    let names: Vec<&str> = cols.iter().map(|c| t.write[*c].quoted.as_str()).collect();
    let arrays: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}[]", i + 1, t.write[*c].base_type))
        .collect();
    let aliases: Vec<String> = (1..=cols.len()).map(|i| format!("p{i}")).collect();
    let conds: Vec<String> = cols
        .iter()
        .enumerate()
        .filter(|(_, c)| comparable(&t.write[**c]))
        .map(|(i, c)| format!("m.{} IS NOT DISTINCT FROM u.p{}", t.write[*c].quoted, i + 1))
        .collect();
    format!(
        "INSERT INTO {0} ({1}) SELECT * FROM unnest({2}) AS u({3}) WHERE NOT EXISTS (SELECT 1 FROM {0} AS m WHERE {4})",
        t.target.qualified,
        names.join(", "),
        arrays.join(", "),
        aliases.join(", "),
        if conds.is_empty() { "true".into() } else { conds.join(" AND ") }
    )
}

/// One binary array parameter: the elements are already encoded (`len + bytes` each).
#[derive(Debug)]
struct ArrayParam {
    elements: Bytes,
    count: i32,
    has_null: bool,
}

impl ToSql for ArrayParam {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let Kind::Array(element) = ty.kind() else {
            return Err(format!("parameter of type {ty} is not an array").into());
        };
        out.put_i32(1); // dimensions
        out.put_i32(i32::from(self.has_null));
        out.put_u32(element.oid());
        out.put_i32(self.count);
        out.put_i32(1); // lower bound
        out.put_slice(&self.elements);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Array(_))
    }

    to_sql_checked!();
}

#[derive(Default)]
struct ArrayBuf {
    data: BytesMut,
    has_null: bool,
}

/// Changes of one table and kind waiting to be sent as one statement.
struct Batch {
    table: usize,
    kind: StmtKind,
    /// Indices into `write`: inserted columns, or SET columns of an update.
    cols: Vec<usize>,
    params: Vec<ArrayBuf>,
    rows: usize,
    bytes: usize,
    keys: HashSet<u64>,
}

/// One table of the stream as the applier sees it.
pub struct TableApply {
    pub table: Arc<ResolvedTable>,
    /// For each source column, its position in `RowChange.values` (capture-instance order);
    /// `None` when the capture instance does not record it.
    pub change_position: Vec<Option<usize>>,
    /// Changes with a commit LSN at or below this may already be in the snapshot.
    pub snapshot_end_lsn: Option<Lsn>,
    /// Conflict mode `ignore`: inserts overwrite existing rows.
    pub overwrite_inserts: bool,
    /// Changes of this table are not applied (waiting for a new snapshot).
    pub paused: bool,
    /// Statements of different rows may be regrouped (see [`ChangeApplier`]); set when the
    /// key is the table's only unique index.
    pub reorder: bool,
    pub changes_applied: u64,
}

impl TableApply {
    pub fn new(
        table: Arc<ResolvedTable>,
        snapshot_end_lsn: Option<Lsn>,
        overwrite_inserts: bool,
    ) -> TableApply {
        let n = table.target.columns.len();
        TableApply {
            table,
            change_position: (0..n).map(Some).collect(),
            snapshot_end_lsn,
            overwrite_inserts,
            paused: false,
            reorder: false,
            changes_applied: 0,
        }
    }

    /// Maps the capture instance's column list (by name) onto the source columns.
    pub fn set_change_columns(&mut self, names: &[String]) {
        self.change_position = self
            .table
            .target
            .columns
            .iter()
            .map(|c| {
                names
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(&c.source_name))
            })
            .collect();
    }

    #[inline]
    fn value<'v>(&self, values: &'v [Value], source_index: usize) -> Option<&'v Value> {
        self.change_position[source_index].and_then(|p| values.get(p))
    }
}

/// The before image of an update waiting for its after image.
struct BeforeImage {
    table: usize,
    seqval: Vec<u8>,
    key: Vec<Value>,
}

/// Caps that bound memory and statement size.
#[derive(Clone, Copy, Debug)]
pub struct ApplyLimits {
    pub batch_rows: usize,
    pub batch_bytes: usize,
    /// Commit after this many changes at the next transaction boundary.
    pub commit_changes: u64,
}

impl Default for ApplyLimits {
    fn default() -> Self {
        ApplyLimits {
            batch_rows: 5000,
            batch_bytes: 4 << 20,
            commit_changes: 20_000,
        }
    }
}

/// Writes change transactions of one table group on one connection.
/// A statement sent to PostgreSQL whose result has not been read yet.
struct InFlight {
    result: Pin<Box<dyn Future<Output = std::result::Result<u64, tokio_postgres::Error>> + Send>>,
    table: String,
    action: &'static str,
    rows: u64,
}

/// Statements sent before the oldest result is awaited.
const MAX_IN_FLIGHT: usize = 512;

pub struct ChangeApplier {
    client: Arc<Client>,
    in_flight: VecDeque<InFlight>,
    task_id: String,
    group_id: String,
    pub tables: Vec<Option<TableApply>>,
    limits: ApplyLimits,
    in_txn: bool,
    /// Commit LSN of a source transaction whose last fragment has not arrived yet.
    partial: Option<Lsn>,
    committed: Option<Position>,
    pending: Option<(Position, i64)>,
    pending_changes: u64,
    last_source_time: i64,
    /// Open batches, oldest first.
    batches: Vec<Batch>,
    before: Option<BeforeImage>,
    statements: HashMap<(usize, StmtKind, Vec<usize>), Statement>,
    scratch: BytesMut,
}

impl ChangeApplier {
    /// Prepares the session and builds the applier. The change statements join a small
    /// `unnest` of keys to the table; a cached generic plan made while the table was small
    /// (or before autoanalyze) would scan the whole table per statement, so this session
    /// prefers index lookups.
    pub async fn start(
        client: Client,
        task_id: &str,
        group_id: &str,
        tables: Vec<Option<TableApply>>,
        start: Option<Position>,
        limits: ApplyLimits,
    ) -> Result<Self> {
        client
            .batch_execute(
                "SET enable_seqscan = off; SET enable_hashjoin = off; SET enable_mergejoin = off",
            )
            .await
            .map_err(|e| ApplyError::target("change stream", "preparing the session", e))?;
        Ok(Self::new(client, task_id, group_id, tables, start, limits))
    }

    fn new(
        client: Client,
        task_id: &str,
        group_id: &str,
        tables: Vec<Option<TableApply>>,
        start: Option<Position>,
        limits: ApplyLimits,
    ) -> Self {
        ChangeApplier {
            client: Arc::new(client),
            in_flight: VecDeque::new(),
            task_id: task_id.to_string(),
            group_id: group_id.to_string(),
            tables,
            limits,
            in_txn: false,
            partial: None,
            committed: start,
            pending: None,
            pending_changes: 0,
            last_source_time: 0,
            batches: Vec::new(),
            before: None,
            statements: HashMap::new(),
            scratch: BytesMut::with_capacity(256),
        }
    }

    /// The position that is durable in the target.
    pub fn committed(&self) -> Option<Position> {
        self.committed
    }

    pub fn last_source_time(&self) -> i64 {
        self.last_source_time
    }

    /// True while a source transaction is open (its last fragment has not arrived).
    pub fn inside_transaction(&self) -> bool {
        self.partial.is_some()
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Replaces a table (after a schema change); pending work is sent first.
    pub async fn replace_table(&mut self, index: usize, table: TableApply) -> Result<()> {
        self.send_all().await?;
        self.statements.retain(|(t, _, _), _| *t != index);
        if let Some(slot) = self.tables.get_mut(index) {
            *slot = Some(table);
        }
        Ok(())
    }

    async fn begin(&mut self) -> Result<()> {
        if !self.in_txn {
            self.client
                .batch_execute("BEGIN")
                .await
                .map_err(|e| ApplyError::target("change stream", "opening a transaction", e))?;
            self.in_txn = true;
        }
        Ok(())
    }

    async fn apply_change(&mut self, change: &RowChange, commit_lsn: Lsn) -> Result<()> {
        let ti = change.table_index as usize;
        let Some(Some(t)) = self.tables.get(ti) else {
            return Err(ApplyError::Protocol {
                detail: format!("change for unknown table index {ti}"),
            });
        };
        if t.paused {
            return Ok(());
        }
        let change = &*crate::etl::transform_change(t, change)?;
        let target = &t.table.target;
        let op = Operation::try_from(change.operation).unwrap_or(Operation::Unspecified);
        let wanted = match op {
            Operation::Insert => target.sync_inserts,
            Operation::Delete => target.sync_deletes,
            Operation::UpdateBefore | Operation::UpdateAfter => target.sync_updates,
            Operation::Unspecified => {
                return Err(ApplyError::Protocol {
                    detail: format!("change without operation for {}", target.source_name),
                })
            }
        };
        if !wanted {
            self.before = None;
            return Ok(());
        }
        let idempotent = t.overwrite_inserts || t.snapshot_end_lsn.is_some_and(|s| commit_lsn <= s);
        if t.table.key.is_empty() {
            return self.apply_keyless(ti, op, change, idempotent).await;
        }
        match op {
            Operation::UpdateBefore => {
                let key = t
                    .table
                    .key
                    .iter()
                    .map(|k| {
                        t.value(&change.values, t.table.write[*k].source_index)
                            .cloned()
                            .unwrap_or_default()
                    })
                    .collect();
                self.before = Some(BeforeImage {
                    table: ti,
                    seqval: change.seqval.clone(),
                    key,
                });
                return Ok(());
            }
            Operation::Insert => {
                let cols: Vec<usize> = (0..t.table.write.len())
                    .filter(|w| matches!(t.value(&change.values, t.table.write[*w].source_index), Some(v) if !is_unchanged(v)))
                    .collect();
                let kind = if idempotent {
                    StmtKind::Upsert
                } else {
                    StmtKind::Insert
                };
                self.add(ti, kind, cols, &change.values, None).await?;
            }
            Operation::UpdateAfter => {
                let cols: Vec<usize> = (0..t.table.write.len())
                    .filter(|w| matches!(t.value(&change.values, t.table.write[*w].source_index), Some(v) if !is_unchanged(v)))
                    .collect();
                let before = self
                    .before
                    .take()
                    .filter(|b| b.table == ti && b.seqval == change.seqval);
                if cols.is_empty() {
                    return Ok(());
                }
                if target.has_filter() {
                    // The new image decides: inside the filter it is upserted, outside the
                    // row is deleted.
                    self.add(ti, StmtKind::UpdateFiltered, cols, &change.values, None)
                        .await?;
                } else {
                    self.add(
                        ti,
                        StmtKind::Update,
                        cols,
                        &change.values,
                        before.map(|b| b.key),
                    )
                    .await?;
                }
            }
            Operation::Delete => {
                self.add(ti, StmtKind::Delete, Vec::new(), &change.values, None)
                    .await?;
            }
            Operation::Unspecified => {}
        }
        if let Some(Some(t)) = self.tables.get_mut(ti) {
            t.changes_applied += 1;
        }
        Ok(())
    }

    /// A change of a table without a key ([`keyless_delete_sql`]): updates and deletes are
    /// one-row statements sent in change order; inserts are batched as usual.
    async fn apply_keyless(
        &mut self,
        ti: usize,
        op: Operation,
        change: &RowChange,
        idempotent: bool,
    ) -> Result<()> {
        let t = self.tables[ti].as_ref().expect("checked by caller");
        let present = |values: &[Value], w: usize, for_match: bool| {
            let column = &t.table.write[w];
            matches!(t.value(values, column.source_index), Some(v) if !is_unchanged(v))
                && (!for_match || comparable(column))
        };
        let n = t.table.write.len();
        let (kind, cols, match_values) = match op {
            Operation::UpdateBefore => {
                self.before = Some(BeforeImage {
                    table: ti,
                    seqval: change.seqval.clone(),
                    key: change.values.clone(),
                });
                return Ok(());
            }
            Operation::Insert => {
                let cols: Vec<usize> = (0..n)
                    .filter(|w| present(&change.values, *w, false))
                    .collect();
                let kind = if idempotent {
                    StmtKind::InsertIfAbsent
                } else {
                    StmtKind::Insert
                };
                self.add(ti, kind, cols, &change.values, None).await?;
                if let Some(Some(t)) = self.tables.get_mut(ti) {
                    t.changes_applied += 1;
                }
                return Ok(());
            }
            Operation::Delete => {
                let cols: Vec<usize> = (0..n)
                    .filter(|w| present(&change.values, *w, true))
                    .collect();
                (StmtKind::KeylessDelete, cols, change.values.clone())
            }
            _ => {
                let before = self
                    .before
                    .take()
                    .filter(|b| b.table == ti && b.seqval == change.seqval)
                    .ok_or_else(|| ApplyError::Protocol {
                        detail: format!(
                            "an update of {} (no key) came without its before image",
                            t.table.target.source_name
                        ),
                    })?;
                let mut cols: Vec<usize> =
                    (0..n).filter(|w| present(&before.key, *w, true)).collect();
                let matched = cols.len();
                cols.extend((0..n).filter(|w| present(&change.values, *w, false)));
                if cols.len() == matched {
                    return Ok(());
                }
                (StmtKind::KeylessUpdate(matched), cols, before.key)
            }
        };
        self.send_table_batches(ti).await?;
        let t = self.tables[ti].as_ref().expect("checked by caller");
        let table = Arc::clone(&t.table);
        let matched = match kind {
            StmtKind::KeylessUpdate(m) => m,
            _ => cols.len(),
        };
        let mut params = Vec::with_capacity(cols.len());
        let mut bytes = 0;
        for (i, c) in cols.iter().enumerate() {
            let w = &table.write[*c];
            let values = if i < matched {
                &match_values
            } else {
                &change.values
            };
            let v = t.value(values, w.source_index).unwrap_or(&NULL);
            let mut buf = ArrayBuf {
                has_null: v.kind.is_none(),
                ..Default::default()
            };
            encode_value(v, &w.ty, &mut buf.data).map_err(|e| ApplyError::InvalidValue {
                table: table.target.qualified.clone(),
                column: w.quoted.clone(),
                detail: e.to_string(),
            })?;
            bytes += buf.data.len();
            params.push(buf);
        }
        self.send_batch(Batch {
            table: ti,
            kind,
            cols,
            params,
            rows: 1,
            bytes,
            keys: HashSet::new(),
        })
        .await?;
        if let Some(Some(t)) = self.tables.get_mut(ti) {
            t.changes_applied += 1;
        }
        Ok(())
    }

    /// Adds one row to an open batch, sending batches first when order requires it.
    ///
    /// Per table, a change whose row is already in an open batch sends that table's batches
    /// first (in the order they were opened), so changes of one row keep their order. Tables
    /// marked `reorder` keep one open batch per statement shape, so interleaved inserts,
    /// updates and deletes of different rows still form large statements; that is safe only
    /// when the key is the table's one unique index (no other unique constraint could see
    /// the rows in a different order) and FK checks are off. Other tables keep exactly one
    /// open batch, so their statements run in change order.
    async fn add(
        &mut self,
        ti: usize,
        kind: StmtKind,
        cols: Vec<usize>,
        values: &[Value],
        key_override: Option<Vec<Value>>,
    ) -> Result<()> {
        let table = Arc::clone(&self.tables[ti].as_ref().expect("checked by caller").table);
        let reorder = self.tables[ti].as_ref().is_some_and(|t| t.reorder);
        // Hashes of the rows this change touches: its key, and for an update that changes a
        // unique-index key also the new key.
        let mut hashes = [0u64; 2];
        let mut nhashes = 1;
        {
            let t = self.tables[ti].as_ref().expect("checked by caller");
            hashes[0] = key_hash(&mut self.scratch, &table, |i, w| match &key_override {
                Some(key) => key.get(i),
                None => t.value(values, w.source_index),
            })?;
            if key_override.is_some() {
                let after = key_hash(&mut self.scratch, &table, |_, w| {
                    t.value(values, w.source_index)
                })?;
                if after != hashes[0] {
                    hashes[1] = after;
                    nhashes = 2;
                }
            }
        }
        let hashes = &hashes[..nhashes];
        // INVARIANT: a row is in at most one open batch, so sending just the batch that holds
        // it keeps that row's order (other batches hold other rows).
        let mut i = 0;
        while i < self.batches.len() {
            let b = &self.batches[i];
            if b.table == ti && hashes.iter().any(|h| b.keys.contains(h)) {
                let b = self.batches.remove(i);
                self.send_batch(b).await?;
            } else {
                i += 1;
            }
        }
        let same_shape = |b: &Batch| b.table == ti && b.kind == kind && b.cols == cols;
        let mut pos = if reorder {
            self.batches.iter().position(&same_shape)
        } else {
            let open = self.batches.iter().position(|b| b.table == ti);
            match open {
                Some(p) if same_shape(&self.batches[p]) => Some(p),
                Some(_) => {
                    self.send_table_batches(ti).await?;
                    None
                }
                None => None,
            }
        };
        if pos.is_none() {
            let nparams = match kind {
                StmtKind::Insert
                | StmtKind::Upsert
                | StmtKind::UpdateFiltered
                | StmtKind::InsertIfAbsent
                | StmtKind::KeylessDelete
                | StmtKind::KeylessUpdate(_) => cols.len(),
                StmtKind::Update => table.key.len() + cols.len(),
                StmtKind::Delete => table.key.len(),
            };
            self.batches.push(Batch {
                table: ti,
                kind,
                cols,
                params: (0..nparams).map(|_| ArrayBuf::default()).collect(),
                rows: 0,
                bytes: 0,
                keys: HashSet::new(),
            });
            pos = Some(self.batches.len() - 1);
        }
        let pos = pos.expect("set above");
        let t = self.tables[ti].as_ref().expect("checked by caller");
        let batch = &mut self.batches[pos];
        batch.keys.extend(hashes.iter().copied());
        let mut param = 0;
        let put = |buf: &mut ArrayBuf,
                   v: Option<&Value>,
                   w: &crate::pg::catalog::WriteColumn|
         -> Result<usize> {
            let v = v.unwrap_or(&NULL);
            if v.kind.is_none() {
                buf.has_null = true;
            }
            let before = buf.data.len();
            encode_value(v, &w.ty, &mut buf.data).map_err(|e| ApplyError::InvalidValue {
                table: table.target.qualified.clone(),
                column: w.quoted.clone(),
                detail: e.to_string(),
            })?;
            Ok(buf.data.len() - before)
        };
        let mut bytes = 0;
        if matches!(kind, StmtKind::Update | StmtKind::Delete) {
            for (i, k) in table.key.iter().enumerate() {
                let w = &table.write[*k];
                let v = match &key_override {
                    Some(key) => key.get(i),
                    None => t.value(values, w.source_index),
                };
                bytes += put(&mut batch.params[param], v, w)?;
                param += 1;
            }
        }
        if kind != StmtKind::Delete {
            for c in batch.cols.clone().iter() {
                let w = &table.write[*c];
                bytes += put(&mut batch.params[param], t.value(values, w.source_index), w)?;
                param += 1;
            }
        }
        batch.rows += 1;
        batch.bytes += bytes;
        if batch.rows >= self.limits.batch_rows || batch.bytes >= self.limits.batch_bytes {
            let full = self.batches.remove(pos);
            self.send_batch(full).await?;
        }
        Ok(())
    }

    /// Sends the open batches of one table, oldest first.
    async fn send_table_batches(&mut self, ti: usize) -> Result<()> {
        let mut i = 0;
        while i < self.batches.len() {
            if self.batches[i].table == ti {
                let b = self.batches.remove(i);
                self.send_batch(b).await?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Sends every open batch, oldest first.
    async fn send_open_batches(&mut self) -> Result<()> {
        for b in std::mem::take(&mut self.batches) {
            self.send_batch(b).await?;
        }
        Ok(())
    }

    /// Sends one batch as one statement.
    async fn send_batch(&mut self, batch: Batch) -> Result<()> {
        if batch.rows == 0 {
            return Ok(());
        }
        let table = Arc::clone(
            &self.tables[batch.table]
                .as_ref()
                .expect("batch of a known table")
                .table,
        );
        let key = (batch.table, batch.kind, batch.cols.clone());
        if !self.statements.contains_key(&key) {
            let sql = match batch.kind {
                StmtKind::Insert => insert_sql(&table, &batch.cols, false)?,
                StmtKind::Upsert => insert_sql(&table, &batch.cols, true)?,
                StmtKind::Update => update_sql(&table, &batch.cols),
                StmtKind::UpdateFiltered => filtered_update_sql(&table, &batch.cols)?,
                StmtKind::Delete => delete_sql(&table),
                StmtKind::InsertIfAbsent => insert_if_absent_sql(&table, &batch.cols),
                StmtKind::KeylessDelete => keyless_delete_sql(&table, &batch.cols),
                StmtKind::KeylessUpdate(m) => {
                    keyless_update_sql(&table, &batch.cols[..m], &batch.cols[m..])
                }
            };
            let stmt = self.client.prepare(&sql).await.map_err(|e| {
                ApplyError::target(&table.target.qualified, "preparing a change statement", e)
            })?;
            self.statements.insert(key.clone(), stmt);
        }
        let stmt = self.statements[&key].clone();
        let count = i32::try_from(batch.rows).unwrap_or(i32::MAX);
        let params: Vec<ArrayParam> = batch
            .params
            .into_iter()
            .map(|p| ArrayParam {
                elements: p.data.freeze(),
                count,
                has_null: p.has_null,
            })
            .collect();
        let action = match batch.kind {
            StmtKind::Insert => "inserting changed rows",
            StmtKind::Upsert | StmtKind::InsertIfAbsent => "upserting changed rows",
            StmtKind::Update | StmtKind::UpdateFiltered | StmtKind::KeylessUpdate(_) => {
                "updating changed rows"
            }
            StmtKind::Delete | StmtKind::KeylessDelete => "deleting changed rows",
        };
        // Pipelining: the first poll sends the statement; its result is read later (before
        // COMMIT, or when too many are in flight). PostgreSQL runs them in the order sent, so
        // change order is kept while round trips overlap.
        let client = Arc::clone(&self.client);
        let mut result: Pin<
            Box<dyn Future<Output = std::result::Result<u64, tokio_postgres::Error>> + Send>,
        > = Box::pin(async move { client.execute_raw(&stmt, params).await });
        let table_name = table.target.qualified.clone();
        if let Poll::Ready(r) = futures::poll!(result.as_mut()) {
            r.map_err(|e| ApplyError::target(&table_name, action, e))?;
            metrics::counter!("dbsync_apply_changes_applied_total").increment(batch.rows as u64);
        } else {
            self.in_flight.push_back(InFlight {
                result,
                table: table_name,
                action,
                rows: batch.rows as u64,
            });
            if self.in_flight.len() > MAX_IN_FLIGHT {
                self.await_oldest().await?;
            }
        }
        Ok(())
    }

    async fn await_oldest(&mut self) -> Result<()> {
        if let Some(f) = self.in_flight.pop_front() {
            f.result
                .await
                .map_err(|e| ApplyError::target(&f.table, f.action, e))?;
            metrics::counter!("dbsync_apply_changes_applied_total").increment(f.rows);
        }
        Ok(())
    }

    /// Sends the pending batch and reads every outstanding result.
    async fn send_all(&mut self) -> Result<()> {
        self.send_open_batches().await?;
        while !self.in_flight.is_empty() {
            self.await_oldest().await?;
        }
        Ok(())
    }

    /// Commits the open PostgreSQL transaction with the position of the last complete source
    /// transaction. Does nothing inside a source transaction (only sends pending rows).
    pub async fn commit(&mut self) -> Result<Option<Position>> {
        self.send_all().await?;
        if self.partial.is_some() {
            return Ok(None);
        }
        let Some((position, time)) = self.pending.take() else {
            if self.in_txn {
                // Only filtered-out changes: nothing to record beyond what `pending` held.
                self.client
                    .batch_execute("COMMIT")
                    .await
                    .map_err(|e| ApplyError::target("change stream", "committing", e))?;
                self.in_txn = false;
            }
            return Ok(None);
        };
        self.begin().await?;
        save_position(
            self.client.as_ref(),
            &self.task_id,
            &self.group_id,
            &position,
            time,
            self.pending_changes,
        )
        .await?;
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| ApplyError::target("change stream", "committing", e))?;
        self.in_txn = false;
        self.pending_changes = 0;
        self.committed = Some(position);
        Ok(Some(position))
    }

    /// Drops the open transaction (its changes will be streamed again from the checkpoint).
    pub async fn rollback(&mut self) {
        self.in_flight.clear();
        self.batches.clear();
        self.before = None;
        self.pending = None;
        self.partial = None;
        if self.in_txn {
            let _ = self.client.batch_execute("ROLLBACK").await;
            self.in_txn = false;
        }
    }
}

/// Hash of a row's key values as encoded (equal keys, equal bytes).
fn key_hash<'v>(
    scratch: &mut BytesMut,
    table: &ResolvedTable,
    value: impl Fn(usize, &crate::pg::catalog::WriteColumn) -> Option<&'v Value>,
) -> Result<u64> {
    scratch.clear();
    for (i, k) in table.key.iter().enumerate() {
        let w = &table.write[*k];
        encode_value(value(i, w).unwrap_or(&NULL), &w.ty, scratch).map_err(|e| {
            ApplyError::InvalidValue {
                table: table.target.qualified.clone(),
                column: w.quoted.clone(),
                detail: e.to_string(),
            }
        })?;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    scratch.hash(&mut hasher);
    Ok(hasher.finish())
}

static NULL: Value = Value { kind: None };

#[inline]
fn is_unchanged(v: &Value) -> bool {
    matches!(v.kind, Some(ValueKind::Unchanged(true)))
}

impl ChangeSink for ChangeApplier {
    type Error = ApplyError;

    async fn apply_fragment(&mut self, fragment: TransactionFragment) -> Result<Option<Position>> {
        let commit_lsn =
            Lsn::from_slice(&fragment.commit_lsn).ok_or_else(|| ApplyError::Protocol {
                detail: format!("commit LSN of {} bytes", fragment.commit_lsn.len()),
            })?;
        if let Some(open) = self.partial {
            if open != commit_lsn {
                return Err(ApplyError::Protocol {
                    detail: format!(
                        "transaction {open} ended without its last fragment; {commit_lsn} started"
                    ),
                });
            }
        } else if self
            .committed
            .is_some_and(|c| Position::end_of(commit_lsn) <= c)
            || self
                .pending
                .is_some_and(|(p, _)| Position::end_of(commit_lsn) <= p)
        {
            // Already applied (a redelivery after reconnect): skip the whole transaction.
            return Ok(None);
        }
        self.begin().await?;
        for change in &fragment.changes {
            self.apply_change(change, commit_lsn).await?;
        }
        // An update's before image and after image count as one change.
        self.pending_changes += fragment
            .changes
            .iter()
            .filter(|c| c.operation != Operation::UpdateBefore as i32)
            .count() as u64;
        if fragment.last_fragment {
            self.partial = None;
            self.pending = Some((
                Position::end_of(commit_lsn),
                fragment.commit_time_unix_micros,
            ));
            self.last_source_time = fragment.commit_time_unix_micros;
            if self.pending_changes >= self.limits.commit_changes {
                return self.commit().await;
            }
        } else {
            self.partial = Some(commit_lsn);
        }
        Ok(None)
    }

    async fn advance(&mut self, lsn: Lsn, source_time_unix_micros: i64) -> Result<()> {
        if self.partial.is_some() || lsn == Lsn::ZERO {
            return Ok(());
        }
        let position = Position::end_of(lsn.decrement());
        let newest = self.pending.map(|(p, _)| p).or(self.committed);
        if newest.is_none_or(|n| position > n) {
            self.pending = Some((position, source_time_unix_micros));
            self.last_source_time = source_time_unix_micros;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<Option<Position>> {
        self.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::catalog::WriteColumn;
    use crate::plan::TableTarget;
    use dbsync_typemap::{PgColumnType, PgKind};

    fn table() -> ResolvedTable {
        let plan = crate::pg::ddl::tests::customers_plan();
        let target = TableTarget::from_plan(&plan).unwrap();
        ResolvedTable {
            target,
            write: vec![
                WriteColumn {
                    source_index: 0,
                    quoted: "customerid".into(),
                    ty: PgColumnType::new("customerid", PgKind::Integer),
                    base_type: "integer".into(),
                },
                WriteColumn {
                    source_index: 1,
                    quoted: "name".into(),
                    ty: PgColumnType::new("name", PgKind::Varchar { length: Some(100) }),
                    base_type: "character varying".into(),
                },
            ],
            key: vec![0],
        }
    }

    #[test]
    fn change_statements_match_the_golden_text() {
        let t = table();
        assert_eq!(
            insert_sql(&t, &[0, 1], false).unwrap(),
            r#"INSERT INTO dbo.customers (customerid, name) SELECT * FROM unnest($1::integer[], $2::character varying[])"#
        );
        assert_eq!(
            insert_sql(&t, &[0, 1], true).unwrap(),
            r#"INSERT INTO dbo.customers (customerid, name) SELECT * FROM unnest($1::integer[], $2::character varying[]) ON CONFLICT (customerid) DO UPDATE SET name = EXCLUDED.name"#
        );
        assert_eq!(
            update_sql(&t, &[1]),
            r#"UPDATE dbo.customers AS t SET name = u.p2 FROM unnest($1::integer[], $2::character varying[]) AS u(p1, p2) WHERE t.customerid = u.p1"#
        );
        assert_eq!(
            delete_sql(&t),
            r#"DELETE FROM dbo.customers AS t USING unnest($1::integer[]) AS u(p1) WHERE t.customerid = u.p1"#
        );
    }

    #[test]
    fn keyless_statements_change_exactly_one_matching_row() {
        let t = table();
        assert_eq!(
            keyless_delete_sql(&t, &[0, 1]),
            r#"DELETE FROM dbo.customers WHERE ctid = (SELECT m.ctid FROM dbo.customers AS m WHERE m.customerid IS NOT DISTINCT FROM ($1::integer[])[1] AND m.name IS NOT DISTINCT FROM ($2::character varying[])[1] LIMIT 1)"#
        );
        assert_eq!(
            keyless_update_sql(&t, &[0, 1], &[1]),
            r#"UPDATE dbo.customers SET name = ($3::character varying[])[1] WHERE ctid = (SELECT m.ctid FROM dbo.customers AS m WHERE m.customerid IS NOT DISTINCT FROM ($1::integer[])[1] AND m.name IS NOT DISTINCT FROM ($2::character varying[])[1] LIMIT 1)"#
        );
        assert_eq!(
            insert_if_absent_sql(&t, &[0, 1]),
            r#"INSERT INTO dbo.customers (customerid, name) SELECT * FROM unnest($1::integer[], $2::character varying[]) AS u(p1, p2) WHERE NOT EXISTS (SELECT 1 FROM dbo.customers AS m WHERE m.customerid IS NOT DISTINCT FROM u.p1 AND m.name IS NOT DISTINCT FROM u.p2)"#
        );
    }
}
