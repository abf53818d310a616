//! Verification against the SQL Server stand-in (over TDS, through an in-process capture
//! service) and a real PostgreSQL loaded by the apply crate's full sync.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dbsync_apply::{run_assignment, ProgressBoard, RunOptions};
use dbsync_pgtest::PgCluster;
use dbsync_proto::v1::capture_service_client::CaptureServiceClient;
use dbsync_proto::v1::value::Kind;
use dbsync_proto::v1::{
    Assignment, EnableCdcRequest, GetMaxLsnRequest, KeyBound, ObjectSelection, ReadRowsRequest,
    ReadSchemaRequest, SourceConnection, TablePhase, TablePlan, TargetConnection, Throttle, Value,
};
use dbsync_sqlserver_sim::engine::cdc::{Cdc, CdcConfig};
use dbsync_sqlserver_sim::engine::{Engine, EngineConfig};
use dbsync_sqlserver_sim::sample::{load_sample, SAMPLE_DATABASE, UNSUPPORTED_TYPE_TABLES};
use dbsync_sqlserver_sim::server::{Server, ServerHandle};
use dbsync_sqlserver_sim::workload::{run_workload, WorkloadConfig};
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
    env_with(rows, false).await
}

/// [`env`]; with `incremental`, CDC is enabled first and apply keeps streaming changes in the
/// background (until the Env is dropped) once every table streams.
async fn env_with(rows: usize, incremental: bool) -> Env {
    env_for(
        SAMPLE_DATABASE,
        |engine| load_sample(engine, rows).expect("load the sample"),
        incremental,
    )
    .await
}

