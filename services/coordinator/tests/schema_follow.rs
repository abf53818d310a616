//! A source schema change that apply followed (hybrid mode) reaches the coordinator with the
//! progress report; the coordinator keeps the table's new schema in its store (SQLite file or
//! PostgreSQL) and uses it for later assignments and status, also after a restart.

mod support;

use std::sync::Arc;

use dbsync_coordinator::ManualClock;
use dbsync_pgtest::PgCluster;
use dbsync_proto::v1 as pb;
use pb::TablePhase;
use support::*;

async fn pg(db: &str) -> &'static PgCluster {
    let pg = tokio::task::spawn_blocking(PgCluster::shared)
        .await
        .unwrap();
    pg.create_database(db).await.unwrap();
    pg
}

/// The source schema of `shop.dbo.audit` in the assignments `worker` gets.
async fn audit_columns(
    w: &mut pb::worker_service_client::WorkerServiceClient<tonic::transport::Channel>,
    worker: &str,
) -> Vec<String> {
    let response = heartbeat(w, worker).await;
    let plan = response
        .assignments
        .iter()
        .flat_map(|a| &a.tables)
        .find(|p| {
            p.source
                .as_ref()
                .and_then(|s| s.table.as_ref())
                .is_some_and(|t| t.name == "audit")
        })
        .expect("audit is assigned");
    let source = plan.source.as_ref().unwrap();
    source.columns.iter().map(|c| c.name.clone()).collect()
}

async fn status_columns(
    c: &mut pb::coordinator_service_client::CoordinatorServiceClient<tonic::transport::Channel>,
    task: &str,
) -> Vec<String> {
    let status = c
        .get_task_status(task_ref(task))
        .await
        .unwrap()
        .into_inner();
    status
        .tables
        .iter()
        .find(|t| t.source.as_ref().is_some_and(|s| s.name == "audit"))
        .expect("audit in status")
        .source_columns
        .clone()
}

async fn followed_schema_is_kept_and_assigned(store: &str, target_db: &str) {
    let capture = FakeCapture::new();
    let cap_shutdown = dbsync_telemetry::CancellationToken::new();
    let capture_url = capture.serve(cap_shutdown.clone()).await;
    let pg = pg(target_db).await;
    let server = Server::start_on(store, None, Arc::new(ManualClock::new())).await;
    let mut c = server.client().await;
    let mut w = server.workers().await;
    c.create_task(pb::CreateTaskRequest {
        spec: spec_for("follow", &capture_url, pg, target_db, ""),
    })
    .await
    .unwrap();
    let a1 = register(&mut w, "apply", "a1:1").await;
    c.start_task(task_ref("follow")).await.unwrap();
    assert_eq!(audit_columns(&mut w, &a1).await, ["Id", "Name"]);
    assert_eq!(status_columns(&mut c, "follow").await, ["Id", "Name"]);

    // Apply followed `ADD Note` and `sp_rename 'Name', 'FullName'` and reports the new shape.
    let mut changed = table("shop", "audit", &[]);
    changed.columns[1].name = "FullName".into();
    changed.columns.push(pb::ColumnSchema {
        name: "Note".into(),
        column_id: 3,
        type_name: "nvarchar".into(),
        max_length: 80,
        nullable: true,
        ..Default::default()
    });
    let report = |schema: Option<pb::TableSchema>| pb::ReportProgressRequest {
        worker_id: a1.clone(),
        task_id: "follow".into(),
        tables: vec![pb::TableProgress {
            source: Some(table_ref("shop", "dbo", "audit")),
            phase: TablePhase::Streaming as i32,
            changes_applied: 7,
            source_schema: schema,
            ..Default::default()
        }],
        ..Default::default()
    };
    w.report_progress(report(Some(changed.clone())))
        .await
        .unwrap();
    let followed = ["Id", "FullName", "Note"];
    assert_eq!(audit_columns(&mut w, &a1).await, followed);
    assert_eq!(status_columns(&mut c, "follow").await, followed);
    // A later report without the schema (an applier that has not followed anything since its
    // start) does not take it back.
    w.report_progress(report(None)).await.unwrap();
    assert_eq!(audit_columns(&mut w, &a1).await, followed);
    // The other tables keep their plans.
    let response = heartbeat(&mut w, &a1).await;
    let customers = response
        .assignments
        .iter()
        .flat_map(|a| &a.tables)
        .find(|p| p.source.as_ref().unwrap().table.as_ref().unwrap().name == "customers")
        .unwrap();
    assert_eq!(customers.source.as_ref().unwrap().columns.len(), 2);
    server.stop().await;

    // After a restart on the same store, the applier gets the table in its new shape.
    let server = Server::start_on(store, None, Arc::new(ManualClock::new())).await;
    let mut c = server.client().await;
    let mut w = server.workers().await;
    assert_eq!(status_columns(&mut c, "follow").await, followed);
    assert_eq!(audit_columns(&mut w, &a1).await, followed);
    cap_shutdown.cancel();
    server.stop().await;
}

#[tokio::test]
async fn a_followed_schema_change_is_kept_in_a_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("c.db");
    followed_schema_is_kept_and_assigned(&store.to_string_lossy(), "schema_follow_sqlite").await;
}

#[tokio::test]
async fn a_followed_schema_change_is_kept_in_a_postgres_store() {
    let pg = pg("schema_follow_pg_store").await;
    let store = format!(
        "postgres://{}@{}:{}/schema_follow_pg_store",
        pg.superuser(),
        pg.host(),
        pg.port()
    );
    followed_schema_is_kept_and_assigned(&store, "schema_follow_pg").await;
}
