//! Enabling CDC for a task and removing what dbsync installed.
//!
//! - `sys.sp_cdc_enable_db` runs only when the database is not enabled yet (needs sysadmin).
//! - Each table gets `sys.sp_cdc_enable_table` with `@role_name = NULL` (no gating role) and
//!   `@supports_net_changes = 0` (dbsync replays all changes), under a capture instance
//!   named `<prefix><schema>_<table>`. An existing instance that captures every current
//!   column is reused instead. A table can have at most two instances.
//! - The number of CDC-tracked tables is limited (`max_cdc_tables`, default 1000).
//! - Running it twice changes nothing the second time.
//! - Hybrid mode also installs the DDL trigger, the DDL history table and the heartbeat table
//!   ([`crate::mssql::hybrid`]); cleanup removes them with the last dbsync capture instance.
//!
//! Docs: <https://learn.microsoft.com/sql/relational-databases/system-stored-procedures/sys-sp-cdc-enable-table-transact-sql>

use std::collections::{BTreeMap, HashSet};

use dbsync_proto::v1::{
    CleanupSourceRequest, CleanupSourceResponse, EnableCdcRequest, EnableCdcResponse, EnabledTable,
    TableRef,
};
use sha2::{Digest, Sha256};

use crate::error::{CaptureError, Result};
use crate::mssql::client::Pools;
use crate::mssql::hybrid::{self, HybridObjects};
use crate::mssql::inspect;
use crate::sql::{self, quote_string};

pub const DEFAULT_PREFIX: &str = "dbsync_";
pub const DEFAULT_MAX_CDC_TABLES: u32 = 1000;
/// SQL Server's limit on capture instance names.
const MAX_INSTANCE_NAME: usize = 100;

/// `<prefix><schema>_<table>` with characters outside `[A-Za-z0-9_]` replaced, shortened with
/// a stable hash suffix when longer than 100 characters.
pub fn capture_instance_name(prefix: &str, schema: &str, table: &str) -> String {
    let raw = format!("{prefix}{schema}_{table}");
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.len() <= MAX_INSTANCE_NAME && clean == raw {
        return clean;
    }
    let hash = Sha256::digest(raw.as_bytes());
    let suffix = format!(
        "_{:02x}{:02x}{:02x}{:02x}",
        hash[0], hash[1], hash[2], hash[3]
    );
    let keep = MAX_INSTANCE_NAME - suffix.len();
    format!("{}{suffix}", &clean[..clean.len().min(keep)])
}

/// `EXEC sys.sp_cdc_enable_table` for one table (all columns, no role, no net changes).
pub fn enable_table_statement(table: &TableRef, capture_instance: &str) -> String {
    format!(
        "EXEC sys.sp_cdc_enable_table @source_schema = {}, @source_name = {}, @capture_instance = {}, \
         @role_name = NULL, @supports_net_changes = 0",
        quote_string(&table.schema),
        quote_string(&table.name),
        quote_string(capture_instance)
    )
}

/// `EXEC sys.sp_cdc_disable_table` for one instance.
pub fn disable_table_statement(schema: &str, table: &str, capture_instance: &str) -> String {
    format!(
        "EXEC sys.sp_cdc_disable_table @source_schema = {}, @source_name = {}, @capture_instance = {}",
        quote_string(schema),
        quote_string(table),
        quote_string(capture_instance)
    )
}

fn by_database(tables: &[TableRef], default_db: &str) -> BTreeMap<String, Vec<TableRef>> {
    let mut out: BTreeMap<String, Vec<TableRef>> = BTreeMap::new();
    for t in tables {
        let db = if t.database.is_empty() {
            default_db.to_string()
        } else {
            t.database.clone()
        };
        out.entry(db).or_default().push(t.clone());
    }
    out
}

