//! INSERT, UPDATE, DELETE, bulk load: row writes into the transaction's overlay with key
//! locks, constraint enforcement (PK/UNIQUE 2627/2601, NOT NULL 515, CHECK and FOREIGN KEY
//! 547 with cascades, truncation 2628) and row-change recording for CDC.

use std::collections::HashMap;
use std::ops::Bound as RangeBound;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;

use sqlparser::ast;

use super::catalog::{ReferentialAction, TableDef};
use super::eval::{eval, eval_cond, BExpr, Binder, Env, Scope};
use super::hooks::{ChangeOp, Row, RowChange};
use super::parse::{self, object_name_parts};
use super::query::{self, table_scope_cols};
use super::session::SessionCore;
use super::store::{Key, TableWrites};
use super::value::{self, err, ValueExt};
use crate::api::{ResultColumn, SqlError};
use crate::types::{SqlType, Value};

/// Bound expressions of a table definition (defaults, computed columns, checks).
pub struct TableExprs {
    pub defaults: Vec<Option<BExpr>>,
    pub computed: Vec<Option<BExpr>>,
    pub checks: Vec<(String, Option<usize>, BExpr)>,
}

thread_local! {
    static EXPR_CACHE: std::cell::RefCell<HashMap<(usize, i32), Arc<TableExprs>>> = std::cell::RefCell::new(HashMap::new());
}

fn qualified(def: &TableDef) -> String {
    format!("{}.{}", def.schema, def.name)
}

/// `value::check_fits` for a column of `def`; the qualified table name is formatted only for
/// the error (this runs for every value written).
fn column_fits(
    v: &Value,
    def: &TableDef,
    column: &super::catalog::ColumnDef,
) -> Result<(), SqlError> {
    value::check_fits(v, &column.ty, "", &column.name)
        .or_else(|_| value::check_fits(v, &column.ty, &qualified(def), &column.name))
}

fn lock_timeout(core: &SessionCore) -> i64 {
    core.opts.lock_timeout
}

