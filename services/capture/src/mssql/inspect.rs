//! Every catalog and CDC query the capture service sends, each a small documented function
//! with its SQL in a plain constant. This module is the contract a SQL Server (or the test
//! stand-in) must satisfy.
//!
//! Conventions:
//! - Queries run in the database the connection was opened in (pools are per database).
//! - `SERVERPROPERTY` and `sys.identity_columns`/`sys.sequences` values are `sql_variant`:
//!   they are always `CAST` (sqlserver-cdc.md §8.5).
//! - Results are read by column name with width-tolerant helpers ([`get_i64`] accepts any
//!   integer type), so the code does not depend on `int` vs `bigint` inference.
//! - Catalog views are read with simple queries and joined in Rust; this keeps every
//!   statement easy for any engine to plan.
//!
//! Microsoft docs: <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/catalog-views-transact-sql>,
//! CDC: <https://learn.microsoft.com/sql/relational-databases/system-tables/change-data-capture-tables-transact-sql>.

use std::collections::{BTreeMap, HashMap};

use dbsync_core::Lsn;
use dbsync_proto::v1::{
    CheckSchema, ColumnSchema, ForeignKeySchema, Identity, IndexColumn, IndexSchema,
    ObjectSelection, SequenceSchema, TableRef, TableSchema,
};
use tiberius::{ColumnData, Row, ToSql};

use crate::error::{CaptureError, Result};
use crate::mssql::client::SqlClient;
use crate::mssql::decode;
use crate::selection;

// ---------------------------------------------------------------------------------------------
// Row helpers

fn cell<'a>(row: &'a Row, name: &str) -> Result<&'a ColumnData<'static>> {
    row.get_column_data(name).map_err(|e| CaptureError::Decode {
        column: name.to_string(),
        detail: e.to_string(),
    })
}

/// Any integer, bit or scale-0 numeric column as i64.
pub fn get_i64(row: &Row, name: &str) -> Result<Option<i64>> {
    Ok(match cell(row, name)? {
        ColumnData::U8(v) => v.map(i64::from),
        ColumnData::I16(v) => v.map(i64::from),
        ColumnData::I32(v) => v.map(i64::from),
        ColumnData::I64(v) => *v,
        ColumnData::Bit(v) => v.map(i64::from),
        ColumnData::Numeric(v) => match v {
            Some(n) => Some(
                i64::try_from(n.int_part()).map_err(|_| CaptureError::Decode {
                    column: name.to_string(),
                    detail: "value does not fit in bigint".into(),
                })?,
            ),
            None => None,
        },
        ColumnData::String(None) => None,
        other => {
            return Err(CaptureError::Decode {
                column: name.to_string(),
                detail: format!("expected an integer, got {other:?}"),
            })
        }
    })
}

/// A bit or integer column as bool (NULL → false).
pub fn get_bool(row: &Row, name: &str) -> Result<bool> {
    Ok(get_i64(row, name)?.unwrap_or(0) != 0)
}

/// A character column (NULL → None).
pub fn get_string(row: &Row, name: &str) -> Result<Option<String>> {
    Ok(match cell(row, name)? {
        ColumnData::String(v) => v.as_ref().map(|s| s.to_string()),
        ColumnData::Xml(v) => v.as_ref().map(|x| x.as_ref().clone().into_string()),
        other if is_null(other) => None,
        other => {
            return Err(CaptureError::Decode {
                column: name.to_string(),
                detail: format!("expected text, got {other:?}"),
            })
        }
    })
}

/// A character column, NULL as empty.
pub fn get_text(row: &Row, name: &str) -> Result<String> {
    Ok(get_string(row, name)?.unwrap_or_default())
}

/// A binary column (NULL → None).
pub fn get_bytes(row: &Row, name: &str) -> Result<Option<Vec<u8>>> {
    Ok(match cell(row, name)? {
        ColumnData::Binary(v) => v.as_ref().map(|b| b.to_vec()),
        other if is_null(other) => None,
        other => {
            return Err(CaptureError::Decode {
                column: name.to_string(),
                detail: format!("expected binary, got {other:?}"),
            })
        }
    })
}

/// A binary(10) LSN column (NULL → None).
pub fn get_lsn(row: &Row, name: &str) -> Result<Option<Lsn>> {
    match get_bytes(row, name)? {
        None => Ok(None),
        Some(b) => Lsn::from_slice(&b)
            .map(Some)
            .ok_or_else(|| CaptureError::Decode {
                column: name.to_string(),
                detail: format!("an LSN has 10 bytes, got {}", b.len()),
            }),
    }
}

/// A datetime-family column as ticks since 0001-01-01 (NULL → None).
pub fn get_ticks(row: &Row, name: &str) -> Result<Option<i64>> {
    let c = cell(row, name)?;
    if is_null(c) {
        return Ok(None);
    }
    decode::datetime_column_ticks(c)
        .map(Some)
        .ok_or_else(|| CaptureError::Decode {
            column: name.to_string(),
            detail: format!("expected a datetime, got {c:?}"),
        })
}

fn is_null(c: &ColumnData<'static>) -> bool {
    decode::to_value(c.clone()).kind.is_none()
}

/// Runs a query and collects its first result set (catalog queries only: small results).
pub async fn query_rows(
    client: &mut SqlClient,
    context: &str,
    sql: &str,
    params: &[&dyn ToSql],
) -> Result<Vec<Row>> {
    let stream = client
        .query(sql, params)
        .await
        .map_err(|e| CaptureError::from_tiberius(context, e))?;
    stream
        .into_first_result()
        .await
        .map_err(|e| CaptureError::from_tiberius(context, e))
}

/// Runs a statement (procedure call, SET) and returns the affected row counts.
pub async fn execute(
    client: &mut SqlClient,
    context: &str,
    sql: &str,
    params: &[&dyn ToSql],
) -> Result<u64> {
    let result = client
        .execute(sql, params)
        .await
        .map_err(|e| CaptureError::from_tiberius(context, e))?;
    Ok(result.total())
}

