//! dbsync-coordinator: the control plane as its own process.
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "dbsync-coordinator",
    version,
    about = "dbsync control plane: tasks, prechecks, assignments, progress"
)]
struct Cli {
    #[command(flatten)]
    config: dbsync_coordinator::CoordinatorConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    dbsync_telemetry::init_tracing("dbsync-coordinator");
    let cli = Cli::parse();
    let listener = tokio::net::TcpListener::bind(cli.config.listen).await?;
    dbsync_coordinator::serve(cli.config, listener, dbsync_telemetry::shutdown_on_signal()).await
}
