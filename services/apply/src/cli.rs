//! The `dbsync-apply` command line: flags, each with an environment variable and a key in the
//! `--config` file (see deploy/README.md); `main.rs` only parses and serves.

use std::net::SocketAddr;

use dbsync_core::Secret;

use crate::ApplyConfig;

/// dbsync apply service: writes schemas, snapshots and changes into PostgreSQL.
#[derive(clap::Parser)]
#[command(name = "dbsync-apply", version)]
pub struct ApplyArgs {
    /// gRPC listen address (health and reflection).
    #[arg(long, env = "DBSYNC_APPLY_LISTEN", default_value = "127.0.0.1:7302")]
    pub listen: SocketAddr,
    /// Coordinator URL.
    #[arg(
        long,
        env = "DBSYNC_COORDINATOR",
        default_value = "http://127.0.0.1:7300"
    )]
    pub coordinator: String,
    /// Stable worker id (default: assigned by the coordinator).
    #[arg(long, env = "DBSYNC_APPLY_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Address the coordinator should record for this instance.
    #[arg(long, env = "DBSYNC_APPLY_ADVERTISE")]
    pub advertise_address: Option<String>,
    /// Prometheus /metrics listen address.
    #[arg(long, env = "DBSYNC_APPLY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Bearer token for the coordinator and capture.
    #[arg(long, env = "DBSYNC_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Upper bound on snapshot chunks loaded at once.
    #[arg(long, env = "DBSYNC_APPLY_MAX_PARALLEL_CHUNKS", default_value_t = 4)]
    pub max_parallel_chunks: usize,
}

impl std::fmt::Debug for ApplyArgs {
    // By hand: the token must not be printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyArgs")
            .field("listen", &self.listen)
            .field("coordinator", &self.coordinator)
            .field("worker_id", &self.worker_id)
            .field("advertise_address", &self.advertise_address)
            .field("metrics_listen", &self.metrics_listen)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "***"))
            .field("max_parallel_chunks", &self.max_parallel_chunks)
            .finish()
    }
}

impl ApplyArgs {
    /// Flags, environment and `--config` file of this process.
    pub fn from_process() -> ApplyArgs {
        dbsync_config::parse()
    }

    pub fn into_config(self) -> ApplyConfig {
        ApplyConfig {
            coordinator: self.coordinator,
            worker_id: self.worker_id,
            advertise_address: self.advertise_address,
            metrics_listen: self.metrics_listen,
            auth_token: self.auth_token.map(Secret::new),
            max_parallel_chunks: self.max_parallel_chunks,
            ..ApplyConfig::default()
        }
    }
}
