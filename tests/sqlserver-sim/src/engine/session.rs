//! Sessions: batch execution, variables, SET options, transactions, procedures.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;

use chrono::NaiveDateTime;
use sqlparser::ast;

use super::catalog::TableDef;
use super::eval::{eval, eval_cond, Binder, Env, Scope};
use super::hooks::{
    CommittedTransaction, ProcArg, ProcArgs, RowChange, StreamedTable, TableFunction, TableResult,
};
use super::parse::{self, ExecArg, Parsed, Stmt};
use super::query::{self, Relation};
use super::store::{apply_writes, LockKey, Snapshot, TableWrites};
use super::value::{self, err};
use super::{Engine, ProcContext, QueryResult};
use crate::api::{
    Cancelled, EnvChange, ResultColumn, ResultSink, RpcParam, RpcProc, Session, SqlError,
    StatementKind, TransactionRequest,
};
use crate::types::{SqlType, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    ReadUncommitted,
    ReadCommitted,
    RepeatableRead,
    Serializable,
    Snapshot,
}

#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub nocount: bool,
    pub xact_abort: bool,
    pub lock_timeout: i64,
    pub isolation: Isolation,
    pub identity_insert: Option<i32>,
    pub implicit_transactions: bool,
}

/// An open transaction.
pub struct Txn {
    pub id: u64,
    /// Started with BEGIN TRAN (or a TM request); false for a statement's own transaction.
    pub explicit: bool,
    /// SNAPSHOT isolation: the data as of the first statement.
    pub snapshot: Option<Snapshot>,
    pub writes: HashMap<i32, TableWrites>,
    /// object_id → database_id of written tables.
    pub table_db: HashMap<i32, i32>,
    pub changes: BTreeMap<i32, Vec<RowChange>>,
    pub locks: Vec<LockKey>,
    pub begin_time: NaiveDateTime,
    pub command_id: u32,
    pub descriptor: u64,
    pub first_lsn: BTreeMap<i32, super::lsn::Lsn>,
    /// The statement (`SessionCore::stmt_seq`) that last wrote: command ids count statements
    /// that changed rows.
    pub last_stmt_seq: u64,
    /// Overlay changes of the current statement (statement-level rollback).
    pub undo: Vec<super::dml::Undo>,
    /// Undo-log length when the current statement began.
    pub stmt_undo_mark: usize,
    /// SAVE TRANSACTION points: name, undo-log length, change-list lengths.
    pub savepoints: Vec<(String, usize, BTreeMap<i32, usize>)>,
    /// Length of each database's change list when the current statement began.
    pub changes_mark: BTreeMap<i32, usize>,
}

/// Session state shared by statement execution (see `EngineSession` for the API).
pub struct SessionCore {
    pub engine: Engine,
    pub login: String,
    pub sysadmin: bool,
    pub database: String,
    pub spid: i32,
    pub app_name: String,
    /// Variable frames (batch, procedure, sp_executesql): lower-cased name → (type, value).
    pub frames: Vec<HashMap<String, (SqlType, Value)>>,
    pub opts: SessionOptions,
    pub txn: Option<Txn>,
    pub tran_count: u32,
    pub rowcount: u64,
    pub last_identity: Option<Value>,
    pub scope_identity: Option<Value>,
    pub last_error: i32,
    pub caught_error: Option<SqlError>,
    pub event_data: Option<String>,
    pub proc_depth: u32,
    /// Snapshot of the current statement (READ COMMITTED).
    pub stmt_snapshot: Option<Snapshot>,
    /// INSERT BULK target accepted by the last batch.
    pub pending_bulk: Option<(String, parse::ObjName)>,
    /// Current statement text (for DDL events).
    pub stmt_text: String,
    /// Increments per executed statement.
    pub stmt_seq: u64,
    /// The current SELECT has a NOLOCK / READUNCOMMITTED hint.
    pub nolock: bool,
}

/// Control flow out of a statement.
pub enum Flow {
    Normal,
    Break,
    Continue,
    Return(Option<i32>),
}

/// A statement error and whether it ends the batch.
struct ExecError {
    error: SqlError,
    abort_batch: bool,
}

impl From<SqlError> for ExecError {
    fn from(error: SqlError) -> Self {
        let abort_batch = !statement_level(error.number);
        ExecError { error, abort_batch }
    }
}

/// Errors that terminate only the statement (the batch goes on), as in SQL Server.
fn statement_level(number: i32) -> bool {
    matches!(
        number,
        2627 | 2601
            | 547
            | 515
            | 8152
            | 2628
            | 1222
            | 50000
            | 544
            | 8134
            | 8115
            | 512
            | 3902
            | 3903
            | 8101
            | 273
            | 110
            | 109
            | 213
            | 3701
            | 2714
            | 1913
            | 4902
            | 4924
            | 5074
            | 4922
            | 3728
            | 15248
            | 15225
            | 2705
            | 1750
            | 1779
            | 156
            | 262
            | 2812
            | 201
            | 8144
            | 8145
            | 22962
            | 22901
            | 22902
            | 22903
            | 22904
    ) || number > 50000
}

impl SessionCore {
    pub fn var(&self, name: &str) -> Option<&(SqlType, Value)> {
        self.frames.last().and_then(|f| f.get(name))
    }

    pub fn trancount(&self) -> u32 {
        self.tran_count
    }

    pub fn database_id(&self) -> i32 {
        self.engine.database_id(&self.database).unwrap_or(1)
    }

    /// The committed data this statement reads.
    pub fn read_snapshot(&self) -> Snapshot {
        if let Some(s) = self.txn.as_ref().and_then(|t| t.snapshot.as_ref()) {
            return s.clone();
        }
        match &self.stmt_snapshot {
            Some(s) => s.clone(),
            None => self.engine.inner.store.snapshot(),
        }
    }

    /// Whether reads wait for other transactions' row locks: locking READ COMMITTED (and the
    /// stricter levels) in a database with READ_COMMITTED_SNAPSHOT OFF, unless NOLOCK.
    pub fn reads_wait_for_writers(&self, database_id: i32) -> bool {
        // REPEATABLE READ and SERIALIZABLE always lock (READ_COMMITTED_SNAPSHOT does not
        // apply to them).
        if !self.nolock
            && matches!(
                self.opts.isolation,
                Isolation::RepeatableRead | Isolation::Serializable
            )
        {
            return true;
        }
        if !self.engine.inner.config.locking_read_committed
            || self.nolock
            || !matches!(
                self.opts.isolation,
                Isolation::ReadCommitted | Isolation::RepeatableRead | Isolation::Serializable
            )
        {
            return false;
        }
        !self
            .engine
            .inner
            .catalog
            .read()
            .values()
            .any(|d| d.database_id == database_id && d.read_committed_snapshot)
    }

    pub fn overlay(&self, object_id: i32) -> Option<&TableWrites> {
        self.txn.as_ref().and_then(|t| t.writes.get(&object_id))
    }

    /// Resolves a (1–3 part) table name to (database name, definition).
    pub fn resolve_table(&self, parts: &[String]) -> Result<(String, Arc<TableDef>), SqlError> {
        let (db, schema, name) = parse::split_name(parts);
        let db = db.unwrap_or_else(|| self.database.clone());
        let schema = schema.unwrap_or_else(|| "dbo".into());
        let cat = self.engine.inner.catalog.read();
        let d = cat
            .get(&db.to_lowercase())
            .ok_or_else(|| err(208, format!("Invalid object name '{}'.", parts.join("."))))?;
        let t = d
            .table(&schema, &name)
            .ok_or_else(|| err(208, format!("Invalid object name '{}'.", parts.join("."))))?;
        Ok((d.name.clone(), t.clone()))
    }

    /// Resolves a name given as text ('dbo.t', '[dbo].[t]', 'db.dbo.t').
    pub fn resolve_table_text(&self, text: &str) -> Result<Arc<TableDef>, SqlError> {
        let parts = split_name_text(text);
        self.resolve_table(&parts).map(|r| r.1)
    }