/// Runs a batch without parameters (SET options that must outlive sp_executesql's scope).
pub async fn batch(client: &mut SqlClient, context: &str, sql: &str) -> Result<()> {
    let stream = client
        .simple_query(sql)
        .await
        .map_err(|e| CaptureError::from_tiberius(context, e))?;
    stream
        .into_results()
        .await
        .map_err(|e| CaptureError::from_tiberius(context, e))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Server and database properties

/// Version, edition and names of the server (SERVERPROPERTY is sql_variant, hence the CASTs).
/// <https://learn.microsoft.com/sql/t-sql/functions/serverproperty-transact-sql>
pub const SERVER_INFO_QUERY: &str = "SELECT @@VERSION AS version, \
     CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128)) AS product_version, \
     CAST(SERVERPROPERTY('Edition') AS nvarchar(128)) AS edition, \
     CAST(SERVERPROPERTY('EngineEdition') AS int) AS engine_edition, \
     CAST(SERVERPROPERTY('ServerName') AS nvarchar(128)) AS server_name";

/// The local server's name as `sys.servers` records it (`@@SERVERNAME`).
/// <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-servers-transact-sql>
pub const LOCAL_SERVER_NAME_QUERY: &str = "SELECT name FROM sys.servers WHERE server_id = 0";

#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    pub version: String,
    pub product_version: String,
    pub edition: String,
    /// 2 Standard, 3 Enterprise/Developer, 4 Express, 5 Azure SQL Database, 8 Managed Instance.
    pub engine_edition: i64,
    pub server_name: String,
}

impl ServerInfo {
    /// The major version (16 = SQL Server 2022), 0 when unknown.
    pub fn major_version(&self) -> u32 {
        self.product_version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }
}

pub async fn server_info(client: &mut SqlClient) -> Result<ServerInfo> {
    let rows = query_rows(client, "reading server properties", SERVER_INFO_QUERY, &[]).await?;
    let row = rows.first().ok_or_else(|| {
        CaptureError::Precondition("Server properties query returned no row".into())
    })?;
    Ok(ServerInfo {
        version: get_text(row, "version")?,
        product_version: get_text(row, "product_version")?,
        edition: get_text(row, "edition")?,
        engine_edition: get_i64(row, "engine_edition")?.unwrap_or(0),
        server_name: get_text(row, "server_name")?,
    })
}

/// `sys.servers` local name, None when the row is missing (sp_addserver never run).
pub async fn local_server_name(client: &mut SqlClient) -> Result<Option<String>> {
    let rows = query_rows(client, "reading sys.servers", LOCAL_SERVER_NAME_QUERY, &[]).await?;
    match rows.first() {
        Some(r) => get_string(r, "name"),
        None => Ok(None),
    }
}

/// User databases with the properties prechecks need.
/// <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-databases-transact-sql>
pub const DATABASES_QUERY: &str = "SELECT name, database_id, is_cdc_enabled, recovery_model_desc, \
     snapshot_isolation_state, is_read_committed_snapshot_on, SUSER_SNAME(owner_sid) AS owner_name, state_desc \
     FROM sys.databases WHERE database_id > 4 ORDER BY name";

/// The current database's row of the same shape.
pub const CURRENT_DATABASE_QUERY: &str = "SELECT name, database_id, is_cdc_enabled, recovery_model_desc, \
     snapshot_isolation_state, is_read_committed_snapshot_on, SUSER_SNAME(owner_sid) AS owner_name, state_desc \
     FROM sys.databases WHERE name = DB_NAME()";

#[derive(Debug, Clone, Default)]
pub struct DatabaseInfo {
    pub name: String,
    pub is_cdc_enabled: bool,
    pub recovery_model: String,
    /// `ALLOW_SNAPSHOT_ISOLATION` is ON (state 1).
    pub snapshot_isolation_on: bool,
    pub read_committed_snapshot_on: bool,
    /// NULL when the owner login no longer resolves.
    pub owner: Option<String>,
    pub state: String,
}

fn database_info(row: &Row) -> Result<DatabaseInfo> {
    Ok(DatabaseInfo {
        name: get_text(row, "name")?,
        is_cdc_enabled: get_bool(row, "is_cdc_enabled")?,
        recovery_model: get_text(row, "recovery_model_desc")?,
        snapshot_isolation_on: get_i64(row, "snapshot_isolation_state")? == Some(1),
        read_committed_snapshot_on: get_bool(row, "is_read_committed_snapshot_on")?,
        owner: get_string(row, "owner_name")?,
        state: get_text(row, "state_desc")?,
    })
}

pub async fn databases(client: &mut SqlClient) -> Result<Vec<DatabaseInfo>> {
    let rows = query_rows(client, "listing databases", DATABASES_QUERY, &[]).await?;
    rows.iter().map(database_info).collect()
}

pub async fn current_database(client: &mut SqlClient) -> Result<DatabaseInfo> {
    let rows = query_rows(
        client,
        "reading database properties",
        CURRENT_DATABASE_QUERY,
        &[],
    )
    .await?;
    rows.first().map(database_info).unwrap_or_else(|| {
        Err(CaptureError::Precondition(
            "The current database is not in sys.databases".into(),
        ))
    })
}

/// Role membership of the login: sysadmin on the server, db_owner in the current database.
/// <https://learn.microsoft.com/sql/t-sql/functions/is-srvrolemember-transact-sql>
pub const PERMISSIONS_QUERY: &str =
    "SELECT IS_SRVROLEMEMBER('sysadmin') AS is_sysadmin, IS_ROLEMEMBER('db_owner') AS is_db_owner";

pub async fn permissions(client: &mut SqlClient) -> Result<(bool, bool)> {
    let rows = query_rows(client, "reading role membership", PERMISSIONS_QUERY, &[]).await?;
    let row = rows.first().ok_or_else(|| {
        CaptureError::Precondition("Role membership query returned no row".into())
    })?;
    Ok((get_bool(row, "is_sysadmin")?, get_bool(row, "is_db_owner")?))
}

/// The newest log backup of the current database (CDC itself needs none; FULL recovery
/// without log backups grows the log without bound).
/// <https://learn.microsoft.com/sql/relational-databases/system-tables/backupset-transact-sql>
pub const LAST_LOG_BACKUP_QUERY: &str =
    "SELECT TOP (1) backup_finish_date FROM msdb.dbo.backupset \
     WHERE database_name = DB_NAME() AND type = 'L' ORDER BY backup_finish_date DESC";

