//! Throughput of capture's chunked snapshot reads against the real engine: a 1M-row, 7-column
//! table read as 100,000-row key ranges with the exact query text capture sends
//! (`services/capture/src/sql.rs` `chunk_query`): `WHERE [id] > CAST(@P1 AS bigint) AND [id] <=
//! CAST(@P2 AS bigint) ORDER BY [id]`, the first chunk without lower bound, the last without
//! upper bound. The unfiltered full scan runs first as the ceiling to compare with. Client
//! and server share the process and its 2 cores, so besides rows/s (mostly tiberius
//! decoding) each read reports the CPU time the process spent: the client's part is the same
//! for both reads, the difference is the stand-in's.
//!
//! `cargo test --release -p dbsync-sqlserver-sim --test wire_chunk_throughput -- --ignored --nocapture`

mod wire_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dbsync_sqlserver_sim::engine::{Engine, EngineConfig};
use dbsync_sqlserver_sim::server::Server;
use dbsync_sqlserver_sim::types::Value;
use futures_util::TryStreamExt;
use wire_support::*;

const TARGET_ROWS_PER_SECOND: f64 = 250_000.0;
const ROUNDS: usize = 3;
const COLUMNS: &str = "[id], [customer_id], [name], [amount], [created_at], [active], [note]";

/// CPU time (user + system, all threads) of this process so far, from /proc (Linux).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime and stime are the 12th
    // and 13th, in clock ticks of 1/100 s (CLK_TCK on Linux).
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Reads every row of `query` and returns (rows, sum of ids).
async fn drain(
    client: &mut TestClient,
    query: &str,
    params: &[&dyn tiberius::ToSql],
) -> (i64, i64) {
    let mut stream = client.query(query, params).await.unwrap().into_row_stream();
    let (mut count, mut sum) = (0i64, 0i64);
    while let Some(row) = stream.try_next().await.unwrap() {
        sum += row.get::<i64, _>(0).unwrap();
        count += 1;
    }
    (count, sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement; run in release with --ignored"]
async fn chunked_key_range_reads_stream_to_tiberius_fast_enough() {
    let rows: i64 = if cfg!(debug_assertions) {
        100_000
    } else {
        1_000_000
    };
    let chunk = rows / 10;
    let engine_config = EngineConfig::default();
    let password = engine_config.sa_password.clone();
    let engine = Engine::new(engine_config);
    engine
        .run(
            "master",
            "CREATE DATABASE perf; USE perf; CREATE TABLE dbo.bench7 (id bigint NOT NULL PRIMARY KEY, \
             customer_id int NOT NULL, name nvarchar(50) NOT NULL, amount decimal(18,2) NOT NULL, \
             created_at datetime2(7) NOT NULL, active bit NOT NULL, note nvarchar(100) NULL)",
        )
        .unwrap();
    let names: Vec<Value> = (0..16).map(|i| s(&format!("customer name {i}"))).collect();
    let note = s("a short note");
    let data: Vec<Vec<Value>> = (0..rows)
        .map(|i| {
            vec![
                Value::BigInt(i),
                Value::Int((i % 10_000) as i32),
                names[(i % 16) as usize].clone(),
                Value::Decimal(i as i128 * 37 % 10_000_000, 2),
                Value::DateTime2 {
                    days: 738_000 + (i % 1000) as i32,
                    ticks: (i as u64 % 86_400) * 10_000_000,
                },
                Value::Bit(i % 2 == 0),
                if i % 4 == 0 {
                    Value::Null
                } else {
                    note.clone()
                },
            ]
        })
        .collect();
    engine.insert_rows("perf", "dbo", "bench7", data).unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::start(addr, Arc::new(engine)).await.unwrap();
    let mut cfg = config(server.addr, &password);
    cfg.database("perf");
    let mut client = connect_with(server.addr, cfg).await.unwrap();
    let expected_sum = rows * (rows - 1) / 2;

    // Chunk bounds (lower, upper]: ids -1 < id <= chunk-1, …; first and last open.
    let uppers: Vec<i64> = (1..10).map(|c| c * chunk - 1).collect();
    let first = format!(
        "SELECT {COLUMNS} FROM [dbo].[bench7] WHERE [id] <= CAST(@P1 AS bigint) ORDER BY [id]"
    );
    let middle = format!(
        "SELECT {COLUMNS} FROM [dbo].[bench7] WHERE [id] > CAST(@P1 AS bigint) AND [id] <= CAST(@P2 AS bigint) \
         ORDER BY [id]"
    );
    let last = format!(
        "SELECT {COLUMNS} FROM [dbo].[bench7] WHERE [id] > CAST(@P1 AS bigint) ORDER BY [id]"
    );
    // Rounds alternate the two reads; the best round of each counts (the machine is shared).
    let (mut best_full, mut best_chunked) = (Duration::MAX, Duration::MAX);
    let (mut cpu_full, mut cpu_chunked) = (Duration::MAX, Duration::MAX);
    for _ in 0..ROUNDS {
        let cpu = process_cpu();
        let started = Instant::now();
        let full = drain(
            &mut client,
            &format!("SELECT {COLUMNS} FROM [dbo].[bench7] ORDER BY [id]"),
            &[],
        )
        .await;
        best_full = best_full.min(started.elapsed());
        cpu_full = cpu_full.min(process_cpu() - cpu);
        assert_eq!(full, (rows, expected_sum));

        let cpu = process_cpu();
        let started = Instant::now();
        let mut total = (0i64, 0i64);
        let mut add = |(c, s): (i64, i64)| {
            total.0 += c;
            total.1 += s;
        };
        add(drain(&mut client, &first, &[&uppers[0]]).await);
        for pair in uppers.windows(2) {
            let chunk_rows = drain(&mut client, &middle, &[&pair[0], &pair[1]]).await;
            assert_eq!(
                chunk_rows.0,
                pair[1] - pair[0],
                "rows of chunk ({}, {}]",
                pair[0],
                pair[1]
            );
            add(chunk_rows);
        }
        add(drain(&mut client, &last, &[&uppers[8]]).await);
        best_chunked = best_chunked.min(started.elapsed());
        cpu_chunked = cpu_chunked.min(process_cpu() - cpu);
        assert_eq!(total, (rows, expected_sum));
    }

    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    println!(
        "full scan: {rows} rows x 7 columns, best of {ROUNDS}: {best_full:.2?} = {:.0} rows/s, \
         process CPU {cpu_full:.2?}",
        rate(best_full)
    );
    println!(
        "chunked key ranges (10 chunks): {rows} rows x 7 columns, best of {ROUNDS}: {best_chunked:.2?} = {:.0} rows/s, \
         process CPU {cpu_chunked:.2?}",
        rate(best_chunked)
    );
    if !cfg!(debug_assertions) {
        assert!(
            rate(best_chunked) >= TARGET_ROWS_PER_SECOND,
            "{:.0} rows/s is below the {TARGET_ROWS_PER_SECOND} target",
            rate(best_chunked)
        );
    }
}
