//! A seeded, reproducible generator of concurrent transactions over the sample database
//! (`crate::sample`), sent through real TDS with tiberius.
//!
//! Each worker owns a disjoint slice of the key space and draws its statements from its own
//! generator seeded with `(seed, worker)`, so the statement stream of every worker is the same
//! on every run; only the wall-clock interleaving of workers varies. Every worker drives two
//! connections and deliberately interleaves them (begin A, write A, begin B, write B, commit B,
//! write A, commit A), so transactions commit out of begin order on every run.
//!
//! What a transaction may contain: inserts, updates (including primary-key changes and
//! LOB-only updates), deletes (including of rows inserted in the same transaction), large
//! multi-statement transactions, and optionally DDL (ADD/DROP COLUMN on the heap table).

mod ops;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tiberius::{AuthMethod, Client, Config, EncryptionLevel};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};
use tokio_util::sync::CancellationToken;

use crate::sample::{SampleRng, SAMPLE_DATABASE};

pub use ops::WorkerState;

/// A tiberius client over a plain TCP stream.
pub type SqlClient = Client<Compat<TcpStream>>;

/// How the workload runs.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Same seed, same statements.
    pub seed: u64,
    pub database: String,
    pub user: String,
    pub password: String,
    /// Concurrent workers (each uses two connections).
    pub workers: usize,
    /// Target committed transactions per second over all workers; `None` = as fast as possible.
    pub transactions_per_second: Option<f64>,
    /// Stop after this many transactions (over all workers).
    pub max_transactions: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Every n-th transaction of a worker is large (0 = never).
    pub large_transaction_every: u64,
    /// Rows inserted by a large transaction.
    pub large_transaction_rows: usize,
    /// Percentage of transactions that roll back instead of committing.
    pub rollback_percent: u64,
    /// Worker 0 runs ADD COLUMN / DROP COLUMN on the heap table every n-th transaction
    /// (0 = no DDL).
    pub ddl_every: u64,
    /// `SET LOCK_TIMEOUT` of the worker connections in milliseconds (-1 = wait forever): a
    /// statement that waits longer fails with 1222, its transaction is rolled back and
    /// counted in `failed`, so an unexpected lock wait never stalls the workload.
    pub lock_timeout_ms: i64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            seed: 42,
            database: SAMPLE_DATABASE.to_string(),
            user: "sa".to_string(),
            password: String::new(),
            workers: 2,
            transactions_per_second: None,
            max_transactions: Some(1000),
            duration: None,
            large_transaction_every: 50,
            large_transaction_rows: 1000,
            rollback_percent: 5,
            ddl_every: 0,
            lock_timeout_ms: 10_000,
        }
    }
}

/// What the workload did. Counts cover committed transactions only, except `rolled_back`
/// and `failed`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadStats {
    pub committed: u64,
    pub rolled_back: u64,
    /// Transactions that failed with a server error (then rolled back).
    pub failed: u64,
    /// Row changes of committed transactions.
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    /// Updates that changed a primary-key column (CDC shows them as delete + insert).
    pub key_updates: u64,
    /// Updates that assigned only LOB columns.
    pub lob_updates: u64,
    /// Rows inserted and deleted again inside the same transaction.
    pub insert_then_delete: u64,
    pub ddl: u64,
    /// Pairs of transactions that committed in the opposite order of their begin.
    pub out_of_order_commits: u64,
    pub elapsed: Duration,
}

impl WorkloadStats {
    /// Row changes of committed transactions (as CDC counts them: a key update is one change
    /// here and two CT rows there).
    pub fn row_changes(&self) -> u64 {
        self.inserts + self.updates + self.deletes
    }

    fn add(&mut self, other: &WorkloadStats) {
        self.committed += other.committed;
        self.rolled_back += other.rolled_back;
        self.failed += other.failed;
        self.inserts += other.inserts;
        self.updates += other.updates;
        self.deletes += other.deletes;
        self.key_updates += other.key_updates;
        self.lob_updates += other.lob_updates;
        self.insert_then_delete += other.insert_then_delete;
        self.ddl += other.ddl;
        self.out_of_order_commits += other.out_of_order_commits;
    }
}

/// Errors that stop the workload (server errors inside a transaction only count as failures).
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("login or setup on {addr} failed: {source}")]
    Login {
        addr: SocketAddr,
        source: tiberius::error::Error,
    },
    #[error("the sample database is missing or empty ({what}); load it with crate::sample first")]
    NoSample { what: String },
    #[error("workload query failed: {source}")]
    Query { source: tiberius::error::Error },
    #[error("workload worker panicked: {0}")]
    Worker(String),
}

impl From<tiberius::error::Error> for WorkloadError {
    fn from(source: tiberius::error::Error) -> Self {
        WorkloadError::Query { source }
    }
}