/// The tables of `database`, created on the stand-in by `setup`, synced to a fresh target.
async fn env_for(database: &str, setup: impl FnOnce(&Engine), incremental: bool) -> Env {
    let engine = Engine::new(EngineConfig::default());
    Cdc::install(&engine, CdcConfig::default());
    setup(&engine);
    let sim = Server::start("127.0.0.1:0".parse().unwrap(), Arc::new(engine.clone()))
        .await
        .unwrap();
    let source = SourceConnection {
        host: "127.0.0.1".into(),
        port: u32::from(sim.addr.port()),
        user: "sa".into(),
        password: engine.config().sa_password.clone(),
        database: database.into(),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(dbsync_capture::serve(
        Default::default(),
        listener,
        shutdown.clone(),
    ));
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
            selection: Some(ObjectSelection {
                databases: vec![database.into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .tables;
    let plans: Vec<TablePlan> = tables
        .into_iter()
        .filter(|t| {
            let r = t.table.clone().unwrap_or_default();
            // cdc-polling cannot apply a keyless table's updates: incremental runs leave it out.
            let unsupported = UNSUPPORTED_TYPE_TABLES
                .iter()
                .any(|(s, n)| *s == r.schema && *n == r.name);
            !(unsupported || incremental && t.key_columns.is_empty())
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
        .map(|t| TablePlan {
            source: Some(t),
            sync_inserts: true,
            sync_updates: true,
            sync_deletes: true,
            ..Default::default()
        })
        .collect();

    let cluster = tokio::task::spawn_blocking(PgCluster::shared)
        .await
        .unwrap();
    let db = cluster.fresh_database("verify").await.unwrap();
    let target = TargetConnection {
        host: cluster.host().to_string(),
        port: u32::from(cluster.port()),
        user: cluster.superuser().to_string(),
        password: String::new(),
        database: db.clone(),
        sslmode: "disable".into(),
    };
    let mut start_lsn = Vec::new();
    if incremental {
        let tables = plans
            .iter()
            .filter_map(|p| p.source.as_ref().and_then(|s| s.table.clone()))
            .collect();
        client
            .enable_cdc(EnableCdcRequest {
                source: Some(source.clone()),
                tables,
                incremental_mode: "cdc-polling".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        start_lsn = client
            .get_max_lsn(GetMaxLsnRequest {
                source: Some(source.clone()),
                database: database.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .lsn;
    }
    let assignment = Assignment {
        task_id: "verify-test".into(),
        generation: 1,
        source: Some(source.clone()),
        target: Some(target.clone()),
        capture_address: capture_address.clone(),
        schema_sync: true,
        full_sync: true,
        incremental_sync: incremental,
        incremental_mode: "cdc-polling".into(),
        start_lsn,
        poll_interval_ms: 100,
        tables: plans.clone(),
        conflict_mode: "precheck".into(),
        parallel_chunks: 2,
        chunk_rows: if database == SAMPLE_DATABASE {
            50
        } else {
            50_000
        },
        group_id: "all".into(),
        ..Default::default()
    };
    let board = Arc::new(ProgressBoard::default());
    if incremental {
        let (board, stop) = (board.clone(), shutdown.clone());
        tokio::spawn(async move {
            run_assignment(assignment, &RunOptions::default(), board, stop).await
        });
    } else {
        run_assignment(
            assignment,
            &RunOptions::default(),
            board.clone(),
            CancellationToken::new(),
        )
        .await
        .expect("full sync of the sample");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while incremental && !all_streaming(&board, plans.len()) {
        assert!(
            board
                .snapshot()
                .iter()
                .all(|t| t.phase != TablePhase::Failed as i32),
            "a table failed: {:?}",
            board.snapshot()
        );
        assert!(
            Instant::now() < deadline,
            "tables did not reach streaming: {:?}",
            board.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pg = cluster.connect(&db).await.unwrap();
    Env {
        engine,
        _sim: sim,
        source,
        target,
        capture_address,
        plans,
        pg,
        shutdown,
    }
}

fn all_streaming(board: &ProgressBoard, tables: usize) -> bool {
    let phases: Vec<i32> = board.snapshot().iter().map(|t| t.phase).collect();
    phases.len() == tables && phases.iter().all(|p| *p == TablePhase::Streaming as i32)
}

impl Env {
    fn request(&self) -> VerifyRequest {
        let mut r = VerifyRequest::new(
            "verify-test",
            self.source.clone(),
            self.target.clone(),
            &self.capture_address,
            self.plans.clone(),
        );
        // Small ranges so that the sample tables have several partitions each.
        r.chunk_rows = 40;
        r
    }

    async fn run(&self, request: VerifyRequest) -> VerifyReport {
        let mut phases = Vec::new();
        let report = verify(request, |p| phases.push(p.phase))
            .await
            .expect("verify");
        assert!(
            phases.contains(&Phase::Checksumming) && phases.last() == Some(&Phase::Done),
            "{phases:?}"
        );
        report
    }

    async fn pg(&self, sql: &str) {
        self.pg
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
}

fn table<'a>(report: &'a VerifyReport, name: &str) -> &'a dbsync_verify::TableReport {
    report
        .tables
        .iter()
        .find(|t| t.source == format!("{SAMPLE_DATABASE}.{name}"))
        .unwrap_or_else(|| panic!("{name} not in the report"))
}

/// `(kind, key) -> differing columns` of one table.
fn diffs(report: &VerifyReport, name: &str) -> BTreeMap<(String, String), BTreeSet<String>> {
    let t = table(report, name);
    assert_eq!(t.differences_total as usize, t.differences.len());
    t.differences
        .iter()
        .map(|d| {
            (
                (d.kind.as_str().to_string(), d.key.clone()),
                d.columns.iter().cloned().collect(),
            )
        })
        .collect()
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
    for name in [
        "sales.numeric_extremes",
        "sales.temporal_extremes",
        "sales.text_samples",
        "sales.customer_notes",
    ] {
        assert!(table(&report, name).rows_compared > 0, "{name} has rows");
    }
    // Several ranges for integer keys; buckets where the engines order keys differently.
    assert_eq!(table(&report, "sales.orders").partitioning, "key ranges");
    assert!(table(&report, "sales.orders").partitions_total > 1);
    assert_eq!(table(&report, "sales.payments").partitioning, "key buckets");
    assert_eq!(
        table(&report, "inventory.supplier_contacts").partitioning,
        "key buckets"
    );
    assert_eq!(
        table(&report, "sales.audit_log").partitioning,
        "row buckets"
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["equal"], true);
}

/// An expression that changes column `c` of PostgreSQL type `data_type` into another value
/// the column can hold (`step_us`: the smallest step of a temporal column).
fn changed(c: &str, data_type: &str, step_us: i64) -> Option<String> {
    Some(match data_type {
        "smallint" | "integer" | "bigint" => format!("CASE WHEN {c} IS DISTINCT FROM 0 THEN 0 ELSE 1 END"),
        "numeric" | "real" | "double precision" => format!("CASE WHEN {c} IS DISTINCT FROM 0 THEN 0 ELSE 0.5 END"),
        "boolean" => format!("NOT COALESCE({c}, false)"),
        "character" | "character varying" | "text" => format!(
            "CASE WHEN {c} IS NULL OR {c} = '' THEN 'x' WHEN left({c}, 1) = 'a' THEN 'b' || substr({c}, 2) ELSE 'a' || substr({c}, 2) END"
        ),
        "date" => format!("CASE WHEN {c} IS NULL THEN '2000-01-01'::date WHEN {c} > '2000-01-01' THEN {c} - 1 ELSE {c} + 1 END"),
        "timestamp without time zone" | "timestamp with time zone" => format!(
            "CASE WHEN {c} IS NULL THEN '2000-01-01' WHEN {c} > '2000-01-01' THEN {c} - interval '{step_us} microseconds' ELSE {c} + interval '{step_us} microseconds' END"
        ),
        "time without time zone" => format!("COALESCE({c} - interval '{step_us} microseconds', '12:00')"),
        "uuid" => format!(
            "CASE WHEN {c} = '00000000-0000-0000-0000-000000000001' THEN '00000000-0000-0000-0000-000000000002'::uuid ELSE '00000000-0000-0000-0000-000000000001'::uuid END"
        ),
        "bytea" => format!("CASE WHEN {c} IS NULL OR length({c}) = 0 THEN '\\x0102030405060708'::bytea ELSE set_byte({c}, 0, 255 - get_byte({c}, 0)) END"),
        "xml" => format!("CASE WHEN {c}::text = '<a/>' THEN '<b/>'::xml ELSE '<a/>'::xml END"),
        _ => return None,
    })
}

/// Changes one column per row of `schema.table` (integer key column `key`), each column in its
/// own row while rows last; returns `key -> changed columns`.
async fn change_every_column(
    env: &Env,
    schema: &str,
    table: &str,
    key: &str,
) -> BTreeMap<String, BTreeSet<String>> {
    let ids: Vec<i32> = env
        .pg
        .query(
            &format!("SELECT {key} FROM {schema}.{table} ORDER BY {key}"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let columns = env
        .pg
        .query(
            "SELECT column_name::text, data_type::text, COALESCE(datetime_precision, 6)::int FROM information_schema.columns
              WHERE table_schema = $1 AND table_name = $2 AND column_name <> $3 ORDER BY ordinal_position",
            &[&schema, &table, &key],
        )
        .await
        .unwrap();
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (i, row) in columns.iter().enumerate() {
        let (name, data_type, precision): (String, String, i32) =
            (row.get(0), row.get(1), row.get(2));
        let step = 10i64.pow(6 - precision.clamp(0, 6) as u32);
        let expr = changed(&format!("\"{name}\""), &data_type, step)
            .unwrap_or_else(|| panic!("no change rule for {data_type}"));
        let id = ids[i % ids.len()];
        env.pg(&format!(
            "UPDATE {schema}.{table} SET \"{name}\" = {expr} WHERE {key} = {id}"
        ))
        .await;
        expected
            .entry(format!("{key}={id}"))
            .or_default()
            .insert(name);
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_corruption_is_found_exactly_and_repaired() {
    let env = env(60).await;
    // Corrupt without firing FK actions or triggers.
    env.pg("SET session_replication_role = replica").await;
    let mut expected: BTreeMap<&str, BTreeMap<(String, String), BTreeSet<String>>> =
        BTreeMap::new();
    let mut put = |table: &'static str, kind: &str, key: String, columns: BTreeSet<String>| {
        expected
            .entry(table)
            .or_default()
            .insert((kind.to_string(), key), columns);
    };
    // One changed column of each type, and each kind of LOB (nvarchar(max), varbinary(max),
    // text, ntext, image, xml) in sales.customer_notes.
    for (schema, table, key, full) in [
        ("sales", "numeric_extremes", "id", "sales.numeric_extremes"),
        (
            "sales",
            "temporal_extremes",
            "id",
            "sales.temporal_extremes",
        ),
        ("sales", "text_samples", "id", "sales.text_samples"),
        ("sales", "customer_notes", "note_id", "sales.customer_notes"),
    ] {
        for (key, columns) in change_every_column(&env, schema, table, key).await {
            put(full, "different", key, columns);
        }
    }
    // A missing row, an extra row.
    let order: i64 = env
        .pg
        .query_one("SELECT min(order_id) FROM sales.orders", &[])
        .await
        .unwrap()
        .get(0);
    env.pg(&format!(
        "DELETE FROM sales.orders WHERE order_id = {order}"
    ))
    .await;
    put(
        "sales.orders",
        "missing",
        format!("order_id={order}"),
        BTreeSet::new(),
    );
    env.pg(
        "CREATE TEMP TABLE extra AS SELECT * FROM sales.customers ORDER BY customer_id LIMIT 1;
         UPDATE extra SET customer_id = 999999, email = 'extra@example.com';
         INSERT INTO sales.customers OVERRIDING SYSTEM VALUE SELECT * FROM extra;",
    )
    .await;
    put(
        "sales.customers",
        "extra",
        "customer_id=999999".into(),
        BTreeSet::new(),
    );
    // A large changed LOB (in a row change_every_column left alone).
    let note: i32 = env
        .pg
        .query_one("SELECT max(note_id) FROM sales.customer_notes", &[])
        .await
        .unwrap()
        .get(0);
    env.pg(&format!(
        "UPDATE sales.customer_notes SET body = repeat('lob ', 50000) WHERE note_id = {note}"
    ))
    .await;
    put(
        "sales.customer_notes",
        "different",
        format!("note_id={note}"),
        ["body".to_string()].into(),
    );
    // A row of a table without primary key but with a unique index, and one with a GUID key.
    let contact = env
        .pg
        .query_one("SELECT 'supplier_code=' || supplier_code || ', contact_email=' || contact_email FROM inventory.supplier_contacts ORDER BY 1 LIMIT 1", &[])
        .await
        .unwrap()
        .get::<_, String>(0);
    env.pg(&format!(
        "UPDATE inventory.supplier_contacts SET phone = 'changed' WHERE 'supplier_code=' || supplier_code || ', contact_email=' || contact_email = '{contact}'"
    ))
    .await;
    put(
        "inventory.supplier_contacts",
        "different",
        contact,
        ["phone".to_string()].into(),
    );
    // An extra row there too, and a missing row of the GUID-keyed table (key buckets).
    env.pg(
        "INSERT INTO inventory.supplier_contacts (supplier_code, contact_email, contact_name, phone, is_primary)
         VALUES ('EXTRA', 'extra@example.com', 'Extra', '0', false)",
    )
    .await;
    put(
        "inventory.supplier_contacts",
        "extra",
        "supplier_code=EXTRA, contact_email=extra@example.com".into(),
        BTreeSet::new(),
    );
    let gone: String = env
        .pg
        .query_one("SELECT max(payment_id::text) FROM sales.payments", &[])
        .await
        .unwrap()
        .get(0);
    env.pg(&format!(
        "DELETE FROM sales.payments WHERE payment_id = '{gone}'"
    ))
    .await;
    put(
        "sales.payments",
        "missing",
        format!("payment_id={gone}"),
        BTreeSet::new(),
    );
    let payment: String = env
        .pg
        .query_one("SELECT min(payment_id::text) FROM sales.payments", &[])
        .await
        .unwrap()
        .get(0);
    env.pg(&format!(
        "UPDATE sales.payments SET amount = amount + 1 WHERE payment_id = '{payment}'"
    ))
    .await;
    put(
        "sales.payments",
        "different",
        format!("payment_id={payment}"),
        ["amount".to_string()].into(),
    );

    let report = env.run(env.request()).await;
    eprintln!("{}", report.to_text());
    assert!(!report.equal);
    for t in &report.tables {
        let name = t.source.trim_start_matches("shop.");
        let want = expected.get(name).cloned().unwrap_or_default();
        assert_eq!(diffs(&report, name), want, "{name}:\n{}", report.to_text());
        assert_eq!(t.equal, want.is_empty(), "{name}");
    }
    assert_eq!(
        table(&report, "sales.orders").target_rows + 1,
        table(&report, "sales.orders").source_rows
    );

    let mut repair = env.request();
    repair.repair = true;
    let repaired = env.run(repair).await;
    for (name, want) in &expected {
        assert_eq!(table(&repaired, name).repaired, want.len() as u64, "{name}");
    }
    let after = env.run(env.request()).await;
    assert!(after.equal, "after repair:\n{}", after.to_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_any_key_reports_a_changed_row_as_missing_and_extra() {
    let env = env(40).await;
    env.pg("UPDATE sales.audit_log SET detail = 'changed' WHERE ctid = (SELECT min(ctid) FROM sales.audit_log)").await;
    let mut request = env.request();
    request.tables.retain(|p| {
        p.source
            .as_ref()
            .and_then(|s| s.table.as_ref())
            .is_some_and(|t| t.name == "audit_log")
    });
    request.repair = true;
    let report = env.run(request).await;
    let t = table(&report, "sales.audit_log");
    let kinds: Vec<DiffKind> = t.differences.iter().map(|d| d.kind).collect();
    assert_eq!(kinds.len(), 2, "{}", report.to_text());
    assert!(
        kinds.contains(&DiffKind::Missing) && kinds.contains(&DiffKind::Extra),
        "{}",
        report.to_text()
    );
    assert!(
        t.differences
            .iter()
            .any(|d| d.kind == DiffKind::Extra && d.key.contains("detail=changed")),
        "{}",
        report.to_text()
    );
    assert_eq!(t.repaired, 0);
    assert!(!t.equal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_compares_a_seeded_share_of_the_ranges() {
    let env = env(200).await;
    let mut request = env.request();
    request.tables.retain(|p| {
        p.source
            .as_ref()
            .and_then(|s| s.table.as_ref())
            .is_some_and(|t| t.name == "orders")
    });
    request.mode = Mode::Sampled {
        percent: 40.0,
        seed: 7,
    };
    let first = env.run(request.clone()).await;
    let again = env.run(request.clone()).await;
    let (a, b) = (table(&first, "sales.orders"), table(&again, "sales.orders"));
    assert!(a.equal);
    assert!(a.partitions_total >= 5, "{}", a.partitions_total);
    assert_eq!(
        a.partitions_compared,
        (a.partitions_total * 40).div_ceil(100)
    );
    assert!(a.rows_compared < a.source_rows);
    assert_eq!(
        (a.partitions_compared, a.rows_compared),
        (b.partitions_compared, b.rows_compared),
        "same seed, same ranges"
    );
    // A row deleted from every range: every sampled range sees its own.
    env.pg(
        "SET session_replication_role = replica; DELETE FROM sales.orders WHERE order_id % 40 = 0",
    )
    .await;
    let sampled = env.run(request).await;
    let s = table(&sampled, "sales.orders");
    assert!(!s.equal);
    assert!(s.differences_total > 0 && s.differences.iter().all(|d| d.kind == DiffKind::Missing));
    assert!(
        s.differences_total < 200 / 40,
        "only the sampled ranges: {}",
        sampled.to_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_mode_rechecks_rows_in_flight_before_reporting_them() {
    let env = env(60).await;
    let mut request = env.request();
    request.tables.retain(|p| {
        p.source
            .as_ref()
            .and_then(|s| s.table.as_ref())
            .is_some_and(|t| t.name == "customers")
    });
    request.mode = Mode::Incremental {
        recheck_delay: Duration::from_millis(300),
        attempts: 4,
        lag: Duration::from_millis(200),
    };
    // Source changes that the target has not applied yet: one will be applied while verify
    // waits (in flight), one never (a real difference).
    env.engine
        .run(
            SAMPLE_DATABASE,
            "UPDATE sales.customers SET full_name = N'in flight' WHERE customer_id = 1",
        )
        .unwrap();
    env.engine
        .run(
            SAMPLE_DATABASE,
            "UPDATE sales.customers SET full_name = N'lost' WHERE customer_id = 2",
        )
        .unwrap();
    let full = env.run(env.request()).await;
    assert_eq!(
        table(&full, "sales.customers").differences_total,
        2,
        "{}",
        full.to_text()
    );

    let db = env.target.database.clone();
    let applied = tokio::spawn(async move {
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let client = PgCluster::shared().connect(&db).await.unwrap();
        client
            .batch_execute(
                "UPDATE sales.customers SET full_name = 'in flight' WHERE customer_id = 1",
            )
            .await
            .unwrap();
        started.elapsed()
    });
    // A row the source changes all the time (and the target never gets): never settled,
    // so never confirmed.
    let hot = CancellationToken::new();
    let churn = {
        let (engine, hot) = (env.engine.clone(), hot.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !hot.is_cancelled() {
                n += 1;
                engine
                    .run(
                        SAMPLE_DATABASE,
                        &format!(
                            "UPDATE sales.customers SET loyalty_points = {n} WHERE customer_id = 3"
                        ),
                    )
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let report = env.run(request).await;
    hot.cancel();
    churn.await.unwrap();
    applied.await.unwrap();
    let t = table(&report, "sales.customers");
    assert!(
        t.notes
            .iter()
            .any(|n| n.starts_with("1 row(s) changed on the source at every re-check")),
        "{:?}",
        t.notes
    );
    assert_eq!(
        diffs(&report, "sales.customers"),
        [(
            ("different".to_string(), "customer_id=2".to_string()),
            ["full_name".to_string()].into()
        )]
        .into()
    );
    assert!(
        t.notes.iter().any(|n| n.contains("re-check")),
        "{:?}",
        t.notes
    );
}

/// Every source read of a verification takes the task's full-sync throttle: the sums computed
/// by capture, the chunks read to narrow, and the rows read by key for repair. A token bucket
/// lets one second's worth through at once, so reading `n` rows at `rate` rows/s takes at least
/// `(n - rate) / rate` seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_reads_follow_the_rows_per_second_throttle() {
    const RATE: f64 = 100.0;
    let at_least = |rows: u64| Duration::from_secs_f64((rows as f64 - RATE).max(0.0) / RATE);
    let env = env(300).await;
    let mut request = env.request();
    request.tables.retain(|p| {
        p.source
            .as_ref()
            .and_then(|s| s.table.as_ref())
            .is_some_and(|t| t.name == "orders")
    });

    // Rows by key (ReadRows), straight from capture, on the task's budget.
    let orders = request.tables[0].source.clone().unwrap();
    let ids: Vec<i64> = env
        .pg
        .query("SELECT order_id FROM sales.orders", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(ids.len() >= 250, "{}", ids.len());
    let keys: Vec<KeyBound> = ids
        .iter()
        .map(|id| KeyBound {
            values: vec![Value {
                kind: Some(Kind::Int(*id)),
            }],
        })
        .collect();
    let mut capture = CaptureServiceClient::connect(env.capture_address.clone())
        .await
        .unwrap();
    let read_rows = |task: &str, rows_per_second: f64| ReadRowsRequest {
        source: Some(env.source.clone()),
        table: Some(orders.clone()),
        keys: keys.clone(),
        task_id: task.into(),
        throttle: Some(Throttle {
            rows_per_second,
            ..Default::default()
        }),
    };
    for (task, rate) in [("read-rows-free", 0.0), ("read-rows-throttled", RATE)] {
        let started = Instant::now();
        let mut stream = capture
            .read_rows(read_rows(task, rate))
            .await
            .unwrap()
            .into_inner();
        let mut rows = 0;
        while let Some(batch) = stream.message().await.unwrap() {
            rows += batch.rows.len();
        }
        let elapsed = started.elapsed();
        assert_eq!(rows, ids.len());
        if rate > 0.0 {
            assert!(
                elapsed >= at_least(rows as u64),
                "{rows} rows by key at {rate} rows/s in {elapsed:?}"
            );
        } else {
            assert!(elapsed < at_least(rows as u64), "unthrottled: {elapsed:?}");
        }
    }

    // A whole verification with narrowing and repair: two rows missing on the target.
    env.pg("SET session_replication_role = replica; DELETE FROM sales.orders WHERE order_id IN (SELECT min(order_id) FROM sales.orders UNION SELECT max(order_id) FROM sales.orders)").await;
    request.repair = true;
    request.throttle.rows_per_second = RATE;
    request.task_id = "verify-throttled".into();
    let started = Instant::now();
    let report = env.run(request).await;
    let elapsed = started.elapsed();
    let t = table(&report, "sales.orders");
    assert_eq!(
        (t.differences_total, t.repaired),
        (2, 2),
        "{}",
        report.to_text()
    );
    // At least: every source row summed, the two narrowed ranges' rows, the two repaired rows.
    let read = t.source_rows + 2 * 2;
    assert!(
        elapsed >= at_least(read),
        "{read}+ rows at {RATE} rows/s in {elapsed:?}"
    );
    assert!(env.run(env.request()).await.equal, "repaired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_hook_times_verify_next_to_plain_scans() {
    let env = env(300).await;
    let mut request = env.request();
    request.tables.retain(|p| {
        p.source
            .as_ref()
            .and_then(|s| s.table.as_ref())
            .is_some_and(|t| t.name == "orders")
    });
    request.chunk_rows = 0;
    let result = dbsync_verify::bench::measure(request).await.unwrap();
    eprintln!("{result}");
    assert!(result.equal);
    assert_eq!(result.rows, 300);
    assert!(
        result.verify_rows_per_second > 0.0
            && result.target_scan_seconds > 0.0
            && result.source_scan_seconds > 0.0
    );
}

/// Worker threads get 16 MiB stacks: in debug builds a spawned task of the sync path
/// (capture's change stream or apply's stream under this load) overflows tokio's default
/// 2 MiB now and then (seen 2 runs in 5; reported to their owners).
#[test]
fn no_false_mismatch_while_incremental_sync_runs_under_load() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(16 << 20)
        .enable_all()
        .build()
        .unwrap()
        .block_on(under_load());
}

async fn under_load() {
    let env = env_with(150, true).await;
    let stop = CancellationToken::new();
    let config = WorkloadConfig {
        seed: 11,
        database: SAMPLE_DATABASE.into(),
        user: "sa".into(),
        password: env.source.password.clone(),
        workers: 2,
        transactions_per_second: Some(40.0),
        max_transactions: None,
        duration: None,
        large_transaction_every: 40,
        large_transaction_rows: 300,
        rollback_percent: 5,
        ddl_every: 0,
        ..Default::default()
    };
    let addr: SocketAddr = format!("127.0.0.1:{}", env.source.port).parse().unwrap();
    let workload = tokio::spawn(run_workload(addr, config, stop.clone()));
    let mut request = env.request();
    request.mode = Mode::Incremental {
        recheck_delay: Duration::from_millis(1500),
        attempts: 3,
        lag: Duration::from_millis(500),
    };
    let during = env.run(request).await;
    stop.cancel();
    let stats = workload.await.unwrap().unwrap();
    assert!(
        stats.committed > 20,
        "the workload ran during verification: {stats:?}"
    );
    eprintln!("during the load:\n{}", during.to_text());

    // Once the load stops and apply catches up, full verification settles on what really
    // differs. Every row reported during the load must still differ then: it was no
    // false mismatch.
    let all = |r: &VerifyReport| -> BTreeSet<(String, String, String)> {
        r.tables
            .iter()
            .flat_map(|t| {
                t.differences
                    .iter()
                    .map(|d| (t.source.clone(), d.kind.as_str().to_string(), d.key.clone()))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut previous = all(&env.run(env.request()).await);
    let settled = loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let report = env.run(env.request()).await;
        let now = all(&report);
        if now == previous {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "the target never settled:\n{}",
            report.to_text()
        );
        previous = now;
    };
    let false_mismatches: Vec<_> = all(&during).difference(&all(&settled)).cloned().collect();
    assert!(
        false_mismatches.is_empty(),
        "reported under load but equal after catch-up: {false_mismatches:?}\nsettled:\n{}",
        settled.to_text()
    );
    let equal_tables = settled.tables.iter().filter(|t| t.equal).count();
    assert!(
        equal_tables + 1 >= settled.tables.len(),
        "settled:\n{}",
        settled.to_text()
    );
    if !settled.equal {
        eprintln!(
            "real divergence left by incremental sync (not verify's):\n{}",
            settled.to_text()
        );
    }
}

/// `cargo test --release -p dbsync-verify --test verify -- --ignored --nocapture throughput`
/// (VERIFY_BENCH_ROWS rows, default 200 000): verify's rows/s next to count(*) + a full scan
/// of each side, on a seven-column table.
#[test]
#[ignore]
fn throughput() {
    use dbsync_sqlserver_sim::types::Value as SimValue;
    let rows: i64 = std::env::var("VERIFY_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(16 << 20)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let setup = |engine: &Engine| {
            engine.run("master", "CREATE DATABASE bench").unwrap();
            engine
                .run(
                    "bench",
                    "CREATE TABLE dbo.bench7 (id bigint NOT NULL PRIMARY KEY, qty int NOT NULL, label varchar(100) NULL, \
                     amount numeric(12, 2) NULL, created datetime2(7) NULL, flag bit NULL, name nvarchar(200) NULL)",
                )
                .unwrap();
            let mut lo = 0;
            while lo < rows {
                let hi = (lo + 50_000).min(rows);
                let batch = (lo..hi)
                    .map(|i| {
                        vec![
                            SimValue::BigInt(i),
                            SimValue::Int((i * 7 % 100_000) as i32),
                            SimValue::String(Arc::from(format!("label {i}"))),
                            SimValue::Decimal(i128::from(i * 37 % 10_000_000_000), 2),
                            SimValue::DateTime2 { days: 738_885 + (i % 1000) as i32, ticks: (i as u64 * 12_345_671) % 864_000_000_000 },
                            SimValue::Bit(i % 2 == 0),
                            SimValue::String(Arc::from(format!("name {i} · a customer with a longer display name"))),
                        ]
                    })
                    .collect();
                engine.insert_rows("bench", "dbo", "bench7", batch).unwrap();
                lo = hi;
            }
        };
        let env = env_for("bench", setup, false).await;
        let mut request = env.request();
        request.chunk_rows = 50_000;
        let result = dbsync_verify::bench::measure(request).await.unwrap();
        eprintln!("{result}");
        assert!(result.equal);
        assert_eq!(result.rows, rows as u64);
    });
}