/// Ticks of the last log backup's finish time, None when there was none.
pub async fn last_log_backup(client: &mut SqlClient) -> Result<Option<i64>> {
    let rows = query_rows(
        client,
        "reading msdb.dbo.backupset",
        LAST_LOG_BACKUP_QUERY,
        &[],
    )
    .await?;
    match rows.first() {
        Some(r) => get_ticks(r, "backup_finish_date"),
        None => Ok(None),
    }
}

/// SQL Server Agent's service status (needs VIEW SERVER STATE).
/// <https://learn.microsoft.com/sql/relational-databases/system-dynamic-management-views/sys-dm-server-services-transact-sql>
pub const AGENT_STATUS_QUERY: &str =
    "SELECT status_desc FROM sys.dm_server_services WHERE servicename LIKE N'SQL Server Agent%'";

/// `Some("Running")` etc.; None when the service row is absent (e.g. Azure SQL Database).
pub async fn agent_status(client: &mut SqlClient) -> Result<Option<String>> {
    let rows = query_rows(
        client,
        "reading SQL Server Agent status",
        AGENT_STATUS_QUERY,
        &[],
    )
    .await?;
    match rows.first() {
        Some(r) => get_string(r, "status_desc"),
        None => Ok(None),
    }
}

/// The CDC capture and cleanup job settings of the current database.
/// <https://learn.microsoft.com/sql/relational-databases/system-tables/dbo-cdc-jobs-transact-sql>
pub const CDC_JOBS_QUERY: &str =
    "SELECT job_type, maxtrans, maxscans, continuous, pollinginterval, retention, threshold \
     FROM msdb.dbo.cdc_jobs WHERE database_id = DB_ID()";

#[derive(Debug, Clone, Default)]
pub struct CdcJobs {
    /// Seconds between capture scans (default 5).
    pub polling_interval_seconds: Option<i64>,
    /// Minutes the cleanup job keeps change rows (default 4320).
    pub retention_minutes: Option<i64>,
    pub capture_job_exists: bool,
}

pub async fn cdc_jobs(client: &mut SqlClient) -> Result<CdcJobs> {
    let rows = query_rows(client, "reading msdb.dbo.cdc_jobs", CDC_JOBS_QUERY, &[]).await?;
    let mut jobs = CdcJobs::default();
    for r in &rows {
        match get_text(r, "job_type")?.trim() {
            "capture" => {
                jobs.capture_job_exists = true;
                jobs.polling_interval_seconds = get_i64(r, "pollinginterval")?;
            }
            "cleanup" => jobs.retention_minutes = get_i64(r, "retention")?,
            _ => {}
        }
    }
    Ok(jobs)
}

/// `max text repl size`: the largest LOB one statement may write to a captured column
/// (default 65536; -1 = unlimited). <https://learn.microsoft.com/sql/database-engine/configure-windows/configure-the-max-text-repl-size-server-configuration-option>
pub const MAX_TEXT_REPL_SIZE_QUERY: &str =
    "SELECT CAST(value_in_use AS int) AS value_in_use FROM sys.configurations WHERE name = N'max text repl size (B)'";

pub async fn max_text_repl_size(client: &mut SqlClient) -> Result<Option<i64>> {
    let rows = query_rows(
        client,
        "reading max text repl size",
        MAX_TEXT_REPL_SIZE_QUERY,
        &[],
    )
    .await?;
    match rows.first() {
        Some(r) => get_i64(r, "value_in_use"),
        None => Ok(None),
    }
}

// ---------------------------------------------------------------------------------------------
// Tables and their parts

/// User tables of the current database (not the `cdc` schema, not system-shipped).
/// <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-tables-transact-sql>
pub const TABLES_QUERY: &str =
    "SELECT t.object_id, s.name AS schema_name, t.name AS table_name, t.is_tracked_by_cdc \
     FROM sys.tables AS t JOIN sys.schemas AS s ON s.schema_id = t.schema_id \
     WHERE t.is_ms_shipped = 0 AND s.name <> N'cdc' ORDER BY s.name, t.name";

/// A table as listed by [`TABLES_QUERY`].
#[derive(Debug, Clone)]
pub struct TableRow {
    pub object_id: i64,
    pub schema: String,
    pub name: String,
    pub is_tracked_by_cdc: bool,
}

pub async fn tables(client: &mut SqlClient) -> Result<Vec<TableRow>> {
    let rows = query_rows(client, "listing tables", TABLES_QUERY, &[]).await?;
    rows.iter()
        .map(|r| {
            Ok(TableRow {
                object_id: get_i64(r, "object_id")?.unwrap_or(0),
                schema: get_text(r, "schema_name")?,
                name: get_text(r, "table_name")?,
                is_tracked_by_cdc: get_bool(r, "is_tracked_by_cdc")?,
            })
        })
        .collect()
}

/// Columns of user tables. Alias types resolve to their base type (`sys.types` by
/// `system_type_id`), CLR types keep their own name. Identity, default and computed details
/// come from the queries below and are joined in Rust.
/// <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-columns-transact-sql>
pub const COLUMNS_QUERY: &str = "SELECT c.object_id, c.column_id, c.name, c.system_type_id, c.user_type_id, ut.name AS user_type_name, \
     ut.is_user_defined, ut.is_assembly_type, c.max_length, c.precision, c.scale, c.is_nullable, c.collation_name, \
     c.is_identity, c.is_computed, c.is_sparse, c.is_rowguidcol, c.default_object_id \
     FROM sys.columns AS c JOIN sys.tables AS t ON t.object_id = c.object_id \
     JOIN sys.types AS ut ON ut.user_type_id = c.user_type_id \
     WHERE t.is_ms_shipped = 0 ORDER BY c.object_id, c.column_id";

/// Type names by id (to resolve alias types to their base type).
/// <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-types-transact-sql>
pub const TYPES_QUERY: &str = "SELECT user_type_id, name FROM sys.types";

/// Identity seed, increment and last value (sql_variant, hence CAST).
/// <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-identity-columns-transact-sql>
pub const IDENTITY_COLUMNS_QUERY: &str = "SELECT object_id, column_id, CAST(seed_value AS bigint) AS seed_value, \
     CAST(increment_value AS bigint) AS increment_value, CAST(last_value AS bigint) AS last_value FROM sys.identity_columns";