impl SessionCore {
    pub(crate) fn table_exprs(&mut self, def: &Arc<TableDef>) -> Result<Arc<TableExprs>, SqlError> {
        let key = (Arc::as_ptr(def) as usize, def.object_id);
        if let Some(e) = EXPR_CACHE.with(|c| c.borrow().get(&key).cloned()) {
            return Ok(e);
        }
        let scope = Scope {
            cols: table_scope_cols(def, &def.name),
        };
        let mut defaults = Vec::new();
        let mut computed = Vec::new();
        let mut checks = Vec::new();
        {
            let mut b = Binder::new(self, scope);
            for c in &def.columns {
                defaults.push(match &c.default {
                    Some(d) => Some(b.bind(&parse::parse_expr_text(&d.definition)?)?.0),
                    None => None,
                });
                computed.push(match &c.computed {
                    Some(cd) => Some(b.bind(&parse::parse_expr_text(&cd.definition)?)?.0),
                    None => None,
                });
            }
            for ck in &def.checks {
                checks.push((
                    ck.name.clone(),
                    ck.column,
                    b.bind_cond(&parse::parse_expr_text(&ck.definition)?)?,
                ));
            }
        }
        let e = Arc::new(TableExprs {
            defaults,
            computed,
            checks,
        });
        EXPR_CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() > 1000 {
                c.clear();
            }
            c.insert(key, e.clone());
        });
        Ok(e)
    }

    fn database_of(&self, def: &TableDef) -> String {
        self.engine
            .inner
            .catalog
            .read()
            .values()
            .find(|d| d.database_id == def.database_id)
            .map(|d| d.name.clone())
            .unwrap_or_default()
    }

    fn lock(&mut self, object_id: i32, index_id: i32, key: &Key) -> Result<(), SqlError> {
        let timeout = lock_timeout(self);
        let txn = self.ensure_txn()?;
        let id = txn.id;
        let lk = (object_id, index_id, key.clone());
        if self
            .engine
            .inner
            .store
            .locks
            .acquire(id, &lk, timeout, &|| false)?
        {
            self.txn.as_mut().expect("txn").locks.push(lk);
        }
        Ok(())
    }

    /// The current version of a row for this transaction: its own write, else the latest
    /// committed row. Checks SNAPSHOT update conflicts (3960).
    fn current_row(
        &self,
        def: &TableDef,
        key: &Key,
        for_write: bool,
    ) -> Result<Option<Row>, SqlError> {
        if let Some(w) = self.overlay(def.object_id) {
            if let Some(v) = w.rows.get(key) {
                return Ok(v.clone());
            }
            if w.truncated {
                return Ok(None);
            }
        }
        let latest = self.engine.inner.store.latest_row(def.object_id, key);
        if for_write {
            if let (Some(l), Some(snap)) =
                (&latest, self.txn.as_ref().and_then(|t| t.snapshot.as_ref()))
            {
                if l.seq > snap.seq {
                    return Err(SqlError::new(
                        3960,
                        16,
                        2,
                        format!("Snapshot isolation transaction aborted due to update conflict. You cannot use snapshot isolation to access table '{}' directly or indirectly in database '{}' to update, delete, or insert the row that has been modified or deleted by another transaction. Retry the transaction or change the isolation level for the update/delete statement.", qualified(def), self.database_of(def)),
                    ));
                }
            }
        }
        Ok(latest.map(|s| s.row))
    }

    fn unique_owner(&self, def: &TableDef, index_id: i32, ukey: &Key) -> Option<Key> {
        if let Some(w) = self.overlay(def.object_id) {
            if let Some(v) = w.uniques.get(&index_id).and_then(|u| u.get(ukey)) {
                return v.clone();
            }
            if w.truncated {
                return None;
            }
        }
        let owner = self
            .engine
            .inner
            .store
            .latest_unique(def.object_id, index_id, ukey)?;
        // Deleted by this transaction?
        match self.overlay(def.object_id).and_then(|w| w.rows.get(&owner)) {
            Some(None) => None,
            _ => Some(owner),
        }
    }

    /// Sets a row in the overlay, remembering the previous entry for statement rollback.
    fn set_row(&mut self, def: &TableDef, key: Key, row: Option<Row>) -> Result<(), SqlError> {
        let w = self.writes(def)?;
        let prev = w.rows.insert(key.clone(), row);
        self.txn.as_mut().expect("txn").undo.push(Undo::Row {
            object_id: def.object_id,
            key,
            prev,
        });
        Ok(())
    }

    fn set_unique(
        &mut self,
        def: &TableDef,
        index_id: i32,
        ukey: Key,
        owner: Option<Key>,
    ) -> Result<(), SqlError> {
        let w = self.writes(def)?;
        let prev = w
            .uniques
            .entry(index_id)
            .or_default()
            .insert(ukey.clone(), owner);
        self.txn.as_mut().expect("txn").undo.push(Undo::Unique {
            object_id: def.object_id,
            index_id,
            key: ukey,
            prev,
        });
        Ok(())
    }

    /// Undoes the current statement's writes (statement-level rollback inside a transaction).
    pub(crate) fn undo_statement(&mut self) {
        let Some(txn) = self.txn.as_mut() else { return };
        let mark = txn.stmt_undo_mark;
        let changes = std::mem::take(&mut txn.changes_mark);
        self.undo_to(mark, changes);
    }

    /// ROLLBACK TRANSACTION <savepoint>: undoes the writes made after SAVE TRANSACTION.
    pub(crate) fn rollback_to_savepoint(&mut self, name: &str) -> bool {
        let Some(txn) = self.txn.as_mut() else {
            return false;
        };
        let Some(pos) = txn
            .savepoints
            .iter()
            .rposition(|(n, ..)| n.eq_ignore_ascii_case(name))
        else {
            return false;
        };
        let (_, mark, changes) = txn.savepoints[pos].clone();
        txn.savepoints.truncate(pos + 1);
        self.undo_to(mark, changes);
        true
    }

    fn undo_to(&mut self, mark: usize, changes_mark: std::collections::BTreeMap<i32, usize>) {
        let Some(txn) = self.txn.as_mut() else { return };
        while txn.undo.len() > mark {
            let Some(u) = txn.undo.pop() else { break };
            match u {
                Undo::Row {
                    object_id,
                    key,
                    prev,
                } => {
                    if let Some(w) = txn.writes.get_mut(&object_id) {
                        match prev {
                            Some(p) => {
                                w.rows.insert(key, p);
                            }
                            None => {
                                w.rows.remove(&key);
                            }
                        }
                    }
                }
                Undo::Unique {
                    object_id,
                    index_id,
                    key,
                    prev,
                } => {
                    if let Some(u) = txn
                        .writes
                        .get_mut(&object_id)
                        .and_then(|w| w.uniques.get_mut(&index_id))
                    {
                        match prev {
                            Some(p) => {
                                u.insert(key, p);
                            }
                            None => {
                                u.remove(&key);
                            }
                        }
                    }
                }
                Undo::Table { object_id, before } => {
                    txn.writes.insert(object_id, before);
                }
            }
        }
        for (db, c) in txn.changes.iter_mut() {
            c.truncate(changes_mark.get(db).copied().unwrap_or(0));
        }
    }

    fn writes(&mut self, def: &TableDef) -> Result<&mut TableWrites, SqlError> {
        let db = def.database_id;
        let txn = self.ensure_txn()?;
        txn.table_db.insert(def.object_id, db);
        Ok(txn.writes.entry(def.object_id).or_default())
    }

    fn record(
        &mut self,
        def: &Arc<TableDef>,
        op: ChangeOp,
        before: Option<Row>,
        after: Option<Row>,
        assigned: Option<Arc<[bool]>>,
        seqval: Option<super::lsn::Lsn>,
    ) -> super::lsn::Lsn {
        let rt = self.engine.runtime(def.database_id);
        let seq =
            seqval.unwrap_or_else(|| rt.as_ref().map(|r| r.lsn.allocate()).unwrap_or_default());
        let recording = rt
            .as_ref()
            .is_some_and(|r| r.record_changes.load(AtomicOrdering::Relaxed));
        let stmt = self.stmt_seq;
        if let Some(txn) = self.txn.as_mut() {
            txn.first_lsn.entry(def.database_id).or_insert(seq);
            if txn.last_stmt_seq != stmt {
                txn.last_stmt_seq = stmt;
                txn.command_id += 1;
            }
            if recording {
                let command_id = txn.command_id;
                txn.changes
                    .entry(def.database_id)
                    .or_default()
                    .push(RowChange {
                        seqval: seq,
                        command_id,
                        table: def.clone(),
                        op,
                        before,
                        after,
                        assigned,
                    });
            }
        }
        seq
    }

    fn duplicate_error(
        &self,
        def: &TableDef,
        index: &super::catalog::IndexDef,
        key: &Key,
    ) -> SqlError {
        let vals = key
            .0
            .iter()
            .map(|v| {
                if v.is_null_value() {
                    "<NULL>".to_string()
                } else {
                    value::to_display_string(v)
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        if index.is_primary_key || index.is_unique_constraint {
            SqlError::new(
                2627,
                14,
                1,
                format!(
                    "Violation of {} constraint '{}'. Cannot insert duplicate key in object '{}'. The duplicate key value is ({}).",
                    if index.is_primary_key { "PRIMARY KEY" } else { "UNIQUE KEY" },
                    index.name,
                    qualified(def),
                    vals
                ),
            )
        } else {
            SqlError::new(2601, 14, 1, format!("Cannot insert duplicate key row in object '{}' with unique index '{}'. The duplicate key value is ({}).", qualified(def), index.name, vals))
        }
    }

    /// Checks NOT NULL, CHECK and child-side FOREIGN KEY constraints of a new row image.
    fn check_row(
        &mut self,
        def: &Arc<TableDef>,
        row: &[Value],
        verb: &str,
        changed: Option<&[bool]>,
    ) -> Result<(), SqlError> {
        for (i, c) in def.columns.iter().enumerate() {
            if !c.nullable && row[i].is_null_value() {
                return Err(SqlError::new(
                    515,
                    16,
                    2,
                    format!("Cannot insert the value NULL into column '{}', table '{}.{}'; column does not allow nulls. {} fails.", c.name, self.database_of(def), qualified(def), verb),
                ));
            }
        }
        if !def.checks.is_empty() {
            let exprs = self.table_exprs(def)?;
            let env = self.top_env();
            for (name, col, e) in &exprs.checks {
                let v = eval(e, row, &env)?;
                if super::eval::truth(&v) == Some(false) {
                    let column = col
                        .map(|c| format!(", column '{}'", def.columns[c].name))
                        .unwrap_or_default();
                    return Err(SqlError::new(547, 16, 0, format!("The {verb} statement conflicted with the CHECK constraint \"{name}\". The conflict occurred in database \"{}\", table \"{}\"{column}.", self.database_of(def), qualified(def))));
                }
            }
        }
        for fk in &def.foreign_keys {
            if let Some(ch) = changed {
                if !fk.columns.iter().any(|c| ch[*c]) {
                    continue;
                }
            }
            let vals: Vec<Value> = fk.columns.iter().map(|c| row[*c].clone()).collect();
            if vals.iter().any(|v| v.is_null_value()) {
                continue;
            }
            let parent = self
                .engine
                .table_by_id(&self.database_of(def), fk.referenced_object_id);
            let Some(parent) = parent else { continue };
            if !self.parent_exists(&parent, &fk.referenced_columns, &vals)? {
                return Err(SqlError::new(
                    547,
                    16,
                    0,
                    format!(
                        "The {verb} statement conflicted with the FOREIGN KEY constraint \"{}\". The conflict occurred in database \"{}\", table \"{}\", column '{}'.",
                        fk.name,
                        self.database_of(def),
                        qualified(&parent),
                        parent.columns[fk.referenced_columns[0]].name
                    ),
                ));
            }
        }
        Ok(())
    }

    fn parent_exists(
        &self,
        parent: &TableDef,
        cols: &[usize],
        vals: &[Value],
    ) -> Result<bool, SqlError> {
        let key = Key::new(vals.to_vec());
        if parent.storage_key.as_slice() == cols {
            return Ok(self.current_row(parent, &key, false)?.is_some());
        }
        if let Some(idx) = parent
            .unique_indexes()
            .find(|i| i.key_columns().collect::<Vec<_>>() == cols)
        {
            return Ok(self.unique_owner(parent, idx.index_id, &key).is_some());
        }
        // Fallback: scan.
        let mut found = false;
        let env = self.top_env();
        query::scan_table(&env, parent, RangeBound::Unbounded, &mut |_, r| {
            if cols
                .iter()
                .zip(vals)
                .all(|(c, v)| value::compare(&r[*c], v) == Some(std::cmp::Ordering::Equal))
            {
                found = true;
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(found)
    }

    /// Writes a new row (values in column order, complete). `record` = CDC recording.
    pub(crate) fn write_insert(
        &mut self,
        def: &Arc<TableDef>,
        row: Vec<Value>,
        check: bool,
    ) -> Result<(), SqlError> {
        if check {
            self.check_row(def, &row, "INSERT", None)?;
        }
        let key = if def.is_heap() {
            let mut n = def.runtime.next_row_id.lock();
            *n += 1;
            Key::new(vec![Value::BigInt(*n)])
        } else {
            Key::from_row(&row, &def.storage_key)
        };
        self.lock(def.object_id, 0, &key)?;
        if !def.is_heap() && self.current_row(def, &key, false)?.is_some() {
            let idx = &def.indexes[0];
            return Err(self.duplicate_error(def, idx, &key));
        }
        let mut ukeys = Vec::new();
        for idx in def.unique_indexes() {
            if !def.is_heap()
                && idx.index_id == def.indexes[0].index_id
                && idx.kind == super::catalog::IndexKind::Clustered
            {
                continue;
            }
            let ukey = Key::from_row(&row, &idx.key_columns().collect::<Vec<_>>());
            if idx.filter.is_some() && ukey.0.iter().any(|v| v.is_null_value()) {
                continue;
            }
            self.lock(def.object_id, idx.index_id, &ukey)?;
            if self.unique_owner(def, idx.index_id, &ukey).is_some() {
                return Err(self.duplicate_error(def, idx, &ukey));
            }
            ukeys.push((idx.index_id, ukey));
        }
        let row: Row = Arc::from(row);
        self.set_row(def, key.clone(), Some(row.clone()))?;
        for (idx, uk) in ukeys {
            self.set_unique(def, idx, uk, Some(key.clone()))?;
        }
        self.record(def, ChangeOp::Insert, None, Some(row), None, None);
        Ok(())
    }

    fn remove_row(&mut self, def: &Arc<TableDef>, key: &Key, old: &Row) -> Result<(), SqlError> {
        let mut ukeys = Vec::new();
        for idx in def.unique_indexes() {
            if !def.is_heap()
                && idx.index_id == def.indexes[0].index_id
                && idx.kind == super::catalog::IndexKind::Clustered
            {
                continue;
            }
            ukeys.push((
                idx.index_id,
                Key::from_row(old, &idx.key_columns().collect::<Vec<_>>()),
            ));
        }
        self.set_row(def, key.clone(), None)?;
        for (idx, uk) in ukeys {
            self.set_unique(def, idx, uk, None)?;
        }
        Ok(())
    }

    /// Deletes a row (parent-side FK actions first).
    fn write_delete(
        &mut self,
        def: &Arc<TableDef>,
        key: &Key,
        old: Row,
        depth: u32,
    ) -> Result<(), SqlError> {
        self.referencing_actions(def, &old, None, depth)?;
        self.remove_row(def, key, &old)?;
        self.record(def, ChangeOp::Delete, Some(old), None, None, None);
        Ok(())
    }

    /// Updates a row to `new` (complete image). A storage-key or unique-key change is
    /// recorded as delete + insert with one seqval.
    fn write_update(
        &mut self,
        def: &Arc<TableDef>,
        key: &Key,
        old: Row,
        new: Vec<Value>,
        assigned: Arc<[bool]>,
        depth: u32,
    ) -> Result<(), SqlError> {
        let changed: Vec<bool> = old
            .iter()
            .zip(new.iter())
            .map(|(a, b)| !same_value(a, b))
            .collect();
        self.check_row(def, &new, "UPDATE", Some(&changed))?;
        self.referencing_actions(def, &old, Some((&new, &changed)), depth)?;
        let new_key = if def.is_heap() {
            key.clone()
        } else {
            Key::from_row(&new, &def.storage_key)
        };
        let key_changed = !def.is_heap() && def.storage_key.iter().any(|c| changed[*c]);
        let mut unique_changed = false;
        let mut ukeys = Vec::new();
        for idx in def.unique_indexes() {
            if !def.is_heap()
                && idx.index_id == def.indexes[0].index_id
                && idx.kind == super::catalog::IndexKind::Clustered
            {
                continue;
            }
            let cols: Vec<usize> = idx.key_columns().collect();
            if cols.iter().any(|c| changed[*c]) {
                unique_changed = true;
                let nk = Key::from_row(&new, &cols);
                let ok = Key::from_row(&old, &cols);
                if !(idx.filter.is_some() && nk.0.iter().any(|v| v.is_null_value())) {
                    self.lock(def.object_id, idx.index_id, &nk)?;
                    if let Some(owner) = self.unique_owner(def, idx.index_id, &nk) {
                        if owner != *key {
                            return Err(self.duplicate_error(def, idx, &nk));
                        }
                    }
                }
                ukeys.push((idx.index_id, ok, nk));
            }
        }
        if key_changed {
            self.lock(def.object_id, 0, &new_key)?;
            if self.current_row(def, &new_key, false)?.is_some() {
                return Err(self.duplicate_error(def, &def.indexes[0], &new_key));
            }
        }
        let new_row: Row = Arc::from(new);
        if key_changed {
            self.set_row(def, key.clone(), None)?;
        }
        self.set_row(def, new_key.clone(), Some(new_row.clone()))?;
        for (idx, ok, nk) in ukeys {
            self.set_unique(def, idx, ok, None)?;
            self.set_unique(def, idx, nk, Some(new_key.clone()))?;
        }
        if key_changed || unique_changed {
            let seq = self.record(
                def,
                ChangeOp::Delete,
                Some(old),
                None,
                Some(assigned.clone()),
                None,
            );
            self.record(
                def,
                ChangeOp::Insert,
                None,
                Some(new_row),
                Some(assigned),
                Some(seq),
            );
        } else {
            self.record(
                def,
                ChangeOp::Update,
                Some(old),
                Some(new_row),
                Some(assigned),
                None,
            );
        }
        Ok(())
    }

    /// Parent-side FK enforcement for a deleted (new = None) or updated row.
    fn referencing_actions(
        &mut self,
        parent: &Arc<TableDef>,
        old: &Row,
        new: Option<(&[Value], &[bool])>,
        depth: u32,
    ) -> Result<(), SqlError> {
        if depth > 32 {
            return Err(err(217, "Maximum stored procedure, function, trigger, or view nesting level exceeded (limit 32)."));
        }
        let db = self.database_of(parent);
        let children: Vec<Arc<TableDef>> = self
            .engine
            .inner
            .catalog
            .read()
            .get(&db.to_lowercase())
            .map(|d| {
                d.tables
                    .values()
                    .filter(|t| {
                        t.foreign_keys
                            .iter()
                            .any(|f| f.referenced_object_id == parent.object_id)
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for child in children {
            for fk in child
                .foreign_keys
                .iter()
                .filter(|f| f.referenced_object_id == parent.object_id)
            {
                if let Some((_, changed)) = new {
                    if !fk.referenced_columns.iter().any(|c| changed[*c]) {
                        continue;
                    }
                }
                let old_vals: Vec<Value> = fk
                    .referenced_columns
                    .iter()
                    .map(|c| old[*c].clone())
                    .collect();
                let mut hits: Vec<(Key, Row)> = Vec::new();
                {
                    let env = self.top_env();
                    query::scan_table(&env, &child, RangeBound::Unbounded, &mut |k, r| {
                        if fk.columns.iter().zip(&old_vals).all(|(c, v)| {
                            value::compare(&r[*c], v) == Some(std::cmp::Ordering::Equal)
                        }) {
                            hits.push((k.clone(), Arc::from(r.to_vec())));
                        }
                        Ok(true)
                    })?;
                }
                if hits.is_empty() {
                    continue;
                }
                let action = if new.is_some() {
                    fk.on_update
                } else {
                    fk.on_delete
                };
                let verb = if new.is_some() { "UPDATE" } else { "DELETE" };
                match action {
                    ReferentialAction::NoAction => {
                        return Err(SqlError::new(
                            547,
                            16,
                            0,
                            format!(
                                "The {verb} statement conflicted with the REFERENCE constraint \"{}\". The conflict occurred in database \"{}\", table \"{}\", column '{}'.",
                                fk.name,
                                db,
                                qualified(&child),
                                child.columns[fk.columns[0]].name
                            ),
                        ));
                    }
                    ReferentialAction::Cascade if new.is_none() => {
                        for (k, r) in hits {
                            self.lock(child.object_id, 0, &k)?;
                            if let Some(cur) = self.current_row(&child, &k, true)? {
                                let _ = r;
                                self.write_delete(&child, &k, cur, depth + 1)?;
                            }
                        }
                    }
                    _ => {
                        let exprs = if action == ReferentialAction::SetDefault {
                            Some(self.table_exprs(&child)?)
                        } else {
                            None
                        };
                        for (k, _) in hits {
                            self.lock(child.object_id, 0, &k)?;
                            let Some(cur) = self.current_row(&child, &k, true)? else {
                                continue;
                            };
                            let mut nrow = cur.to_vec();
                            let mut assigned = vec![false; nrow.len()];
                            for (ci, pc) in fk.columns.iter().zip(fk.referenced_columns.iter()) {
                                assigned[*ci] = true;
                                nrow[*ci] = match action {
                                    ReferentialAction::Cascade => {
                                        new.map(|(n, _)| n[*pc].clone()).unwrap_or(Value::Null)
                                    }
                                    ReferentialAction::SetNull => Value::Null,
                                    _ => match exprs.as_ref().and_then(|e| e.defaults[*ci].clone())
                                    {
                                        Some(d) => {
                                            let env = self.top_env();
                                            value::convert(
                                                &eval(&d, &nrow, &env)?,
                                                &child.columns[*ci].ty,
                                                0,
                                            )?
                                        }
                                        None => Value::Null,
                                    },
                                };
                            }
                            self.write_update(
                                &child,
                                &k,
                                cur,
                                nrow,
                                Arc::from(assigned),
                                depth + 1,
                            )?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Fills a full row for INSERT from explicit values (by column position).
    fn build_insert_row(
        &mut self,
        def: &Arc<TableDef>,
        explicit: &[(usize, Value)],
    ) -> Result<Vec<Value>, SqlError> {
        let exprs = self.table_exprs(def)?;
        let n = def.columns.len();
        let mut row = vec![Value::Null; n];
        let mut given = vec![false; n];
        let identity_insert = self.opts.identity_insert == Some(def.object_id);
        for (i, v) in explicit {
            let c = &def.columns[*i];
            if c.computed.is_some() {
                return Err(err(271, format!("The column \"{}\" cannot be modified because it is either a computed column or is the result of a UNION operator.", c.name)));
            }
            if matches!(c.ty, SqlType::RowVersion) {
                return Err(err(273, "Cannot insert an explicit value into a timestamp column. Use INSERT with a column list to exclude the timestamp column, or insert a DEFAULT into the timestamp column."));
            }
            if c.identity.is_some() && !identity_insert {
                return Err(err(544, format!("Cannot insert explicit value for identity column in table '{}' when IDENTITY_INSERT is set to OFF.", def.name)));
            }
            let conv = value::convert(v, &c.ty, 0)?;
            column_fits(v, def, c).or_else(|e| if v.is_null_value() { Ok(()) } else { Err(e) })?;
            row[*i] = conv;
            given[*i] = true;
        }
        if identity_insert {
            if let Some(ic) = def.identity_column() {
                if !given[ic] {
                    return Err(err(545, format!("Explicit value must be specified for identity column in table '{}' either when IDENTITY_INSERT is set to ON or when a replication user is inserting into a NOT FOR REPLICATION identity column.", def.name)));
                }
            }
        }
        let env_needed = exprs.defaults.iter().any(|d| d.is_some());
        for (i, c) in def.columns.iter().enumerate() {
            if given[i] {
                if let (Some(spec), true) = (&c.identity, identity_insert) {
                    let v = value::to_num(&row[i])
                        .map(|n| value::num_to_f64(n) as i128)
                        .unwrap_or(0);
                    let mut last = def.runtime.identity_last.lock();
                    let bigger = match *last {
                        None => true,
                        Some(l) => (spec.increment > 0 && v > l) || (spec.increment < 0 && v < l),
                    };
                    if bigger {
                        *last = Some(v);
                    }
                }
                continue;
            }
            if let Some(spec) = &c.identity {
                let mut last = def.runtime.identity_last.lock();
                let next = match *last {
                    None => spec.seed,
                    Some(l) => l + spec.increment,
                };
                *last = Some(next);
                row[i] = value::convert(&Value::Decimal(next, 0), &c.ty, 0)?;
                let idv = Value::Decimal(next, 0);
                self.last_identity = Some(idv.clone());
                self.scope_identity = Some(idv);
            } else if matches!(c.ty, SqlType::RowVersion) {
                let v = ROWVERSION.fetch_add(1, AtomicOrdering::SeqCst);
                row[i] = Value::Binary(Arc::from(v.to_be_bytes().to_vec()));
            } else if env_needed {
                if let Some(d) = &exprs.defaults[i] {
                    let env = self.top_env();
                    let v = eval(d, &[], &env)?;
                    row[i] = value::convert(&v, &c.ty, 0)?;
                }
            }
        }
        self.fill_computed(def, &exprs, &mut row)?;
        Ok(row)
    }

    fn fill_computed(
        &self,
        def: &TableDef,
        exprs: &TableExprs,
        row: &mut [Value],
    ) -> Result<(), SqlError> {
        for (i, c) in def.computed_positions() {
            if let Some(e) = &exprs.computed[i] {
                let env = self.top_env();
                let v = eval(e, row, &env)?;
                row[i] = value::convert(&v, &c.ty, 0).unwrap_or(v);
            }
        }
        Ok(())
    }

    fn insert_target(&self, table: &ast::TableObject) -> Result<Arc<TableDef>, SqlError> {
        match table {
            ast::TableObject::TableName(n) => Ok(self.resolve_table(&object_name_parts(n))?.1),
            _ => Err(value::unsupported("INSERT into a table function")),
        }
    }

    pub(crate) fn exec_insert(&mut self, ins: &ast::Insert) -> Result<u64, SqlError> {
        if ins.output.is_some() || ins.returning.is_some() {
            return Err(value::unsupported("INSERT … OUTPUT"));
        }
        let def = self.insert_target(&ins.table)?;
        let names: Vec<String> = ins
            .columns
            .iter()
            .map(|c| object_name_parts(c).last().cloned().unwrap_or_default())
            .collect();
        let cols = self.insert_columns(&def, &names)?;
        // Source rows (materialised before writing: the source may read the target).
        let mut source_rows: Vec<Vec<Option<Value>>> = Vec::new();
        match &ins.source {
            None => source_rows.push(Vec::new()),
            Some(q) => match q.body.as_ref() {
                ast::SetExpr::Values(v) => {
                    for r in &v.rows {
                        values_count_matches(r.content.len(), cols.len())?;
                        let mut vals = Vec::with_capacity(cols.len());
                        for e in &r.content {
                            if let ast::Expr::Identifier(id) = e {
                                if id.value.eq_ignore_ascii_case("DEFAULT")
                                    && id.quote_style.is_none()
                                {
                                    vals.push(None);
                                    continue;
                                }
                            }
                            // Literals (the bulk of multi-row VALUES) skip binding.
                            if let ast::Expr::Value(v) = e {
                                if let (BExpr::Const(c), _, _) =
                                    super::eval::bind_literal(&v.value)?
                                {
                                    vals.push(Some(c));
                                    continue;
                                }
                            }
                            vals.push(Some(self.eval_expr(e)?.0));
                        }
                        source_rows.push(vals);
                    }
                }
                _ => {
                    let plan = {
                        let mut b = Binder::new(self, Scope::default());
                        query::plan_query(&mut b, q)?
                    };
                    if plan.columns.len() != cols.len() {
                        return Err(err(120, "The select list for the INSERT statement contains fewer items than the insert list. The number of SELECT values must match the number of INSERT columns."));
                    }
                    let env = Env {
                        core: self,
                        outer: vec![&[]],
                    };
                    query::execute_plan(&plan, &env, &mut |r| {
                        source_rows.push(r.iter().cloned().map(Some).collect());
                        Ok(true)
                    })?;
                }
            },
        }
        if ins.source.is_none() && !ins.columns.is_empty() {
            return Err(err(102, "Incorrect syntax near 'DEFAULT'."));
        }
        self.insert_source_rows(&def, &cols, source_rows.into_iter())
    }

    /// INSERT … VALUES with constants only (the parser's fast path): the same checks and
    /// writes as `exec_insert` without binding expressions.
    pub(crate) fn exec_insert_values(
        &mut self,
        ins: &super::parse::InsertValues,
    ) -> Result<u64, SqlError> {
        let def = self.resolve_table(&ins.table)?.1;
        let cols = self.insert_columns(&def, &ins.columns)?;
        for r in &ins.rows {
            values_count_matches(r.len(), cols.len())?;
        }
        self.insert_source_rows(&def, &cols, ins.rows.iter().cloned())
    }

    /// Positions of the INSERT's target columns: the named ones, or every insertable column.
    fn insert_columns(&self, def: &TableDef, names: &[String]) -> Result<Vec<usize>, SqlError> {
        if names.is_empty() {
            return Ok(def
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| {
                    c.computed.is_none()
                        && !matches!(c.ty, SqlType::RowVersion)
                        && (c.identity.is_none()
                            || self.opts.identity_insert == Some(def.object_id))
                })
                .map(|(i, _)| i)
                .collect());
        }
        names
            .iter()
            .map(|name| {
                def.column_index(name)
                    .ok_or_else(|| err(207, format!("Invalid column name '{name}'.")))
            })
            .collect()
    }

    /// Writes INSERT source rows (values of `cols`, None = DEFAULT); returns the row count.
    fn insert_source_rows(
        &mut self,
        def: &Arc<TableDef>,
        cols: &[usize],
        source_rows: impl Iterator<Item = Vec<Option<Value>>>,
    ) -> Result<u64, SqlError> {
        let mut n = 0;
        let mut explicit: Vec<(usize, Value)> = Vec::with_capacity(cols.len());
        for r in source_rows {
            explicit.clear();
            explicit.extend(cols.iter().zip(r).filter_map(|(c, v)| v.map(|v| (*c, v))));
            let row = self.build_insert_row(def, &explicit)?;
            self.write_insert(def, row, true)?;
            n += 1;
        }
        Ok(n)
    }

    /// Target rows of UPDATE/DELETE: the keys of the rows matching the WHERE clause.
    fn target_rows(
        &mut self,
        def: &Arc<TableDef>,
        alias: &str,
        selection: Option<&ast::Expr>,
    ) -> Result<Targets, SqlError> {
        let filter = match selection {
            Some(e) => {
                let mut b = Binder::new(
                    self,
                    Scope {
                        cols: table_scope_cols(def, alias),
                    },
                );
                Some(b.bind_cond(e)?)
            }
            None => None,
        };
        let range = match (&filter, def.storage_key.first()) {
            (Some(f), Some(k)) => query::key_range_of(f, *k),
            _ => query::KeyRange::default(),
        };
        let mut out = Vec::new();
        let env = Env {
            core: self,
            outer: vec![],
        };
        query::scan_range(&env, def, &range, &mut |k, r| {
            let ok = match &filter {
                Some(f) => eval_cond(f, r, &env)?,
                None => true,
            };
            if ok {
                out.push(k.clone());
            }
            Ok(true)
        })?;
        Ok((filter, out))
    }

    fn dml_target(&self, twj: &ast::TableWithJoins) -> Result<(Arc<TableDef>, String), SqlError> {
        if !twj.joins.is_empty() {
            return Err(value::unsupported("UPDATE/DELETE with joins"));
        }
        match &twj.relation {
            ast::TableFactor::Table { name, alias, .. } => {
                let parts = object_name_parts(name);
                let (_, def) = self.resolve_table(&parts)?;
                let alias = alias
                    .as_ref()
                    .map(|a| a.name.value.clone())
                    .unwrap_or_else(|| def.name.clone());
                Ok((def, alias))
            }
            _ => Err(value::unsupported("this UPDATE/DELETE target")),
        }
    }

    /// UPDATE … SET … FROM <joins> / DELETE t FROM <joins>: the target is the FROM item named
    /// (or aliased) like the statement's table; each target row is changed once (the first
    /// joined row wins, SQL Server leaves the choice undefined).
    fn joined_dml(
        &mut self,
        target: &[String],
        from: &[ast::TableWithJoins],
        sets: Option<&[ast::Assignment]>,
        selection: Option<&ast::Expr>,
    ) -> Result<u64, SqlError> {
        let want = target.last().cloned().unwrap_or_default().to_lowercase();
        let mut names = Vec::new();
        for twj in from {
            for rel in std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)) {
                names.push(match rel {
                    ast::TableFactor::Table { name, alias, .. } => (
                        alias.as_ref().map(|a| a.name.value.to_lowercase()),
                        object_name_parts(name)
                            .last()
                            .cloned()
                            .unwrap_or_default()
                            .to_lowercase(),
                    ),
                    _ => (None, String::new()),
                });
            }
        }
        let idx = names
            .iter()
            .position(|(a, _)| a.as_deref() == Some(want.as_str()))
            .or_else(|| names.iter().position(|(a, n)| a.is_none() && *n == want))
            .ok_or_else(|| {
                err(
                    4104,
                    format!(
                        "The multi-part identifier \"{}\" could not be bound.",
                        target.join(".")
                    ),
                )
            })?;
        let (items, width, set_exprs, filter) = {
            let mut b = Binder::new(self, Scope::default());
            let (items, width) = query::plan_from(&mut b, from)?;
            let mut set_exprs = Vec::new();
            let def = match &items[idx].source {
                query::Source::Table { def } => def.clone(),
                _ => return Err(value::unsupported("UPDATE/DELETE of a derived table")),
            };
            for a in sets.unwrap_or(&[]) {
                let ast::AssignmentTarget::ColumnName(n) = &a.target else {
                    return Err(value::unsupported("tuple assignment"));
                };
                let name = object_name_parts(n).last().cloned().unwrap_or_default();
                let i = def
                    .column_index(&name)
                    .ok_or_else(|| err(207, format!("Invalid column name '{name}'.")))?;
                if def.columns[i].identity.is_some() {
                    return Err(err(
                        8102,
                        format!("Cannot update identity column '{}'.", def.columns[i].name),
                    ));
                }
                set_exprs.push((i, b.bind(&a.value)?.0));
            }
            let filter = selection.map(|e| b.bind_cond(e)).transpose()?;
            (items, width, set_exprs, filter)
        };
        let (def, offset, w) = match &items[idx].source {
            query::Source::Table { def } => (def.clone(), items[idx].offset, items[idx].width),
            _ => return Err(value::unsupported("UPDATE/DELETE of a derived table")),
        };
        if def.is_heap() {
            return Err(value::unsupported(
                "UPDATE/DELETE with joins on a heap table",
            ));
        }
        let mut targets: std::collections::BTreeMap<Key, Vec<(usize, Value)>> = Default::default();
        {
            let env = Env {
                core: self,
                outer: vec![],
            };
            query::for_each_joined_row(items, width, &env, &mut |row| {
                if let Some(f) = &filter {
                    if !eval_cond(f, row, &env)? {
                        return Ok(true);
                    }
                }
                let key = Key::from_row(&row[offset..offset + w], &def.storage_key);
                if let std::collections::btree_map::Entry::Vacant(slot) = targets.entry(key) {
                    let vals = set_exprs
                        .iter()
                        .map(|(i, e)| eval(e, row, &env).map(|v| (*i, v)))
                        .collect::<Result<Vec<_>, _>>()?;
                    slot.insert(vals);
                }
                Ok(true)
            })?;
        }
        let exprs = self.table_exprs(&def)?;
        let mut assigned = vec![false; def.columns.len()];
        for (i, _) in &set_exprs {
            assigned[*i] = true;
        }
        let assigned: Arc<[bool]> = Arc::from(assigned);
        let mut n = 0;
        for (key, vals) in targets {
            self.lock(def.object_id, 0, &key)?;
            let Some(cur) = self.current_row(&def, &key, true)? else {
                continue;
            };
            if sets.is_none() {
                self.write_delete(&def, &key, cur, 0)?;
            } else {
                let mut new = cur.to_vec();
                for (i, v) in vals {
                    let c = &def.columns[i];
                    column_fits(&v, &def, c)?;
                    new[i] = value::convert(&v, &c.ty, 0)?;
                }
                self.fill_computed(&def, &exprs, &mut new)?;
                self.write_update(&def, &key, cur, new, assigned.clone(), 0)?;
            }
            n += 1;
        }
        Ok(n)
    }

    pub(crate) fn exec_update(&mut self, u: &ast::Update) -> Result<u64, SqlError> {
        if u.output.is_some() || u.returning.is_some() {
            return Err(value::unsupported("UPDATE … OUTPUT"));
        }
        if let Some(
            ast::UpdateTableFromKind::AfterSet(from) | ast::UpdateTableFromKind::BeforeSet(from),
        ) = &u.from
        {
            let target = match &u.table.relation {
                ast::TableFactor::Table { name, .. } => object_name_parts(name),
                _ => return Err(value::unsupported("this UPDATE target")),
            };
            return self.joined_dml(&target, from, Some(&u.assignments), u.selection.as_ref());
        }
        let (def, alias) = self.dml_target(&u.table)?;
        let scope = Scope {
            cols: table_scope_cols(&def, &alias),
        };
        let mut sets: Vec<(usize, BExpr)> = Vec::new();
        {
            let mut b = Binder::new(self, scope);
            for a in &u.assignments {
                let ast::AssignmentTarget::ColumnName(n) = &a.target else {
                    return Err(value::unsupported("tuple assignment"));
                };
                let name = object_name_parts(n).last().cloned().unwrap_or_default();
                let i = def
                    .column_index(&name)
                    .ok_or_else(|| err(207, format!("Invalid column name '{name}'.")))?;
                let c = &def.columns[i];
                if c.identity.is_some() {
                    return Err(err(
                        8102,
                        format!("Cannot update identity column '{}'.", c.name),
                    ));
                }
                if c.computed.is_some() {
                    return Err(err(271, format!("The column \"{}\" cannot be modified because it is either a computed column or is the result of a UNION operator.", c.name)));
                }
                let x = if let ast::Expr::Identifier(id) = &a.value {
                    if id.value.eq_ignore_ascii_case("DEFAULT") && id.quote_style.is_none() {
                        None
                    } else {
                        Some(b.bind(&a.value)?.0)
                    }
                } else {
                    Some(b.bind(&a.value)?.0)
                };
                sets.push((i, x.unwrap_or(BExpr::Const(Value::Null))));
            }
        }
        let mut assigned = vec![false; def.columns.len()];
        for (i, _) in &sets {
            assigned[*i] = true;
        }
        let assigned: Arc<[bool]> = Arc::from(assigned);
        let (filter, targets) = self.target_rows(&def, &alias, u.selection.as_ref())?;
        let exprs = self.table_exprs(&def)?;
        let mut n = 0;
        for key in targets {
            self.lock(def.object_id, 0, &key)?;
            let Some(cur) = self.current_row(&def, &key, true)? else {
                continue;
            };
            if let Some(f) = &filter {
                let env = self.top_env();
                if !eval_cond(f, &cur, &env)? {
                    continue;
                }
            }
            let mut new = cur.to_vec();
            {
                let env = Env {
                    core: self,
                    outer: vec![],
                };
                for (i, e) in &sets {
                    let v = eval(e, &cur, &env)?;
                    let c = &def.columns[*i];
                    column_fits(&v, &def, c)?;
                    new[*i] = value::convert(&v, &c.ty, 0)?;
                }
            }
            self.fill_computed(&def, &exprs, &mut new)?;
            if let Some(rv) = def
                .columns
                .iter()
                .position(|c| matches!(c.ty, SqlType::RowVersion))
            {
                new[rv] = Value::Binary(Arc::from(
                    ROWVERSION
                        .fetch_add(1, AtomicOrdering::SeqCst)
                        .to_be_bytes()
                        .to_vec(),
                ));
            }
            self.write_update(&def, &key, cur, new, assigned.clone(), 0)?;
            n += 1;
        }
        Ok(n)
    }

    pub(crate) fn exec_delete(&mut self, d: &ast::Delete) -> Result<u64, SqlError> {
        if d.output.is_some() || d.returning.is_some() || d.using.is_some() {
            return Err(value::unsupported("DELETE … OUTPUT / USING"));
        }
        let from = match &d.from {
            ast::FromTable::WithFromKeyword(f) | ast::FromTable::WithoutKeyword(f) => f,
        };
        if !d.tables.is_empty() || from.len() != 1 || !from[0].joins.is_empty() {
            let target = match (d.tables.first(), &from[0].relation) {
                (Some(t), _) => object_name_parts(t),
                (None, ast::TableFactor::Table { name, .. }) => object_name_parts(name),
                _ => return Err(value::unsupported("this DELETE target")),
            };
            return self.joined_dml(&target, from, None, d.selection.as_ref());
        }
        let (def, alias) = self.dml_target(&from[0])?;
        let (filter, targets) = self.target_rows(&def, &alias, d.selection.as_ref())?;
        let mut n = 0;
        for key in targets {
            self.lock(def.object_id, 0, &key)?;
            let Some(cur) = self.current_row(&def, &key, true)? else {
                continue;
            };
            if let Some(f) = &filter {
                let env = self.top_env();
                if !eval_cond(f, &cur, &env)? {
                    continue;
                }
            }
            self.write_delete(&def, &key, cur, 0)?;
            n += 1;
        }
        Ok(n)
    }

    /// TRUNCATE TABLE: all rows go (no row changes recorded, as SQL Server logs page
    /// deallocations; CDC-tracked tables refuse TRUNCATE with 4711).
    pub(crate) fn truncate(&mut self, def: &Arc<TableDef>) -> Result<(), SqlError> {
        if def.is_tracked_by_cdc {
            return Err(err(4711, format!("Cannot truncate table '{}' because it is published for replication or enabled for Change Data Capture.", qualified(def))));
        }
        let db = self.database_of(def);
        let referenced = self
            .engine
            .inner
            .catalog
            .read()
            .get(&db.to_lowercase())
            .is_some_and(|d| {
                d.tables.values().any(|t| {
                    t.foreign_keys
                        .iter()
                        .any(|f| f.referenced_object_id == def.object_id)
                })
            });
        if referenced {
            return Err(err(4712, format!("Cannot truncate table '{}' because it is being referenced by a FOREIGN KEY constraint.", qualified(def))));
        }
        self.lock(def.object_id, -1, &Key::new(vec![]))?;
        let w = self.writes(def)?;
        let before = std::mem::take(w);
        w.truncated = true;
        self.txn.as_mut().expect("txn").undo.push(Undo::Table {
            object_id: def.object_id,
            before,
        });
        *def.runtime.identity_last.lock() = None;
        Ok(())
    }

    /// Rows of a BulkLoad message (INSERT BULK).
    pub(crate) fn bulk_insert(
        &mut self,
        table: &[String],
        columns: &[ResultColumn],
        rows: Vec<Vec<Value>>,
    ) -> Result<u64, SqlError> {
        let (_, def) = self.resolve_table(table)?;
        let positions: Vec<usize> = columns
            .iter()
            .map(|c| {
                def.column_index(&c.name)
                    .ok_or_else(|| err(207, format!("Invalid column name '{}'.", c.name)))
            })
            .collect::<Result<_, _>>()?;
        let had_txn = self.txn.is_some();
        let mut n = 0;
        let saved = self.opts.identity_insert;
        if positions.iter().any(|p| def.columns[*p].identity.is_some()) {
            self.opts.identity_insert = Some(def.object_id);
        }
        let r = (|| -> Result<(), SqlError> {
            for r in rows {
                let explicit: Vec<(usize, Value)> = positions.iter().copied().zip(r).collect();
                let row = self.build_insert_row(&def, &explicit)?;
                self.write_insert(&def, row, true)?;
                n += 1;
            }
            Ok(())
        })();
        self.opts.identity_insert = saved;
        match r {
            Ok(()) => {
                if !had_txn {
                    self.commit()?;
                }
                Ok(n)
            }
            Err(e) => {
                if !had_txn {
                    self.rollback();
                }
                Err(e)
            }
        }
    }
}

/// The bound WHERE clause of an UPDATE/DELETE and the keys of the rows it matched when
/// scanned (each row is re-read and re-checked under its lock).
type Targets = (Option<BExpr>, Vec<Key>);

/// One overlay change of the current statement, for statement-level rollback.
pub enum Undo {
    Row {
        object_id: i32,
        key: Key,
        prev: Option<Option<Row>>,
    },
    Unique {
        object_id: i32,
        index_id: i32,
        key: Key,
        prev: Option<Option<Key>>,
    },
    Table {
        object_id: i32,
        before: TableWrites,
    },
}

static ROWVERSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0x7D1);

/// Errors 109/110: a VALUES row with fewer or more values than INSERT columns.
fn values_count_matches(values: usize, columns: usize) -> Result<(), SqlError> {
    if values == columns {
        return Ok(());
    }
    // SQL Server's texts: 110 when the VALUES row is longer than the column list.
    Err(if values > columns {
        err(110, "There are fewer columns in the INSERT statement than values specified in the VALUES clause. The number of values in the VALUES clause must match the number of columns specified in the INSERT statement.")
    } else {
        err(109, "There are more columns in the INSERT statement than values specified in the VALUES clause. The number of values in the VALUES clause must match the number of columns specified in the INSERT statement.")
    })
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Null, _) | (_, Value::Null) => false,
        // Binary-exact comparison for strings (a case change is a change).
        (Value::String(x), Value::String(y)) => x == y,
        _ => a == b,
    }
}

impl TableDef {
    pub fn computed_positions(&self) -> impl Iterator<Item = (usize, &super::catalog::ColumnDef)> {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.computed.is_some())
    }
}
