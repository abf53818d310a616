//! Extension points for the CDC module (and anything else that must observe or extend the
//! engine): row-change recording, the commit observer, the DDL observer, and registries of
//! system procedures, scalar functions and table-valued functions. See the module docs of
//! `engine` for the contract.

use std::sync::Arc;

use chrono::NaiveDateTime;

use super::catalog::TableDef;
use super::lsn::Lsn;
use super::ProcContext;
use crate::api::{ResultColumn, ResultSink, SqlError};
use crate::types::{SqlType, Value};

/// A stored row: values in `TableDef::columns` order.
pub type Row = Arc<[Value]>;

/// What one recorded change did to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    Insert,
    Delete,
    /// An update that did not change any column of the storage key or of a unique index.
    Update,
}

/// One row change, recorded when the statement executed.
#[derive(Debug, Clone)]
pub struct RowChange {
    /// Fresh LSN allocated when the change happened (CDC `__$seqval`). An update that changes
    /// a key column is recorded as a Delete and an Insert with the same seqval (Delete first).
    pub seqval: Lsn,
    /// 1-based number of the statement within its transaction (CDC `__$command_id`).
    pub command_id: u32,
    /// The table definition in force when the change happened (its shape matches the rows).
    pub table: Arc<TableDef>,
    pub op: ChangeOp,
    /// Old image (Delete, Update).
    pub before: Option<Row>,
    /// New image (Insert, Update).
    pub after: Option<Row>,
    /// For updates (and for the Delete/Insert pair of a key-changing update): which columns
    /// the UPDATE's SET list assigned, by position in `table.columns`. `None` for plain
    /// inserts and deletes.
    pub assigned: Option<Arc<[bool]>>,
}

/// A committed transaction as handed to the [`CommitObserver`], one per database touched.
#[derive(Debug, Clone)]
pub struct CommittedTransaction {
    pub database_id: i32,
    pub database: String,
    /// Allocated under the global commit lock; strictly increasing in commit order.
    pub commit_lsn: Lsn,
    /// The LSN at which the transaction began (first LSN it allocated or its BEGIN).
    pub begin_lsn: Lsn,
    /// 10-byte transaction id (`cdc.lsn_time_mapping.tran_id`), never all zero.
    pub tran_id: [u8; 10],
    /// From the engine clock (local server time).
    pub begin_time: NaiveDateTime,
    pub end_time: NaiveDateTime,
    /// In execution order (seqval order).
    pub changes: Vec<RowChange>,
}

/// Receives committed transactions of databases that record changes (see
/// `Engine::set_record_changes`). Called under the global commit lock, in commit-LSN order:
/// keep it short (queue the transaction, do the work elsewhere).
pub trait CommitObserver: Send + Sync {
    fn committed(&self, txn: CommittedTransaction);
}

/// The kind of DDL event (names as in SQL Server's DDL event types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DdlEventType {
    CreateTable,
    AlterTable,
    DropTable,
    /// sp_rename of a table or column (`RENAME` event).
    Rename,
    CreateIndex,
    DropIndex,
    TruncateTable,
}

impl DdlEventType {
    /// The EVENTDATA()/DDL trigger event name.
    pub fn name(self) -> &'static str {
        match self {
            DdlEventType::CreateTable => "CREATE_TABLE",
            DdlEventType::AlterTable => "ALTER_TABLE",
            DdlEventType::DropTable => "DROP_TABLE",
            DdlEventType::Rename => "RENAME",
            DdlEventType::CreateIndex => "CREATE_INDEX",
            DdlEventType::DropIndex => "DROP_INDEX",
            DdlEventType::TruncateTable => "TRUNCATE_TABLE",
        }
    }
}

/// A DDL statement that ran on a table.
#[derive(Debug, Clone)]
pub struct DdlEvent {
    pub event_type: DdlEventType,
    pub database_id: i32,
    pub database: String,
    pub schema: String,
    /// Table name (the new name after a rename).
    pub object_name: String,
    pub object_id: i32,
    /// The statement text as sent (for sp_rename: the EXEC text).
    pub command_text: String,
    /// The database's current LSN after the DDL (an LSN is allocated for it).
    pub lsn: Lsn,
    pub time: NaiveDateTime,
    pub login: String,
    /// Definitions before and after (None for create / drop respectively).
    pub before: Option<Arc<TableDef>>,
    pub after: Option<Arc<TableDef>>,
    /// For column renames: (old column name, new column name).
    pub renamed_column: Option<(String, String)>,
}

