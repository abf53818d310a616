//! Row changes per second the stand-in accepts over TDS with CDC on, measured the way
//! `make bench` does: tiberius sends 500-row INSERT batches in explicit transactions, then
//! 5,000-row range UPDATEs, into a table tracked by CDC with the capture job running. The
//! clock stops only when every change is committed and the capture job has written it to the
//! change table.
//!
//! `cargo test --release -p dbsync-sqlserver-sim --test wire_cdc_throughput -- --ignored --nocapture`

use std::sync::Arc;
use std::time::{Duration, Instant};

use dbsync_sqlserver_sim::engine::cdc::{CaptureMode, Cdc, CdcConfig};
use dbsync_sqlserver_sim::engine::{Engine, EngineConfig};
use dbsync_sqlserver_sim::server::Server;
use dbsync_sqlserver_sim::types::Value;
use dbsync_sqlserver_sim::workload::{self, SqlClient};

const TARGET_CHANGES_PER_SECOND: f64 = 50_000.0;
const DB: &str = "perf";

async fn exec(c: &mut SqlClient, sql: &str) {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_results()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement; run in release with --ignored"]
async fn cdc_on_row_changes_over_tds_fast_enough() {
    let changes: u64 = if cfg!(debug_assertions) {
        10_000
    } else {
        200_000
    };
    let engine = Engine::new(EngineConfig::default());
    let cdc = Cdc::install(
        &engine,
        CdcConfig {
            mode: CaptureMode::Agent,
            agent_poll_override: Some(Duration::from_millis(500)),
            ..Default::default()
        },
    );
    engine
        .run(
            "master",
            &format!(
                "CREATE DATABASE {DB}; ALTER DATABASE {DB} SET ALLOW_SNAPSHOT_ISOLATION ON; \
                 ALTER DATABASE {DB} SET READ_COMMITTED_SNAPSHOT ON"
            ),
        )
        .unwrap();
    engine
        .run(
            DB,
            "CREATE TABLE dbo.changes7 (id bigint NOT NULL PRIMARY KEY, qty int NOT NULL, \
             label varchar(100) NULL, amount numeric(12, 2) NULL, created datetime2(7) NULL, \
             flag bit NULL, name nvarchar(200) NULL); EXEC sys.sp_cdc_enable_db; \
             EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'changes7', @role_name = NULL",
        )
        .unwrap();
    let server = Server::start("127.0.0.1:0".parse().unwrap(), Arc::new(engine.clone()))
        .await
        .unwrap();
    let mut client = workload::connect(server.addr, DB, "sa", &engine.config().sa_password)
        .await
        .unwrap();

    let started = Instant::now();
    let per_statement = 500u64;
    for lo in (0..changes).step_by(per_statement as usize) {
        let mut sql = String::from("BEGIN TRANSACTION; INSERT INTO dbo.changes7 VALUES ");
        for i in lo..(lo + per_statement).min(changes) {
            if i > lo {
                sql.push(',');
            }
            sql.push_str(&format!(
                "({i}, {}, 'label {i}', {}.25, '2024-05-01T10:00:00.1234567', 1, N'name {i}')",
                i % 977,
                i % 1000
            ));
        }
        sql.push_str("; COMMIT;");
        exec(&mut client, &sql).await;
    }
    let inserted = started.elapsed();
    for lo in (0..changes).step_by(5_000) {
        exec(
            &mut client,
            &format!(
                "UPDATE dbo.changes7 SET qty = qty + 1, label = 'changed' WHERE id >= {lo} AND id < {}",
                lo + 5_000
            ),
        )
        .await;
    }
    let updated = started.elapsed();
    // Committed is not enough: the capture job must have written every change.
    let deadline = Instant::now() + Duration::from_secs(120);
    while cdc.pending_transactions(DB) > 0 {
        assert!(
            Instant::now() < deadline,
            "the capture job did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let ct_rows = engine
        .run(DB, "SELECT COUNT_BIG(*) FROM cdc.dbo_changes7_CT")
        .unwrap();
    assert_eq!(
        ct_rows[0].rows[0][0],
        Value::BigInt(3 * changes as i64),
        "one change row per insert, two per update"
    );
    let rate = (2 * changes) as f64 / elapsed.as_secs_f64();
    println!(
        "CDC-on row changes over TDS: {changes} inserts in {inserted:.2?} ({:.0}/s), {changes} updates in {:.2?} ({:.0}/s), \
         capture caught up after {elapsed:.2?}: {rate:.0} row changes/s",
        changes as f64 / inserted.as_secs_f64(),
        updated - inserted,
        changes as f64 / (updated - inserted).as_secs_f64(),
    );
    if !cfg!(debug_assertions) {
        assert!(
            rate >= TARGET_CHANGES_PER_SECOND,
            "{rate:.0} row changes/s is below the {TARGET_CHANGES_PER_SECOND} target"
        );
    }
}
