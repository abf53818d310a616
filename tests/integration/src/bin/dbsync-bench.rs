//! `make bench`: dbsync's benchmarks, each next to a ceiling measured in the same run.

use clap::{Parser, Subcommand};
use dbsync_testkit::bench::{bench_full, bench_incremental, bench_standin, BenchOptions};

#[derive(Parser)]
#[command(about = "dbsync benchmarks")]
struct Args {
    #[command(subcommand)]
    which: Which,
    /// Rows of the benchmark table (full sync and verify: this many; stand-in SELECT: this many).
    #[arg(long, global = true)]
    rows: Option<u64>,
    /// Offered change rate of the incremental benchmark (changes/s).
    #[arg(long, global = true, default_value_t = 5000)]
    rate: u64,
    /// Duration of the offered incremental load, in seconds.
    #[arg(long, global = true, default_value_t = 20)]
    seconds: u64,
    /// Run the services in-process instead of as processes of their binaries.
    #[arg(long, global = true)]
    in_process: bool,
    /// Chunks the full-sync benchmark loads at once.
    #[arg(long, global = true, default_value_t = 4)]
    parallel_chunks: u32,
    /// Skip (d) verify after the full-sync benchmark.
    #[arg(long, global = true)]
    no_verify: bool,
}

#[derive(Subcommand, Clone, Copy, PartialEq)]
enum Which {
    /// Everything below.
    All,
    /// (a) full sync vs raw binary COPY, with (d) verify.
    Full,
    /// (b) the stand-in: SELECT rows/s and row changes/s with CDC on.
    Standin,
    /// (c) incremental changes/s and lag vs staged COPY + merge.
    Incremental,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binaries = std::env::current_exe()?
        .parent()
        .map(|p| p.to_path_buf())
        .filter(|dir| {
            ["dbsync-coordinator", "dbsync-capture", "dbsync-apply"]
                .iter()
                .all(|b| dir.join(b).exists())
        });
    let binaries = if args.in_process { None } else { binaries };
    let run = |which: Which| args.which == Which::All || args.which == which;
    if run(Which::Full) {
        let o = BenchOptions {
            rows: args.rows.unwrap_or(2_000_000),
            rate: args.rate,
            seconds: args.seconds,
            binaries: binaries.clone(),
            parallel_chunks: args.parallel_chunks,
            verify: !args.no_verify,
        };
        println!("{}", bench_full(&o).await?);
    }
    if run(Which::Standin) {
        let o = BenchOptions {
            rows: args.rows.unwrap_or(1_000_000),
            rate: args.rate,
            seconds: args.seconds,
            binaries: None,
            parallel_chunks: args.parallel_chunks,
            verify: false,
        };
        println!("{}", bench_standin(&o).await?);
    }
    if run(Which::Incremental) {
        let o = BenchOptions {
            rows: args.rows.unwrap_or(200_000),
            rate: args.rate,
            seconds: args.seconds,
            binaries,
            parallel_chunks: args.parallel_chunks,
            verify: false,
        };
        println!("{}", bench_incremental(&o).await?);
    }
    Ok(())
}
