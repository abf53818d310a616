//! Catalog metadata: databases, schemas, tables, columns, indexes, constraints, sequences,
//! alias types, DDL triggers. Definitions are immutable values behind `Arc`; DDL replaces
//! them (copy on write), so a statement that holds an `Arc<TableDef>` sees one shape.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDateTime;
use parking_lot::Mutex;

use crate::types::SqlType;

/// Index kinds as sys.indexes.type shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    Heap,
    Clustered,
    NonClustered,
}

impl IndexKind {
    pub fn type_code(self) -> u8 {
        match self {
            IndexKind::Heap => 0,
            IndexKind::Clustered => 1,
            IndexKind::NonClustered => 2,
        }
    }
    pub fn type_desc(self) -> &'static str {
        match self {
            IndexKind::Heap => "HEAP",
            IndexKind::Clustered => "CLUSTERED",
            IndexKind::NonClustered => "NONCLUSTERED",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct IndexColumn {
    /// Position in `TableDef::columns`.
    pub column: usize,
    pub descending: bool,
    pub included: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IndexDef {
    pub index_id: i32,
    pub name: String,
    pub kind: IndexKind,
    pub is_unique: bool,
    pub is_primary_key: bool,
    pub is_unique_constraint: bool,
    /// object_id of the PK/UNIQUE constraint (sys.key_constraints), when there is one.
    pub constraint_object_id: Option<i32>,
    pub columns: Vec<IndexColumn>,
    /// Filter predicate text of a filtered index, as written (`[a] IS NOT NULL`).
    pub filter: Option<String>,
    pub data_compression: &'static str,
}

impl IndexDef {
    /// Key columns (not INCLUDEd), in key order.
    pub fn key_columns(&self) -> impl Iterator<Item = usize> + '_ {
        self.columns
            .iter()
            .filter(|c| !c.included)
            .map(|c| c.column)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferentialAction {
    NoAction,
    Cascade,
    SetNull,
    SetDefault,
}

impl ReferentialAction {
    pub fn code(self) -> u8 {
        match self {
            ReferentialAction::NoAction => 0,
            ReferentialAction::Cascade => 1,
            ReferentialAction::SetNull => 2,
            ReferentialAction::SetDefault => 3,
        }
    }
    pub fn desc(self) -> &'static str {
        match self {
            ReferentialAction::NoAction => "NO_ACTION",
            ReferentialAction::Cascade => "CASCADE",
            ReferentialAction::SetNull => "SET_NULL",
            ReferentialAction::SetDefault => "SET_DEFAULT",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForeignKeyDef {
    pub object_id: i32,
    pub name: String,
    /// Positions in this table.
    pub columns: Vec<usize>,
    pub referenced_object_id: i32,
    /// Positions in the referenced table.
    pub referenced_columns: Vec<usize>,
    pub on_delete: ReferentialAction,
    pub on_update: ReferentialAction,
    pub key_index_id: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckDef {
    pub object_id: i32,
    pub name: String,
    /// Definition text as SQL Server shows it: `([a]>(0))`-like; we keep the source text in
    /// parentheses.
    pub definition: String,
    /// Column position for a column-level check.
    pub column: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DefaultDef {
    pub object_id: i32,
    pub name: String,
    pub definition: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IdentitySpec {
    pub seed: i128,
    pub increment: i128,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ComputedDef {
    pub definition: String,
    pub persisted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDef {
    /// sys.columns.column_id: stable, never reused within a table.
    pub column_id: i32,
    pub name: String,
    pub ty: SqlType,
    /// Alias type name (CREATE TYPE) when the column was declared with one.
    pub user_type: Option<(String, String)>,
    pub nullable: bool,
    pub identity: Option<IdentitySpec>,
    pub default: Option<DefaultDef>,
    pub computed: Option<ComputedDef>,
    pub is_rowguidcol: bool,
}

/// Mutable per-table counters that are not transactional in SQL Server either.
#[derive(Debug, Default)]
pub struct TableRuntime {
    /// Last identity value handed out (NULL until the first insert).
    pub identity_last: Mutex<Option<i128>>,
    /// Next row id of a heap table (storage key of heaps).
    pub next_row_id: Mutex<i64>,
}

/// A table definition. Replaced whole by DDL.
#[derive(Debug, Clone)]
pub struct TableDef {
    pub object_id: i32,
    pub database_id: i32,
    pub schema_id: i32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// index_id order; index 0 is the heap (when there is no clustered index) or the
    /// clustered index (index_id 1).
    pub indexes: Vec<IndexDef>,
    pub foreign_keys: Vec<ForeignKeyDef>,
    pub checks: Vec<CheckDef>,
    pub created: NaiveDateTime,
    pub modified: NaiveDateTime,
    pub is_tracked_by_cdc: bool,
    /// Columns of the storage key (clustered index key); empty for heaps (a row id is used).
    pub storage_key: Vec<usize>,
    pub runtime: Arc<TableRuntime>,
    pub next_column_id: i32,
    /// Object type: "U" for user tables; system tables the CDC module creates are still "U"
    /// but flagged `is_ms_shipped`.
    pub is_ms_shipped: bool,
}

impl TableDef {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }
    pub fn primary_key(&self) -> Option<&IndexDef> {
        self.indexes.iter().find(|i| i.is_primary_key)
    }
    pub fn unique_indexes(&self) -> impl Iterator<Item = &IndexDef> {
        self.indexes.iter().filter(|i| i.is_unique)
    }
    pub fn identity_column(&self) -> Option<usize> {
        self.columns.iter().position(|c| c.identity.is_some())
    }
    pub fn is_heap(&self) -> bool {
        self.storage_key.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct SequenceDef {
    pub object_id: i32,
    pub schema_id: i32,
    pub name: String,
    pub ty: SqlType,
    pub start: i128,
    pub increment: i128,
    pub minimum: i128,
    pub maximum: i128,
    pub cycle: bool,
    pub cache_size: Option<i64>,
    pub current: Arc<Mutex<Option<i128>>>,
    pub created: NaiveDateTime,
}

/// CREATE TYPE name FROM base_type [NULL|NOT NULL].
#[derive(Debug, Clone)]
pub struct AliasTypeDef {
    pub user_type_id: i32,
    pub schema_id: i32,
    pub name: String,
    pub base: SqlType,
    pub nullable: bool,
}

/// A DDL trigger stored by CREATE TRIGGER … ON DATABASE. The CDC module gives it meaning.
#[derive(Debug, Clone)]
pub struct DdlTriggerDef {
    pub object_id: i32,
    pub name: String,
    /// Event names or groups as written, upper-cased (DDL_TABLE_EVENTS, ALTER_TABLE, …).
    pub events: Vec<String>,
    /// The body (statements after AS).
    pub body: String,
    pub definition: String,
    pub disabled: bool,
    pub created: NaiveDateTime,
}

#[derive(Debug, Clone)]
pub struct SchemaDef {
    pub schema_id: i32,
    pub name: String,
    pub principal_id: i32,
}

/// Recovery model of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryModel {
    Full,
    BulkLogged,
    Simple,
}

impl RecoveryModel {
    pub fn code(self) -> u8 {
        match self {
            RecoveryModel::Full => 1,
            RecoveryModel::BulkLogged => 2,
            RecoveryModel::Simple => 3,
        }
    }
    pub fn desc(self) -> &'static str {
        match self {
            RecoveryModel::Full => "FULL",
            RecoveryModel::BulkLogged => "BULK_LOGGED",
            RecoveryModel::Simple => "SIMPLE",
        }
    }
}

/// Database-level metadata (everything but row data).
#[derive(Debug, Clone)]
pub struct DatabaseDef {
    pub database_id: i32,
    pub name: String,
    pub owner_sid: Vec<u8>,
    pub created: NaiveDateTime,
    pub recovery: RecoveryModel,
    pub read_committed_snapshot: bool,
    pub allow_snapshot_isolation: bool,
    pub is_cdc_enabled: bool,
    pub schemas: BTreeMap<String, SchemaDef>,
    /// Keyed by lower-cased `schema.name`.
    pub tables: BTreeMap<String, Arc<TableDef>>,
    pub sequences: BTreeMap<String, Arc<SequenceDef>>,
    pub alias_types: BTreeMap<String, Arc<AliasTypeDef>>,
    pub ddl_triggers: Vec<Arc<DdlTriggerDef>>,
    /// Stored procedures created with CREATE PROCEDURE: lower-cased `schema.name` → body.
    pub procedures: BTreeMap<String, Arc<ProcedureDef>>,
    /// Views created with CREATE VIEW: lower-cased `schema.name` → definition.
    pub views: BTreeMap<String, Arc<ViewDef>>,
}

/// A view: a stored SELECT, planned again each time it is referenced.
#[derive(Debug, Clone)]
pub struct ViewDef {
    pub object_id: i32,
    pub schema_id: i32,
    pub schema: String,
    pub name: String,
    /// Column names given in `CREATE VIEW v (a, b) AS …` (empty: the SELECT's names).
    pub columns: Vec<String>,
    /// The SELECT after `AS` (without WITH CHECK OPTION).
    pub query: String,
    pub check_option: bool,
    /// The whole CREATE VIEW statement (sys.sql_modules.definition).
    pub definition: String,
    pub created: NaiveDateTime,
}

#[derive(Debug, Clone)]
pub struct ProcedureDef {
    pub object_id: i32,
    pub schema_id: i32,
    pub name: String,
    /// Parameter declarations: name (with @), type, default, output.
    pub params: Vec<(String, SqlType, Option<String>, bool)>,
    pub body: String,
    pub created: NaiveDateTime,
}

pub fn object_key(schema: &str, name: &str) -> String {
    format!("{}.{}", schema.to_lowercase(), name.to_lowercase())
}

impl DatabaseDef {
    pub fn schema(&self, name: &str) -> Option<&SchemaDef> {
        self.schemas.get(&name.to_lowercase())
    }
    pub fn schema_by_id(&self, id: i32) -> Option<&SchemaDef> {
        self.schemas.values().find(|s| s.schema_id == id)
    }
    pub fn table(&self, schema: &str, name: &str) -> Option<&Arc<TableDef>> {
        self.tables.get(&object_key(schema, name))
    }
    pub fn table_by_id(&self, object_id: i32) -> Option<&Arc<TableDef>> {
        self.tables.values().find(|t| t.object_id == object_id)
    }
}