/// Default constraints. <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-default-constraints-transact-sql>
pub const DEFAULTS_QUERY: &str = "SELECT object_id, name, definition FROM sys.default_constraints";

/// Computed column definitions. <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-computed-columns-transact-sql>
pub const COMPUTED_COLUMNS_QUERY: &str =
    "SELECT object_id, column_id, definition, is_persisted FROM sys.computed_columns";

/// What [`column_schema`] needs besides the column row.
#[derive(Default)]
struct ColumnDetails {
    type_names: HashMap<i64, String>,
    identity: HashMap<(i64, i64), Identity>,
    defaults: HashMap<i64, (String, String)>,
    computed: HashMap<(i64, i64), (String, bool)>,
}

fn column_schema(r: &Row, details: &ColumnDetails) -> Result<ColumnSchema> {
    let object_id = get_i64(r, "object_id")?.unwrap_or(0);
    let column_id = get_i64(r, "column_id")?.unwrap_or(0);
    let user_type = get_text(r, "user_type_name")?;
    let is_user_defined = get_bool(r, "is_user_defined")?;
    let is_assembly = get_bool(r, "is_assembly_type")?;
    let base = get_i64(r, "system_type_id")?.and_then(|id| details.type_names.get(&id).cloned());
    // Types shipped with SQL Server have user_type_id <= 256; hierarchyid, geometry and
    // geography are CLR types among them (sys.types may flag them user-defined).
    let built_in = get_i64(r, "user_type_id")?.is_some_and(|id| id <= 256);
    let (type_name, user_type_name) = if is_assembly && built_in {
        (user_type.clone(), String::new())
    } else if is_assembly {
        ("clr_udt".to_string(), user_type.clone())
    } else if is_user_defined {
        (base.unwrap_or_else(|| user_type.clone()), user_type.clone())
    } else if user_type == "sysname" {
        ("nvarchar".to_string(), "sysname".to_string())
    } else {
        (user_type.clone(), String::new())
    };
    let identity = if get_bool(r, "is_identity")? {
        Some(
            details
                .identity
                .get(&(object_id, column_id))
                .cloned()
                .unwrap_or(Identity {
                    seed: 1,
                    increment: 1,
                    last_value: None,
                }),
        )
    } else {
        None
    };
    let (default_name, default_definition) = get_i64(r, "default_object_id")?
        .and_then(|id| details.defaults.get(&id).cloned())
        .unwrap_or_default();
    let (computed_definition, computed_persisted) = if get_bool(r, "is_computed")? {
        details
            .computed
            .get(&(object_id, column_id))
            .cloned()
            .unwrap_or_default()
    } else {
        (String::new(), false)
    };
    Ok(ColumnSchema {
        name: get_text(r, "name")?,
        column_id: i32::try_from(column_id).unwrap_or(0),
        type_name,
        max_length: i32::try_from(get_i64(r, "max_length")?.unwrap_or(0)).unwrap_or(0),
        precision: i32::try_from(get_i64(r, "precision")?.unwrap_or(0)).unwrap_or(0),
        scale: i32::try_from(get_i64(r, "scale")?.unwrap_or(0)).unwrap_or(0),
        nullable: get_bool(r, "is_nullable")?,
        collation: get_text(r, "collation_name")?,
        identity,
        default_definition,
        default_name,
        computed_definition,
        computed_persisted,
        user_type_name,
        is_rowguidcol: get_bool(r, "is_rowguidcol")?,
        is_sparse: get_bool(r, "is_sparse")?,
    })
}

async fn column_details(client: &mut SqlClient) -> Result<ColumnDetails> {
    let mut d = ColumnDetails::default();
    for r in &query_rows(client, "reading sys.types", TYPES_QUERY, &[]).await? {
        d.type_names.insert(
            get_i64(r, "user_type_id")?.unwrap_or(0),
            get_text(r, "name")?,
        );
    }
    for r in &query_rows(
        client,
        "reading sys.identity_columns",
        IDENTITY_COLUMNS_QUERY,
        &[],
    )
    .await?
    {
        d.identity.insert(
            (
                get_i64(r, "object_id")?.unwrap_or(0),
                get_i64(r, "column_id")?.unwrap_or(0),
            ),
            Identity {
                seed: get_i64(r, "seed_value")?.unwrap_or(1),
                increment: get_i64(r, "increment_value")?.unwrap_or(1),
                last_value: get_i64(r, "last_value")?,
            },
        );
    }
    for r in &query_rows(
        client,
        "reading sys.default_constraints",
        DEFAULTS_QUERY,
        &[],
    )
    .await?
    {
        d.defaults.insert(
            get_i64(r, "object_id")?.unwrap_or(0),
            (get_text(r, "name")?, get_text(r, "definition")?),
        );
    }
    for r in &query_rows(
        client,
        "reading sys.computed_columns",
        COMPUTED_COLUMNS_QUERY,
        &[],
    )
    .await?
    {
        d.computed.insert(
            (
                get_i64(r, "object_id")?.unwrap_or(0),
                get_i64(r, "column_id")?.unwrap_or(0),
            ),
            (get_text(r, "definition")?, get_bool(r, "is_persisted")?),
        );
    }
    Ok(d)
}

/// Columns of every user table, by object_id, in column order.
pub async fn columns(client: &mut SqlClient) -> Result<HashMap<i64, Vec<ColumnSchema>>> {
    let details = column_details(client).await?;
    let rows = query_rows(client, "reading columns", COLUMNS_QUERY, &[]).await?;
    let mut out: HashMap<i64, Vec<ColumnSchema>> = HashMap::new();
    for r in &rows {
        out.entry(get_i64(r, "object_id")?.unwrap_or(0))
            .or_default()
            .push(column_schema(r, &details)?);
    }
    Ok(out)
}

/// Indexes (not heaps, not hypothetical). type 1 = clustered, 5 = clustered columnstore.
/// <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-indexes-transact-sql>
pub const INDEXES_QUERY: &str =
    "SELECT i.object_id, i.index_id, i.name, i.type, i.is_primary_key, i.is_unique, \
     i.is_unique_constraint, i.is_disabled, i.has_filter, i.filter_definition \
     FROM sys.indexes AS i JOIN sys.tables AS t ON t.object_id = i.object_id \
     WHERE i.type > 0 AND i.is_hypothetical = 0 AND t.is_ms_shipped = 0 \
     ORDER BY i.object_id, i.index_id";

