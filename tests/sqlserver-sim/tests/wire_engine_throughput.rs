//! Throughput of the whole stack: the real engine scanning a 1M-row, 7-column table, the wire
//! layer and tiberius decoding, in one process on 2 cores (what `make bench` measures).
//!
//! `cargo test --release -p dbsync-sqlserver-sim --test wire_engine_throughput -- --ignored --nocapture`

mod wire_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use dbsync_sqlserver_sim::engine::{Engine, EngineConfig};
use dbsync_sqlserver_sim::server::Server;
use dbsync_sqlserver_sim::types::Value;
use futures_util::TryStreamExt;
use wire_support::*;

const TARGET_ROWS_PER_SECOND: f64 = 250_000.0;

/// The whole stack: the real engine scanning a 1M-row, 7-column table, the wire layer and
/// tiberius decoding (what `make bench` measures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement; run in release with --ignored"]
async fn one_million_engine_rows_stream_to_tiberius_fast_enough() {
    let rows: i64 = if cfg!(debug_assertions) {
        100_000
    } else {
        1_000_000
    };
    let engine_config = EngineConfig::default();
    let password = engine_config.sa_password.clone();
    let engine = Engine::new(engine_config);
    engine
        .run(
            "master",
            "CREATE DATABASE perf; USE perf; CREATE TABLE dbo.t (id bigint NOT NULL PRIMARY KEY, \
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
    engine.insert_rows("perf", "dbo", "t", data).unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::start(addr, Arc::new(engine)).await.unwrap();
    let mut cfg = config(server.addr, &password);
    cfg.database("perf");
    let mut client = connect_with(server.addr, cfg).await.unwrap();

    let started = Instant::now();
    let mut stream = client
        .simple_query("SELECT id, customer_id, name, amount, created_at, active, note FROM dbo.t")
        .await
        .unwrap()
        .into_row_stream();
    let (mut count, mut checksum) = (0i64, 0i64);
    while let Some(row) = stream.try_next().await.unwrap() {
        checksum += row.get::<i64, _>(0).unwrap();
        count += 1;
    }
    let elapsed = started.elapsed();
    assert_eq!(count, rows);
    assert_eq!(checksum, rows * (rows - 1) / 2);
    let rate = rows as f64 / elapsed.as_secs_f64();
    println!(
        "engine + wire throughput: {rows} rows x 7 columns in {elapsed:.2?} = {rate:.0} rows/s"
    );
    if !cfg!(debug_assertions) {
        assert!(
            rate >= TARGET_ROWS_PER_SECOND,
            "{rate:.0} rows/s is below the {TARGET_ROWS_PER_SECOND} target"
        );
    }
}