    pub fn object_id_of(&self, text: &str, kind: Option<&str>) -> Option<i32> {
        let parts = split_name_text(text);
        let (db, schema, name) = parse::split_name(&parts);
        let db = db.unwrap_or_else(|| self.database.clone());
        let schema = schema.unwrap_or_else(|| "dbo".into());
        let cat = self.engine.inner.catalog.read();
        let d = cat.get(&db.to_lowercase())?;
        let key = super::catalog::object_key(&schema, &name);
        let want = |k: &str| kind.is_none_or(|x| x == k);
        if want("U") {
            if let Some(t) = d.tables.get(&key) {
                return Some(t.object_id);
            }
        }
        if want("SO") {
            if let Some(s) = d.sequences.get(&key) {
                return Some(s.object_id);
            }
        }
        if want("P") {
            if let Some(p) = d.procedures.get(&key) {
                return Some(p.object_id);
            }
        }
        if want("V") {
            if let Some(v) = d.views.get(&key) {
                return Some(v.object_id);
            }
        }
        if want("TR") {
            if let Some(t) = d
                .ddl_triggers
                .iter()
                .find(|t| t.name.eq_ignore_ascii_case(&name))
            {
                return Some(t.object_id);
            }
        }
        // Constraints and defaults by name.
        for t in d.tables.values() {
            if t.schema.eq_ignore_ascii_case(&schema) {
                for i in &t.indexes {
                    if (i.is_primary_key || i.is_unique_constraint)
                        && i.name.eq_ignore_ascii_case(&name)
                        && (want("PK") || want("UQ"))
                    {
                        return i.constraint_object_id;
                    }
                }
                for f in &t.foreign_keys {
                    if f.name.eq_ignore_ascii_case(&name) && want("F") {
                        return Some(f.object_id);
                    }
                }
                for c in &t.checks {
                    if c.name.eq_ignore_ascii_case(&name) && want("C") {
                        return Some(c.object_id);
                    }
                }
                for c in &t.columns {
                    if let Some(df) = &c.default {
                        if df.name.eq_ignore_ascii_case(&name) && want("D") {
                            return Some(df.object_id);
                        }
                    }
                }
            }
        }
        None
    }

    /// (schema, name) of an object id in a database.
    pub fn object_by_id(&self, database: &str, id: i32) -> Option<(String, String)> {
        let cat = self.engine.inner.catalog.read();
        let d = cat.get(&database.to_lowercase())?;
        let sname = |sid: i32| {
            d.schema_by_id(sid)
                .map(|s| s.name.clone())
                .unwrap_or_else(|| "dbo".into())
        };
        for t in d.tables.values() {
            if t.object_id == id {
                return Some((t.schema.clone(), t.name.clone()));
            }
            for i in &t.indexes {
                if i.constraint_object_id == Some(id) {
                    return Some((t.schema.clone(), i.name.clone()));
                }
            }
            for f in &t.foreign_keys {
                if f.object_id == id {
                    return Some((t.schema.clone(), f.name.clone()));
                }
            }
            for c in &t.checks {
                if c.object_id == id {
                    return Some((t.schema.clone(), c.name.clone()));
                }
            }
            for c in &t.columns {
                if let Some(df) = &c.default {
                    if df.object_id == id {
                        return Some((t.schema.clone(), df.name.clone()));
                    }
                }
            }
        }
        for s in d.sequences.values() {
            if s.object_id == id {
                return Some((sname(s.schema_id), s.name.clone()));
            }
        }
        for p in d.procedures.values() {
            if p.object_id == id {
                return Some((sname(p.schema_id), p.name.clone()));
            }
        }
        for t in &d.ddl_triggers {
            if t.object_id == id {
                return Some((String::new(), t.name.clone()));
            }
        }
        None
    }

    /// A table or catalog view for FROM.
    pub fn resolve_relation(&self, parts: &[String]) -> Result<Relation, SqlError> {
        let (db, schema, name) = parse::split_name(parts);
        let schema_l = schema.clone().unwrap_or_default().to_lowercase();
        if schema_l == "sys"
            || schema_l == "information_schema"
            || (schema.is_none()
                && name.to_lowercase().starts_with("sys")
                && self.resolve_table(parts).is_err())
        {
            let db = db.unwrap_or_else(|| self.database.clone());
            if let Some(v) = super::sysviews::view(
                self,
                &db,
                if schema.is_none() { "sys" } else { &schema_l },
                &name.to_lowercase(),
            )? {
                return Ok(Relation::View {
                    columns: v.columns,
                    rows: v.rows,
                });
            }
        }
        match self.resolve_table(parts) {
            Ok((_, def)) => Ok(Relation::Table(def)),
            Err(e) => {
                if schema_l == "sys" || schema_l == "information_schema" {
                    return Err(err(
                        208,
                        format!("Invalid object name '{}'.", parts.join(".")),
                    ));
                }
                Err(e)
            }
        }
    }

    pub fn call_table_function(
        &mut self,
        parts: &[String],
        args: &[Value],
    ) -> Result<TableResult, SqlError> {
        let (db, schema, name) = parse::split_name(parts);
        let db = db.unwrap_or_else(|| self.database.clone());
        let schema = schema.unwrap_or_else(|| "dbo".into());
        if schema.eq_ignore_ascii_case("sys") && name.eq_ignore_ascii_case("dm_db_log_stats") {
            return self.dm_db_log_stats(args);
        }
        let Some(f) = self.resolve_table_function(&db, &schema, &name) else {
            return Err(err(
                208,
                format!("Invalid object name '{}'.", parts.join(".")),
            ));
        };
        let saved = std::mem::replace(&mut self.database, db);
        let mut ctx = ProcContext { session: self };
        let out = f.call(&mut ctx, args);
        self.database = saved;
        out
    }

    /// The streamed form of a registered table-valued function, when it offers one
    /// ([`TableFunction::stream`]); `None` means: call [`Self::call_table_function`].
    pub fn stream_table_function(
        &mut self,
        parts: &[String],
        args: &[Value],
    ) -> Result<Option<StreamedTable>, SqlError> {
        let (db, schema, name) = parse::split_name(parts);
        let db = db.unwrap_or_else(|| self.database.clone());
        let schema = schema.unwrap_or_else(|| "dbo".into());
        let Some(f) = self.resolve_table_function(&db, &schema, &name) else {
            return Ok(None);
        };
        let saved = std::mem::replace(&mut self.database, db);
        let mut ctx = ProcContext { session: self };
        let out = f.stream(&mut ctx, args);
        self.database = saved;
        out
    }

    fn resolve_table_function(
        &self,
        db: &str,
        schema: &str,
        name: &str,
    ) -> Option<Arc<dyn TableFunction>> {
        let resolvers = self.engine.inner.registry.read().tvf_resolvers.clone();
        resolvers.iter().find_map(|r| r.resolve(db, schema, name))
    }

    /// sys.dm_db_log_stats(database_id): the log end LSN in its `vlf:block:slot` hex text form.
    fn dm_db_log_stats(&self, args: &[Value]) -> Result<TableResult, SqlError> {
        let id = match args.first() {
            Some(Value::Null) | None => self.database_id(),
            Some(v) => match value::convert(v, &SqlType::Int, 0)? {
                Value::Int(i) => i,
                _ => self.database_id(),
            },
        };
        let name = self
            .engine
            .inner
            .catalog
            .read()
            .values()
            .find(|d| d.database_id == id)
            .map(|d| d.name.clone());
        let mut rows = Vec::new();
        if let Some(lsn) = name.as_deref().and_then(|n| self.engine.current_lsn(n)) {
            let b = lsn.to_bytes();
            let text = format!(
                "{:08x}:{:08x}:{:04x}",
                u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                u16::from_be_bytes([b[8], b[9]])
            );
            rows.push(vec![
                Value::Int(id),
                Value::String(Arc::from(text.as_str())),
                Value::String(Arc::from(text.as_str())),
            ]);
        }
        Ok(TableResult {
            columns: vec![
                ResultColumn::expr("database_id", SqlType::Int, false),
                ResultColumn::expr("log_end_lsn", value::nvarchar(Some(24)), true),
                ResultColumn::expr(
                    "log_truncation_holdup_reason",
                    value::nvarchar(Some(24)),
                    true,
                ),
            ],
            rows,
        })
    }

    pub fn next_sequence_value(&self, name: &str) -> Result<Value, SqlError> {
        let parts = split_name_text(name);
        let (db, schema, n) = parse::split_name(&parts);
        let db = db.unwrap_or_else(|| self.database.clone());
        let schema = schema.unwrap_or_else(|| "dbo".into());
        let seq = self
            .engine
            .inner
            .catalog
            .read()
            .get(&db.to_lowercase())
            .and_then(|d| {
                d.sequences
                    .get(&super::catalog::object_key(&schema, &n))
                    .cloned()
            })
            .ok_or_else(|| err(208, format!("Invalid object name '{name}'.")))?;
        let mut cur = seq.current.lock();
        let next = match *cur {
            None => seq.start,
            Some(c) => {
                let n = c + seq.increment;
                if n > seq.maximum || n < seq.minimum {
                    if seq.cycle {
                        if seq.increment > 0 {
                            seq.minimum
                        } else {
                            seq.maximum
                        }
                    } else {
                        return Err(err(11728, format!("The sequence object '{}' has reached its minimum or maximum value. Restart the sequence object to allow new values to be generated.", seq.name)));
                    }
                } else {
                    n
                }
            }
        };
        *cur = Some(next);
        value::convert(&Value::Decimal(next, 0), &seq.ty, 0)
    }