/// Index columns: keys in key order, then included columns.
/// <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-index-columns-transact-sql>
pub const INDEX_COLUMNS_QUERY: &str = "SELECT ic.object_id, ic.index_id, c.name, ic.key_ordinal, \
     ic.is_descending_key, ic.is_included_column, ic.index_column_id \
     FROM sys.index_columns AS ic JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id \
     ORDER BY ic.object_id, ic.index_id, ic.is_included_column, ic.key_ordinal, ic.index_column_id";

/// Indexes by object_id, in index_id order (the PK or clustered index first is not assumed).
pub async fn indexes(client: &mut SqlClient) -> Result<HashMap<i64, Vec<IndexSchema>>> {
    let rows = query_rows(client, "reading indexes", INDEXES_QUERY, &[]).await?;
    let col_rows = query_rows(client, "reading index columns", INDEX_COLUMNS_QUERY, &[]).await?;
    let mut cols: HashMap<(i64, i64), Vec<IndexColumn>> = HashMap::new();
    for r in &col_rows {
        let key = (
            get_i64(r, "object_id")?.unwrap_or(0),
            get_i64(r, "index_id")?.unwrap_or(0),
        );
        let included = get_bool(r, "is_included_column")?;
        // Nonclustered indexes list the clustering key with key_ordinal 0 and not included:
        // those are not columns of the index definition.
        if !included && get_i64(r, "key_ordinal")?.unwrap_or(0) == 0 {
            continue;
        }
        cols.entry(key).or_default().push(IndexColumn {
            name: get_text(r, "name")?,
            descending: get_bool(r, "is_descending_key")?,
            included,
        });
    }
    let mut out: HashMap<i64, Vec<IndexSchema>> = HashMap::new();
    for r in &rows {
        let object_id = get_i64(r, "object_id")?.unwrap_or(0);
        let index_id = get_i64(r, "index_id")?.unwrap_or(0);
        let kind = get_i64(r, "type")?.unwrap_or(0);
        out.entry(object_id).or_default().push(IndexSchema {
            name: get_text(r, "name")?,
            is_primary_key: get_bool(r, "is_primary_key")?,
            is_unique: get_bool(r, "is_unique")?,
            is_unique_constraint: get_bool(r, "is_unique_constraint")?,
            clustered: kind == 1 || kind == 5,
            columns: cols.remove(&(object_id, index_id)).unwrap_or_default(),
            filter_definition: if get_bool(r, "has_filter")? {
                get_text(r, "filter_definition")?
            } else {
                String::new()
            },
            disabled: get_bool(r, "is_disabled")?,
        });
    }
    Ok(out)
}

/// Foreign keys with their referenced table and actions.
/// <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-foreign-keys-transact-sql>
pub const FOREIGN_KEYS_QUERY: &str = "SELECT fk.object_id, fk.parent_object_id, fk.name, rs.name AS referenced_schema, \
     rt.name AS referenced_table, fk.delete_referential_action_desc, fk.update_referential_action_desc, \
     fk.is_disabled, fk.is_not_trusted \
     FROM sys.foreign_keys AS fk JOIN sys.tables AS rt ON rt.object_id = fk.referenced_object_id \
     JOIN sys.schemas AS rs ON rs.schema_id = rt.schema_id ORDER BY fk.parent_object_id, fk.name";

/// Foreign key column pairs in constraint order.
pub const FOREIGN_KEY_COLUMNS_QUERY: &str = "SELECT fkc.constraint_object_id, fkc.constraint_column_id, \
     pc.name AS column_name, rc.name AS referenced_column_name \
     FROM sys.foreign_key_columns AS fkc \
     JOIN sys.columns AS pc ON pc.object_id = fkc.parent_object_id AND pc.column_id = fkc.parent_column_id \
     JOIN sys.columns AS rc ON rc.object_id = fkc.referenced_object_id AND rc.column_id = fkc.referenced_column_id \
     ORDER BY fkc.constraint_object_id, fkc.constraint_column_id";

/// Foreign keys by the referencing table's object_id.
pub async fn foreign_keys(
    client: &mut SqlClient,
    database: &str,
) -> Result<HashMap<i64, Vec<ForeignKeySchema>>> {
    let rows = query_rows(client, "reading foreign keys", FOREIGN_KEYS_QUERY, &[]).await?;
    let col_rows = query_rows(
        client,
        "reading foreign key columns",
        FOREIGN_KEY_COLUMNS_QUERY,
        &[],
    )
    .await?;
    let mut cols: HashMap<i64, (Vec<String>, Vec<String>)> = HashMap::new();
    for r in &col_rows {
        let e = cols
            .entry(get_i64(r, "constraint_object_id")?.unwrap_or(0))
            .or_default();
        e.0.push(get_text(r, "column_name")?);
        e.1.push(get_text(r, "referenced_column_name")?);
    }
    let mut out: HashMap<i64, Vec<ForeignKeySchema>> = HashMap::new();
    for r in &rows {
        let (columns, referenced_columns) = cols
            .remove(&get_i64(r, "object_id")?.unwrap_or(0))
            .unwrap_or_default();
        out.entry(get_i64(r, "parent_object_id")?.unwrap_or(0))
            .or_default()
            .push(ForeignKeySchema {
                name: get_text(r, "name")?,
                columns,
                referenced_table: Some(TableRef {
                    database: database.to_string(),
                    schema: get_text(r, "referenced_schema")?,
                    name: get_text(r, "referenced_table")?,
                }),
                referenced_columns,
                on_delete: get_text(r, "delete_referential_action_desc")?,
                on_update: get_text(r, "update_referential_action_desc")?,
                disabled: get_bool(r, "is_disabled")?,
                not_trusted: get_bool(r, "is_not_trusted")?,
            });
    }
    Ok(out)
}

/// CHECK constraints. <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-check-constraints-transact-sql>
pub const CHECKS_QUERY: &str =
    "SELECT cc.parent_object_id, cc.name, cc.definition, cc.is_disabled FROM sys.check_constraints AS cc ORDER BY cc.parent_object_id, cc.name";

