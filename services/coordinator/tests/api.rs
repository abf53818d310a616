//! Every lifecycle call through the real gRPC API: the coordinator in-process on 127.0.0.1:0,
//! its SQLite store in a temp dir, a real PostgreSQL as the target, a CaptureService double
//! with a fixed catalog, and fake workers that are plain WorkerService clients.

mod support;

use std::time::Duration;

use dbsync_pgtest::PgCluster;
use dbsync_proto::v1 as pb;
use pb::{PrecheckStatus, TablePhase, TaskState};
use support::*;

struct Setup {
    _dir: tempfile::TempDir,
    server: Server,
    capture: FakeCapture,
    capture_url: String,
    capture_shutdown: dbsync_telemetry::CancellationToken,
    pg: &'static PgCluster,
}

async fn setup(db: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("c.db"), None, Default::default()).await;
    let capture = FakeCapture::new();
    let capture_shutdown = dbsync_telemetry::CancellationToken::new();
    let capture_url = capture.serve(capture_shutdown.clone()).await;
    let pg = tokio::task::spawn_blocking(PgCluster::shared)
        .await
        .unwrap();
    pg.create_database(db).await.unwrap();
    Setup {
        _dir: dir,
        server,
        capture,
        capture_url,
        capture_shutdown,
        pg,
    }
}

fn item<'a>(report: &'a pb::PrecheckReport, id: &str) -> &'a pb::PrecheckItem {
    report
        .items
        .iter()
        .find(|i| i.id == id)
        .unwrap_or_else(|| panic!("no precheck item {id} in {report:#?}"))
}