    fn env(&self) -> Env<'_> {
        Env {
            core: self,
            outer: vec![],
        }
    }

    /// Evaluates a standalone expression (no row context).
    pub fn eval_expr(&mut self, e: &ast::Expr) -> Result<(Value, SqlType), SqlError> {
        let (x, ty, _) = {
            let mut b = Binder::new(self, Scope::default());
            b.bind(e)?
        };
        let env = Env {
            core: self,
            outer: vec![&[]],
        };
        Ok((eval(&x, &[], &env)?, ty))
    }

    // ---------------------------------------------------------------------------------
    // Transactions
    // ---------------------------------------------------------------------------------

    /// The open transaction, starting a statement-level one if none is open.
    pub fn ensure_txn(&mut self) -> Result<&mut Txn, SqlError> {
        if self.txn.is_none() {
            self.start_txn(false)?;
        }
        Ok(self.txn.as_mut().expect("started"))
    }

    fn start_txn(&mut self, explicit: bool) -> Result<(), SqlError> {
        let id = self
            .engine
            .inner
            .next_txn_id
            .fetch_add(1, AtomicOrdering::SeqCst);
        let snapshot = if self.opts.isolation == Isolation::Snapshot {
            let db = self.engine.database(&self.database);
            if !db.as_ref().is_some_and(|d| d.allow_snapshot_isolation) {
                return Err(err(
                    3952,
                    format!("Snapshot isolation transaction failed accessing database '{}' because snapshot isolation is not allowed in this database. Use ALTER DATABASE to allow snapshot isolation.", self.database),
                ));
            }
            Some(self.engine.inner.store.snapshot())
        } else {
            None
        };
        self.txn = Some(Txn {
            id,
            explicit,
            snapshot,
            writes: HashMap::new(),
            table_db: HashMap::new(),
            changes: BTreeMap::new(),
            locks: Vec::new(),
            begin_time: self.engine.clock().now_local(),
            command_id: 0,
            descriptor: id,
            first_lsn: BTreeMap::new(),
            last_stmt_seq: 0,
            undo: Vec::new(),
            stmt_undo_mark: 0,
            savepoints: Vec::new(),
            changes_mark: BTreeMap::new(),
        });
        Ok(())
    }

    pub fn commit(&mut self) -> Result<(), SqlError> {
        let Some(txn) = self.txn.take() else {
            return Ok(());
        };
        self.tran_count = 0;
        let inner = &self.engine.inner;
        if txn.writes.is_empty() {
            inner.store.locks.release_all(txn.id, &txn.locks);
            return Ok(());
        }
        {
            let _guard = inner.store.commit_lock.lock();
            inner.store.install(|snap, seq| {
                for (obj, w) in &txn.writes {
                    if let Some(td) = snap.tables.get_mut(obj) {
                        apply_writes(td, w, seq);
                    }
                }
            });
            let observer = inner.commit_observer.read().clone();
            let end_time = self.engine.clock().now_local();
            let dbs: BTreeSet<i32> = txn.table_db.values().copied().collect();
            let mut changes = txn.changes;
            for db_id in dbs {
                let Some(rt) = self.engine.runtime(db_id) else {
                    continue;
                };
                let commit_lsn = rt.lsn.allocate();
                let list = changes.remove(&db_id).unwrap_or_default();
                if list.is_empty() || !rt.record_changes.load(AtomicOrdering::SeqCst) {
                    continue;
                }
                if let Some(obs) = &observer {
                    let tran = inner.next_tran_id.fetch_add(1, AtomicOrdering::SeqCst);
                    let mut tran_id = [0u8; 10];
                    tran_id[2..10].copy_from_slice(&tran.to_be_bytes());
                    let database = inner
                        .catalog
                        .read()
                        .values()
                        .find(|d| d.database_id == db_id)
                        .map(|d| d.name.clone())
                        .unwrap_or_default();
                    obs.committed(CommittedTransaction {
                        database_id: db_id,
                        database,
                        commit_lsn,
                        begin_lsn: txn.first_lsn.get(&db_id).copied().unwrap_or(commit_lsn),
                        tran_id,
                        begin_time: txn.begin_time,
                        end_time,
                        changes: list,
                    });
                }
            }
        }
        inner.store.locks.release_all(txn.id, &txn.locks);
        Ok(())
    }

    pub fn rollback(&mut self) {
        if let Some(txn) = self.txn.take() {
            self.engine
                .inner
                .store
                .locks
                .release_all(txn.id, &txn.locks);
        }
        self.tran_count = 0;
    }

    /// Runs SQL inside this session (procedures, triggers) and collects results.
    pub fn run_nested(
        &mut self,
        sql: &str,
        params: &[(&str, Value)],
    ) -> Result<Vec<QueryResult>, SqlError> {
        let stmts = parse::parse_batch(sql)?;
        let mut frame = HashMap::new();
        for (n, v) in params {
            let key = if n.starts_with('@') {
                n.to_lowercase()
            } else {
                format!("@{}", n.to_lowercase())
            };
            frame.insert(key, (value::natural_type(v), v.clone()));
        }
        self.frames.push(frame);
        self.proc_depth += 1;
        let mut sink = CollectingSink::default();
        let mut result = Ok(());
        for s in &stmts {
            match self.exec(s, &mut sink) {
                Ok(Flow::Return(_)) => break,
                Ok(_) => {}
                Err(e) => {
                    result = Err(e.error);
                    break;
                }
            }
        }
        self.proc_depth -= 1;
        self.frames.pop();
        result.map(|_| sink.results)
    }

    // ---------------------------------------------------------------------------------
    // Statement execution
    // ---------------------------------------------------------------------------------

    fn done(
        &self,
        sink: &mut dyn ResultSink,
        kind: StatementKind,
        count: Option<u64>,
    ) -> Result<(), SqlError> {
        let count = if self.opts.nocount && kind != StatementKind::Select {
            None
        } else {
            count
        };
        sink.done(kind, count, self.proc_depth > 0)
            .map_err(cancelled)
    }

    fn exec_block(
        &mut self,
        stmts: &[Parsed],
        sink: &mut dyn ResultSink,
    ) -> Result<Flow, ExecError> {
        for s in stmts {
            match self.exec(s, sink)? {
                Flow::Normal => {}
                other => return Ok(other),
            }
        }
        Ok(Flow::Normal)
    }

    /// Executes one statement. Statement-level transactions commit here.
    fn exec(&mut self, p: &Parsed, sink: &mut dyn ResultSink) -> Result<Flow, ExecError> {
        self.stmt_snapshot = Some(self.engine.inner.store.snapshot());
        self.stmt_text = p.text.clone();
        self.stmt_seq += 1;
        let had_txn = self.txn.is_some();
        let is_block = matches!(
            p.stmt,
            Stmt::Block(_) | Stmt::If { .. } | Stmt::While { .. } | Stmt::TryCatch(..)
        );
        if !is_block {
            if let Some(t) = self.txn.as_mut() {
                // Without savepoints only the current statement can be undone.
                if t.savepoints.is_empty() {
                    t.undo.clear();
                }
                t.stmt_undo_mark = t.undo.len();
                t.changes_mark = t.changes.iter().map(|(k, v)| (*k, v.len())).collect();
            }
        }
        let r = self.exec_inner(p, sink);
        match &r {
            Ok(_) => {
                if !had_txn
                    && self.txn.as_ref().is_some_and(|t| !t.explicit)
                    && !self.opts.implicit_transactions
                {
                    self.commit()?;
                }
            }
            Err(e) => {
                self.last_error = e.error.number;
                let txn_open = self.txn.is_some();
                if txn_open {
                    let explicit = self.txn.as_ref().is_some_and(|t| t.explicit);
                    if !explicit
                        || !had_txn
                        || self.opts.xact_abort
                        || matches!(e.error.number, 1205 | 3960 | 3952)
                    {
                        self.rollback();
                    } else if !is_block {
                        // Statement-level rollback: the transaction stays open without this
                        // statement's writes.
                        self.undo_statement();
                    }
                }
            }
        }
        if let Err(e) = r {
            let abort = e.abort_batch || self.opts.xact_abort;
            return Err(ExecError {
                error: e.error,
                abort_batch: abort,
            });
        }
        r
    }

    fn exec_inner(&mut self, p: &Parsed, sink: &mut dyn ResultSink) -> Result<Flow, ExecError> {
        match &p.stmt {
            Stmt::Std(s) => {
                self.exec_std(s, sink)?;
                Ok(Flow::Normal)
            }
            Stmt::InsertValues(ins) => {
                let n = self.exec_insert_values(ins)?;
                self.rowcount = n;
                self.done(sink, StatementKind::Insert, Some(n))?;
                Ok(Flow::Normal)
            }
            Stmt::Block(list) => self.exec_block(list, sink),
            Stmt::TryCatch(t, c) => match self.exec_block(t, sink) {
                Ok(f) => Ok(f),
                Err(e) => {
                    let saved = self.caught_error.replace(e.error);
                    let r = self.exec_block(c, sink);
                    self.caught_error = saved;
                    r
                }
            },
            Stmt::If { cond, then, els } => {
                let c = self.eval_condition(cond)?;
                if c {
                    self.exec(then, sink)
                } else if let Some(e) = els {
                    self.exec(e, sink)
                } else {
                    Ok(Flow::Normal)
                }
            }
            Stmt::While { cond, body } => {
                let mut guard = 0u64;
                while self.eval_condition(cond)? {
                    guard += 1;
                    if guard > 10_000_000 {
                        return Err(err(50999, "The SQL Server stand-in stopped a WHILE loop after 10 million iterations.").into());
                    }
                    match self.exec(body, sink)? {
                        Flow::Break => break,
                        Flow::Return(r) => return Ok(Flow::Return(r)),
                        _ => {}
                    }
                }
                Ok(Flow::Normal)
            }
            Stmt::Break => Ok(Flow::Break),
            Stmt::Continue => Ok(Flow::Continue),
            Stmt::Return(e) => {
                let v = match e {
                    Some(e) => match self.eval_expr(e)?.0 {
                        Value::Null => None,
                        v => match value::convert(&v, &SqlType::Int, 0)? {
                            Value::Int(i) => Some(i),
                            _ => None,
                        },
                    },
                    None => None,
                };
                Ok(Flow::Return(v))
            }
            Stmt::Declare(vars) => {
                for (name, ty_text, init) in vars {
                    let ty = self.resolve_type(ty_text)?;
                    let key = name.to_lowercase();
                    if self.frames.last().is_some_and(|f| f.contains_key(&key)) {
                        return Err(err(134, format!("The variable name '{name}' has already been declared. Variable names must be unique within a query batch or stored procedure.")).into());
                    }
                    let v = match init {
                        Some(e) => value::convert(&self.eval_expr(e)?.0, &ty, 0)?,
                        None => Value::Null,
                    };
                    self.frames.last_mut().expect("frame").insert(key, (ty, v));
                }
                Ok(Flow::Normal)
            }
            Stmt::SetVar { name, op, value: e } => {
                let key = name.to_lowercase();
                let (ty, cur) = self.var(&key).cloned().ok_or_else(|| {
                    err(137, format!("Must declare the scalar variable \"{name}\"."))
                })?;
                let (v, vt) = self.eval_expr(e)?;
                let v = match op {
                    None => v,
                    Some(o) => {
                        let rt = value::arithmetic_type(*o, &ty, &vt)?;
                        value::arithmetic(*o, &cur, &v, &rt)?
                    }
                };
                let v = value::convert(&v, &ty, 0)?;
                self.frames.last_mut().expect("frame").insert(key, (ty, v));
                Ok(Flow::Normal)
            }
            Stmt::SetOption { name, value: v } => {
                self.set_option(name, v)?;
                Ok(Flow::Normal)
            }
            Stmt::SetIsolation(level) => {
                self.opts.isolation = match level.as_str() {
                    "READ UNCOMMITTED" => Isolation::ReadUncommitted,
                    "READ COMMITTED" => Isolation::ReadCommitted,
                    "REPEATABLE READ" => Isolation::RepeatableRead,
                    "SERIALIZABLE" => Isolation::Serializable,
                    "SNAPSHOT" => Isolation::Snapshot,
                    other => {
                        return Err(err(102, format!("Incorrect syntax near '{other}'.")).into())
                    }
                };
                Ok(Flow::Normal)
            }
            Stmt::SetIdentityInsert { table, on } => {
                let (_, def) = self.resolve_table(table)?;
                if def.identity_column().is_none() {
                    return Err(err(8106, format!("Table '{}' does not have the identity property. Cannot perform SET operation.", table.join("."))).into());
                }
                self.opts.identity_insert = if *on { Some(def.object_id) } else { None };
                Ok(Flow::Normal)
            }
            Stmt::BeginTran => {
                self.begin_tran(sink)?;
                self.done(sink, StatementKind::Other, None)?;
                Ok(Flow::Normal)
            }
            Stmt::CommitTran => {
                self.commit_tran(sink)?;
                self.done(sink, StatementKind::Other, None)?;
                Ok(Flow::Normal)
            }
            Stmt::RollbackTran { savepoint } => {
                if let Some(name) = savepoint {
                    if self.rollback_to_savepoint(name) {
                        self.done(sink, StatementKind::Other, None)?;
                        return Ok(Flow::Normal);
                    }
                }
                self.rollback_tran(sink)?;
                self.done(sink, StatementKind::Other, None)?;
                Ok(Flow::Normal)
            }
            Stmt::SaveTran(name) => {
                if let Some(t) = self.txn.as_mut() {
                    let changes = t.changes.iter().map(|(k, v)| (*k, v.len())).collect();
                    t.savepoints.push((name.clone(), t.undo.len(), changes));
                }
                if self.txn.is_none() {
                    return Err(err(
                        628,
                        "Cannot issue SAVE TRANSACTION when there is no active transaction.",
                    )
                    .into());
                }
                Ok(Flow::Normal)
            }
            Stmt::Print(e) => {
                let v = self.eval_expr(e)?.0;
                sink.info(0, &value::to_display_string(&v))
                    .map_err(cancelled)?;
                Ok(Flow::Normal)
            }
            Stmt::RaisError {
                message,
                severity,
                state,
                args,
            } => {
                let msg_v = self.eval_expr(message)?.0;
                let sev = int_of(&self.eval_expr(severity)?.0);
                let st = int_of(&self.eval_expr(state)?.0);
                let mut vals = Vec::new();
                for a in args {
                    vals.push(self.eval_expr(a)?.0);
                }
                let (number, text) = match &msg_v {
                    Value::String(s) => (50000, format_message(s, &vals)),
                    other => (int_of(other) as i32, format!("Error {}", int_of(other))),
                };
                if sev <= 10 {
                    sink.info(number, &text).map_err(cancelled)?;
                    return Ok(Flow::Normal);
                }
                Err(ExecError {
                    error: SqlError::new(
                        number,
                        sev.clamp(0, 25) as u8,
                        st.clamp(0, 255) as u8,
                        text,
                    ),
                    abort_batch: false,
                })
            }
            Stmt::Throw(args) => {
                let e = match args {
                    None => self.caught_error.clone().ok_or_else(|| err(10704, "To rethrow an error, a THROW statement must be used inside a CATCH block."))?,
                    Some((n, m, s)) => {
                        let number = int_of(&self.eval_expr(n)?.0) as i32;
                        if number < 50000 {
                            return Err(err(35100, format!("Error number {number} in the THROW statement is outside the valid range. Specify an error number in the valid range of 50000 to 2147483647.")).into());
                        }
                        let msg = value::to_display_string(&self.eval_expr(m)?.0);
                        let st = int_of(&self.eval_expr(s)?.0);
                        SqlError::new(number, 16, st.clamp(0, 255) as u8, msg)
                    }
                };
                Err(ExecError {
                    error: e,
                    abort_batch: true,
                })
            }
            Stmt::Exec { ret, name, args } => {
                let status = self.exec_procedure(name, args, sink)?;
                if let Some(r) = ret {
                    let key = r.to_lowercase();
                    if let Some((ty, _)) = self.var(&key).cloned() {
                        self.frames
                            .last_mut()
                            .expect("frame")
                            .insert(key, (ty, Value::Int(status)));
                    }
                }
                Ok(Flow::Normal)
            }
            Stmt::ExecDynamic(e) => {
                let sql = value::to_display_string(&self.eval_expr(e)?.0);
                self.run_dynamic(&sql, HashMap::new(), sink)?;
                Ok(Flow::Normal)
            }
            Stmt::Use(db) => {
                let d = self.engine.database(db).ok_or_else(|| err(911, format!("Database '{db}' does not exist. Make sure that the name is entered correctly.")))?;
                let old = std::mem::replace(&mut self.database, d.name.clone());
                sink.env_change(&EnvChange::Database {
                    new: d.name.clone(),
                    old,
                })
                .map_err(cancelled)?;
                sink.info(5701, &format!("Changed database context to '{}'.", d.name))
                    .map_err(cancelled)?;
                Ok(Flow::Normal)
            }
            Stmt::WaitFor(e) => {
                let v = value::to_display_string(&self.eval_expr(e)?.0);
                let parts: Vec<u64> = v
                    .split([':', '.'])
                    .filter_map(|x| x.trim().parse().ok())
                    .collect();
                let ms = match parts.as_slice() {
                    [h, m, s, f] => ((h * 3600 + m * 60 + s) * 1000) + f,
                    [h, m, s] => (h * 3600 + m * 60 + s) * 1000,
                    [h, m] => (h * 3600 + m * 60) * 1000,
                    _ => 0,
                };
                std::thread::sleep(std::time::Duration::from_millis(ms.min(60_000)));
                Ok(Flow::Normal)
            }
            Stmt::NoOp => Ok(Flow::Normal),
            Stmt::InsertBulk { table, .. } => {
                let (db, _) = self.resolve_table(table)?;
                self.pending_bulk = Some((db, table.clone()));
                self.done(sink, StatementKind::Other, None)?;
                Ok(Flow::Normal)
            }
            _ => {
                self.exec_ddl(p, sink)?;
                self.done(sink, StatementKind::Other, None)?;
                Ok(Flow::Normal)
            }
        }
    }

    fn eval_condition(&mut self, e: &ast::Expr) -> Result<bool, SqlError> {
        let x = {
            let mut b = Binder::new(self, Scope::default());
            b.bind_cond(e)?
        };
        let env = Env {
            core: self,
            outer: vec![&[]],
        };
        eval_cond(&x, &[], &env)
    }

    pub fn resolve_type(&self, text: &str) -> Result<SqlType, SqlError> {
        match value::parse_type_name(text, 1) {
            Ok(t) => Ok(t),
            Err(e) => {
                // Alias types (CREATE TYPE).
                let parts = split_name_text(text);
                let (_, schema, name) = parse::split_name(&parts);
                let schema = schema.unwrap_or_else(|| "dbo".into());
                let db = self.engine.database(&self.database);
                db.and_then(|d| {
                    d.alias_types
                        .get(&super::catalog::object_key(&schema, &name))
                        .map(|a| a.base.clone())
                })
                .ok_or(e)
            }
        }
    }

    fn set_option(&mut self, name: &str, v: &str) -> Result<(), SqlError> {
        let on = v == "ON";
        match name {
            "NOCOUNT" => self.opts.nocount = on,
            "XACT_ABORT" => self.opts.xact_abort = on,
            "IMPLICIT_TRANSACTIONS" => self.opts.implicit_transactions = on,
            "LOCK_TIMEOUT" => {
                self.opts.lock_timeout = v
                    .parse()
                    .map_err(|_| err(102, format!("Incorrect syntax near '{v}'.")))?
            }
            "ANSI_NULLS"
            | "ANSI_PADDING"
            | "ANSI_WARNINGS"
            | "ARITHABORT"
            | "CONCAT_NULL_YIELDS_NULL"
            | "QUOTED_IDENTIFIER"
            | "ANSI_NULL_DFLT_ON"
            | "ANSI_NULL_DFLT_OFF"
            | "CURSOR_CLOSE_ON_COMMIT"
            | "NUMERIC_ROUNDABORT"
            | "TEXTSIZE"
            | "DATEFORMAT"
            | "DATEFIRST"
            | "LANGUAGE"
            | "DEADLOCK_PRIORITY"
            | "ROWCOUNT"
            | "STATISTICS"
            | "SHOWPLAN_ALL"
            | "FMTONLY"
            | "NOEXEC"
            | "PARSEONLY"
            | "ARITHIGNORE"
            | "QUERY_GOVERNOR_COST_LIMIT"
            | "CONTEXT_INFO"
            | "ANSI_DEFAULTS"
            | "FORCEPLAN" => {
                if name == "ROWCOUNT" && v != "0" {
                    return Err(value::unsupported("SET ROWCOUNT other than 0"));
                }
                if (name == "FMTONLY" || name == "NOEXEC" || name == "PARSEONLY") && on {
                    return Err(value::unsupported(format!("SET {name} ON")));
                }
            }
            other => {
                return Err(err(
                    195,
                    format!("'{other}' is not a recognized SET option."),
                ))
            }
        }
        Ok(())
    }

    fn begin_tran(&mut self, sink: &mut dyn ResultSink) -> Result<(), SqlError> {
        if self.txn.is_some() && self.txn.as_ref().is_some_and(|t| t.explicit) {
            self.tran_count += 1;
            return Ok(());
        }
        if self.txn.is_none() {
            self.start_txn(true)?;
        } else if let Some(t) = self.txn.as_mut() {
            t.explicit = true;
        }
        self.tran_count = 1;
        let d = self.txn.as_ref().map(|t| t.descriptor).unwrap_or(0);
        sink.env_change(&EnvChange::BeginTransaction { descriptor: d })
            .map_err(cancelled)
    }

    fn commit_tran(&mut self, sink: &mut dyn ResultSink) -> Result<(), SqlError> {
        if self.tran_count == 0 || self.txn.is_none() {
            return Err(err(
                3902,
                "The COMMIT TRANSACTION request has no corresponding BEGIN TRANSACTION.",
            ));
        }
        if self.tran_count > 1 {
            self.tran_count -= 1;
            return Ok(());
        }
        let d = self.txn.as_ref().map(|t| t.descriptor).unwrap_or(0);
        self.commit()?;
        sink.env_change(&EnvChange::CommitTransaction { descriptor: d })
            .map_err(cancelled)
    }

    fn rollback_tran(&mut self, sink: &mut dyn ResultSink) -> Result<(), SqlError> {
        if self.txn.is_none() {
            return Err(err(
                3903,
                "The ROLLBACK TRANSACTION request has no corresponding BEGIN TRANSACTION.",
            ));
        }
        let d = self.txn.as_ref().map(|t| t.descriptor).unwrap_or(0);
        self.rollback();
        sink.env_change(&EnvChange::RollbackTransaction { descriptor: d })
            .map_err(cancelled)
    }

    /// SELECT / INSERT / UPDATE / DELETE and the rest of sqlparser's statements.
    fn exec_std(&mut self, s: &ast::Statement, sink: &mut dyn ResultSink) -> Result<(), SqlError> {
        match s {
            ast::Statement::Query(q) => self.exec_select(q, sink),
            ast::Statement::Insert(ins) => {
                let n = self.exec_insert(ins)?;
                self.rowcount = n;
                self.done(sink, StatementKind::Insert, Some(n))
            }
            ast::Statement::Update(u) => {
                let n = self.exec_update(u)?;
                self.rowcount = n;
                self.done(sink, StatementKind::Update, Some(n))
            }
            ast::Statement::Delete(d) => {
                let n = self.exec_delete(d)?;
                self.rowcount = n;
                self.done(sink, StatementKind::Delete, Some(n))
            }
            ast::Statement::Drop {
                object_type,
                names,
                if_exists,
                ..
            } => {
                let kind = object_type.to_string().to_uppercase();
                let names = names.iter().map(parse::object_name_parts).collect();
                self.exec_ddl(
                    &Parsed {
                        stmt: Stmt::Drop {
                            kind,
                            names,
                            if_exists: *if_exists,
                        },
                        text: s.to_string(),
                        line: 0,
                    },
                    sink,
                )?;
                self.done(sink, StatementKind::Other, None)
            }
            ast::Statement::CreateSchema { schema_name, .. } => {
                let name = match schema_name {
                    ast::SchemaName::Simple(n) => parse::object_name_parts(n)
                        .last()
                        .cloned()
                        .unwrap_or_default(),
                    ast::SchemaName::UnnamedAuthorization(i) => i.value.clone(),
                    ast::SchemaName::NamedAuthorization(n, _) => parse::object_name_parts(n)
                        .last()
                        .cloned()
                        .unwrap_or_default(),
                };
                self.exec_ddl(
                    &Parsed {
                        stmt: Stmt::CreateSchema { name },
                        text: s.to_string(),
                        line: 0,
                    },
                    sink,
                )?;
                self.done(sink, StatementKind::Other, None)
            }
            ast::Statement::CreateDatabase { db_name, .. } => {
                let name = parse::object_name_parts(db_name)
                    .last()
                    .cloned()
                    .unwrap_or_default();
                self.exec_ddl(
                    &Parsed {
                        stmt: Stmt::CreateDatabase(name),
                        text: s.to_string(),
                        line: 0,
                    },
                    sink,
                )?;
                self.done(sink, StatementKind::Other, None)
            }
            other => Err(value::unsupported(format!(
                "the statement `{}`",
                first_words(&other.to_string())
            ))),
        }
    }

    fn exec_select(&mut self, q: &ast::Query, sink: &mut dyn ResultSink) -> Result<(), SqlError> {
        let plan = {
            let mut b = Binder::new(self, Scope::default());
            query::plan_query(&mut b, q)?
        };
        if let query::PlanBody::Select(core) = &plan.body {
            if let Some(vars) = &core.assign {
                // SELECT @v = …: assign from every row (the last row wins), no result set.
                let mut last: Option<Vec<Value>> = None;
                let env = Env {
                    core: self,
                    outer: vec![&[]],
                };
                let n = query::execute_plan(&plan, &env, &mut |r| {
                    last = Some(r.to_vec());
                    Ok(true)
                })?;
                if let Some(vals) = last {
                    for (name, v) in vars.iter().zip(vals) {
                        let ty = self.var(name).map(|x| x.0.clone()).unwrap_or(SqlType::Null);
                        let v = value::convert(&v, &ty, 0)?;
                        self.frames
                            .last_mut()
                            .expect("frame")
                            .insert(name.clone(), (ty, v));
                    }
                }
                self.rowcount = n;
                return self.done(sink, StatementKind::Select, Some(n));
            }
        }
        sink.columns(&plan.columns).map_err(cancelled)?;
        self.nolock = has_nolock(q);
        let env = Env {
            core: self,
            outer: vec![&[]],
        };
        let mut cancelled_flag = false;
        let n = query::execute_plan(&plan, &env, &mut |r| {
            if sink.row(r).is_err() {
                cancelled_flag = true;
                return Ok(false);
            }
            Ok(true)
        });
        self.nolock = false;
        let n = n?;
        if cancelled_flag {
            return Err(cancelled(Cancelled));
        }
        self.rowcount = n;
        self.done(sink, StatementKind::Select, Some(n))
    }

    fn run_dynamic(
        &mut self,
        sql: &str,
        frame: HashMap<String, (SqlType, Value)>,
        sink: &mut dyn ResultSink,
    ) -> Result<(), SqlError> {
        let stmts = parse::parse_batch(sql)?;
        self.frames.push(frame);
        self.proc_depth += 1;
        let mut result = Ok(());
        for s in &stmts {
            match self.exec(s, sink) {
                Ok(Flow::Return(_)) => break,
                Ok(_) => {}
                Err(e) => {
                    sink.error(&e.error).map_err(cancelled)?;
                    if e.abort_batch {
                        result = Err(SqlError {
                            number: -1,
                            ..e.error
                        });
                        break;
                    }
                }
            }
        }
        self.proc_depth -= 1;
        self.frames.pop();
        result
    }

    /// EXEC of a procedure: sp_executesql, built-ins, registered system procedures, user
    /// procedures.
    fn exec_procedure(
        &mut self,
        name: &[String],
        args: &[ExecArg],
        sink: &mut dyn ResultSink,
    ) -> Result<i32, SqlError> {
        let mut vals = Vec::new();
        for a in args {
            let (v, ty) = match &a.value {
                ast::Expr::Identifier(id) if id.value == "DEFAULT" => (Value::Null, None),
                e => {
                    let (v, t) = self.eval_expr(e)?;
                    (v, Some(t))
                }
            };
            let out_var = match (&a.value, a.output) {
                (ast::Expr::Identifier(id), true) => Some(id.value.to_lowercase()),
                _ => None,
            };
            vals.push((
                ProcArg {
                    name: a.name.clone(),
                    value: v,
                    ty,
                    output: a.output,
                },
                out_var,
            ));
        }
        let (proc_args, outs): (Vec<ProcArg>, Vec<Option<String>>) = vals.into_iter().unzip();
        let (status, out_values) = self.call_procedure(name, ProcArgs(proc_args), sink)?;
        for (out_var, v) in outs.into_iter().zip(out_values) {
            if let (Some(var), Some(v)) = (out_var, v) {
                if let Some((ty, _)) = self.var(&var).cloned() {
                    let v = value::convert(&v, &ty, 0)?;
                    self.frames.last_mut().expect("frame").insert(var, (ty, v));
                }
            }
        }
        Ok(status)
    }

    /// Calls a procedure; returns its status and the final values of its arguments (for
    /// OUTPUT parameters).
    pub fn call_procedure(
        &mut self,
        name: &[String],
        args: ProcArgs,
        sink: &mut dyn ResultSink,
    ) -> Result<(i32, Vec<Option<Value>>), SqlError> {
        let (db, schema, pname) = parse::split_name(name);
        let lname = pname.to_lowercase();
        let n_args = args.0.len();
        if let Some(db) = &db {
            if self.engine.database(db).is_none() {
                return Err(err(911, format!("Database '{db}' does not exist. Make sure that the name is entered correctly.")));
            }
        }
        let saved_db = db.as_ref().map(|d| {
            std::mem::replace(
                &mut self.database,
                self.engine
                    .database(d)
                    .map(|x| x.name)
                    .unwrap_or_else(|| d.clone()),
            )
        });
        let r = self.call_procedure_in_db(schema.as_deref(), &lname, &pname, name, args, sink);
        if let Some(s) = saved_db {
            self.database = s;
        }
        r.map(|(s, v)| {
            let mut v = v;
            v.resize(n_args, None);
            (s, v)
        })
    }

    fn call_procedure_in_db(
        &mut self,
        schema: Option<&str>,
        lname: &str,
        pname: &str,
        name: &[String],
        args: ProcArgs,
        sink: &mut dyn ResultSink,
    ) -> Result<(i32, Vec<Option<Value>>), SqlError> {
        match lname {
            "sp_executesql" => {
                let sql = args
                    .0
                    .first()
                    .map(|a| value::to_display_string(&a.value))
                    .unwrap_or_default();
                let decl = args
                    .0
                    .get(1)
                    .filter(|a| a.name.is_none() || a.name.as_deref() == Some("params"))
                    .map(|a| value::to_display_string(&a.value));
                let rest: Vec<ProcArg> = args
                    .0
                    .iter()
                    .skip(if decl.is_some() { 2 } else { 1 })
                    .cloned()
                    .collect();
                let outs = self.sp_executesql(&sql, decl.as_deref(), &rest, sink)?;
                let mut v = vec![None, None];
                v.extend(outs);
                return Ok((0, v));
            }
            "sp_rename" => {
                self.sp_rename(&args)?;
                return Ok((0, vec![]));
            }
            _ => {}
        }
        let schema_l = schema.map(|s| s.to_lowercase());
        let key = format!(
            "{}.{}",
            schema_l.clone().unwrap_or_else(|| "sys".into()),
            lname
        );
        let registered = {
            let reg = self.engine.inner.registry.read();
            reg.procedures.get(&key).cloned().or_else(|| {
                if schema_l.is_none() {
                    reg.procedures.get(&format!("dbo.{lname}")).cloned()
                } else {
                    None
                }
            })
        };
        if let Some(p) = registered {
            self.proc_depth += 1;
            let mut ctx = ProcContext { session: self };
            let r = p.call(&mut ctx, &args, sink);
            self.proc_depth -= 1;
            return r.map(|s| (s, vec![]));
        }
        // User procedures.
        let db = self.engine.database(&self.database);
        let user = db.and_then(|d| {
            d.procedures
                .get(&super::catalog::object_key(schema.unwrap_or("dbo"), pname))
                .cloned()
        });
        if let Some(p) = user {
            let mut frame = HashMap::new();
            for (i, (pn, ty, default, _)) in p.params.iter().enumerate() {
                let bare = pn.trim_start_matches('@').to_lowercase();
                let supplied = args
                    .0
                    .iter()
                    .find(|a| a.name.as_deref() == Some(bare.as_str()))
                    .or_else(|| args.0.get(i).filter(|a| a.name.is_none()));
                let v = match supplied {
                    Some(a) => a.value.clone(),
                    None => match default {
                        Some(d) => self.eval_expr(&parse::parse_expr_text(d)?)?.0,
                        None => return Err(err(201, format!("Procedure or function '{}' expects parameter '{}', which was not supplied.", p.name, pn))),
                    },
                };
                let t = self.resolve_type(&value::type_name(ty))?;
                frame.insert(pn.to_lowercase(), (t.clone(), value::convert(&v, &t, 0)?));
            }
            let stmts = parse::parse_batch(&p.body)?;
            self.frames.push(frame);
            self.proc_depth += 1;
            let mut status = 0;
            let mut err_out = None;
            for s in &stmts {
                match self.exec(s, sink) {
                    Ok(Flow::Return(r)) => {
                        status = r.unwrap_or(0);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if e.abort_batch {
                            err_out = Some(e.error);
                            break;
                        }
                        sink.error(&e.error).map_err(cancelled)?;
                    }
                }
            }
            self.proc_depth -= 1;
            let frame = self.frames.pop().unwrap_or_default();
            if let Some(e) = err_out {
                return Err(e);
            }
            let outs = p
                .params
                .iter()
                .enumerate()
                .map(|(i, (pn, _, _, output))| {
                    let _ = i;
                    if *output {
                        frame.get(&pn.to_lowercase()).map(|x| x.1.clone())
                    } else {
                        None
                    }
                })
                .collect::<Vec<_>>();
            // Map outputs back to argument positions.
            let mut by_arg = vec![None; args.0.len()];
            for (ai, a) in args.0.iter().enumerate() {
                let idx = match &a.name {
                    Some(n) => p
                        .params
                        .iter()
                        .position(|(pn, ..)| pn.trim_start_matches('@').eq_ignore_ascii_case(n)),
                    None => Some(ai),
                };
                if let Some(i) = idx {
                    by_arg[ai] = outs.get(i).cloned().flatten();
                }
            }
            return Ok((status, by_arg));
        }
        Err(err(
            2812,
            format!("Could not find stored procedure '{}'.", name.join(".")),
        ))
    }

    /// sp_executesql: statement, declaration list, then values by name or position.
    pub fn sp_executesql(
        &mut self,
        sql: &str,
        decl: Option<&str>,
        args: &[ProcArg],
        sink: &mut dyn ResultSink,
    ) -> Result<Vec<Option<Value>>, SqlError> {
        let mut frame = HashMap::new();
        let mut order: Vec<(String, SqlType, bool)> = Vec::new();
        if let Some(d) = decl.filter(|d| !d.trim().is_empty()) {
            for part in split_declarations(d) {
                let mut it = part.trim().splitn(2, char::is_whitespace);
                let name = it.next().unwrap_or("").trim().to_lowercase();
                let rest = it.next().unwrap_or("").trim();
                let (rest, output) = match rest
                    .to_uppercase()
                    .rfind(" OUTPUT")
                    .or_else(|| rest.to_uppercase().rfind(" OUT"))
                {
                    Some(i)
                        if rest[i..].trim().eq_ignore_ascii_case("OUTPUT")
                            || rest[i..].trim().eq_ignore_ascii_case("OUT") =>
                    {
                        (&rest[..i], true)
                    }
                    _ => (rest, false),
                };
                let ty = self.resolve_type(rest.trim().trim_start_matches("AS ").trim())?;
                order.push((name, ty, output));
            }
        }
        for (i, (name, ty, _)) in order.iter().enumerate() {
            let bare = name.trim_start_matches('@');
            let supplied = args
                .iter()
                .find(|a| {
                    a.name
                        .as_deref()
                        .map(|n| n.trim_start_matches('@').eq_ignore_ascii_case(bare))
                        .unwrap_or(false)
                })
                .or_else(|| args.get(i).filter(|a| a.name.is_none()));
            let v = match supplied {
                Some(a) => value::convert(&a.value, ty, 0)?,
                None => return Err(err(8178, format!("The parameterized query '({})' expects the parameter '{}', which was not supplied.", decl.unwrap_or(""), name))),
            };
            frame.insert(name.clone(), (ty.clone(), v));
        }
        let stmts = parse::parse_batch_cached(sql)?;
        self.frames.push(frame);
        self.proc_depth += 1;
        let mut result = Ok(());
        for s in stmts.iter() {
            match self.exec(s, sink) {
                Ok(Flow::Return(_)) => break,
                Ok(_) => {}
                Err(e) => {
                    if e.abort_batch {
                        result = Err(e.error);
                        break;
                    }
                    if let Err(c) = sink.error(&e.error) {
                        result = Err(cancelled(c));
                        break;
                    }
                }
            }
        }
        self.proc_depth -= 1;
        let frame = self.frames.pop().unwrap_or_default();
        result?;
        // OUTPUT values in argument order.
        let outs = args
            .iter()
            .enumerate()
            .map(|(i, a)| {
                if !a.output {
                    return None;
                }
                let name = match &a.name {
                    Some(n) => format!("@{}", n.trim_start_matches('@').to_lowercase()),
                    None => order.get(i).map(|o| o.0.clone())?,
                };
                frame.get(&name).map(|x| x.1.clone())
            })
            .collect();
        Ok(outs)
    }
}

