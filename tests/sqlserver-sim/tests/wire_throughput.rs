//! Throughput of the wire layer: a canned 1M-row, 7-column SELECT streamed to tiberius.
//!
//! Run in release (the target of issue 3 is 250k rows/s on 2 cores):
//! `cargo test --release -p dbsync-sqlserver-sim --test wire_throughput -- --ignored --nocapture`
//! A debug build runs the same code with fewer rows and only prints the rate.

mod wire_support;

use std::time::Instant;

use dbsync_sqlserver_sim::api::StatementKind;
use dbsync_sqlserver_sim::types::{SqlType, Value};
use futures_util::TryStreamExt;
use wire_support::*;

const TARGET_ROWS_PER_SECOND: f64 = 250_000.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement; run in release with --ignored"]
async fn one_million_rows_stream_to_tiberius_fast_enough() {
    let rows: u64 = if cfg!(debug_assertions) {
        100_000
    } else {
        1_000_000
    };
    let (server, canned) = start().await;
    canned.on("SELECT bench", move |sink| {
        sink.columns(&[
            col("id", SqlType::BigInt, false),
            col("customer_id", SqlType::Int, false),
            col(
                "name",
                SqlType::NVarChar {
                    len: Some(50),
                    collation: LATIN1,
                },
                false,
            ),
            col(
                "amount",
                SqlType::Decimal {
                    precision: 18,
                    scale: 2,
                    numeric: false,
                },
                false,
            ),
            col("created_at", SqlType::DateTime2 { scale: 7 }, false),
            col("active", SqlType::Bit, false),
            col(
                "note",
                SqlType::NVarChar {
                    len: Some(100),
                    collation: LATIN1,
                },
                true,
            ),
        ])?;
        let names: Vec<Value> = (0..16).map(|i| s(&format!("customer name {i}"))).collect();
        let note = s("a short note");
        let mut row = vec![Value::Null; 7];
        for i in 0..rows {
            row[0] = Value::BigInt(i as i64);
            row[1] = Value::Int((i % 10_000) as i32);
            row[2] = names[(i % 16) as usize].clone();
            row[3] = Value::Decimal((i as i128) * 37 % 10_000_000, 2);
            row[4] = Value::DateTime2 {
                days: 738_000 + (i % 1000) as i32,
                ticks: (i % 864_000_000_000) * 10,
            };
            row[5] = Value::Bit(i % 2 == 0);
            row[6] = if i % 4 == 0 {
                Value::Null
            } else {
                note.clone()
            };
            sink.row(&row)?;
        }
        sink.done(StatementKind::Select, Some(rows), false)
    });
    let mut client = connect(server.addr).await;
    let started = Instant::now();
    let mut stream = client
        .simple_query("SELECT bench")
        .await
        .unwrap()
        .into_row_stream();
    let (mut count, mut checksum) = (0u64, 0i64);
    while let Some(row) = stream.try_next().await.unwrap() {
        checksum += row.get::<i64, _>(0).unwrap();
        count += 1;
    }
    let elapsed = started.elapsed();
    assert_eq!(count, rows);
    assert_eq!(checksum, (rows * (rows - 1) / 2) as i64);
    let rate = rows as f64 / elapsed.as_secs_f64();
    println!("wire throughput: {rows} rows x 7 columns in {elapsed:.2?} = {rate:.0} rows/s");
    // Server and client share this process: its peak RSS bounds what the stream buffered.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(peak) = status.lines().find(|l| l.starts_with("VmHWM")) {
        println!(
            "peak memory of server + client: {}",
            peak.trim_start_matches("VmHWM:").trim()
        );
    }
    if !cfg!(debug_assertions) {
        assert!(
            rate >= TARGET_ROWS_PER_SECOND,
            "{rate:.0} rows/s is below the {TARGET_ROWS_PER_SECOND} target"
        );
    }
}