#[tokio::test]
async fn create_get_list_validate_and_redact() {
    let s = setup("api_create").await;
    let mut c = s.server.client().await;
    let spec = spec_for("orders", &s.capture_url, s.pg, "api_create", "");
    let info = c
        .create_task(pb::CreateTaskRequest { spec: spec.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.state, TaskState::Created as i32);
    assert!(
        !info.spec_redacted.contains("Src-Pa55word!")
            && !info.spec_redacted.contains("Tgt-Pa55word!")
    );
    assert!(info.spec_redacted.contains("***"));
    assert_eq!(
        c.get_task(task_ref("orders"))
            .await
            .unwrap()
            .into_inner()
            .task_id,
        info.task_id
    );
    assert_eq!(
        c.get_task(task_ref(&info.task_id))
            .await
            .unwrap()
            .into_inner()
            .name,
        "orders"
    );
    assert_eq!(
        c.list_tasks(pb::ListTasksRequest {})
            .await
            .unwrap()
            .into_inner()
            .tasks
            .len(),
        1
    );

    let dup = c
        .create_task(pb::CreateTaskRequest { spec })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), tonic::Code::AlreadyExists);
    let bad = c
        .create_task(pb::CreateTaskRequest {
            spec: spec_for(
                "bad",
                &s.capture_url,
                s.pg,
                "x",
                "retry: { other_minutes: 0 }\nchunk_rows: 5",
            ),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(
        bad.message()
            .contains("retry.other_minutes: 0 is out of range: allowed 1 to 1440"),
        "{}",
        bad.message()
    );
    assert!(bad.message().contains("chunk_rows"), "{}", bad.message());
    let missing = c.get_task(task_ref("nope")).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    s.server.stop().await;
}

#[tokio::test]
async fn full_lifecycle_precheck_start_pause_resume_modify_stop_restart_delete() {
    let s = setup("api_lifecycle").await;
    let mut c = s.server.client().await;
    let mut w = s.server.workers().await;
    let spec = spec_for(
        "life",
        &s.capture_url,
        s.pg,
        "api_lifecycle",
        "objects: { databases: [shop], exclude: ['shop.dbo.audit'] }\nthrottle: { full: { rows_per_second: 1000 } }",
    )
    .replace("objects: { databases: [shop] }\n", "");
    let task = c
        .create_task(pb::CreateTaskRequest { spec })
        .await
        .unwrap()
        .into_inner();

    // Precheck: source items from capture, target items from PostgreSQL.
    let report = c
        .precheck_task(pb::PrecheckTaskRequest {
            task_id: "life".into(),
            acknowledge: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        item(&report, "capture.available").status,
        PrecheckStatus::Pass as i32
    );
    assert_eq!(
        item(&report, "target.connect").status,
        PrecheckStatus::Pass as i32
    );
    assert_eq!(
        item(&report, "target.version").status,
        PrecheckStatus::Pass as i32
    );
    assert_eq!(
        item(&report, "target.session_replication_role").status,
        PrecheckStatus::Pass as i32,
        "superuser"
    );
    let warn = item(&report, "source.cdc_polling_interval");
    assert_eq!(warn.status, PrecheckStatus::Warn as i32);
    assert!(!warn.acknowledged);
    assert!(
        !report
            .items
            .iter()
            .any(|i| i.status == PrecheckStatus::Fail as i32),
        "{report:#?}"
    );
    // Acknowledge the warning; unknown ids are refused.
    let err = c
        .precheck_task(pb::PrecheckTaskRequest {
            task_id: "life".into(),
            acknowledge: vec!["target.connect".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let report = c
        .precheck_task(pb::PrecheckTaskRequest {
            task_id: "life".into(),
            acknowledge: vec!["source.cdc_polling_interval".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(item(&report, "source.cdc_polling_interval").acknowledged);
    assert_eq!(
        c.get_task(task_ref("life"))
            .await
            .unwrap()
            .into_inner()
            .state,
        TaskState::Prechecked as i32
    );

    // Two appliers and a capture worker register.
    let a1 = register(&mut w, "apply", "a1:1").await;
    let a2 = register(&mut w, "apply", "a2:1").await;
    let cap = register(&mut w, "capture", &s.capture_url).await;

    let started = c.start_task(task_ref("life")).await.unwrap().into_inner();
    assert_eq!(started.state, TaskState::Running as i32);
    // CDC is enabled and L0 recorded before anything could read a snapshot.
    let calls = s.capture.calls();
    let enable = calls
        .iter()
        .position(|c| c.starts_with("EnableCdc:3"))
        .expect("EnableCdc for 3 tables");
    let max_lsn = calls
        .iter()
        .rposition(|c| c == "GetMaxLsn")
        .expect("GetMaxLsn");
    assert!(enable < max_lsn, "{calls:?}");

    // Groups: {customers, orders} (FK) and {products}, one per applier.
    let h1 = heartbeat(&mut w, &a1).await;
    let h2 = heartbeat(&mut w, &a2).await;
    assert_eq!(h1.assignments.len() + h2.assignments.len(), 2);
    assert_eq!(h1.assignments.len(), 1);
    let all: Vec<&pb::Assignment> = h1.assignments.iter().chain(&h2.assignments).collect();
    let fk_group = all
        .iter()
        .find(|a| a.tables.len() == 2)
        .expect("FK-linked tables share a group");
    let names: Vec<&str> = fk_group
        .tables
        .iter()
        .map(|t| t.target_table.as_str())
        .collect();
    assert_eq!(names, ["customers", "orders"]);
    for a in &all {
        assert_eq!(a.start_lsn, L0.to_vec());
        assert_eq!(a.capture_address, s.capture_url);
        assert_eq!(
            a.source.as_ref().unwrap().password,
            "Src-Pa55word!",
            "workers get resolved secrets"
        );
        assert_eq!(a.full_throttle.as_ref().unwrap().rows_per_second, 1000.0);
        assert!(!a.paused && a.full_sync && a.incremental_sync && a.schema_sync);
        assert_eq!(a.poll_interval_ms, 500);
    }
    let hc = heartbeat(&mut w, &cap).await;
    assert_eq!(hc.throttles.len(), 1);
    assert_eq!(
        hc.throttles[0].full.as_ref().unwrap().rows_per_second,
        1000.0
    );

    // Progress: only the owner may report; status aggregates it.
    let (owner, other, group) = if h1.assignments[0].tables.len() == 2 {
        (a1.clone(), a2.clone(), h1.assignments[0].clone())
    } else {
        (a2.clone(), a1.clone(), h2.assignments[0].clone())
    };
    let progress = |worker: &str, rows: u64, phase: TablePhase| pb::ReportProgressRequest {
        worker_id: worker.into(),
        task_id: task.task_id.clone(),
        generation: group.generation,
        tables: vec![pb::TableProgress {
            source: Some(table_ref("shop", "dbo", "orders")),
            phase: phase as i32,
            rows_done: rows,
            rows_total: 1000,
            bytes_done: rows * 100,
            chunks_done: 1,
            chunks_total: 2,
            ..Default::default()
        }],
        ..Default::default()
    };
    let err = w
        .report_progress(progress(&other, 10, TablePhase::Snapshot))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    w.report_progress(progress(&owner, 400, TablePhase::Snapshot))
        .await
        .unwrap();
    let status = c
        .get_task_status(task_ref("life"))
        .await
        .unwrap()
        .into_inner();
    let orders = status
        .tables
        .iter()
        .find(|t| t.target == "dbo.orders")
        .unwrap();
    assert_eq!(
        (orders.rows_done, orders.rows_total, orders.phase),
        (400, 1000, TablePhase::Snapshot as i32)
    );
    assert_eq!(orders.worker_id, owner);
    assert_eq!(status.tables.len(), 3);
    assert!(status.rows_total >= 3000);

    // Pause / resume flip Assignment.paused and bump the generation.
    assert_eq!(
        c.pause_task(task_ref("life"))
            .await
            .unwrap()
            .into_inner()
            .state,
        TaskState::Paused as i32
    );
    let paused = heartbeat(&mut w, &owner).await.assignments;
    assert!(paused[0].paused);
    assert!(paused[0].generation > group.generation);
    assert_eq!(
        c.pause_task(task_ref("life")).await.unwrap_err().code(),
        tonic::Code::FailedPrecondition
    );
    c.resume_task(task_ref("life")).await.unwrap();
    assert!(!heartbeat(&mut w, &owner).await.assignments[0].paused);

    // Modify: add a table (new group, CDC enabled for it), change throttles and alerts.
    let modified = c
        .modify_task(pb::ModifyTaskRequest {
            task_id: "life".into(),
            add_tables: vec!["dbo.audit".into()],
            full_throttle: Some(pb::Throttle {
                queries_per_second: 5.0,
                rows_per_second: 50.0,
                megabytes_per_second: 1.0,
            }),
            lag_alert_seconds: Some(30),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        modified.spec_redacted.contains("lag_seconds: 30"),
        "{}",
        modified.spec_redacted
    );
    assert!(s.capture.calls().iter().any(|c| c == "EnableCdc:1"));
    let groups: usize = heartbeat(&mut w, &a1).await.assignments.len()
        + heartbeat(&mut w, &a2).await.assignments.len();
    assert_eq!(groups, 3);
    assert_eq!(
        heartbeat(&mut w, &cap).await.throttles[0]
            .full
            .as_ref()
            .unwrap()
            .rows_per_second,
        50.0
    );
    let err = c
        .modify_task(pb::ModifyTaskRequest {
            task_id: "life".into(),
            add_tables: vec!["dbo.nope".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("shop.dbo.nope"), "{}", err.message());
    // Remove a table: its group disappears.
    c.modify_task(pb::ModifyTaskRequest {
        task_id: "life".into(),
        remove_tables: vec!["shop.dbo.products".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let status = c
        .get_task_status(task_ref("life"))
        .await
        .unwrap()
        .into_inner();
    assert!(!status.tables.iter().any(|t| t.target == "dbo.products"));
    let groups: usize = heartbeat(&mut w, &a1).await.assignments.len()
        + heartbeat(&mut w, &a2).await.assignments.len();
    assert_eq!(groups, 2);

    // Stop: no assignments handed out; start again resumes with the same plan (no new L0).
    let lsn_reads = s
        .capture
        .calls()
        .iter()
        .filter(|c| *c == "GetMaxLsn")
        .count();
    assert_eq!(
        c.stop_task(task_ref("life"))
            .await
            .unwrap()
            .into_inner()
            .state,
        TaskState::Stopped as i32
    );
    assert!(
        heartbeat(&mut w, &a1).await.assignments.is_empty()
            && heartbeat(&mut w, &a2).await.assignments.is_empty()
    );
    assert_eq!(
        c.start_task(task_ref("life"))
            .await
            .unwrap()
            .into_inner()
            .state,
        TaskState::Running as i32
    );
    assert_eq!(
        s.capture
            .calls()
            .iter()
            .filter(|c| *c == "GetMaxLsn")
            .count(),
        lsn_reads
    );
    let groups: usize = heartbeat(&mut w, &a1).await.assignments.len()
        + heartbeat(&mut w, &a2).await.assignments.len();
    assert_eq!(groups, 2);
    assert_eq!(
        c.start_task(task_ref("life")).await.unwrap_err().code(),
        tonic::Code::FailedPrecondition
    );

    let workers = c
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert_eq!(workers.len(), 3);
    assert!(workers.iter().all(|w| w.alive));

    // Delete with source cleanup.
    c.delete_task(pb::DeleteTaskRequest {
        task_id: "life".into(),
        cleanup_source: true,
    })
    .await
    .unwrap();
    assert!(
        s.capture
            .calls()
            .iter()
            .any(|c| c.starts_with("CleanupSource:3")),
        "{:?}",
        s.capture.calls()
    );
    assert_eq!(
        c.get_task(task_ref("life")).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    assert!(heartbeat(&mut w, &a1).await.assignments.is_empty());
    s.capture_shutdown.cancel();
    s.server.stop().await;
}

#[tokio::test]
async fn conflicting_target_table_fails_the_precheck_and_blocks_start() {
    let s = setup("api_conflict").await;
    let pgc = s.pg.connect("api_conflict").await.unwrap();
    pgc.batch_execute("CREATE SCHEMA dbo; CREATE TABLE dbo.orders (id int)")
        .await
        .unwrap();
    let mut c = s.server.client().await;
    c.create_task(pb::CreateTaskRequest {
        spec: spec_for("conflict", &s.capture_url, s.pg, "api_conflict", ""),
    })
    .await
    .unwrap();
    let report = c
        .precheck_task(pb::PrecheckTaskRequest {
            task_id: "conflict".into(),
            acknowledge: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let conflict = item(&report, "target.conflicting_table");
    assert_eq!(conflict.status, PrecheckStatus::Fail as i32);
    assert_eq!(conflict.object, "dbo.orders");
    assert!(conflict.fix.contains("conflict_mode: ignore"));
    assert_eq!(
        c.get_task(task_ref("conflict"))
            .await
            .unwrap()
            .into_inner()
            .state,
        TaskState::Created as i32
    );
    let err = c.start_task(task_ref("conflict")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("target.conflicting_table"),
        "{}",
        err.message()
    );

    // conflict_mode: ignore turns it into a warning and the task starts.
    c.create_task(pb::CreateTaskRequest {
        spec: spec_for(
            "conflict2",
            &s.capture_url,
            s.pg,
            "api_conflict",
            "conflict_mode: ignore",
        ),
    })
    .await
    .unwrap();
    let report = c
        .precheck_task(pb::PrecheckTaskRequest {
            task_id: "conflict2".into(),
            acknowledge: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        item(&report, "target.conflicting_table").status,
        PrecheckStatus::Warn as i32
    );
    assert_eq!(
        c.start_task(task_ref("conflict2"))
            .await
            .unwrap()
            .into_inner()
            .state,
        TaskState::Running as i32
    );
    s.server.stop().await;
}

#[tokio::test]
async fn a_role_without_session_replication_role_gets_a_warning_and_deferred_fks() {
    let s = setup("api_role").await;
    s.pg.create_password_role("dbsync_plain", "Role-Pa55!")
        .await
        .unwrap();
    let pgc = s.pg.connect("api_role").await.unwrap();
    pgc.batch_execute("GRANT CREATE ON DATABASE api_role TO dbsync_plain")
        .await
        .unwrap();
    let spec = spec_for("role", &s.capture_url, s.pg, "api_role", "").replace(
        &format!("user: {}, password: \"Tgt-Pa55word!\"", s.pg.superuser()),
        "user: dbsync_plain, password: \"Role-Pa55!\"",
    );
    let mut c = s.server.client().await;
    let mut w = s.server.workers().await;
    c.create_task(pb::CreateTaskRequest { spec }).await.unwrap();
    let report = c
        .precheck_task(pb::PrecheckTaskRequest {
            task_id: "role".into(),
            acknowledge: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        item(&report, "target.connect").status,
        PrecheckStatus::Pass as i32,
        "{report:#?}"
    );
    assert_eq!(
        item(&report, "target.create_privilege").status,
        PrecheckStatus::Pass as i32
    );
    let srr = item(&report, "target.session_replication_role");
    assert_eq!(srr.status, PrecheckStatus::Warn as i32);
    assert!(srr.fix.contains("GRANT SET ON PARAMETER"));
    let a = register(&mut w, "apply", "a:1").await;
    c.start_task(task_ref("role")).await.unwrap();
    let assignments = heartbeat(&mut w, &a).await.assignments;
    assert!(!assignments.is_empty() && assignments.iter().all(|a| a.defer_foreign_keys));

    // A wrong target password fails connectivity with a fix, without echoing the password.
    let bad = spec_for("role-bad", &s.capture_url, s.pg, "api_role", "").replace(
        &format!("user: {}, password: \"Tgt-Pa55word!\"", s.pg.superuser()),
        "user: dbsync_plain, password: \"Wrong-Pa55!\"",
    );
    c.create_task(pb::CreateTaskRequest { spec: bad })
        .await
        .unwrap();
    let report = c
        .precheck_task(pb::PrecheckTaskRequest {
            task_id: "role-bad".into(),
            acknowledge: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let connect = item(&report, "target.connect");
    assert_eq!(connect.status, PrecheckStatus::Fail as i32);
    assert!(
        connect.detail.contains("28P01") || connect.detail.contains("password"),
        "{}",
        connect.detail
    );
    assert!(!format!("{report:?}").contains("Wrong-Pa55!"));
    s.server.stop().await;
}

#[tokio::test]
async fn full_only_task_completes_when_every_table_is_done() {
    let s = setup("api_complete").await;
    let mut c = s.server.client().await;
    let mut w = s.server.workers().await;
    let spec = spec_for(
        "full-only",
        &s.capture_url,
        s.pg,
        "api_complete",
        "sync: { incremental: false }",
    );
    let task = c
        .create_task(pb::CreateTaskRequest { spec })
        .await
        .unwrap()
        .into_inner();
    let a = register(&mut w, "apply", "a:1").await;
    c.start_task(task_ref("full-only")).await.unwrap();
    assert!(
        !s.capture.calls().iter().any(|c| c.starts_with("EnableCdc")),
        "no CDC for full-only tasks"
    );
    let assignments = heartbeat(&mut w, &a).await.assignments;
    assert!(assignments
        .iter()
        .all(|a| a.start_lsn.is_empty() && !a.incremental_sync));
    let tables: Vec<pb::TableProgress> = assignments
        .iter()
        .flat_map(|a| a.tables.iter())
        .map(|t| pb::TableProgress {
            source: t.source.as_ref().unwrap().table.clone(),
            phase: TablePhase::Done as i32,
            rows_done: 1000,
            rows_total: 1000,
            ..Default::default()
        })
        .collect();
    let (last, first) = tables.split_last().unwrap();
    w.report_progress(pb::ReportProgressRequest {
        worker_id: a.clone(),
        task_id: task.task_id.clone(),
        tables: first.to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        c.get_task(task_ref("full-only"))
            .await
            .unwrap()
            .into_inner()
            .state,
        TaskState::Running as i32
    );
    w.report_progress(pb::ReportProgressRequest {
        worker_id: a.clone(),
        task_id: task.task_id.clone(),
        tables: vec![last.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let status = c
        .get_task_status(task_ref("full-only"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.task.unwrap().state, TaskState::Completed as i32);
    assert_eq!(status.rows_done, 4000);
    s.server.stop().await;
}

#[tokio::test]
async fn watch_streams_status_changes() {
    let s = setup("api_watch").await;
    let mut c = s.server.client().await;
    let mut w = s.server.workers().await;
    let task = c
        .create_task(pb::CreateTaskRequest {
            spec: spec_for("watch", &s.capture_url, s.pg, "api_watch", ""),
        })
        .await
        .unwrap()
        .into_inner();
    let a = register(&mut w, "apply", "a:1").await;
    c.start_task(task_ref("watch")).await.unwrap();
    let mut stream = c
        .watch_task_status(task_ref("watch"))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.rows_done, 0);
    heartbeat(&mut w, &a).await;
    w.report_progress(pb::ReportProgressRequest {
        worker_id: a.clone(),
        task_id: task.task_id.clone(),
        tables: vec![pb::TableProgress {
            source: Some(table_ref("shop", "dbo", "audit")),
            phase: TablePhase::Snapshot as i32,
            rows_done: 77,
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let updated = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let s = stream.message().await.unwrap().unwrap();
            if s.rows_done == 77 {
                return s;
            }
        }
    })
    .await
    .expect("the watch stream delivers the progress");
    assert_eq!(
        updated
            .tables
            .iter()
            .find(|t| t.target == "dbo.audit")
            .unwrap()
            .phase,
        TablePhase::Snapshot as i32
    );
    s.server.stop().await;
}

/// VerifyTask runs dbsync-verify over the task's own plans (its data-level behaviour is tested
/// in services/verify against the stand-in); here: the plans reach it and its findings come
/// back as a clear error naming the object.
#[tokio::test]
async fn verify_uses_the_task_plan_and_reports_problems_clearly() {
    let s = setup("api_verify").await;
    let pgc = s.pg.connect("api_verify").await.unwrap();
    let mut c = s.server.client().await;
    c.create_task(pb::CreateTaskRequest {
        spec: spec_for(
            "verify",
            &s.capture_url,
            s.pg,
            "api_verify",
            "objects: { databases: [shop], include: ['shop.dbo.audit'] }",
        )
        .replace("objects: { databases: [shop] }\n", ""),
    })
    .await
    .unwrap();
    c.start_task(task_ref("verify")).await.unwrap();
    // The target table lacks the planned column "name".
    pgc.batch_execute("CREATE SCHEMA dbo; CREATE TABLE dbo.audit (id int PRIMARY KEY)")
        .await
        .unwrap();
    let err = c
        .verify_task(pb::VerifyTaskRequest {
            task_id: "verify".into(),
            mode: "full".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("dbo.audit.name"),
        "{}",
        err.message()
    );
    assert!(!err.message().contains("Tgt-Pa55word!"));
    let err = c
        .verify_task(pb::VerifyTaskRequest {
            task_id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    s.server.stop().await;
}
