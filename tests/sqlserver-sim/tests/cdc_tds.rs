//! CDC through real TDS with tiberius: the sample database, the workload generator driving
//! interleaved transactions, and the change tables read back over the wire.

use std::net::SocketAddr;
use std::sync::Arc;

use dbsync_sqlserver_sim::engine::cdc::{Cdc, CdcConfig};
use dbsync_sqlserver_sim::engine::lsn::Lsn;
use dbsync_sqlserver_sim::engine::{Engine, EngineConfig};
use dbsync_sqlserver_sim::sample::{self, SAMPLE_DATABASE};
use dbsync_sqlserver_sim::server::{Server, ServerHandle};
use dbsync_sqlserver_sim::workload::{self, SqlClient, WorkloadConfig};
use tokio_util::sync::CancellationToken;

/// Tables the workload writes to.
const TRACKED: &[(&str, &str)] = &[
    ("sales", "order_lines"),
    ("sales", "orders"),
    ("sales", "customer_notes"),
    ("sales", "text_samples"),
    ("sales", "audit_log"),
    ("inventory", "stock"),
];

async fn start(rows: usize) -> (Engine, Arc<Cdc>, ServerHandle) {
    let engine = Engine::new(EngineConfig::default());
    let cdc = Cdc::install(&engine, CdcConfig::default());
    sample::load_sample(&engine, rows).expect("sample loads");
    let server = Server::start("127.0.0.1:0".parse().unwrap(), Arc::new(engine.clone()))
        .await
        .expect("server starts");
    (engine, cdc, server)
}

async fn client(addr: SocketAddr, engine: &Engine) -> SqlClient {
    workload::connect(addr, SAMPLE_DATABASE, "sa", &engine.config().sa_password)
        .await
        .expect("login")
}

