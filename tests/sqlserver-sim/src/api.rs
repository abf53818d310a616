//! The seam between the TDS front end (`tds`, `server`) and the T-SQL engine (`engine`).
//!
//! The server decodes requests into calls on [`Session`] and encodes everything the engine
//! reports through [`ResultSink`] as TDS tokens. The engine never sees bytes of the wire and
//! the server never interprets SQL. Both sides share the value model in [`crate::types`].

use crate::types::{SqlType, Value};

/// A SQL Server error as the client sees it (ERROR token): number, state, severity class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub number: i32,
    pub state: u8,
    pub class: u8,
    pub message: String,
    pub procedure: String,
    pub line: u32,
}

impl SqlError {
    pub fn new(number: i32, class: u8, state: u8, message: impl Into<String>) -> Self {
        SqlError {
            number,
            state,
            class,
            message: message.into(),
            procedure: String::new(),
            line: 1,
        }
    }
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Msg {}, Level {}, State {}: {}",
            self.number, self.class, self.state, self.message
        )
    }
}

impl std::error::Error for SqlError {}

/// Column of a result set (COLMETADATA entry).
#[derive(Debug, Clone, PartialEq)]
pub struct ResultColumn {
    pub name: String,
    pub ty: SqlType,
    pub nullable: bool,
    /// A writable table column (bulk insert relies on the "updateable" flag).
    pub updateable: bool,
    pub identity: bool,
    pub computed: bool,
    /// Table name for text/ntext/image columns (COLMETADATA carries it for those types).
    pub table_name: Option<String>,
}

impl ResultColumn {
    pub fn expr(name: impl Into<String>, ty: SqlType, nullable: bool) -> Self {
        ResultColumn {
            name: name.into(),
            ty,
            nullable,
            updateable: false,
            identity: false,
            computed: false,
            table_name: None,
        }
    }
}

/// What kind of statement a DONE token closes (curcmd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    Select,
    Insert,
    Update,
    Delete,
    Other,
}

/// Environment changes the client must be told about (ENVCHANGE tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvChange {
    Database {
        new: String,
        old: String,
    },
    /// A transaction began; `descriptor` is echoed back by the client in ALL_HEADERS.
    BeginTransaction {
        descriptor: u64,
    },
    CommitTransaction {
        descriptor: u64,
    },
    RollbackTransaction {
        descriptor: u64,
    },
}

/// Receives what a request produces, in order. Implemented by the server (which writes TDS
/// tokens and applies back-pressure) and by in-process test helpers.
///
/// Rows are pushed one at a time so that a result is streamed, never materialised whole.
/// `row` returns `Err(Cancelled)` when the client sent an attention or went away; the engine
/// then stops producing and rolls back as SQL Server would.
pub trait ResultSink: Send {
    fn columns(&mut self, columns: &[ResultColumn]) -> Result<(), Cancelled>;
    fn row(&mut self, row: &[Value]) -> Result<(), Cancelled>;
    /// End of one statement. `count` is Some for DML and SELECT (unless SET NOCOUNT ON).
    /// `in_proc` is true for statements inside a procedure or sp_executesql (DONEINPROC).
    fn done(
        &mut self,
        kind: StatementKind,
        count: Option<u64>,
        in_proc: bool,
    ) -> Result<(), Cancelled>;
    fn error(&mut self, error: &SqlError) -> Result<(), Cancelled>;
    /// PRINT and informational messages (INFO token).
    fn info(&mut self, number: i32, message: &str) -> Result<(), Cancelled>;
    fn env_change(&mut self, change: &EnvChange) -> Result<(), Cancelled>;
    /// RETURNSTATUS of a procedure call.
    fn return_status(&mut self, status: i32) -> Result<(), Cancelled>;
    /// OUTPUT parameter value of an RPC (RETURNVALUE token).
    fn return_value(
        &mut self,
        ordinal: u16,
        name: &str,
        ty: &SqlType,
        value: &Value,
    ) -> Result<(), Cancelled>;
}

/// The client cancelled (attention) or disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

/// One RPC parameter as decoded from the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcParam {
    /// With '@' as sent by the client, or empty for positional parameters.
    pub name: String,
    pub ty: SqlType,
    /// `None` when the client sent an untyped NULL (NULLTYPE 0x1F): the declaration decides.
    pub value: Value,
    pub output: bool,
}

/// The procedure an RPC request calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcProc {
    /// ProcID form (10 = sp_executesql, 13 = sp_prepexec, ...).
    Id(u16),
    Name(String),
}

/// Transaction-manager requests (packet 0x0E) that tiberius sends for begin/commit/rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionRequest {
    Begin { isolation: u8, name: String },
    Commit { name: String },
    Rollback { name: String },
    Save { name: String },
}

/// Login as parsed from LOGIN7. Its Debug output leaves the password out.
#[derive(Clone)]
pub struct LoginRequest {
    pub user: String,
    pub password: String,
    pub database: String,
    pub app_name: String,
    pub host_name: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("database", &self.database)
            .field("app_name", &self.app_name)
            .field("host_name", &self.host_name)
            .finish()
    }
}

/// What the server needs from a logged-in session. One per connection; the engine runs a
/// request to completion synchronously (the server calls it from a blocking task).
pub trait Session: Send {
    /// The database the session is in (for the login ENVCHANGE).
    fn database(&self) -> String;
    /// Run a SQL batch (packet 0x01).
    fn execute_batch(&mut self, sql: &str, sink: &mut dyn ResultSink);
    /// Run an RPC (packet 0x03), e.g. sp_executesql or a system procedure by name.
    fn execute_rpc(&mut self, proc: &RpcProc, params: Vec<RpcParam>, sink: &mut dyn ResultSink);
    /// Transaction-manager request (packet 0x0E).
    fn transaction(&mut self, request: &TransactionRequest, sink: &mut dyn ResultSink);
    /// Bulk load: `INSERT BULK` was accepted by `execute_batch` earlier; these are its rows.
    fn bulk_rows(
        &mut self,
        columns: &[ResultColumn],
        rows: Vec<Vec<Value>>,
        sink: &mut dyn ResultSink,
    );
    /// The transaction descriptor of the open transaction, 0 when none.
    fn transaction_descriptor(&self) -> u64;
    /// Called by the server before each batch, RPC and TM request with the transaction
    /// descriptor the client echoed in ALL_HEADERS (0 = none; BulkLoad carries none). SQL
    /// Server checks it against the open transaction; the default ignores it.
    fn request_descriptor(&mut self, _descriptor: u64) {}
    /// The client went away: roll back whatever is open and release locks.
    fn disconnect(&mut self);
}

/// The engine as the server sees it.
pub trait SessionFactory: Send + Sync + 'static {
    /// Check credentials (wrong ones: error 18456) and open a session.
    fn login(&self, login: &LoginRequest) -> Result<Box<dyn Session>, SqlError>;
}
