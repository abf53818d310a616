//! `dbsync-capture`: parses flags, environment and `--config`, then serves until Ctrl-C or
//! SIGTERM.

use dbsync_capture::CaptureConfig;

#[derive(clap::Parser)]
#[command(
    name = "dbsync-capture",
    about = "dbsync capture service: SQL Server catalog, snapshots and CDC over gRPC"
)]
struct Cli {
    #[command(flatten)]
    config: CaptureConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    dbsync_telemetry::init_tracing("dbsync-capture");
    let config = dbsync_config::parse::<Cli>().config;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    dbsync_capture::serve(config, listener, dbsync_telemetry::shutdown_on_signal()).await
}