/// Open one connection to the stand-in (or a real server) with encryption off.
pub async fn connect(
    addr: SocketAddr,
    database: &str,
    user: &str,
    password: &str,
) -> Result<SqlClient, WorkloadError> {
    let mut config = Config::new();
    config.host(addr.ip().to_string());
    config.port(addr.port());
    config.database(database);
    config.authentication(AuthMethod::sql_server(user, password));
    config.encryption(EncryptionLevel::NotSupported);
    config.application_name("dbsync-sim-workload");
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| WorkloadError::Connect { addr, source })?;
    tcp.set_nodelay(true)
        .map_err(|source| WorkloadError::Connect { addr, source })?;
    Client::connect(config, tcp.compat_write())
        .await
        .map_err(|source| WorkloadError::Login { addr, source })
}

/// Key ranges of the seeded sample that workers pick rows from.
#[derive(Debug, Clone, Copy)]
pub struct SampleBounds {
    pub min_order: i64,
    pub max_order: i64,
    pub min_product: i32,
    pub max_product: i32,
    pub min_note: i32,
    pub max_note: i32,
}

async fn scalar_pair(
    client: &mut SqlClient,
    sql: &str,
) -> Result<(Option<i64>, Option<i64>), WorkloadError> {
    let row = client.simple_query(sql).await?.into_row().await?;
    let get = |i: usize| -> Option<i64> {
        let row = row.as_ref()?;
        row.try_get::<i64, _>(i)
            .ok()
            .flatten()
            .or_else(|| row.try_get::<i32, _>(i).ok().flatten().map(i64::from))
    };
    Ok((get(0), get(1)))
}

/// Reads the key ranges of the sample tables the workload touches.
pub async fn sample_bounds(client: &mut SqlClient) -> Result<SampleBounds, WorkloadError> {
    let missing = |what: &str| WorkloadError::NoSample {
        what: what.to_string(),
    };
    let (min_order, max_order) = scalar_pair(
        client,
        "SELECT MIN(order_id), MAX(order_id) FROM sales.orders",
    )
    .await?;
    let (min_product, max_product) = scalar_pair(
        client,
        "SELECT MIN(product_id), MAX(product_id) FROM inventory.products",
    )
    .await?;
    let (min_note, max_note) = scalar_pair(
        client,
        "SELECT MIN(note_id), MAX(note_id) FROM sales.customer_notes",
    )
    .await?;
    Ok(SampleBounds {
        min_order: min_order.ok_or_else(|| missing("sales.orders"))?,
        max_order: max_order.ok_or_else(|| missing("sales.orders"))?,
        min_product: min_product.ok_or_else(|| missing("inventory.products"))? as i32,
        max_product: max_product.ok_or_else(|| missing("inventory.products"))? as i32,
        min_note: min_note.ok_or_else(|| missing("sales.customer_notes"))? as i32,
        max_note: max_note.ok_or_else(|| missing("sales.customer_notes"))? as i32,
    })
}

/// Runs the workload until `stop` is cancelled, `max_transactions` or `duration` is reached.
pub async fn run_workload(
    addr: SocketAddr,
    config: WorkloadConfig,
    stop: CancellationToken,
) -> Result<WorkloadStats, WorkloadError> {
    let started = Instant::now();
    let bounds = {
        let mut client = connect(addr, &config.database, &config.user, &config.password).await?;
        sample_bounds(&mut client).await?
    };
    let workers = config.workers.max(1);
    let per_worker_limit = config.max_transactions.map(|n| n.div_ceil(workers as u64));
    let per_worker_interval = config
        .transactions_per_second
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(workers as f64 / r));
    let deadline = config.duration.map(|d| started + d);

    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let config = config.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut a = connect(addr, &config.database, &config.user, &config.password).await?;
            let mut b = connect(addr, &config.database, &config.user, &config.password).await?;
            for client in [&mut a, &mut b] {
                let sql = format!("SET LOCK_TIMEOUT {}", config.lock_timeout_ms);
                client.simple_query(sql).await?.into_results().await?;
            }
            let seed = config.seed ^ (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut state = WorkerState::new(worker, workers, bounds, SampleRng::new(seed));
            let mut stats = WorkloadStats::default();
            let mut next_at = Instant::now();
            let mut done = 0u64;
            loop {
                if stop.is_cancelled()
                    || per_worker_limit.is_some_and(|n| done >= n)
                    || deadline.is_some_and(|d| Instant::now() >= d)
                {
                    break;
                }
                if let Some(interval) = per_worker_interval {
                    next_at += interval;
                    let now = Instant::now();
                    if next_at > now {
                        tokio::select! {
                            _ = tokio::time::sleep(next_at - now) => {}
                            _ = stop.cancelled() => break,
                        }
                    }
                }
                // Two transactions per step: interleaved on the two connections.
                let remaining = per_worker_limit.map_or(2, |n| (n - done).min(2));
                if remaining == 2 {
                    ops::interleaved_pair(&mut a, &mut b, &mut state, &config, &mut stats).await?;
                } else {
                    ops::single(&mut a, &mut state, &config, &mut stats).await?;
                }
                done += remaining;
            }
            Ok::<_, WorkloadError>(stats)
        }));
    }
    let mut total = WorkloadStats::default();
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(stats)) => total.add(&stats),
            Ok(Err(e)) => {
                stop.cancel();
                first_error.get_or_insert(e);
            }
            Err(join) => {
                stop.cancel();
                first_error.get_or_insert(WorkloadError::Worker(join.to_string()));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}
