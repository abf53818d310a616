//! Throughput of the capture service's two data paths against the stand-in over TDS and gRPC,
//! on the 7-column bench table shape (bigint key, int, text, numeric(12,2), datetime2, bit,
//! nvarchar(200)). Prints rows/s; asserts completeness and order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dbsync_capture::CancellationToken;
use dbsync_proto::v1::capture_service_client::CaptureServiceClient;
use dbsync_proto::v1::{
    change_message::Kind as Msg, value::Kind, EnableCdcRequest, GetMaxLsnRequest, ObjectSelection,
    PlanChunksRequest, ReadChunkRequest, ReadSchemaRequest, SourceConnection, StreamChangesRequest,
};
use dbsync_sqlserver_sim::engine::{Engine, EngineConfig};
use dbsync_sqlserver_sim::server::Server;
use dbsync_sqlserver_sim::types::Value as SimValue;

const ROWS: i64 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_change_stream_throughput() {
    let engine = Engine::new(EngineConfig::default());
    engine.run("master", "CREATE DATABASE bench").unwrap();
    engine
        .run(
            "bench",
            "CREATE TABLE dbo.items (id bigint NOT NULL PRIMARY KEY, qty int NOT NULL, name nvarchar(max) NULL, \
             price numeric(12,2) NOT NULL, at datetime2(7) NOT NULL, active bit NOT NULL, note nvarchar(200) NULL)",
        )
        .unwrap();
    let rows: Vec<Vec<SimValue>> = (0..ROWS)
        .map(|i| {
            vec![
                SimValue::BigInt(i),
                SimValue::Int((i % 1000) as i32),
                SimValue::String(format!("item number {i}").into()),
                SimValue::Decimal(i128::from(i) * 101, 2),
                SimValue::DateTime2 {
                    days: 738_000 + (i % 365) as i32,
                    ticks: (i as u64) * 1_234_567 % 864_000_000_000,
                },
                SimValue::Bit(i % 2 == 0),
                SimValue::String(format!("a note about item {i} that is a little longer").into()),
            ]
        })
        .collect();
    engine.insert_rows("bench", "dbo", "items", rows).unwrap();
    let sim = Server::start("127.0.0.1:0".parse().unwrap(), Arc::new(engine.clone()))
        .await
        .unwrap();
    let source = SourceConnection {
        host: "127.0.0.1".into(),
        port: u32::from(sim.addr.port()),
        user: "sa".into(),
        password: engine.config().sa_password.clone(),
        database: "bench".into(),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(dbsync_capture::serve(
        Default::default(),
        listener,
        shutdown.clone(),
    ));
    let mut client = loop {
        match CaptureServiceClient::connect(format!("http://{addr}")).await {
            Ok(c) => break c.max_decoding_message_size(64 << 20),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let table = client
        .read_schema(ReadSchemaRequest {
            source: Some(source.clone()),
            selection: Some(ObjectSelection {
                databases: vec!["bench".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .tables
        .remove(0);

    // Full sync path: plan + read every chunk, two chunks at a time.
    let start = Instant::now();
    let chunks = client
        .plan_chunks(PlanChunksRequest {
            source: Some(source.clone()),
            table: Some(table.clone()),
            target_rows: 25_000,
            where_filter: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .chunks;
    let planned = start.elapsed();
    let mut handles = Vec::new();
    for pair in chunks.chunks(chunks.len().div_ceil(2)) {
        let (mut client, source, table, pair) =
            (client.clone(), source.clone(), table.clone(), pair.to_vec());
        handles.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut bytes = 0u64;
            let mut last = -1i64;
            for chunk in pair {
                let mut s = client
                    .read_chunk(ReadChunkRequest {
                        source: Some(source.clone()),
                        task_id: "bench".into(),
                        table: Some(table.clone()),
                        chunk: Some(chunk),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                while let Some(b) = s.message().await.unwrap() {
                    bytes += b.bytes;
                    for r in &b.rows {
                        let Some(Kind::Int(id)) = r.values[0].kind else {
                            panic!("id")
                        };
                        assert!(id > last, "key order");
                        last = id;
                    }
                    n += b.rows.len() as u64;
                }
            }
            (n, bytes)
        }));
    }
    let mut total = 0;
    let mut bytes = 0;
    for h in handles {
        let (n, b) = h.await.unwrap();
        total += n;
        bytes += b;
    }
    let took = start.elapsed();
    assert_eq!(total, ROWS as u64);
    println!(
        "snapshot: {total} rows in {took:?} (plan {planned:?}): {:.0} rows/s, {:.1} MB/s",
        total as f64 / took.as_secs_f64(),
        bytes as f64 / 1e6 / took.as_secs_f64()
    );

    // Change path: 10 000 single-row update transactions, streamed from before them.
    client
        .enable_cdc(EnableCdcRequest {
            source: Some(source.clone()),
            tables: vec![table.table.clone().unwrap()],
            ..Default::default()
        })
        .await
        .unwrap();
    let l0 = client
        .get_max_lsn(GetMaxLsnRequest {
            source: Some(source.clone()),
            database: "bench".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .lsn;
    const UPDATES: i64 = 10_000;
    let mut session = engine.session("bench").unwrap();
    for i in 0..UPDATES {
        session
            .run(&format!(
                "UPDATE dbo.items SET qty = qty + 1 WHERE id = {i}"
            ))
            .unwrap();
    }
    let start = Instant::now();
    let mut s = client
        .stream_changes(StreamChangesRequest {
            source: Some(source.clone()),
            task_id: "bench".into(),
            tables: vec![table.clone()],
            from_lsn: l0,
            poll_interval_ms: 50,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut transactions = 0;
    let mut changes = 0;
    while transactions < UPDATES {
        if let Some(Msg::Transaction(t)) = s.message().await.unwrap().unwrap().kind {
            changes += t.changes.len();
            if t.last_fragment {
                transactions += 1;
            }
        }
    }
    let took = start.elapsed();
    assert_eq!(
        changes as i64,
        2 * UPDATES,
        "before and after image of each update"
    );
    println!(
        "changes: {UPDATES} transactions ({changes} rows) in {took:?}: {:.0} transactions/s",
        UPDATES as f64 / took.as_secs_f64()
    );
    shutdown.cancel();
}
