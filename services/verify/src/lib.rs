//! Verification and repair between the SQL Server source and the PostgreSQL target.
//!
//! Per table ([`table`]): row counts on both sides; the table is split into the key ranges
//! capture plans for full sync (`PlanChunks`); each range is summarized on both sides by an
//! order-independent [`canon::Aggregate`] of per-row MD5 digests over the canonical value
//! forms of `dbsync-typemap` (capture hashes the source rows next to the source with the
//! target's column types — `ChecksumChunks` with columns, under the task's full-sync throttle —
//! and PostgreSQL hashes its rows itself with `pg_canonical_sql`, so only sums per range cross
//! the network on either side; [`VerifyRequest::source_checksums`] off streams the source rows
//! through `ReadChunk` and hashes them here instead). Ranges whose
//! sums differ are narrowed to the differing rows by key digest (missing, extra, different
//! with the differing columns). Where the two engines order keys differently (text,
//! uniqueidentifier, temporal keys with sub-microsecond parts) or the table has no key, the
//! partitions are buckets of the key digest instead of ranges, so both sides still compare
//! the same rows.
//!
//! Modes: [`Mode::Full`], [`Mode::Sampled`] (a seeded share of the partitions) and
//! [`Mode::Incremental`] (differing rows are re-checked after the delay plus the current lag
//! before they are reported). With `repair`, differing rows are re-copied from the source
//! (`ReadRows` by key, delete + insert in one target transaction) and extra rows deleted.
//!
//! Entry points: [`verify`], [`bench::measure`] for benchmarks; [`VerifyReport`] renders as
//! text or JSON and converts to the protobuf `VerifyReport`.

pub mod bench;
pub mod canon;
pub mod error;
pub mod report;
mod table;

use std::time::{Duration, Instant};

use dbsync_core::Secret;
use dbsync_proto::v1::{SourceConnection, TablePlan, TargetConnection, Throttle};

pub use error::VerifyError;
pub use report::{DiffKind, Difference, TableReport, VerifyReport};

use crate::error::Result;

/// How much of each table is compared.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// Every row.
    Full,
    /// `percent` of each table's partitions, chosen by a generator seeded with `seed` (the
    /// same seed picks the same partitions again).
    Sampled { percent: f64, seed: u64 },
    /// Every row; a row that differs is re-checked up to `attempts` times, each after
    /// `recheck_delay + lag`, and reported only if it still differs (changes in flight).
    Incremental {
        recheck_delay: Duration,
        attempts: u32,
        lag: Duration,
    },
}