pub async fn checks(client: &mut SqlClient) -> Result<HashMap<i64, Vec<CheckSchema>>> {
    let rows = query_rows(client, "reading check constraints", CHECKS_QUERY, &[]).await?;
    let mut out: HashMap<i64, Vec<CheckSchema>> = HashMap::new();
    for r in &rows {
        out.entry(get_i64(r, "parent_object_id")?.unwrap_or(0))
            .or_default()
            .push(CheckSchema {
                name: get_text(r, "name")?,
                definition: get_text(r, "definition")?,
                disabled: get_bool(r, "is_disabled")?,
            });
    }
    Ok(out)
}

/// Approximate row counts (heap or clustered index partitions) and the data compression of
/// the first partition. <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-partitions-transact-sql>
pub const PARTITIONS_QUERY: &str = "SELECT p.object_id, SUM(p.rows) AS row_count, MAX(p.data_compression_desc) AS data_compression \
     FROM sys.partitions AS p WHERE p.index_id IN (0, 1) GROUP BY p.object_id";

pub async fn partitions(client: &mut SqlClient) -> Result<HashMap<i64, (i64, String)>> {
    let rows = query_rows(client, "reading sys.partitions", PARTITIONS_QUERY, &[]).await?;
    let mut out = HashMap::new();
    for r in &rows {
        out.insert(
            get_i64(r, "object_id")?.unwrap_or(0),
            (
                get_i64(r, "row_count")?.unwrap_or(0),
                get_text(r, "data_compression")?,
            ),
        );
    }
    Ok(out)
}

/// Sequences (values are sql_variant, hence CAST). <https://learn.microsoft.com/sql/relational-databases/system-catalog-views/sys-sequences-transact-sql>
pub const SEQUENCES_QUERY: &str = "SELECT s.name AS schema_name, sq.name, TYPE_NAME(sq.system_type_id) AS type_name, \
     CAST(sq.start_value AS bigint) AS start_value, CAST(sq.increment AS bigint) AS increment, \
     CAST(sq.minimum_value AS bigint) AS minimum_value, CAST(sq.maximum_value AS bigint) AS maximum_value, \
     CAST(sq.current_value AS bigint) AS current_value, sq.is_cycling, sq.is_exhausted \
     FROM sys.sequences AS sq JOIN sys.schemas AS s ON s.schema_id = sq.schema_id ORDER BY s.name, sq.name";

pub async fn sequences(client: &mut SqlClient, database: &str) -> Result<Vec<SequenceSchema>> {
    let rows = query_rows(client, "reading sequences", SEQUENCES_QUERY, &[]).await?;
    rows.iter()
        .map(|r| {
            Ok(SequenceSchema {
                database: database.to_string(),
                schema: get_text(r, "schema_name")?,
                name: get_text(r, "name")?,
                type_name: get_text(r, "type_name")?,
                start_value: get_i64(r, "start_value")?.unwrap_or(0),
                increment: get_i64(r, "increment")?.unwrap_or(1),
                minimum_value: get_i64(r, "minimum_value")?.unwrap_or(0),
                maximum_value: get_i64(r, "maximum_value")?.unwrap_or(0),
                current_value: get_i64(r, "current_value")?.unwrap_or(0),
                is_cycling: get_bool(r, "is_cycling")?,
                is_exhausted: get_bool(r, "is_exhausted")?,
            })
        })
        .collect()
}

/// The columns that identify a row: the primary key, else the first enabled, unfiltered unique
/// index whose key columns are all NOT NULL. Returns `(columns, key_source)`.
pub fn choose_key(columns: &[ColumnSchema], indexes: &[IndexSchema]) -> (Vec<String>, String) {
    let key_of = |i: &IndexSchema| {
        i.columns
            .iter()
            .filter(|c| !c.included)
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
    };
    if let Some(pk) = indexes.iter().find(|i| i.is_primary_key && !i.disabled) {
        return (key_of(pk), "primary_key".to_string());
    }
    let not_null = |name: &str| columns.iter().any(|c| c.name == name && !c.nullable);
    for index in indexes
        .iter()
        .filter(|i| i.is_unique && !i.disabled && i.filter_definition.is_empty())
    {
        let key = key_of(index);
        if !key.is_empty() && key.iter().all(|k| not_null(k)) {
            return (key, format!("unique_index:{}", index.name));
        }
    }
    (Vec::new(), String::new())
}

/// The full schema of the selected tables of the current database, plus its sequences.
pub async fn read_schema(
    client: &mut SqlClient,
    database: &str,
    selection: &ObjectSelection,
) -> Result<(Vec<TableSchema>, Vec<SequenceSchema>)> {
    let selected: Vec<TableRow> = tables(client)
        .await?
        .into_iter()
        .filter(|t| selection::is_selected(selection, database, &t.schema, &t.name))
        .collect();
    let mut columns = columns(client).await?;
    let mut indexes = indexes(client).await?;
    let mut fks = foreign_keys(client, database).await?;
    let mut checks = checks(client).await?;
    let partitions = partitions(client).await?;
    let sequences = sequences(client, database).await?;
    let mut out = Vec::with_capacity(selected.len());
    for t in selected {
        let cols = columns.remove(&t.object_id).unwrap_or_default();
        let idx = indexes.remove(&t.object_id).unwrap_or_default();
        let (key_columns, key_source) = choose_key(&cols, &idx);
        let (rows, compression) = partitions.get(&t.object_id).cloned().unwrap_or_default();
        out.push(TableSchema {
            table: Some(TableRef {
                database: database.to_string(),
                schema: t.schema,
                name: t.name,
            }),
            columns: cols,
            indexes: idx,
            foreign_keys: fks.remove(&t.object_id).unwrap_or_default(),
            checks: checks.remove(&t.object_id).unwrap_or_default(),
            key_columns,
            key_source,
            approximate_rows: rows,
            is_tracked_by_cdc: t.is_tracked_by_cdc,
            data_compression: if compression.is_empty() {
                "NONE".into()
            } else {
                compression
            },
            object_id: i32::try_from(t.object_id).unwrap_or(0),
        });
    }
    Ok((out, sequences))
}

// ---------------------------------------------------------------------------------------------
// CDC state

