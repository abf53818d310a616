use std::net::SocketAddr;

use clap::Parser;
use dbsync_apply::{serve, ApplyConfig};
use dbsync_core::Secret;

/// dbsync apply service: writes schemas, snapshots and changes into PostgreSQL.
#[derive(Parser, Debug)]
#[command(name = "dbsync-apply", version)]
struct Args {
    /// gRPC listen address (health and reflection).
    #[arg(long, env = "DBSYNC_APPLY_LISTEN", default_value = "127.0.0.1:7302")]
    listen: SocketAddr,
    /// Coordinator URL.
    #[arg(
        long,
        env = "DBSYNC_COORDINATOR",
        default_value = "http://127.0.0.1:7300"
    )]
    coordinator: String,
    /// Stable worker id (default: assigned by the coordinator).
    #[arg(long, env = "DBSYNC_APPLY_WORKER_ID")]
    worker_id: Option<String>,
    /// Address the coordinator should record for this instance.
    #[arg(long, env = "DBSYNC_APPLY_ADVERTISE")]
    advertise_address: Option<String>,
    /// Prometheus /metrics listen address.
    #[arg(long, env = "DBSYNC_APPLY_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Bearer token for the coordinator and capture.
    #[arg(long, env = "DBSYNC_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// Upper bound on snapshot chunks loaded at once.
    #[arg(long, env = "DBSYNC_APPLY_MAX_PARALLEL_CHUNKS", default_value_t = 4)]
    max_parallel_chunks: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    dbsync_telemetry::init_tracing("dbsync-apply");
    let args = Args::parse();
    let config = ApplyConfig {
        coordinator: args.coordinator,
        worker_id: args.worker_id,
        advertise_address: args.advertise_address,
        metrics_listen: args.metrics_listen,
        auth_token: args.auth_token.map(Secret::new),
        max_parallel_chunks: args.max_parallel_chunks,
        ..ApplyConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    serve(config, listener, dbsync_telemetry::shutdown_on_signal()).await
}