/// NOLOCK / READUNCOMMITTED table hints anywhere in the query (text check is enough: the
/// words cannot appear elsewhere unquoted).
fn has_nolock(q: &ast::Query) -> bool {
    let t = q.to_string().to_uppercase();
    t.contains("NOLOCK") || t.contains("READUNCOMMITTED")
}

fn split_declarations(d: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in d.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

fn first_words(s: &str) -> String {
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn int_of(v: &Value) -> i64 {
    match value::convert(v, &SqlType::BigInt, 0) {
        Ok(Value::BigInt(i)) => i,
        _ => 0,
    }
}

/// RAISERROR message formatting (%d, %i, %s, %u, %x with optional width).
fn format_message(fmt: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    let mut ai = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        if it.peek() == Some(&'%') {
            it.next();
            out.push('%');
            continue;
        }
        while it.peek().is_some_and(|c| {
            c.is_ascii_digit() || matches!(c, '-' | '+' | ' ' | '#' | '0' | '.' | '*')
        }) {
            it.next();
        }
        while it.peek().is_some_and(|c| matches!(c, 'l' | 'h' | 'I')) {
            it.next();
        }
        let spec = it.next();
        let v = args
            .get(ai)
            .map(value::to_display_string)
            .unwrap_or_else(|| "(null)".into());
        ai += 1;
        match spec {
            Some('x') | Some('X') => out.push_str(&format!("{:x}", v.parse::<i64>().unwrap_or(0))),
            Some(_) => out.push_str(&v),
            None => {}
        }
    }
    out
}

/// Splits 'db.schema.name' / '[a].[b]' text into parts.
pub fn split_name_text(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut in_bracket = false;
    let mut in_quote = false;
    for c in text.trim().chars() {
        match c {
            '[' if !in_quote => in_bracket = true,
            ']' if in_bracket => in_bracket = false,
            '"' if !in_bracket => in_quote = !in_quote,
            '.' if !in_bracket && !in_quote => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    parts
}

pub fn cancelled(_: Cancelled) -> SqlError {
    SqlError::new(3617, 25, 1, "The client cancelled the request.")
}

/// Collects everything a request produces (in-process tests and nested runs).
#[derive(Debug, Default)]
pub struct CollectingSink {
    pub results: Vec<QueryResult>,
    pub errors: Vec<SqlError>,
    pub infos: Vec<(i32, String)>,
    pub dones: Vec<(StatementKind, Option<u64>, bool)>,
    pub env_changes: Vec<EnvChange>,
    pub return_statuses: Vec<i32>,
    pub return_values: Vec<(u16, String, SqlType, Value)>,
}

impl ResultSink for CollectingSink {
    fn columns(&mut self, columns: &[ResultColumn]) -> Result<(), Cancelled> {
        self.results.push(QueryResult {
            columns: columns.to_vec(),
            rows: Vec::new(),
        });
        Ok(())
    }
    fn row(&mut self, row: &[Value]) -> Result<(), Cancelled> {
        if let Some(r) = self.results.last_mut() {
            r.rows.push(row.to_vec());
        }
        Ok(())
    }
    fn done(
        &mut self,
        kind: StatementKind,
        count: Option<u64>,
        in_proc: bool,
    ) -> Result<(), Cancelled> {
        self.dones.push((kind, count, in_proc));
        Ok(())
    }
    fn error(&mut self, error: &SqlError) -> Result<(), Cancelled> {
        self.errors.push(error.clone());
        Ok(())
    }
    fn info(&mut self, number: i32, message: &str) -> Result<(), Cancelled> {
        self.infos.push((number, message.to_string()));
        Ok(())
    }
    fn env_change(&mut self, change: &EnvChange) -> Result<(), Cancelled> {
        self.env_changes.push(change.clone());
        Ok(())
    }
    fn return_status(&mut self, status: i32) -> Result<(), Cancelled> {
        self.return_statuses.push(status);
        Ok(())
    }
    fn return_value(
        &mut self,
        ordinal: u16,
        name: &str,
        ty: &SqlType,
        value: &Value,
    ) -> Result<(), Cancelled> {
        self.return_values
            .push((ordinal, name.to_string(), ty.clone(), value.clone()));
        Ok(())
    }
}

/// A session of the engine (one per connection).
pub struct EngineSession {
    pub(crate) core: SessionCore,
}

impl EngineSession {
    pub(crate) fn open(
        engine: Engine,
        login: &str,
        database: &str,
        sysadmin: bool,
    ) -> Result<EngineSession, SqlError> {
        let db = engine.database(database).ok_or_else(|| {
            err(
                4060,
                format!(
                    "Cannot open database \"{database}\" requested by the login. The login failed."
                ),
            )
        })?;
        let spid = engine
            .inner
            .next_session_id
            .fetch_add(1, AtomicOrdering::SeqCst);
        Ok(EngineSession {
            core: SessionCore {
                engine,
                login: login.to_string(),
                sysadmin,
                database: db.name,
                spid,
                app_name: String::new(),
                frames: vec![HashMap::new()],
                opts: SessionOptions {
                    nocount: false,
                    xact_abort: false,
                    lock_timeout: -1,
                    isolation: Isolation::ReadCommitted,
                    identity_insert: None,
                    implicit_transactions: false,
                },
                txn: None,
                tran_count: 0,
                rowcount: 0,
                last_identity: None,
                scope_identity: None,
                last_error: 0,
                caught_error: None,
                event_data: None,
                proc_depth: 0,
                stmt_snapshot: None,
                pending_bulk: None,
                stmt_text: String::new(),
                stmt_seq: 0,
                nolock: false,
            },
        })
    }

    pub fn spid(&self) -> i32 {
        self.core.spid
    }

    /// Runs a batch and returns its result sets, or the first error.
    pub fn run(&mut self, sql: &str) -> Result<Vec<QueryResult>, SqlError> {
        let mut sink = CollectingSink::default();
        self.execute_batch(sql, &mut sink);
        match sink.errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(sink.results),
        }
    }

    /// Runs a batch with variables bound (like sp_executesql) and returns its result sets.
    pub fn run_with(
        &mut self,
        sql: &str,
        params: &[(&str, Value)],
    ) -> Result<Vec<QueryResult>, SqlError> {
        let mut sink = CollectingSink::default();
        let args: Vec<ProcArg> = params
            .iter()
            .map(|(n, v)| ProcArg {
                name: Some(n.trim_start_matches('@').to_lowercase()),
                value: v.clone(),
                ty: None,
                output: false,
            })
            .collect();
        let decl = params
            .iter()
            .map(|(n, v)| {
                format!(
                    "{} {}",
                    if n.starts_with('@') {
                        n.to_string()
                    } else {
                        format!("@{n}")
                    },
                    value::type_name(&param_decl_type(v))
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        if let Err(e) = self.core.sp_executesql(sql, Some(&decl), &args, &mut sink) {
            sink.errors.push(e);
        }
        match sink.errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(sink.results),
        }
    }

    /// A ProcContext over this session (for tests of extensions).
    pub fn context(&mut self) -> ProcContext<'_> {
        ProcContext {
            session: &mut self.core,
        }
    }

    /// Inserts rows as given (no identity/defaults), committed at once, no change recording.
    pub(crate) fn insert_rows_direct(
        &mut self,
        schema: &str,
        table: &str,
        rows: Vec<Vec<Value>>,
    ) -> Result<(), SqlError> {
        let (_, def) = self
            .core
            .resolve_table(&[schema.to_string(), table.to_string()])?;
        let was_open = self.core.txn.is_some();
        for r in rows {
            if r.len() != def.columns.len() {
                self.core.rollback();
                return Err(err(213, format!("Column name or number of supplied values does not match table definition of '{schema}.{table}'.")));
            }
            if let Err(e) = self.core.write_insert(&def, r, false) {
                self.core.rollback();
                return Err(e);
            }
        }
        if !was_open {
            self.core.commit()?;
        }
        Ok(())
    }
}

fn param_decl_type(v: &Value) -> SqlType {
    match value::natural_type(v) {
        SqlType::Null => SqlType::NVarChar {
            len: Some(4000),
            collation: value::DEFAULT_COLLATION,
        },
        SqlType::NVarChar { .. } => SqlType::NVarChar {
            len: None,
            collation: value::DEFAULT_COLLATION,
        },
        SqlType::VarBinary { .. } => SqlType::VarBinary { len: None },
        SqlType::Decimal { .. } => value::decimal(
            38,
            match v {
                Value::Decimal(_, s) => *s,
                _ => 0,
            },
        ),
        t => t,
    }
}

impl Session for EngineSession {
    fn database(&self) -> String {
        self.core.database.clone()
    }

    fn execute_batch(&mut self, sql: &str, sink: &mut dyn ResultSink) {
        let stmts = match parse::parse_batch_cached(sql) {
            Ok(s) => s,
            Err(e) => {
                let _ = sink.error(&e);
                return;
            }
        };
        self.core.frames = vec![HashMap::new()];
        self.core.proc_depth = 0;
        for s in stmts.iter() {
            match self.core.exec(s, sink) {
                Ok(Flow::Return(_)) => break,
                Ok(_) => {}
                Err(e) => {
                    if e.error.number == -1 {
                        break;
                    }
                    if sink
                        .error(&SqlError {
                            line: s.line.max(1),
                            ..e.error.clone()
                        })
                        .is_err()
                        || e.abort_batch
                        || e.error.number == 3617
                    {
                        break;
                    }
                }
            }
        }
        self.core.stmt_snapshot = None;
    }

    fn execute_rpc(&mut self, proc: &RpcProc, params: Vec<RpcParam>, sink: &mut dyn ResultSink) {
        self.core.frames = vec![HashMap::new()];
        self.core.proc_depth = 0;
        let args: Vec<ProcArg> = params
            .iter()
            .map(|p| ProcArg {
                name: if p.name.is_empty() {
                    None
                } else {
                    Some(p.name.trim_start_matches('@').to_lowercase())
                },
                value: p.value.clone(),
                ty: Some(p.ty.clone()),
                output: p.output,
            })
            .collect();
        let result = match proc {
            RpcProc::Id(10) => {
                // Positional: statement, declarations, then values.
                let sql = args
                    .first()
                    .map(|a| value::to_display_string(&a.value))
                    .unwrap_or_default();
                let decl = args.get(1).map(|a| value::to_display_string(&a.value));
                let rest: Vec<ProcArg> = args.iter().skip(2).cloned().collect();
                self.core
                    .sp_executesql(&sql, decl.as_deref(), &rest, sink)
                    .map(|outs| {
                        let mut v = vec![None, None];
                        v.extend(outs);
                        (0, v)
                    })
            }
            RpcProc::Id(id) => Err(value::unsupported(format!("RPC procedure id {id}"))),
            RpcProc::Name(n) => {
                let parts = split_name_text(n);
                self.core.proc_depth = 1;
                let r = self
                    .core
                    .call_procedure(&parts, ProcArgs(args.clone()), sink);
                self.core.proc_depth = 0;
                r
            }
        };
        match result {
            Ok((status, outs)) => {
                for (i, (p, v)) in params
                    .iter()
                    .zip(outs.iter().chain(std::iter::repeat(&None)))
                    .enumerate()
                {
                    if p.output {
                        let v = v.clone().unwrap_or(Value::Null);
                        let _ = sink.return_value(i as u16, &p.name, &p.ty, &v);
                    }
                }
                let _ = sink.return_status(status);
            }
            Err(e) => {
                if e.number != 3617 {
                    let _ = sink.error(&e);
                }
            }
        }
        self.core.stmt_snapshot = None;
    }

    fn transaction(&mut self, request: &TransactionRequest, sink: &mut dyn ResultSink) {
        let r = match request {
            TransactionRequest::Begin { isolation, .. } => {
                if let Some(level) = match isolation {
                    1 => Some(Isolation::ReadUncommitted),
                    2 => Some(Isolation::ReadCommitted),
                    3 => Some(Isolation::RepeatableRead),
                    4 => Some(Isolation::Serializable),
                    5 => Some(Isolation::Snapshot),
                    _ => None,
                } {
                    self.core.opts.isolation = level;
                }
                self.core.begin_tran(sink)
            }
            TransactionRequest::Commit { .. } => self.core.commit_tran(sink),
            TransactionRequest::Rollback { name } => {
                if !name.is_empty() && self.core.rollback_to_savepoint(name) {
                    Ok(())
                } else {
                    self.core.rollback_tran(sink)
                }
            }
            TransactionRequest::Save { name } => match self.core.txn.as_mut() {
                None => Err(err(
                    628,
                    "Cannot issue SAVE TRANSACTION when there is no active transaction.",
                )),
                Some(t) => {
                    let changes = t.changes.iter().map(|(k, v)| (*k, v.len())).collect();
                    t.savepoints.push((name.clone(), t.undo.len(), changes));
                    Ok(())
                }
            },
        };
        if let Err(e) = r {
            let _ = sink.error(&e);
        }
    }

    fn bulk_rows(
        &mut self,
        columns: &[ResultColumn],
        rows: Vec<Vec<Value>>,
        sink: &mut dyn ResultSink,
    ) {
        let Some((_, table)) = self.core.pending_bulk.take() else {
            let _ = sink.error(&err(4804, "While reading current row from host, a premature end-of-message was encountered--an incoming data stream was interrupted when the server expected to see more data."));
            return;
        };
        match self.core.bulk_insert(&table, columns, rows) {
            Ok(n) => {
                let _ = sink.done(StatementKind::Insert, Some(n), false);
            }
            Err(e) => {
                let _ = sink.error(&e);
            }
        }
    }

    fn transaction_descriptor(&self) -> u64 {
        self.core
            .txn
            .as_ref()
            .filter(|t| t.explicit)
            .map(|t| t.descriptor)
            .unwrap_or(0)
    }

    fn disconnect(&mut self) {
        self.core.rollback();
    }
}

impl Drop for EngineSession {
    fn drop(&mut self) {
        self.core.rollback();
    }
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<EngineSession>();
}

impl SessionCore {
    /// Kept here so DDL/DML modules can reach `Env` creation.
    pub(crate) fn top_env(&self) -> Env<'_> {
        let mut e = self.env();
        e.outer.push(&[]);
        e
    }
}
