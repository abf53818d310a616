//! Verification against the SQL Server stand-in (over TDS, through an in-process capture
//! service) and a real PostgreSQL loaded by the apply crate's full sync.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dbsync_apply::{run_assignment, ProgressBoard, RunOptions};
use dbsync_pgtest::PgCluster;
use dbsync_proto::v1::capture_service_client::CaptureServiceClient;
use dbsync_proto::v1::{Assignment, ObjectSelection, ReadSchemaRequest, SourceConnection, TablePlan, TargetConnection};
use dbsync_sqlserver_sim::engine::cdc::{Cdc, CdcConfig};
use dbsync_sqlserver_sim::engine::{Engine, EngineConfig};
use dbsync_sqlserver_sim::sample::{load_sample, SAMPLE_DATABASE, UNSUPPORTED_TYPE_TABLES};
use dbsync_sqlserver_sim::server::{Server, ServerHandle};
use dbsync_verify::{verify, DiffKind, Mode, Phase, VerifyReport, VerifyRequest};
use tokio_util::sync::CancellationToken;

struct Env {
    engine: Engine,
    _sim: ServerHandle,
    source: SourceConnection,
    target: TargetConnection,
    capture_address: String,
    plans: Vec<TablePlan>,
    pg: tokio_postgres::Client,
    shutdown: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The sample database `shop` with `rows` rows per ordinary table, synced to a fresh target
/// database by apply's schema and full sync.
async fn env(rows: usize) -> Env {
    let engine = Engine::new(EngineConfig::default());
    Cdc::install(&engine, CdcConfig::default());
    load_sample(&engine, rows).expect("load the sample");
    let sim = Server::start("127.0.0.1:0".parse().unwrap(), Arc::new(engine.clone())).await.unwrap();
    let source = SourceConnection {
        host: "127.0.0.1".into(),
        port: u32::from(sim.addr.port()),
        user: "sa".into(),
        password: engine.config().sa_password.clone(),
        database: SAMPLE_DATABASE.into(),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(dbsync_capture::serve(Default::default(), listener, shutdown.clone()));
    let capture_address = format!("http://{addr}");
    let mut client = loop {
        match CaptureServiceClient::connect(capture_address.clone()).await {
            Ok(c) => break c.max_decoding_message_size(64 << 20),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let tables = client
        .read_schema(ReadSchemaRequest {
            source: Some(source.clone()),
            selection: Some(ObjectSelection { databases: vec![SAMPLE_DATABASE.into()], ..Default::default() }),
        })
        .await
        .unwrap()
        .into_inner()
        .tables;
    let plans: Vec<TablePlan> = tables
        .into_iter()
        .filter(|t| {
            let r = t.table.clone().unwrap_or_default();
            !UNSUPPORTED_TYPE_TABLES.iter().any(|(s, n)| *s == r.schema && *n == r.name)
        })
        .map(|mut t| {
            // Defaults play no part in verification; apply's DDL for SYSUTCDATETIME() defaults
            // currently fails on PostgreSQL (reported to apply's owner), so leave them out.
            for c in &mut t.columns {
                c.default_definition.clear();
                c.default_name.clear();
            }
            t
        })
        .map(|t| TablePlan { source: Some(t), sync_inserts: true, sync_updates: true, sync_deletes: true, ..Default::default() })
        .collect();

    let cluster = tokio::task::spawn_blocking(PgCluster::shared).await.unwrap();
    let db = cluster.fresh_database("verify").await.unwrap();
    let target = TargetConnection {
        host: cluster.host().to_string(),
        port: u32::from(cluster.port()),
        user: cluster.superuser().to_string(),
        password: String::new(),
        database: db.clone(),
        sslmode: "disable".into(),
    };
    let assignment = Assignment {
        task_id: "verify-test".into(),
        generation: 1,
        source: Some(source.clone()),
        target: Some(target.clone()),
        capture_address: capture_address.clone(),
        schema_sync: true,
        full_sync: true,
        incremental_sync: false,
        tables: plans.clone(),
        conflict_mode: "precheck".into(),
        parallel_chunks: 2,
        chunk_rows: 50,
        group_id: "all".into(),
        ..Default::default()
    };
    run_assignment(assignment, &RunOptions::default(), Arc::new(ProgressBoard::default()), CancellationToken::new())
        .await
        .expect("full sync of the sample");
    let pg = cluster.connect(&db).await.unwrap();
    Env { engine, _sim: sim, source, target, capture_address, plans, pg, shutdown }
}

impl Env {
    fn request(&self) -> VerifyRequest {
        let mut r = VerifyRequest::new("verify-test", self.source.clone(), self.target.clone(), &self.capture_address, self.plans.clone());
        // Small ranges so that the sample tables have several partitions each.
        r.chunk_rows = 40;
        r
    }

    async fn run(&self, request: VerifyRequest) -> VerifyReport {
        let mut phases = Vec::new();
        let report = verify(request, |p| phases.push(p.phase)).await.expect("verify");
        assert!(phases.contains(&Phase::Checksumming) && phases.last() == Some(&Phase::Done), "{phases:?}");
        report
    }

    async fn pg(&self, sql: &str) {
        self.pg.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
}

fn table<'a>(report: &'a VerifyReport, name: &str) -> &'a dbsync_verify::TableReport {
    report.tables.iter().find(|t| t.source == format!("{SAMPLE_DATABASE}.{name}")).unwrap_or_else(|| panic!("{name} not in the report"))
}

/// `(kind, key) -> differing columns` of one table.
fn diffs(report: &VerifyReport, name: &str) -> BTreeMap<(String, String), BTreeSet<String>> {
    let t = table(report, name);
    assert_eq!(t.differences_total as usize, t.differences.len());
    t.differences.iter().map(|d| ((d.kind.as_str().to_string(), d.key.clone()), d.columns.iter().cloned().collect())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faithful_copy_of_every_type_and_extreme_value_verifies_equal() {
    let env = env(120).await;
    let report = env.run(env.request()).await;
    eprintln!("{}", report.to_text());
    assert!(report.equal, "{}", report.to_text());
    for t in &report.tables {
        assert!(t.equal && t.differences.is_empty(), "{}", report.to_text());
        assert_eq!(t.source_rows, t.target_rows, "{}", t.source);
        assert_eq!(t.rows_compared, t.source_rows, "{}", t.source);
    }
    for name in ["sales.numeric_extremes", "sales.temporal_extremes", "sales.text_samples", "sales.customer_notes"] {
        assert!(table(&report, name).rows_compared > 0, "{name} has rows");
    }
    // Several ranges for integer keys; buckets where the engines order keys differently.
    assert_eq!(table(&report, "sales.orders").partitioning, "key ranges");
    assert!(table(&report, "sales.orders").partitions_total > 1);
    assert_eq!(table(&report, "sales.payments").partitioning, "key buckets");
    assert_eq!(table(&report, "inventory.supplier_contacts").partitioning, "key buckets");
    assert_eq!(table(&report, "sales.audit_log").partitioning, "row buckets");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["equal"], true);
}
