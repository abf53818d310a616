//! Target-side prechecks over tokio-postgres: connectivity, server version, the rights dbsync
//! needs, conflicting tables, and whether `session_replication_role` may be set (without it,
//! foreign keys are added at cut-over instead of `NOT VALID` up front).
//!
//! TLS follows the target's `sslmode` like apply ([`dbsync_telemetry::pg_tls`]).

use std::time::Duration;

use dbsync_core::secret::redact;
use dbsync_proto::v1::{PrecheckItem, PrecheckStatus, TargetConnection};
use dbsync_telemetry::pg_tls::{error_chain, sslmode_hint, PgTls};

use crate::plan::PlannedTable;
use crate::spec::ConflictMode;

pub fn item(
    id: &str,
    title: &str,
    status: PrecheckStatus,
    object: &str,
    detail: String,
    fix: &str,
) -> PrecheckItem {
    PrecheckItem {
        id: id.to_string(),
        title: title.to_string(),
        status: status as i32,
        object: object.to_string(),
        detail,
        fix: fix.to_string(),
        acknowledged: false,
    }
}

pub async fn connect(target: &TargetConnection) -> Result<tokio_postgres::Client, String> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&target.host)
        .port(target.port as u16)
        .user(&target.user)
        .password(&target.password)
        .dbname(&target.database)
        .application_name("dbsync-coordinator")
        .connect_timeout(Duration::from_secs(10));
    let (ssl_mode, tls) = PgTls::from_env(&target.sslmode).map_err(|e| e.to_string())?;
    config.ssl_mode(ssl_mode);
    let connecting = config.connect(tls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(15), connecting)
        .await
        .map_err(|_| "connection timed out after 15 s".to_string())?
        .map_err(|e| {
            let text = redact(&error_text(&e), &[&target.password]);
            match sslmode_hint(&target.sslmode, &text) {
                Some(hint) => format!("{text}; {hint}"),
                None => text,
            }
        })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// tokio-postgres' Display hides the server's message behind "db error"; show it.
fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => error_chain(e),
    }
}

