//! Source prechecks: each a pass/warn/fail item with the object it concerns, what was found
//! and how to fix it. Checks that need a permission the login lacks report a warning that
//! says so instead of failing the whole precheck.

use std::collections::BTreeMap;

use dbsync_proto::v1::{
    ObjectSelection, PrecheckItem, PrecheckReport, PrecheckStatus, SourcePrecheckRequest,
    TableSchema,
};

use crate::error::{CaptureError, Result};
use crate::mssql::client::{Pools, SqlClient};
use crate::mssql::inspect;
use crate::setup::DEFAULT_MAX_CDC_TABLES;
use crate::sql;

fn item(
    id: &str,
    title: &str,
    status: PrecheckStatus,
    object: &str,
    detail: String,
    fix: &str,
) -> PrecheckItem {
    PrecheckItem {
        id: id.into(),
        title: title.into(),
        status: status.into(),
        object: object.into(),
        detail,
        fix: fix.into(),
        acknowledged: false,
    }
}

use PrecheckStatus::{Fail, Pass, Warn};

/// What dbsync does with a column type that PostgreSQL has no equivalent for; None when the
/// type is supported as is.
pub fn unsupported_type_note(type_name: &str) -> Option<&'static str> {
    Some(match type_name.to_ascii_lowercase().as_str() {
        "timestamp" | "rowversion" => "ROWVERSION is copied as its 8-byte value (bytea); PostgreSQL does not regenerate it on writes",
        "sql_variant" => "SQL_VARIANT values are copied as text of their base type; the per-value type is lost",
        "hierarchyid" => "HIERARCHYID is copied as its text form (ToString(), e.g. /1/3/)",
        "geometry" | "geography" => "GEOMETRY/GEOGRAPHY are copied as WKB (STAsBinary()); the SRID is not carried",
        "clr_udt" => "user-defined CLR types are copied as text via ToString()",
        "cursor" => "CURSOR cannot be stored in a table; the column is skipped",
        _ => return None,
    })
}

/// Per-table items: key, unsupported types, existence.
pub fn table_items(tables: &[TableSchema], req: &SourcePrecheckRequest) -> Vec<PrecheckItem> {
    let mut items = Vec::new();
    let hybrid = req.incremental_mode == "hybrid";
    for t in tables {
        let name = t.table.as_ref().map(sql::display_name).unwrap_or_default();
        if t.key_columns.is_empty() {
            let (status, detail) = if req.incremental && !hybrid {
                (Fail, "The table has no primary key and no unique index on NOT NULL columns: cdc-polling mode cannot apply its updates and deletes by key")
            } else if req.incremental {
                (Warn, "The table has no primary key or unique key: hybrid mode applies its changes by matching whole rows, which is slower")
            } else {
                (Warn, "The table has no primary key or unique key: full sync reads it as one chunk and restarts it from the beginning after an interruption")
            };
            items.push(item(
                "source.table_key",
                "Table has a primary key or unique key",
                status,
                &name,
                detail.into(),
                "Add a primary key (or a unique index on NOT NULL columns), or use the hybrid incremental mode",
            ));
        } else {
            items.push(item(
                "source.table_key",
                "Table has a primary key or unique key",
                Pass,
                &name,
                format!(
                    "Rows are identified by ({}) from {}",
                    t.key_columns.join(", "),
                    t.key_source
                ),
                "",
            ));
        }
        for c in &t.columns {
            if let Some(note) = unsupported_type_note(&c.type_name) {
                items.push(item(
                    "source.unsupported_type",
                    "Column type has no PostgreSQL equivalent",
                    Warn,
                    &format!("{name}.{}", c.name),
                    format!(
                        "Column {} is {}: {note}",
                        c.name,
                        if c.user_type_name.is_empty() {
                            &c.type_name
                        } else {
                            &c.user_type_name
                        }
                    ),
                    "Accept the conversion, exclude the column, or add an ETL expression for it",
                ));
            }
        }
        if req.incremental && t.data_compression.eq_ignore_ascii_case("COLUMNSTORE") {
            items.push(item(
                "source.columnstore",
                "CDC can be enabled on the table",
                Fail,
                &name,
                "CDC cannot be enabled on a table with a clustered columnstore index".into(),
                "Exclude the table from incremental sync or change its clustered index",
            ));
        }
    }
    items
}

