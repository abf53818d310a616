//! Engine throughput (run with `cargo test --release -p dbsync-sqlserver-sim --test engine_perf
//! -- --ignored --nocapture`): a 1M-row, 7-column SELECT streamed to a sink and row changes
//! per second through SQL. Ignored by default (it measures, it does not assert, in debug).

use std::time::Instant;

use dbsync_sqlserver_sim::api::{
    Cancelled, EnvChange, ResultColumn, ResultSink, RpcParam, RpcProc, Session, SqlError,
    StatementKind,
};
use dbsync_sqlserver_sim::engine::{Engine, EngineConfig};
use dbsync_sqlserver_sim::types::{Collation, SqlType, Value};

struct CountingSink {
    rows: u64,
    errors: Vec<SqlError>,
}

impl ResultSink for CountingSink {
    fn columns(&mut self, _: &[ResultColumn]) -> Result<(), Cancelled> {
        Ok(())
    }
    fn row(&mut self, _: &[Value]) -> Result<(), Cancelled> {
        self.rows += 1;
        Ok(())
    }
    fn done(&mut self, _: StatementKind, _: Option<u64>, _: bool) -> Result<(), Cancelled> {
        Ok(())
    }
    fn error(&mut self, e: &SqlError) -> Result<(), Cancelled> {
        self.errors.push(e.clone());
        Ok(())
    }
    fn info(&mut self, _: i32, _: &str) -> Result<(), Cancelled> {
        Ok(())
    }
    fn env_change(&mut self, _: &EnvChange) -> Result<(), Cancelled> {
        Ok(())
    }
    fn return_status(&mut self, _: i32) -> Result<(), Cancelled> {
        Ok(())
    }
    fn return_value(&mut self, _: u16, _: &str, _: &SqlType, _: &Value) -> Result<(), Cancelled> {
        Ok(())
    }
}

#[test]
#[ignore]
fn select_and_change_throughput() {
    let e = Engine::new(EngineConfig::default());
    let mut s = e.session("master").unwrap();
    s.run("CREATE DATABASE perf; USE perf; CREATE TABLE dbo.t (id bigint NOT NULL PRIMARY KEY, a int, b nvarchar(50), c decimal(18,2), d datetime2(7), e varbinary(16), f bit)").unwrap();
    // Row changes through SQL: 1000-row INSERT batches.
    let total = 200_000;
    let start = Instant::now();
    let mut id = 0;
    while id < total {
        let mut sql = String::from("INSERT INTO dbo.t (id, a, b, c, d, e, f) VALUES ");
        for k in 0..1000 {
            if k > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "({id}, {}, N'name {id}', {}.25, '2024-01-02 03:04:05.1234567', 0x0102030405, 1)",
                id % 1000,
                id
            ));
            id += 1;
        }
        let mut sink = CountingSink {
            rows: 0,
            errors: vec![],
        };
        s.execute_batch(&sql, &mut sink);
        assert!(sink.errors.is_empty(), "{:?}", sink.errors);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "insert: {} rows in {:.2}s = {:.0} rows/s",
        total,
        secs,
        total as f64 / secs
    );
    // Updates, one statement each.
    let start = Instant::now();
    let n = 20_000;
    for k in 0..n {
        let mut sink = CountingSink {
            rows: 0,
            errors: vec![],
        };
        s.execute_batch(
            &format!("UPDATE dbo.t SET a = a + 1 WHERE id = {k}"),
            &mut sink,
        );
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "update: {} single-row statements in {:.2}s = {:.0}/s",
        n,
        secs,
        n as f64 / secs
    );
    // Fill to 1M with the fast path and stream it.
    let mut rows = Vec::new();
    for i in total..1_000_000i64 {
        rows.push(vec![
            Value::BigInt(i),
            Value::Int(1),
            Value::String("x".into()),
            Value::Decimal(125, 2),
            Value::DateTime2 {
                days: 738000,
                ticks: 1,
            },
            Value::Binary(vec![1u8, 2].into()),
            Value::Bit(true),
        ]);
    }
    e.insert_rows("perf", "dbo", "t", rows).unwrap();
    for _ in 0..2 {
        let start = Instant::now();
        let mut sink = CountingSink {
            rows: 0,
            errors: vec![],
        };
        s.execute_batch("SELECT id, a, b, c, d, e, f FROM dbo.t", &mut sink);
        let secs = start.elapsed().as_secs_f64();
        println!(
            "select: {} rows in {:.2}s = {:.0} rows/s",
            sink.rows,
            secs,
            sink.rows as f64 / secs
        );
        assert_eq!(sink.rows, 1_000_000);
    }
    let start = Instant::now();
    let mut sink = CountingSink {
        rows: 0,
        errors: vec![],
    };
    s.execute_batch(
        "SELECT TOP (1000) id, a, b FROM dbo.t WHERE (id > 500000) ORDER BY id",
        &mut sink,
    );
    println!("key-range top 1000: {:?}", start.elapsed());
    assert_eq!(sink.rows, 1000);
    let start = Instant::now();
    let mut sink = CountingSink {
        rows: 0,
        errors: vec![],
    };
    s.execute_batch(
        "SELECT id FROM dbo.t ORDER BY id OFFSET 900000 ROWS FETCH NEXT 1 ROWS ONLY",
        &mut sink,
    );
    println!("offset 900000 fetch 1: {:?}", start.elapsed());
    assert_eq!(sink.rows, 1);
}