/// Runs every target item. Returns the items and whether foreign keys must wait for cut-over.
pub async fn precheck(
    target: &TargetConnection,
    tables: &[PlannedTable],
    schema_sync: bool,
    conflict_mode: ConflictMode,
) -> (Vec<PrecheckItem>, bool) {
    use PrecheckStatus::{Fail, Pass, Warn};
    let object = format!("{}:{}/{}", target.host, target.port, target.database);
    let mut items = Vec::new();
    let client = match connect(target).await {
        Ok(c) => c,
        Err(e) => {
            items.push(item(
                "target.connect",
                "Connect to PostgreSQL",
                Fail,
                &object,
                e,
                "check target host, port, user, password, database and pg_hba.conf; the database must exist",
            ));
            return (items, false);
        }
    };
    items.push(item(
        "target.connect",
        "Connect to PostgreSQL",
        Pass,
        &object,
        String::new(),
        "",
    ));

    match client
        .query_one(
            "SELECT current_setting('server_version_num')::int, version()",
            &[],
        )
        .await
    {
        Ok(row) => {
            let num: i32 = row.get(0);
            let text: String = row.get(1);
            let (status, fix) = if num >= 120_000 {
                (Pass, "")
            } else if num >= 100_000 {
                (Warn, "PostgreSQL 12 or later is recommended")
            } else {
                (
                    Fail,
                    "use PostgreSQL 10 or later (identity columns need it)",
                )
            };
            items.push(item(
                "target.version",
                "PostgreSQL version",
                status,
                &object,
                text,
                fix,
            ));
        }
        Err(e) => items.push(item(
            "target.version",
            "PostgreSQL version",
            Warn,
            &object,
            error_text(&e),
            "",
        )),
    }

    if schema_sync {
        let ok = client
            .query_one(
                "SELECT has_database_privilege(current_database(), 'CREATE')",
                &[],
            )
            .await
            .map(|r| r.get::<_, bool>(0));
        let (status, detail) = match ok {
            Ok(true) => (Pass, String::new()),
            Ok(false) => (
                Fail,
                format!(
                    "role {} has no CREATE privilege on database {}",
                    target.user, target.database
                ),
            ),
            Err(e) => (Fail, error_text(&e)),
        };
        items.push(item(
            "target.create_privilege",
            "Rights to create schemas and tables",
            status,
            &object,
            detail,
            "GRANT CREATE ON DATABASE <db> TO <user>, or make the user the database owner",
        ));
        let mut schemas: Vec<&str> = tables
            .iter()
            .map(|t| t.plan.target_schema.as_str())
            .collect();
        schemas.sort_unstable();
        schemas.dedup();
        for schema in schemas {
            let row = client
                .query_one(
                    "SELECT n.oid IS NOT NULL, COALESCE(has_schema_privilege(n.oid, 'CREATE'), true) \
                     FROM (SELECT 1) x LEFT JOIN pg_namespace n ON n.nspname = $1",
                    &[&schema],
                )
                .await;
            if let Ok(row) = row {
                let (exists, can_create): (bool, bool) = (row.get(0), row.get(1));
                if exists && !can_create {
                    items.push(item(
                        "target.schema_privilege",
                        "Rights to create tables in an existing schema",
                        Fail,
                        schema,
                        format!("role {} cannot create tables in schema {schema}", target.user),
                        "GRANT CREATE ON SCHEMA <schema> TO <user>, or map the tables to another schema with objects.schemas",
                    ));
                }
            }
        }
    }

    for t in tables {
        let exists = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p'))",
                &[&t.plan.target_schema, &t.plan.target_table],
            )
            .await
            .map(|r| r.get::<_, bool>(0))
            .unwrap_or(false);
        let target_name = t.target();
        if !schema_sync && !exists {
            items.push(item(
                "target.table_missing",
                "Target table exists (schema sync is off)",
                Fail,
                &target_name,
                format!(
                    "sync.schema is false but {target_name} (for {}) does not exist",
                    t.key
                ),
                "create the table, or enable sync.schema",
            ));
        } else if schema_sync && exists {
            let (status, fix) = match conflict_mode {
                ConflictMode::Precheck => {
                    (Fail, "drop or rename the target table, map the source table elsewhere with objects.tables.<t>.rename, or set conflict_mode: ignore")
                }
                ConflictMode::Ignore => (Warn, "full sync keeps existing rows on key conflict; incremental sync overwrites them"),
            };
            items.push(item(
                "target.conflicting_table",
                "Target table already exists",
                status,
                &target_name,
                format!("{target_name} exists (source {})", t.key),
                fix,
            ));
        }
    }

    // Apply turns FK checks off per session; without the right, FKs wait for cut-over.
    let replica = client
        .batch_execute("BEGIN; SET LOCAL session_replication_role = replica; ROLLBACK")
        .await;
    let defer_foreign_keys = match replica {
        Ok(()) => {
            items.push(item(
                "target.session_replication_role",
                "Foreign key checks can be turned off per session",
                Pass,
                &object,
                String::new(),
                "",
            ));
            false
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            items.push(item(
                "target.session_replication_role",
                "Foreign key checks can be turned off per session",
                Warn,
                &object,
                format!("SET session_replication_role = replica is not permitted: {}; foreign keys will be added at cut-over", error_text(&e)),
                "GRANT SET ON PARAMETER session_replication_role TO <user> (PostgreSQL 15+) or use a superuser, then precheck again",
            ));
            true
        }
    };
    (items, defer_foreign_keys)
}

/// Exact row count of a target table (for verification).
pub async fn count_rows(
    client: &tokio_postgres::Client,
    schema: &str,
    table: &str,
) -> Result<u64, String> {
    let sql = format!(
        "SELECT count(*) FROM {}.{}",
        quote_ident(schema),
        quote_ident(table)
    );
    client
        .query_one(&sql, &[])
        .await
        .map(|r| r.get::<_, i64>(0) as u64)
        .map_err(|e| error_text(&e))
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