async fn database_items(
    client: &mut SqlClient,
    database: &str,
    req: &SourcePrecheckRequest,
    out: &mut Vec<PrecheckItem>,
) -> Result<Vec<TableSchema>> {
    let db = inspect::current_database(client).await?;
    let (is_sysadmin, is_db_owner) = inspect::permissions(client).await?;
    let needs_cdc = req.incremental;
    out.push(if is_sysadmin || is_db_owner {
        item("source.permissions", "Login has the rights dbsync needs", Pass, database,
            format!("The login is {}", if is_sysadmin { "sysadmin" } else { "db_owner of the database" }), "")
    } else {
        item("source.permissions", "Login has the rights dbsync needs", if needs_cdc { Fail } else { Warn }, database,
            "The login is neither sysadmin nor db_owner: enabling CDC and reading change tables need db_owner (sysadmin to enable CDC on the database)".into(),
            "Add the login to db_owner (ALTER ROLE db_owner ADD MEMBER <user>) or use a sysadmin login")
    });
    if needs_cdc && !db.is_cdc_enabled && !is_sysadmin {
        out.push(item("source.cdc_enable_db", "CDC can be enabled on the database", Fail, database,
            "CDC is not enabled on the database and only sysadmin may run sys.sp_cdc_enable_db".into(),
            "Have a sysadmin run EXEC sys.sp_cdc_enable_db in the database, or use a sysadmin login"));
    }
    if needs_cdc {
        out.push(if db.recovery_model.eq_ignore_ascii_case("FULL") {
            item("source.recovery_model", "Recovery model is FULL", Pass, database, "Recovery model FULL".into(), "")
        } else {
            item("source.recovery_model", "Recovery model is FULL", Warn, database,
                format!("Recovery model is {}: CDC works, but log truncation waits for the capture job and point-in-time recovery is off", db.recovery_model),
                "ALTER DATABASE <db> SET RECOVERY FULL, then take a full and a log backup")
        });
        match inspect::last_log_backup(client).await {
            Ok(Some(_)) => out.push(item("source.log_backup", "A log backup exists", Pass, database, "msdb.dbo.backupset has a log backup".into(), "")),
            Ok(None) => out.push(item("source.log_backup", "A log backup exists", Warn, database,
                "No log backup is recorded in msdb.dbo.backupset: under FULL recovery the log grows until one is taken".into(),
                "Take regular log backups (BACKUP LOG <db> TO ...)")),
            Err(e) => out.push(item("source.log_backup", "A log backup exists", Warn, database, format!("Could not read msdb.dbo.backupset: {e}"), "Grant SELECT on msdb.dbo.backupset to check this")),
        }
        out.push(match &db.owner {
            Some(owner) => item(
                "source.db_owner",
                "Database owner exists",
                Pass,
                database,
                format!("Owner: {owner}"),
                "",
            ),
            None => item(
                "source.db_owner",
                "Database owner exists",
                Fail,
                database,
                "The database owner login no longer resolves: CDC jobs fail to impersonate dbo"
                    .into(),
                "ALTER AUTHORIZATION ON DATABASE::<db> TO [sa]",
            ),
        });
        let jobs = inspect::cdc_jobs(client).await;
        match (db.is_cdc_enabled, jobs) {
            (true, Ok(jobs)) => {
                let poll = jobs.polling_interval_seconds.unwrap_or(5);
                out.push(item("source.cdc_polling_interval", "CDC capture job polling interval", if poll > 1 { Warn } else { Pass }, database,
                    format!("The capture job scans the log every {poll} s: changes reach dbsync up to {poll} s after commit (dbsync adds under 0.5 s)"),
                    "EXEC sys.sp_cdc_change_job @job_type = N'capture', @pollinginterval = 1; then EXEC sys.sp_cdc_stop_job; EXEC sys.sp_cdc_start_job"));
                let retention = jobs.retention_minutes.unwrap_or(4320);
                let expected = i64::from(req.expected_duration_minutes);
                out.push(item("source.cdc_retention", "CDC retention covers the expected duration",
                    if expected > 0 && retention < expected { Fail } else if retention < 1440 { Warn } else { Pass }, database,
                    format!("Change rows are kept {retention} minutes; the full sync is expected to take {expected} minutes"),
                    "EXEC sys.sp_cdc_change_job @job_type = N'cleanup', @retention = <minutes>"));
            }
            (true, Err(e)) => out.push(item("source.cdc_jobs", "CDC jobs are readable", Warn, database, format!("Could not read msdb.dbo.cdc_jobs: {e}"), "Grant SELECT on msdb.dbo.cdc_jobs")),
            (false, _) => out.push(item("source.cdc_polling_interval", "CDC capture job polling interval", Pass, database,
                "CDC is not enabled yet: EnableCdc creates the capture job with a 5 s polling interval".into(),
                "After enabling, lower it: EXEC sys.sp_cdc_change_job @job_type = N'capture', @pollinginterval = 1")),
        }
    }
    if req.full_sync {
        out.push(if db.snapshot_isolation_on {
            item("source.snapshot_isolation", "Full sync reads without locks", Pass, database, "ALLOW_SNAPSHOT_ISOLATION is ON: chunks are read under SNAPSHOT isolation".into(), "")
        } else if db.read_committed_snapshot_on {
            item("source.snapshot_isolation", "Full sync reads without locks", Pass, database, "READ_COMMITTED_SNAPSHOT is ON: chunks read row versions without shared locks".into(), "")
        } else {
            item("source.snapshot_isolation", "Full sync reads without locks", Warn, database,
                "Neither ALLOW_SNAPSHOT_ISOLATION nor READ_COMMITTED_SNAPSHOT is ON: chunk reads take shared locks that can block writers".into(),
                "ALTER DATABASE <db> SET ALLOW_SNAPSHOT_ISOLATION ON")
        });
    }
    // The selected tables.
    let wanted: Vec<_> = req
        .tables
        .iter()
        .filter(|t| t.database.is_empty() || t.database.eq_ignore_ascii_case(database))
        .collect();
    let selection = ObjectSelection {
        databases: vec![database.to_string()],
        include: wanted
            .iter()
            .map(|t| format!("{}.{}", t.schema, t.name))
            .collect(),
        exclude: vec![],
    };
    let (tables, _) = if wanted.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        inspect::read_schema(client, database, &selection).await?
    };
    for w in &wanted {
        let found = tables.iter().filter_map(|t| t.table.as_ref()).any(|t| {
            t.schema.eq_ignore_ascii_case(&w.schema) && t.name.eq_ignore_ascii_case(&w.name)
        });
        if !found {
            out.push(item(
                "source.table_exists",
                "Table exists",
                Fail,
                &format!("{database}.{}.{}", w.schema, w.name),
                "The table does not exist on the source (or the login cannot see it)".into(),
                "Check the object selection and the login's permissions",
            ));
        }
    }
    if needs_cdc {
        let limit = if req.max_cdc_tables == 0 {
            DEFAULT_MAX_CDC_TABLES
        } else {
            req.max_cdc_tables
        } as usize;
        let tracked_now = if db.is_cdc_enabled {
            inspect::capture_instances(client)
                .await?
                .iter()
                .map(|i| i.source_object_id)
                .collect::<std::collections::HashSet<_>>()
        } else {
            Default::default()
        };
        let new = tables
            .iter()
            .filter(|t| !tracked_now.contains(&i64::from(t.object_id)))
            .count();
        let total = tracked_now.len() + new;
        out.push(item(
            "source.cdc_table_limit",
            "CDC table count within the limit",
            if total > limit { Fail } else { Pass },
            database,
            format!("{total} tables would be CDC-tracked (limit {limit})"),
            "Select fewer tables or raise max_cdc_tables",
        ));
        let has_lob = tables.iter().flat_map(|t| &t.columns).any(|c| {
            c.max_length == -1 || matches!(c.type_name.as_str(), "text" | "ntext" | "image" | "xml")
        });
        if has_lob {
            if let Ok(Some(size)) = inspect::max_text_repl_size(client).await {
                if size != -1 {
                    out.push(item("source.max_text_repl_size", "Large values can be captured", Warn, database,
                        format!("max text repl size is {size} bytes: with CDC on, a statement writing a larger LOB to a captured column fails on the source"),
                        "EXEC sp_configure 'max text repl size', -1; RECONFIGURE"));
                }
            }
        }
    }
    Ok(tables)
}

