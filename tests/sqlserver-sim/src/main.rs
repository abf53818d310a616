//! `dbsync-sqlserver-sim`: the SQL Server stand-in as a standalone TDS server.
//!
//! `cargo run -p dbsync-sqlserver-sim -- --port 1433 [--sample]`

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use dbsync_sqlserver_sim::engine::cdc::{CaptureMode, Cdc, CdcConfig};
use dbsync_sqlserver_sim::engine::{Engine, EngineConfig};
use dbsync_sqlserver_sim::sample::{sample_batches, SAMPLE_DATABASE};
use dbsync_sqlserver_sim::server::Server;

#[derive(Parser)]
#[command(about = "SQL Server stand-in: TDS 7.4 server with a T-SQL subset and CDC")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// TCP port (0 picks a free one).
    #[arg(long, default_value_t = 1433)]
    port: u16,
    /// Password of the `sa` login.
    #[arg(long, env = "SQLSIM_SA_PASSWORD", hide_env_values = true)]
    sa_password: Option<String>,
    /// Create and fill the sample database `shop`.
    #[arg(long)]
    sample: bool,
    /// Rows per ordinary table of the sample database.
    #[arg(long, default_value_t = 1000)]
    sample_rows: usize,
    /// When CDC captures committed changes: by a background job, as SQL Server's capture job
    /// does, or synchronously at commit (deterministic, what most tests use).
    #[arg(long, value_enum, default_value_t = Capture::Job)]
    capture: Capture,
    /// Polling interval of the capture job in milliseconds (SQL Server's default is 5 s).
    #[arg(long, default_value_t = 1000)]
    capture_poll_ms: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Capture {
    Job,
    AtCommit,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = EngineConfig::default();
    if let Some(password) = args.sa_password {
        config.sa_password = password;
    }
    let engine = Engine::new(config);
    let mode = match args.capture {
        Capture::Job => CaptureMode::Agent,
        Capture::AtCommit => CaptureMode::Synchronous,
    };
    Cdc::install(&engine, CdcConfig::default()).set_config(CdcConfig {
        mode,
        agent_poll_override: Some(Duration::from_millis(args.capture_poll_ms)),
        ..CdcConfig::default()
    });
    if args.sample {
        let mut session = engine.system_session("master");
        for (i, batch) in sample_batches(args.sample_rows).iter().enumerate() {
            session.run(batch).map_err(|e| {
                format!("loading the sample database failed in batch {}: {e}", i + 1)
            })?;
        }
        tracing::info!(
            database = SAMPLE_DATABASE,
            rows_per_table = args.sample_rows,
            "sample database loaded"
        );
    }
    let server = Server::start(SocketAddr::new(args.host, args.port), Arc::new(engine)).await?;
    println!("listening on {}", server.addr);
    wait_for_stop_signal().await?;
    server.shutdown();
    server.stopped().await;
    Ok(())
}

/// Ctrl-C or SIGTERM (what `docker stop` and process supervisors send).
async fn wait_for_stop_signal() -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}