async fn exec(c: &mut SqlClient, sql: &str) {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_results()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn count(c: &mut SqlClient, sql: &str) -> i64 {
    let row = c
        .simple_query(sql)
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .expect("one row");
    row.get::<i32, _>(0)
        .map(i64::from)
        .or_else(|| row.get::<i64, _>(0))
        .expect("a count")
}

async fn enable(c: &mut SqlClient) {
    exec(c, "EXEC sys.sp_cdc_enable_db").await;
    for (schema, table) in TRACKED {
        exec(c, &format!("EXEC sys.sp_cdc_enable_table @source_schema = N'{schema}', @source_name = N'{table}', @role_name = NULL")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_changes_arrive_in_the_change_tables() {
    let (engine, _cdc, server) = start(200).await;
    let mut c = client(server.addr, &engine).await;
    enable(&mut c).await;

    let config = WorkloadConfig {
        password: engine.config().sa_password.clone(),
        workers: 2,
        max_transactions: Some(200),
        large_transaction_every: 25,
        large_transaction_rows: 300,
        rollback_percent: 10,
        ddl_every: 20,
        ..Default::default()
    };
    let stats = workload::run_workload(server.addr, config, CancellationToken::new())
        .await
        .expect("workload runs");
    assert!(stats.committed > 100, "{stats:?}");
    assert!(
        stats.out_of_order_commits > 0
            && stats.key_updates > 0
            && stats.lob_updates > 0
            && stats.insert_then_delete > 0,
        "{stats:?}"
    );

    // Every committed row change is in the change tables: one row per insert/delete, two
    // per update (3/4, or 1/2 for key changes).
    let mut ct_rows = 0;
    for (schema, table) in TRACKED {
        ct_rows += count(
            &mut c,
            &format!("SELECT COUNT(*) FROM cdc.[{schema}_{table}_CT]"),
        )
        .await;
    }
    assert_eq!(
        ct_rows as u64,
        stats.inserts + stats.deletes + 2 * stats.updates,
        "{stats:?}"
    );
    // ADD/DROP COLUMN on the tracked heap is recorded; columns added later are not captured.
    assert!(stats.ddl > 0, "{stats:?}");
    let ddl_rows = count(&mut c, "SELECT COUNT(*) FROM cdc.ddl_history WHERE source_object_id = OBJECT_ID(N'sales.audit_log')").await;
    assert_eq!(ddl_rows as u64, stats.ddl);
    let key_updates = count(
        &mut c,
        "SELECT COUNT(*) FROM cdc.sales_order_lines_CT WHERE __$operation = 1",
    )
    .await;
    assert!(key_updates as u64 >= stats.key_updates);

    // Interleaving is visible: some transaction committed later although its first change
    // came earlier than another transaction's.
    let rows = c
        .simple_query("SELECT __$start_lsn, MIN(__$seqval) FROM cdc.sales_order_lines_CT GROUP BY __$start_lsn ORDER BY __$start_lsn")
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    let firsts: Vec<Vec<u8>> = rows
        .iter()
        .map(|r| r.get::<&[u8], _>(1).unwrap().to_vec())
        .collect();
    assert!(
        firsts.windows(2).any(|w| w[0] > w[1]),
        "commit order differs from begin order somewhere"
    );

    // The TVF over TDS, with binary(10) parameters, and 313 below the minimum.
    let min = c
        .simple_query("SELECT sys.fn_cdc_get_min_lsn(N'sales_order_lines')")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    let min: Vec<u8> = min.get::<&[u8], _>(0).unwrap().to_vec();
    let max = c
        .simple_query("SELECT sys.fn_cdc_get_max_lsn()")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    let max: Vec<u8> = max.get::<&[u8], _>(0).unwrap().to_vec();
    let all = c
        .query("SELECT * FROM cdc.fn_cdc_get_all_changes_sales_order_lines(@P1, @P2, N'all update old') ORDER BY __$start_lsn, __$seqval, __$operation", &[&min, &max])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    let ct = count(&mut c, "SELECT COUNT(*) FROM cdc.sales_order_lines_CT").await;
    assert_eq!(all.len() as i64, ct);
    for pair in all.windows(2) {
        let op = |r: &tiberius::Row| r.get::<i32, _>(2).unwrap();
        if op(&pair[0]) == 3 {
            assert_eq!(op(&pair[1]), 4, "op 3 is immediately followed by its op 4");
        }
    }
    let below = Lsn::from_bytes(&min)
        .expect("10 bytes")
        .decrement()
        .to_bytes()
        .to_vec();
    let e = c
        .query(
            "SELECT * FROM cdc.fn_cdc_get_all_changes_sales_order_lines(@P1, @P2, N'all')",
            &[&below, &max],
        )
        .await;
    let e = match e {
        Ok(stream) => stream
            .into_first_result()
            .await
            .expect_err("313 below the minimum"),
        Err(e) => e,
    };
    assert_eq!(e.code(), Some(313), "{e}");
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_procedure_and_heartbeat_over_tds() {
    let (engine, _cdc, server) = start(20).await;
    let mut c = client(server.addr, &engine).await;
    enable(&mut c).await;
    exec(
        &mut c,
        "EXEC sys.sp_standin_cdc_control @action = N'mode', @value = N'manual'",
    )
    .await;
    exec(
        &mut c,
        "UPDATE sales.orders SET status = 'paid' WHERE order_id = 1000",
    )
    .await;
    assert_eq!(
        count(&mut c, "SELECT COUNT(*) FROM cdc.sales_orders_CT").await,
        0,
        "manual mode waits for a scan"
    );
    exec(&mut c, "EXEC sys.sp_cdc_scan").await;
    assert_eq!(
        count(&mut c, "SELECT COUNT(*) FROM cdc.sales_orders_CT").await,
        2
    );
    let before = count(&mut c, "SELECT COUNT(*) FROM cdc.lsn_time_mapping").await;
    exec(
        &mut c,
        "EXEC sys.sp_standin_cdc_control @action = N'heartbeat'",
    )
    .await;
    assert_eq!(
        count(&mut c, "SELECT COUNT(*) FROM cdc.lsn_time_mapping").await,
        before + 1
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT COUNT(*) FROM cdc.lsn_time_mapping WHERE tran_id = 0x00"
        )
        .await,
        1
    );
    server.shutdown();
}