/// Enables CDC on the databases and tables of the request. Idempotent.
pub async fn enable_cdc(pools: &Pools, req: &EnableCdcRequest) -> Result<EnableCdcResponse> {
    let source = req.source.as_ref().ok_or_else(|| {
        CaptureError::InvalidRequest("The request has no source connection".into())
    })?;
    let prefix = if req.object_prefix.is_empty() {
        DEFAULT_PREFIX
    } else {
        req.object_prefix.as_str()
    };
    let limit = if req.max_cdc_tables == 0 {
        DEFAULT_MAX_CDC_TABLES
    } else {
        req.max_cdc_tables
    } as usize;
    let mut response = EnableCdcResponse::default();
    for (database, tables) in by_database(&req.tables, &source.database) {
        let pool = pools.pool(source, &database)?;
        let mut conn = pool.get().await?;
        let client = conn.client();
        let db = inspect::current_database(client).await?;
        if !db.is_cdc_enabled {
            inspect::batch(
                client,
                &format!("enabling CDC on database {database}"),
                "EXEC sys.sp_cdc_enable_db",
            )
            .await?;
            response.notes.push(format!(
                "Enabled CDC on database {database} (sys.sp_cdc_enable_db created the cdc schema, the cdc user and the capture and cleanup jobs)"
            ));
        }
        let instances = inspect::capture_instances(client).await?;
        let captured = inspect::captured_columns(client).await?;
        let existing_tables = inspect::tables(client).await?;
        let columns = inspect::columns(client).await?;
        let mut tracked: HashSet<i64> = instances.iter().map(|i| i.source_object_id).collect();
        let names: HashSet<String> = instances
            .iter()
            .map(|i| i.name.to_ascii_lowercase())
            .collect();
        for table in tables {
            let display = sql::display_name(&TableRef {
                database: database.clone(),
                ..table.clone()
            });
            let row = existing_tables
                .iter()
                .find(|t| {
                    t.schema.eq_ignore_ascii_case(&table.schema)
                        && t.name.eq_ignore_ascii_case(&table.name)
                })
                .ok_or_else(|| {
                    CaptureError::Precondition(format!(
                        "Table {display} does not exist on the source"
                    ))
                })?;
            let current: Vec<String> = columns
                .get(&row.object_id)
                .map(|cols| {
                    cols.iter()
                        .filter(|c| c.computed_definition.is_empty())
                        .map(|c| c.name.to_ascii_lowercase())
                        .collect()
                })
                .unwrap_or_default();
            let mine: Vec<_> = instances
                .iter()
                .filter(|i| i.source_object_id == row.object_id)
                .collect();
            let covering = mine.iter().rev().find(|i| {
                let cap: HashSet<String> = captured
                    .get(&i.name)
                    .map(|c| c.iter().map(|c| c.name.to_ascii_lowercase()).collect())
                    .unwrap_or_default();
                current.iter().all(|c| cap.contains(c))
            });
            let table_ref = TableRef {
                database: database.clone(),
                schema: row.schema.clone(),
                name: row.name.clone(),
            };
            if let Some(i) = covering {
                response.tables.push(EnabledTable {
                    table: Some(table_ref),
                    capture_instance: i.name.clone(),
                    created: false,
                });
                continue;
            }
            if mine.len() >= 2 {
                return Err(CaptureError::Precondition(format!(
                    "Table {display} already has two capture instances ({}), none capturing all its columns: \
                     disable one with sys.sp_cdc_disable_table and run EnableCdc again",
                    mine.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
            if !tracked.contains(&row.object_id) && tracked.len() >= limit {
                return Err(CaptureError::Precondition(format!(
                    "Enabling CDC on {display} would exceed the limit of {limit} CDC tables in {database}: \
                     select fewer tables or raise max_cdc_tables"
                )));
            }
            let mut name = capture_instance_name(prefix, &row.schema, &row.name);
            if names.contains(&name.to_ascii_lowercase()) {
                name = capture_instance_name(prefix, &row.schema, &format!("{}_v2", row.name));
            }
            let statement = enable_table_statement(&table_ref, &name);
            inspect::batch(client, &format!("enabling CDC on {display}"), &statement).await?;
            tracked.insert(row.object_id);
            response.notes.push(format!(
                "Enabled CDC on {display} as capture instance {name}: this took a brief schema lock on the table"
            ));
            response.tables.push(EnabledTable {
                table: Some(table_ref),
                capture_instance: name,
                created: true,
            });
        }
        if req.incremental_mode == "hybrid" {
            response
                .notes
                .extend(hybrid::install(client, &database, prefix, &existing_tables).await?);
        }
        if let Ok(jobs) = inspect::cdc_jobs(client).await {
            if let Some(p) = jobs.polling_interval_seconds {
                response.notes.push(format!(
                    "The CDC capture job of {database} polls every {p} s; that interval is the floor of the change latency"
                ));
            }
        }
        conn.mark_clean();
    }
    Ok(response)
}

/// Disables the capture instances dbsync created (named with the prefix) on the given tables,
/// or on every table when none are given. Instances dbsync did not create are left alone.
pub async fn cleanup_source(
    pools: &Pools,
    req: &CleanupSourceRequest,
) -> Result<CleanupSourceResponse> {
    let source = req.source.as_ref().ok_or_else(|| {
        CaptureError::InvalidRequest("The request has no source connection".into())
    })?;
    let prefix = if req.object_prefix.is_empty() {
        DEFAULT_PREFIX
    } else {
        req.object_prefix.as_str()
    }
    .to_ascii_lowercase();
    let mut groups = by_database(&req.tables, &source.database);
    if groups.is_empty() {
        groups.insert(source.database.clone(), Vec::new());
    }
    let mut response = CleanupSourceResponse::default();
    for (database, tables) in groups {
        let pool = pools.pool(source, &database)?;
        let mut conn = pool.get().await?;
        let client = conn.client();
        if !inspect::current_database(client).await?.is_cdc_enabled {
            conn.mark_clean();
            continue;
        }
        for i in inspect::capture_instances(client).await? {
            let selected = tables.is_empty()
                || tables.iter().any(|t| {
                    t.schema.eq_ignore_ascii_case(&i.schema)
                        && t.name.eq_ignore_ascii_case(&i.table)
                });
            if !selected || !i.name.to_ascii_lowercase().starts_with(&prefix) {
                continue;
            }
            let statement = disable_table_statement(&i.schema, &i.table, &i.name);
            inspect::batch(
                client,
                &format!("disabling capture instance {}", i.name),
                &statement,
            )
            .await?;
            response.removed.push(format!(
                "capture instance {} on {database}.{}.{}",
                i.name, i.schema, i.table
            ));
        }
        // The hybrid objects serve every task of the database with this prefix: they go
        // when no capture instance of dbsync's is left on a user table.
        let objects = HybridObjects::new(&prefix);
        let in_use = inspect::capture_instances(client).await?.iter().any(|i| {
            i.name.to_ascii_lowercase().starts_with(&prefix) && !objects.owns(&i.schema, &i.table)
        });
        if !in_use {
            response
                .removed
                .extend(hybrid::remove(client, &database, &prefix).await?);
        }
        conn.mark_clean();
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_are_safe_and_bounded() {
        assert_eq!(
            capture_instance_name("dbsync_", "dbo", "orders"),
            "dbsync_dbo_orders"
        );
        let odd = capture_instance_name("dbsync_", "dbo", "order lines");
        assert!(
            odd.starts_with("dbsync_dbo_order_lines_")
                && odd.len() == "dbsync_dbo_order_lines_".len() + 8,
            "{odd}"
        );
        let long = capture_instance_name("dbsync_", "dbo", &"x".repeat(200));
        assert_eq!(long.len(), 100);
        assert_ne!(
            long,
            capture_instance_name("dbsync_", "dbo", &"x".repeat(201))
        );
    }

    #[test]
    fn statements_quote_their_arguments() {
        let t = TableRef {
            database: "shop".into(),
            schema: "dbo".into(),
            name: "it's".into(),
        };
        assert_eq!(
            enable_table_statement(&t, "dbsync_dbo_it_s"),
            "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'it''s', \
             @capture_instance = N'dbsync_dbo_it_s', @role_name = NULL, @supports_net_changes = 0"
        );
        assert_eq!(
            disable_table_statement("dbo", "t", "dbsync_dbo_t"),
            "EXEC sys.sp_cdc_disable_table @source_schema = N'dbo', @source_name = N't', @capture_instance = N'dbsync_dbo_t'"
        );
    }
}
