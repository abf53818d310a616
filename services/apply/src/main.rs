//! `dbsync-apply`: parses flags, environment and `--config`, then serves until Ctrl-C or SIGTERM.

use dbsync_apply::cli::ApplyArgs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    dbsync_telemetry::init_tracing("dbsync-apply");
    let args = ApplyArgs::from_process();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    dbsync_apply::serve(
        args.into_config(),
        listener,
        dbsync_telemetry::shutdown_on_signal(),
    )
    .await
}