impl Mode {
    /// From the API's words: `full` (or empty), `sampled`, `incremental`.
    pub fn parse(mode: &str, sample_percent: f64, lag: Duration) -> Result<Mode> {
        match mode {
            "" | "full" => Ok(Mode::Full),
            "sampled" => {
                if !(sample_percent > 0.0 && sample_percent <= 100.0) {
                    return Err(VerifyError::InvalidRequest {
                        object: "sample_percent".into(),
                        detail: format!("{sample_percent} is outside (0, 100]; give the share of chunks to compare, e.g. 10"),
                    });
                }
                Ok(Mode::Sampled {
                    percent: sample_percent,
                    seed: 0x5eed,
                })
            }
            "incremental" => Ok(Mode::Incremental {
                recheck_delay: Duration::from_secs(2),
                attempts: 3,
                lag,
            }),
            other => Err(VerifyError::InvalidRequest {
                object: format!("mode {other:?}"),
                detail: "use full, sampled or incremental".into(),
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Sampled { .. } => "sampled",
            Mode::Incremental { .. } => "incremental",
        }
    }
}

/// What to verify and how. Holds passwords: it has no `Debug`.
#[derive(Clone)]
pub struct VerifyRequest {
    /// Capture throttles are kept per task: verification shares the task's budget.
    pub task_id: String,
    pub source: SourceConnection,
    pub target: TargetConnection,
    /// Address of the capture service (`host:port` or URL) and its bearer token.
    pub capture_address: String,
    pub capture_token: Option<Secret>,
    /// The tables as the task plans them (source schema, target names, column plans).
    pub tables: Vec<TablePlan>,
    pub mode: Mode,
    /// Re-copy differing rows from the source and delete extra rows.
    pub repair: bool,
    /// Source-side limits (queries/s, rows/s, MB/s), as for full sync.
    pub throttle: Throttle,
    /// Rows per key range (0: capture's default, 100 000).
    pub chunk_rows: u64,
    /// Ranges compared at once.
    pub parallel: usize,
    /// Differences kept per table (all are counted; repair needs them all kept).
    pub max_differences: usize,
    /// Capture hashes the source rows next to the source and sends only sums per range
    /// (`ChecksumChunks`); false streams every row over gRPC and hashes it here (the
    /// benchmark compares both).
    pub source_checksums: bool,
}

impl VerifyRequest {
    /// A full, non-repairing verification with default sizes.
    pub fn new(
        task_id: &str,
        source: SourceConnection,
        target: TargetConnection,
        capture_address: &str,
        tables: Vec<TablePlan>,
    ) -> Self {
        VerifyRequest {
            task_id: task_id.to_string(),
            source,
            target,
            capture_address: capture_address.to_string(),
            capture_token: None,
            tables,
            mode: Mode::Full,
            repair: false,
            throttle: Throttle::default(),
            chunk_rows: 0,
            parallel: 2,
            max_differences: 10_000,
            source_checksums: true,
        }
    }
}

/// Where verification is, for progress bars.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyProgress {
    /// `database.schema.table` of the source.
    pub table: String,
    pub table_index: usize,
    pub tables_total: usize,
    pub phase: Phase,
    pub partitions_done: u64,
    pub partitions_total: u64,
    pub rows_verified: u64,
    /// The source's row estimate (statistics), known once the table's chunks are planned.
    pub rows_total: u64,
    pub differences: u64,
}

impl From<VerifyProgress> for dbsync_proto::v1::VerifyTableProgress {
    fn from(p: VerifyProgress) -> Self {
        dbsync_proto::v1::VerifyTableProgress {
            table: p.table,
            table_index: u32::try_from(p.table_index).unwrap_or(u32::MAX),
            tables_total: u32::try_from(p.tables_total).unwrap_or(u32::MAX),
            phase: p.phase.name().to_string(),
            rows_verified: p.rows_verified,
            rows_total: p.rows_total,
            chunks_done: p.partitions_done,
            chunks_total: p.partitions_total,
            mismatches: p.differences,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Counting,
    Checksumming,
    Narrowing,
    Rechecking,
    Repairing,
    Done,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Counting => "counting",
            Phase::Checksumming => "checksumming",
            Phase::Narrowing => "narrowing",
            Phase::Rechecking => "rechecking",
            Phase::Repairing => "repairing",
            Phase::Done => "done",
        }
    }
}

/// Verifies (and with `repair`, repairs) every table of the request, in order.
pub async fn verify(
    request: VerifyRequest,
    mut progress: impl FnMut(VerifyProgress),
) -> Result<VerifyReport> {
    let started = Instant::now();
    let capture =
        dbsync_apply::capture::connect(&request.capture_address, request.capture_token.as_ref())
            .await?;
    let mut pg = Vec::new();
    for _ in 0..request.parallel.max(1) {
        pg.push(dbsync_apply::pg::connect_plain(&request.target).await?);
    }
    let ctx = table::Context {
        request: &request,
        capture,
        pg,
    };
    let mut report = VerifyReport {
        mode: request.mode.name().to_string(),
        repair: request.repair,
        equal: true,
        ..Default::default()
    };
    for (index, plan) in request.tables.iter().enumerate() {
        // Boxed: the per-table future is large, and callers' stacks are not.
        let t = Box::pin(table::verify_table(&ctx, plan, index, &mut progress)).await?;
        report.equal &= t.equal;
        report.tables.push(t);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Services spawn `verify` on a multi-threaded runtime: its future must be `Send`.
    #[allow(dead_code)]
    fn verify_future_is_send(request: VerifyRequest) {
        fn send<T: Send>(_: T) {}
        send(verify(request, |_| {}));
    }

    #[test]
    fn modes_parse_with_clear_errors() {
        assert_eq!(Mode::parse("", 0.0, Duration::ZERO).unwrap(), Mode::Full);
        assert!(
            matches!(Mode::parse("sampled", 10.0, Duration::ZERO).unwrap(), Mode::Sampled { percent, .. } if percent == 10.0)
        );
        let lag = Duration::from_secs(3);
        assert!(
            matches!(Mode::parse("incremental", 0.0, lag).unwrap(), Mode::Incremental { lag: l, .. } if l == lag)
        );
        assert!(Mode::parse("sampled", 0.0, lag)
            .unwrap_err()
            .to_string()
            .contains("sample_percent"));
        assert!(Mode::parse("quick", 0.0, lag)
            .unwrap_err()
            .to_string()
            .contains("full, sampled or incremental"));
    }
}
