//! `dbsync-sim-workload`: drives the seeded workload against a server holding the sample
//! database (the stand-in started with `--sample`, or a real SQL Server).
//!
//! `cargo run -p dbsync-sqlserver-sim --bin dbsync-sim-workload -- --addr 127.0.0.1:1433 --tps 200 --duration-secs 60`

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use dbsync_sqlserver_sim::workload::{run_workload, WorkloadConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "Seeded, reproducible transaction workload over the sample database `shop`")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:1433")]
    addr: SocketAddr,
    #[arg(long, default_value = "sa")]
    user: String,
    #[arg(
        long,
        env = "SQLSIM_SA_PASSWORD",
        hide_env_values = true,
        default_value = "Standin!Passw0rd"
    )]
    password: String,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Committed transactions per second over all workers (omit for as fast as possible).
    #[arg(long)]
    tps: Option<f64>,
    /// Stop after this many transactions.
    #[arg(long)]
    transactions: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Every n-th transaction of a worker inserts `--large-rows` rows (0 = never).
    #[arg(long, default_value_t = 50)]
    large_every: u64,
    #[arg(long, default_value_t = 1000)]
    large_rows: usize,
    /// ADD/DROP COLUMN on the heap table every n-th transaction of worker 0 (0 = never).
    #[arg(long, default_value_t = 0)]
    ddl_every: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let config = WorkloadConfig {
        seed: args.seed,
        user: args.user,
        password: args.password,
        workers: args.workers,
        transactions_per_second: args.tps,
        max_transactions: args.transactions,
        duration: args.duration_secs.map(Duration::from_secs),
        large_transaction_every: args.large_every,
        large_transaction_rows: args.large_rows,
        ddl_every: args.ddl_every,
        ..Default::default()
    };
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    let stats = run_workload(args.addr, config, stop).await?;
    println!("{stats:#?}");
    Ok(())
}
