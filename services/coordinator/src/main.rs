//! dbsync-coordinator: the control plane as its own process. Flags, environment and
//! `--config` are parsed in the library ([`dbsync_coordinator::CoordinatorArgs`]).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    dbsync_telemetry::init_tracing("dbsync-coordinator");
    let config = dbsync_coordinator::CoordinatorArgs::from_process().config;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    dbsync_coordinator::serve(config, listener, dbsync_telemetry::shutdown_on_signal()).await
}