/// Called after each DDL statement on a table, inside the session that ran it (so a DDL
/// trigger can run SQL through `ctx`). An error fails the statement (the DDL itself stays:
/// the stand-in's DDL is not transactional, see ENGINE.md).
pub trait DdlObserver: Send + Sync {
    fn ddl(&self, ctx: &mut ProcContext<'_>, event: &DdlEvent) -> Result<(), SqlError>;
}

/// One argument of an EXEC call.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcArg {
    /// Lower-cased name without '@' for named arguments.
    pub name: Option<String>,
    pub value: Value,
    /// Declared type when known (variables, RPC parameters); None for literals.
    pub ty: Option<SqlType>,
    pub output: bool,
}

/// Arguments of a procedure call with lookup by name or position.
#[derive(Debug, Clone, Default)]
pub struct ProcArgs(pub Vec<ProcArg>);

impl ProcArgs {
    /// The argument named `name` (without '@', case-insensitive) or else the positional
    /// argument at `position` (0-based) if it is unnamed.
    pub fn get(&self, name: &str, position: usize) -> Option<&Value> {
        let name = name.trim_start_matches('@').to_lowercase();
        if let Some(a) = self
            .0
            .iter()
            .find(|a| a.name.as_deref() == Some(name.as_str()))
        {
            return Some(&a.value);
        }
        match self.0.get(position) {
            Some(a) if a.name.is_none() => Some(&a.value),
            _ => None,
        }
    }

    /// Like `get`, as a string (NULL → None).
    pub fn get_str(&self, name: &str, position: usize) -> Option<String> {
        match self.get(name, position)? {
            Value::Null => None,
            v => Some(super::value::to_display_string(v)),
        }
    }

    /// Names that are not in `known` (for error 8145 "… is not a parameter for procedure").
    pub fn unknown_names<'a>(&'a self, known: &'a [&'a str]) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter_map(move |a| {
            let n = a.name.as_deref()?;
            (!known
                .iter()
                .any(|k| k.trim_start_matches('@').eq_ignore_ascii_case(n)))
            .then_some(n)
        })
    }
}

/// A system stored procedure (e.g. `sys.sp_cdc_enable_table`). Returns the return status.
pub trait SystemProcedure: Send + Sync {
    fn call(
        &self,
        ctx: &mut ProcContext<'_>,
        args: &ProcArgs,
        sink: &mut dyn ResultSink,
    ) -> Result<i32, SqlError>;
}

/// What a scalar function sees.
pub struct FunctionContext<'a> {
    pub engine: &'a super::Engine,
    /// The database the function was resolved in (a 3-part name's database, or the
    /// session's current one).
    pub database: &'a str,
}

/// A scalar function (e.g. `sys.fn_cdc_get_max_lsn`).
pub trait ScalarFunction: Send + Sync {
    /// Result type for these argument types (must match SQL Server's).
    fn return_type(&self, args: &[SqlType]) -> Result<SqlType, SqlError>;
    fn call(&self, ctx: &FunctionContext<'_>, args: &[Value]) -> Result<Value, SqlError>;
}

/// The output of a table-valued function: its columns and rows.
#[derive(Debug, Clone, Default)]
pub struct TableResult {
    pub columns: Vec<ResultColumn>,
    pub rows: Vec<Vec<Value>>,
}

/// Rows of a table-valued function produced on demand (see [`TableFunction::stream`]).
pub trait RowStream: Send + Sync {
    /// Calls `f` with each row in order until it returns false. May be called more than once
    /// (each call yields the same rows).
    fn for_each(
        &self,
        f: &mut dyn FnMut(&[Value]) -> Result<bool, SqlError>,
    ) -> Result<(), SqlError>;
}

/// A streamed table-valued function result.
#[derive(Clone)]
pub struct StreamedTable {
    pub columns: Vec<ResultColumn>,
    pub rows: Arc<dyn RowStream>,
    /// Column positions the rows are sorted by, ascending.
    pub sorted_by: Vec<usize>,
}

/// A table-valued function (e.g. `cdc.fn_cdc_get_all_changes_dbo_t`). Arguments are
/// evaluated before the call (they cannot reference columns of the query).
pub trait TableFunction: Send + Sync {
    fn call(&self, ctx: &mut ProcContext<'_>, args: &[Value]) -> Result<TableResult, SqlError>;

    /// The same rows produced on demand instead of materialised (added for the CDC change
    /// functions, whose range can be large): the engine stops reading when a `TOP` is
    /// satisfied and skips an `ORDER BY` on a prefix of `sorted_by`. `None` = use `call`.
    fn stream(
        &self,
        _ctx: &mut ProcContext<'_>,
        _args: &[Value],
    ) -> Result<Option<StreamedTable>, SqlError> {
        Ok(None)
    }
}

/// Resolves table-valued functions whose names are data-dependent (one per capture
/// instance). Returns None when `schema.name` is not one of its functions.
pub trait TableFunctionResolver: Send + Sync {
    fn resolve(&self, database: &str, schema: &str, name: &str) -> Option<Arc<dyn TableFunction>>;
}