/// The database's CDC high-water mark: `MAX(start_lsn)` of `cdc.lsn_time_mapping` as the
/// capture job has harvested it; NULL when the capture job never ran. Also the server's UTC
/// time and its current offset (for commit-time conversion of `tran_end_time`, which is local
/// time). <https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-get-max-lsn-transact-sql>
pub const MAX_LSN_QUERY: &str =
    "SELECT sys.fn_cdc_get_max_lsn() AS max_lsn, SYSUTCDATETIME() AS utc_now, \
     DATEPART(TZOFFSET, SYSDATETIMEOFFSET()) AS tz_offset_minutes";

#[derive(Debug, Clone, Copy, Default)]
pub struct MaxLsn {
    pub lsn: Option<Lsn>,
    /// Server time in ticks since 0001-01-01 UTC.
    pub utc_now_ticks: i64,
    /// Server's current offset from UTC in minutes.
    pub tz_offset_minutes: i64,
}

pub async fn max_lsn(client: &mut SqlClient) -> Result<MaxLsn> {
    let rows = query_rows(
        client,
        "reading sys.fn_cdc_get_max_lsn()",
        MAX_LSN_QUERY,
        &[],
    )
    .await?;
    let r = rows
        .first()
        .ok_or_else(|| CaptureError::Precondition("fn_cdc_get_max_lsn returned no row".into()))?;
    Ok(MaxLsn {
        lsn: get_lsn(r, "max_lsn")?,
        utc_now_ticks: get_ticks(r, "utc_now")?.unwrap_or(0),
        tz_offset_minutes: get_i64(r, "tz_offset_minutes")?.unwrap_or(0),
    })
}

/// The largest commit LSN at or before a server-local time.
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-map-time-to-lsn-transact-sql>
pub const TIME_TO_LSN_QUERY: &str =
    "SELECT sys.fn_cdc_map_time_to_lsn(N'largest less than or equal', CAST(@P1 AS datetime)) AS lsn";

/// `local_ticks` is server local time in ticks since 0001-01-01.
pub async fn lsn_at_time(client: &mut SqlClient, local_ticks: i64) -> Result<Option<Lsn>> {
    let t = decode::to_param(&dbsync_proto::v1::Value {
        kind: Some(dbsync_proto::v1::value::Kind::Datetime(local_ticks)),
    })?;
    let rows = query_rows(client, "mapping a time to an LSN", TIME_TO_LSN_QUERY, &[&t]).await?;
    match rows.first() {
        Some(r) => get_lsn(r, "lsn"),
        None => Ok(None),
    }
}

/// Fallback position when CDC is not enabled yet: the database's current log position from
/// the newest log record, `sys.fn_dblog` is undocumented, so dbsync uses the documented
/// `sys.dm_db_log_stats(DB_ID()).log_end_lsn` (numeric(25,0) text, SQL Server 2016 SP2+).
/// <https://learn.microsoft.com/sql/relational-databases/system-dynamic-management-views/sys-dm-db-log-stats-transact-sql>
pub const LOG_END_LSN_QUERY: &str = "SELECT log_end_lsn FROM sys.dm_db_log_stats(DB_ID())";

/// Parses the decimal `VLF * 10^15 + block * 10^5 + slot` form of an LSN.
pub fn lsn_from_decimal(text: &str) -> Option<Lsn> {
    let v: u128 = text.trim().parse().ok()?;
    let vlf = u32::try_from(v / 1_000_000_000_000_000).ok()?;
    let block = u32::try_from((v / 100_000) % 10_000_000_000).ok()?;
    let slot = u16::try_from(v % 100_000).ok()?;
    let mut b = [0u8; 10];
    b[..4].copy_from_slice(&vlf.to_be_bytes());
    b[4..8].copy_from_slice(&block.to_be_bytes());
    b[8..].copy_from_slice(&slot.to_be_bytes());
    Some(Lsn(b))
}

pub async fn log_end_lsn(client: &mut SqlClient) -> Result<Option<Lsn>> {
    let rows = query_rows(
        client,
        "reading sys.dm_db_log_stats",
        LOG_END_LSN_QUERY,
        &[],
    )
    .await?;
    match rows.first() {
        Some(r) => Ok(get_string(r, "log_end_lsn")?.and_then(|s| lsn_from_decimal(&s))),
        None => Ok(None),
    }
}

/// Capture instances of the current database with their source table.
/// `start_lsn` is the low end of the instance's validity interval (what
/// `sys.fn_cdc_get_min_lsn` returns); the cleanup job raises it.
/// <https://learn.microsoft.com/sql/relational-databases/system-tables/cdc-change-tables-transact-sql>
pub const CAPTURE_INSTANCES_QUERY: &str = "SELECT ct.object_id, ct.source_object_id, ct.capture_instance, ct.start_lsn, \
     ct.create_date, s.name AS schema_name, t.name AS table_name \
     FROM cdc.change_tables AS ct JOIN sys.tables AS t ON t.object_id = ct.source_object_id \
     JOIN sys.schemas AS s ON s.schema_id = t.schema_id ORDER BY ct.source_object_id, ct.create_date";

/// One capture instance.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureInstance {
    pub object_id: i64,
    pub source_object_id: i64,
    pub name: String,
    /// None until the capture process has set it.
    pub start_lsn: Option<Lsn>,
    pub create_ticks: i64,
    pub schema: String,
    pub table: String,
}

pub async fn capture_instances(client: &mut SqlClient) -> Result<Vec<CaptureInstance>> {
    let rows = query_rows(
        client,
        "reading cdc.change_tables",
        CAPTURE_INSTANCES_QUERY,
        &[],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(CaptureInstance {
                object_id: get_i64(r, "object_id")?.unwrap_or(0),
                source_object_id: get_i64(r, "source_object_id")?.unwrap_or(0),
                name: get_text(r, "capture_instance")?,
                start_lsn: get_lsn(r, "start_lsn")?,
                create_ticks: get_ticks(r, "create_date")?.unwrap_or(0),
                schema: get_text(r, "schema_name")?,
                table: get_text(r, "table_name")?,
            })
        })
        .collect()
}

/// Captured columns of every instance in `column_ordinal` order (the ordinal is the bit in
/// `__$update_mask`). `object_id` is the change table's id (as Debezium joins it).
/// <https://learn.microsoft.com/sql/relational-databases/system-tables/cdc-captured-columns-transact-sql>
pub const CAPTURED_COLUMNS_QUERY: &str = "SELECT ct.capture_instance, cc.column_name, cc.column_ordinal, cc.column_type, \
     cc.is_computed FROM cdc.captured_columns AS cc JOIN cdc.change_tables AS ct ON ct.object_id = cc.object_id \
     ORDER BY ct.capture_instance, cc.column_ordinal";

