//! Everything that talks to PostgreSQL: connections, DDL, catalog, checkpoints, COPY and
//! change statements.

pub mod catalog;
pub mod changes;
pub mod checkpoint;
pub mod copy;
pub mod ddl;
pub mod types;

use dbsync_proto::v1::TargetConnection;
use dbsync_telemetry::pg_tls::{error_chain, sslmode_hint, PgTls};
use tokio_postgres::Client;

use crate::error::{ApplyError, Result};

/// `host:port/database` of a target, for messages (never the password).
pub fn target_label(t: &TargetConnection) -> String {
    format!(
        "{}:{}/{}",
        t.host,
        if t.port == 0 { 5432 } else { t.port },
        t.database
    )
}

/// Opens a session for data work: `session_replication_role = replica` switches FK checks,
/// cascades and triggers off for this session only (DESIGN.md, data flow 1). Without the
/// right to set it the error says how to grant it.
pub async fn connect(target: &TargetConnection) -> Result<Client> {
    let client = connect_plain(target).await?;
    if let Err(e) = client
        .batch_execute("SET session_replication_role = replica")
        .await
    {
        let detail = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| e.to_string());
        return Err(if e.code().map(|c| c.code()) == Some("42501") {
            ApplyError::ReplicationRoleDenied { detail }
        } else {
            ApplyError::target(target_label(target), "setting session_replication_role", e)
        });
    }
    Ok(client)
}

/// A data session: with the replication role unless the task defers foreign keys because the
/// target role may not set it (then no FK exists during the data phases).
pub async fn connect_data(target: &TargetConnection, replication_role: bool) -> Result<Client> {
    if replication_role {
        connect(target).await
    } else {
        connect_plain(target).await
    }
}

/// A session without the replication role (DDL, checkpoints schema). TLS follows the
/// target's `sslmode` (disable, prefer, require, verify-ca, verify-full; root certificate from
/// `PGSSLROOTCERT`), see [`dbsync_telemetry::pg_tls`].
pub async fn connect_plain(target: &TargetConnection) -> Result<Client> {
    let label = target_label(target);
    let (ssl_mode, tls) =
        PgTls::from_env(&target.sslmode).map_err(|e| ApplyError::InvalidPlan {
            object: label.clone(),
            detail: e.to_string(),
        })?;
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(if target.host.is_empty() {
        "localhost"
    } else {
        &target.host
    })
    .port(if target.port == 0 {
        5432
    } else {
        u16::try_from(target.port).unwrap_or(5432)
    })
    .user(&target.user)
    .dbname(&target.database)
    .application_name("dbsync-apply")
    .connect_timeout(std::time::Duration::from_secs(10))
    .ssl_mode(ssl_mode);
    if !target.password.is_empty() {
        cfg.password(&target.password);
    }
    let (client, connection) = cfg.connect(tls).await.map_err(|e| {
        // The error text of a failed connect never contains the password (it is not echoed
        // by the server); redact it anyway in case a future driver does.
        let mut detail = dbsync_core::secret::redact(&error_chain(&e), &[&target.password]);
        if let Some(hint) = sslmode_hint(&target.sslmode, &detail) {
            detail = format!("{detail}; {hint}");
        }
        ApplyError::TargetConnection {
            target: label.clone(),
            detail,
        }
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}

/// `server_version_num` of the target.
pub async fn server_version(client: &Client, target: &str) -> Result<u32> {
    let row = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|e| ApplyError::target(target, "reading the server version", e))?;
    Ok(u32::try_from(row.get::<_, i32>(0)).unwrap_or(0))
}
