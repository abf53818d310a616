//! The stand-in's seeded workload generator, configured for end-to-end tests.

use std::time::Duration;

use dbsync_sqlserver_sim::sample::SAMPLE_DATABASE;
use dbsync_sqlserver_sim::workload::{run_workload, WorkloadConfig, WorkloadStats};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::StandIn;

/// A workload over the sample database: `transactions` transactions at `per_second`
/// (`None`: as fast as it goes), with a large transaction every 40 and 5% rollbacks.
pub fn sample_workload(
    standin: &StandIn,
    seed: u64,
    transactions: u64,
    per_second: Option<f64>,
) -> WorkloadConfig {
    WorkloadConfig {
        seed,
        database: SAMPLE_DATABASE.into(),
        user: standin.user.clone(),
        password: standin.password.clone(),
        workers: 2,
        transactions_per_second: per_second,
        max_transactions: Some(transactions),
        duration: None,
        large_transaction_every: 40,
        large_transaction_rows: 1500,
        rollback_percent: 5,
        ddl_every: 0,
        ..Default::default()
    }
}

/// Runs `config` in the background until done or `stop`.
pub fn spawn_workload(
    standin: &StandIn,
    config: WorkloadConfig,
    stop: CancellationToken,
) -> JoinHandle<WorkloadStats> {
    let addr = standin.addr;
    tokio::spawn(async move { run_workload(addr, config, stop).await.expect("workload") })
}

/// Waits (bounded) for a background workload.
pub async fn finish_workload(
    handle: JoinHandle<WorkloadStats>,
    timeout: Duration,
) -> WorkloadStats {
    tokio::time::timeout(timeout, handle)
        .await
        .expect("workload did not finish in time")
        .expect("workload task")
}