/// A captured column.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedColumn {
    pub name: String,
    pub ordinal: i64,
    pub type_name: String,
    pub is_computed: bool,
}

pub async fn captured_columns(
    client: &mut SqlClient,
) -> Result<BTreeMap<String, Vec<CapturedColumn>>> {
    let rows = query_rows(
        client,
        "reading cdc.captured_columns",
        CAPTURED_COLUMNS_QUERY,
        &[],
    )
    .await?;
    let mut out: BTreeMap<String, Vec<CapturedColumn>> = BTreeMap::new();
    for r in &rows {
        out.entry(get_text(r, "capture_instance")?)
            .or_default()
            .push(CapturedColumn {
                name: get_text(r, "column_name")?,
                ordinal: get_i64(r, "column_ordinal")?.unwrap_or(0),
                type_name: get_text(r, "column_type")?,
                is_computed: get_bool(r, "is_computed")?,
            });
    }
    Ok(out)
}

/// Schema changes of tracked tables recorded by the capture process, in LSN order.
/// <https://learn.microsoft.com/sql/relational-databases/system-tables/cdc-ddl-history-transact-sql>
pub const DDL_HISTORY_QUERY: &str = "SELECT ct.capture_instance, dh.ddl_command, dh.ddl_lsn \
     FROM cdc.ddl_history AS dh JOIN cdc.change_tables AS ct ON ct.object_id = dh.object_id \
     WHERE dh.ddl_lsn >= @P1 AND dh.ddl_lsn <= @P2 ORDER BY dh.ddl_lsn";

/// A DDL statement on a tracked table: `(capture instance, command, LSN)`.
pub async fn ddl_history(
    client: &mut SqlClient,
    from: Lsn,
    to: Lsn,
) -> Result<Vec<(String, String, Lsn)>> {
    let f = ColumnData::Binary(Some(from.as_bytes().to_vec().into()));
    let t = ColumnData::Binary(Some(to.as_bytes().to_vec().into()));
    let rows = query_rows(
        client,
        "reading cdc.ddl_history",
        DDL_HISTORY_QUERY,
        &[&f, &t],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        if let Some(lsn) = get_lsn(r, "ddl_lsn")? {
            out.push((
                get_text(r, "capture_instance")?,
                get_text(r, "ddl_command")?,
                lsn,
            ));
        }
    }
    Ok(out)
}

/// Commit times of the transactions with commit LSN in `[@P2, @P3]`, at most `@P1` of them.
/// `tran_end_time` is server local time (`datetime`).
/// <https://learn.microsoft.com/sql/relational-databases/system-tables/cdc-lsn-time-mapping-transact-sql>
pub const COMMIT_TIMES_QUERY: &str =
    "SELECT TOP (@P1) start_lsn, tran_end_time FROM cdc.lsn_time_mapping \
     WHERE start_lsn >= @P2 AND start_lsn <= @P3 ORDER BY start_lsn";

/// `(commit LSN, local tran_end_time ticks)` from `from` on, up to `limit` transactions.
pub async fn commit_times(
    client: &mut SqlClient,
    from: Lsn,
    to: Lsn,
    limit: i64,
) -> Result<Vec<(Lsn, i64)>> {
    let top = ColumnData::I64(Some(limit));
    let f = ColumnData::Binary(Some(from.as_bytes().to_vec().into()));
    let t = ColumnData::Binary(Some(to.as_bytes().to_vec().into()));
    let rows = query_rows(
        client,
        "reading cdc.lsn_time_mapping",
        COMMIT_TIMES_QUERY,
        &[&top, &f, &t],
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        if let (Some(lsn), Some(ticks)) = (get_lsn(r, "start_lsn")?, get_ticks(r, "tran_end_time")?)
        {
            out.push((lsn, ticks));
        }
    }
    Ok(out)
}

/// The low end of one instance's validity interval; all zeros when the instance does not
/// exist or the caller may not read it.
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-get-min-lsn-transact-sql>
pub const MIN_LSN_QUERY: &str = "SELECT sys.fn_cdc_get_min_lsn(@P1) AS min_lsn";

pub async fn min_lsn(client: &mut SqlClient, capture_instance: &str) -> Result<Option<Lsn>> {
    let name = capture_instance.to_string();
    let rows = query_rows(
        client,
        "reading sys.fn_cdc_get_min_lsn",
        MIN_LSN_QUERY,
        &[&name],
    )
    .await?;
    match rows.first() {
        Some(r) => Ok(get_lsn(r, "min_lsn")?.filter(|l| *l != Lsn::ZERO)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, nullable: bool) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            nullable,
            ..Default::default()
        }
    }

    fn index(name: &str, pk: bool, unique: bool, cols: &[&str]) -> IndexSchema {
        IndexSchema {
            name: name.into(),
            is_primary_key: pk,
            is_unique: unique || pk,
            columns: cols
                .iter()
                .map(|c| IndexColumn {
                    name: c.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn primary_key_wins_then_first_not_null_unique_index() {
        let cols = vec![col("id", false), col("email", true), col("code", false)];
        let with_pk = vec![
            index("ux_code", false, true, &["code"]),
            index("pk", true, true, &["id"]),
        ];
        assert_eq!(
            choose_key(&cols, &with_pk),
            (vec!["id".to_string()], "primary_key".to_string())
        );
        let no_pk = vec![
            index("ux_email", false, true, &["email"]),
            index("ux_code", false, true, &["code"]),
        ];
        assert_eq!(
            choose_key(&cols, &no_pk),
            (vec!["code".to_string()], "unique_index:ux_code".to_string())
        );
        let mut filtered = index("ux_f", false, true, &["code"]);
        filtered.filter_definition = "([code]>(0))".into();
        assert_eq!(choose_key(&cols, &[filtered]), (vec![], String::new()));
    }

    #[test]
    fn decimal_lsns_split_into_vlf_block_slot() {
        let l = lsn_from_decimal("45000000001600001").unwrap();
        assert_eq!(l.to_hex(), "0000002D000000100001");
        assert!(lsn_from_decimal("x").is_none());
    }
}