/// Runs `sql` through sp_executesql (as tiberius sends a parameterised query) with bigint
/// parameters `@P1`, `@P2`, … and returns the rows produced.
fn sp_executesql(s: &mut dyn Session, sql: &str, params: &[i64]) -> u64 {
    let nvarchar = || SqlType::NVarChar {
        len: None,
        collation: Collation::SQL_LATIN1_GENERAL_CP1_CI_AS,
    };
    let text = |name: &str, v: String| RpcParam {
        name: name.into(),
        ty: nvarchar(),
        value: Value::String(v.into()),
        output: false,
    };
    let declarations = (1..=params.len())
        .map(|i| format!("@P{i} bigint"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut rpc = vec![text("", sql.to_string()), text("", declarations)];
    for (i, v) in params.iter().enumerate() {
        rpc.push(RpcParam {
            name: format!("@P{}", i + 1),
            ty: SqlType::BigInt,
            value: Value::BigInt(*v),
            output: false,
        });
    }
    let mut sink = CountingSink {
        rows: 0,
        errors: vec![],
    };
    s.execute_rpc(&RpcProc::Id(10), rpc, &mut sink);
    assert!(sink.errors.is_empty(), "{sql}: {:?}", sink.errors);
    sink.rows
}

/// The engine alone (no TDS) answering capture's chunk queries over a 2M-row, 7-column table
/// in 200,000-row key ranges, against the unfiltered scan of the same rows: what the chunk
/// filter costs on top of the scan.
#[test]
#[ignore]
fn chunked_key_range_throughput() {
    let rows: i64 = if cfg!(debug_assertions) {
        200_000
    } else {
        2_000_000
    };
    let chunk = rows / 10;
    let e = Engine::new(EngineConfig::default());
    let mut s = e.session("master").unwrap();
    s.run("CREATE DATABASE perf; USE perf; CREATE TABLE dbo.bench7 (id bigint NOT NULL PRIMARY KEY, a int, b nvarchar(50), c decimal(18,2), d datetime2(7), e varbinary(16), f bit)").unwrap();
    let data: Vec<Vec<Value>> = (0..rows)
        .map(|i| {
            vec![
                Value::BigInt(i),
                Value::Int((i % 1000) as i32),
                Value::String(format!("name {}", i % 16).into()),
                Value::Decimal(i as i128 * 37, 2),
                Value::DateTime2 {
                    days: 738_000,
                    ticks: i as u64,
                },
                Value::Binary(vec![1u8, 2].into()),
                Value::Bit(i % 2 == 0),
            ]
        })
        .collect();
    e.insert_rows("perf", "dbo", "bench7", data).unwrap();
    let columns = "[id], [a], [b], [c], [d], [e], [f]";
    let full = format!("SELECT {columns} FROM [dbo].[bench7] ORDER BY [id]");
    let first = format!(
        "SELECT {columns} FROM [dbo].[bench7] WHERE [id] <= CAST(@P1 AS bigint) ORDER BY [id]"
    );
    let middle = format!("SELECT {columns} FROM [dbo].[bench7] WHERE [id] > CAST(@P1 AS bigint) AND [id] <= CAST(@P2 AS bigint) ORDER BY [id]");
    let last = format!(
        "SELECT {columns} FROM [dbo].[bench7] WHERE [id] > CAST(@P1 AS bigint) ORDER BY [id]"
    );
    let uppers: Vec<i64> = (1..10).map(|c| c * chunk - 1).collect();
    let (mut best_full, mut best_chunked) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let start = Instant::now();
        assert_eq!(sp_executesql(&mut s, &full, &[]), rows as u64);
        best_full = best_full.min(start.elapsed().as_secs_f64());
        let start = Instant::now();
        let mut n = sp_executesql(&mut s, &first, &[uppers[0]]);
        for pair in uppers.windows(2) {
            n += sp_executesql(&mut s, &middle, pair);
        }
        n += sp_executesql(&mut s, &last, &[uppers[8]]);
        best_chunked = best_chunked.min(start.elapsed().as_secs_f64());
        assert_eq!(n, rows as u64);
    }
    println!(
        "engine full scan: {rows} rows, best of 3: {best_full:.3}s = {:.0} rows/s",
        rows as f64 / best_full
    );
    println!(
        "engine chunked key ranges (10 chunks): {rows} rows, best of 3: {best_chunked:.3}s = {:.0} rows/s",
        rows as f64 / best_chunked
    );
}