/// Runs every source precheck of the request.
pub async fn run(pools: &Pools, req: &SourcePrecheckRequest) -> Result<PrecheckReport> {
    let source = req.source.as_ref().ok_or_else(|| {
        CaptureError::InvalidRequest("The request has no source connection".into())
    })?;
    let mut items = Vec::new();
    let mut databases: BTreeMap<String, ()> = BTreeMap::new();
    for t in &req.tables {
        databases.insert(
            if t.database.is_empty() {
                source.database.clone()
            } else {
                t.database.clone()
            },
            (),
        );
    }
    if databases.is_empty() {
        databases.insert(source.database.clone(), ());
    }
    let server = format!(
        "{}:{}",
        source.host,
        if source.port == 0 { 1433 } else { source.port }
    );
    let pool = pools.pool(source, "")?;
    let mut conn = match pool.get().await {
        Ok(c) => c,
        Err(e) => {
            items.push(item("source.connectivity", "Source is reachable and the login works", Fail, &server, e.to_string(),
                "Check host, port, user and password, and that SQL Server accepts SQL logins over TCP"));
            return Ok(PrecheckReport { items });
        }
    };
    items.push(item(
        "source.connectivity",
        "Source is reachable and the login works",
        Pass,
        &server,
        "Connected and logged in".into(),
        "",
    ));
    let info = inspect::server_info(conn.client()).await?;
    let major = info.major_version();
    let (status, detail) = match major {
        0 => (Warn, format!("Unknown version {}", info.product_version)),
        m if m >= 13 => (Pass, format!("SQL Server {} ({})", info.product_version, info.edition)),
        11 | 12 => (Warn, format!("SQL Server {}: CDC works, but __$command_id needs a cumulative update (KB 3030352)", info.product_version)),
        _ => (Fail, format!("SQL Server {} is older than 2012", info.product_version)),
    };
    items.push(item(
        "source.version",
        "SQL Server version supports CDC",
        status,
        &server,
        detail,
        "Use SQL Server 2016 SP1 or later",
    ));
    if req.incremental {
        let (status, detail) = match info.engine_edition {
            2 | 3 | 5 | 8 => (Pass, format!("Edition {} supports CDC", info.edition)),
            4 => (
                Fail,
                "Express edition has no SQL Server Agent, so CDC never captures changes".into(),
            ),
            _ => (
                Warn,
                format!(
                    "Edition {} (engine edition {}): CDC support unknown",
                    info.edition, info.engine_edition
                ),
            ),
        };
        items.push(item("source.edition", "Edition supports CDC", status, &server, detail, "Use Standard, Enterprise or Developer edition, Azure SQL Managed Instance or Azure SQL Database"));
        match inspect::local_server_name(conn.client()).await {
            Ok(Some(name)) if name.eq_ignore_ascii_case(&info.server_name) => {
                items.push(item("source.server_name", "sys.servers name matches the server", Pass, &server, format!("Both are {name}"), ""))
            }
            Ok(other) => items.push(item("source.server_name", "sys.servers name matches the server", Warn, &server,
                format!("sys.servers says {:?} but SERVERPROPERTY('ServerName') is {}", other.unwrap_or_default(), info.server_name),
                "EXEC sp_dropserver '<old>'; EXEC sp_addserver '<new>', 'local'; then restart SQL Server")),
            Err(e) => items.push(item("source.server_name", "sys.servers name matches the server", Warn, &server, format!("Could not read sys.servers: {e}"), "")),
        }
        match inspect::agent_status(conn.client()).await {
            Ok(Some(s)) if s.eq_ignore_ascii_case("Running") => items.push(item("source.sql_agent", "SQL Server Agent is running", Pass, &server, "SQL Server Agent is Running".into(), "")),
            Ok(Some(s)) => items.push(item("source.sql_agent", "SQL Server Agent is running", Fail, &server,
                format!("SQL Server Agent is {s}: the CDC capture job does not run, so no change is captured"), "Start SQL Server Agent and set it to start automatically")),
            Ok(None) => items.push(item("source.sql_agent", "SQL Server Agent is running", Warn, &server,
                "sys.dm_server_services lists no SQL Server Agent (Azure SQL Database uses its own scheduler)".into(), "")),
            Err(e) => items.push(item("source.sql_agent", "SQL Server Agent is running", Warn, &server,
                format!("Could not read sys.dm_server_services: {e}"), "GRANT VIEW SERVER STATE to the login to check this")),
        }
    }
    conn.mark_clean();
    drop(conn);
    for database in databases.keys() {
        let pool = pools.pool(source, database)?;
        let mut conn = match pool.get().await {
            Ok(c) => c,
            Err(e) => {
                items.push(item(
                    "source.database",
                    "Database can be opened",
                    Fail,
                    database,
                    e.to_string(),
                    "Check that the database exists and the login may open it",
                ));
                continue;
            }
        };
        let tables = database_items(conn.client(), database, req, &mut items).await?;
        items.extend(table_items(&tables, req));
        conn.mark_clean();
    }
    Ok(PrecheckReport { items })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbsync_proto::v1::{ColumnSchema, TableRef};

    fn table(keys: &[&str], types: &[&str]) -> TableSchema {
        TableSchema {
            table: Some(TableRef {
                database: "shop".into(),
                schema: "dbo".into(),
                name: "t".into(),
            }),
            columns: types
                .iter()
                .enumerate()
                .map(|(i, t)| ColumnSchema {
                    name: format!("c{i}"),
                    type_name: t.to_string(),
                    ..Default::default()
                })
                .collect(),
            key_columns: keys.iter().map(|k| k.to_string()).collect(),
            key_source: "primary_key".into(),
            ..Default::default()
        }
    }

    fn status_of(items: &[PrecheckItem], id: &str) -> Vec<i32> {
        items
            .iter()
            .filter(|i| i.id == id)
            .map(|i| i.status)
            .collect()
    }

    #[test]
    fn heaps_fail_cdc_polling_but_only_warn_in_hybrid_and_full_sync() {
        let heap = table(&[], &["int"]);
        let req = |inc: bool, mode: &str| SourcePrecheckRequest {
            incremental: inc,
            incremental_mode: mode.into(),
            ..Default::default()
        };
        assert_eq!(
            status_of(
                &table_items(std::slice::from_ref(&heap), &req(true, "cdc-polling")),
                "source.table_key"
            ),
            vec![Fail as i32]
        );
        assert_eq!(
            status_of(
                &table_items(std::slice::from_ref(&heap), &req(true, "hybrid")),
                "source.table_key"
            ),
            vec![Warn as i32]
        );
        assert_eq!(
            status_of(&table_items(&[heap], &req(false, "")), "source.table_key"),
            vec![Warn as i32]
        );
        let keyed = table(&["c0"], &["int"]);
        assert_eq!(
            status_of(
                &table_items(&[keyed], &req(true, "cdc-polling")),
                "source.table_key"
            ),
            vec![Pass as i32]
        );
    }

    #[test]
    fn each_unsupported_type_is_reported_with_what_dbsync_does() {
        let t = table(
            &["c0"],
            &[
                "int",
                "hierarchyid",
                "geography",
                "sql_variant",
                "timestamp",
                "clr_udt",
                "nvarchar",
            ],
        );
        let items = table_items(&[t], &SourcePrecheckRequest::default());
        let unsupported: Vec<_> = items
            .iter()
            .filter(|i| i.id == "source.unsupported_type")
            .collect();
        assert_eq!(unsupported.len(), 5);
        assert!(unsupported
            .iter()
            .all(|i| i.status == Warn as i32 && !i.detail.is_empty() && !i.fix.is_empty()));
        assert!(unsupported
            .iter()
            .any(|i| i.object == "shop.dbo.t.c1" && i.detail.contains("ToString")));
    }
}
