//! Workers, leases and failure handling through the real gRPC API: groups move when an
//! applier's lease expires and spread out when one joins; retry windows fail a task with its
//! reason and an alert (log + webhook); lag alerts; a coordinator restart keeps everything;
//! the bearer token guards both services.

mod support;

use std::sync::Arc;
use std::time::Duration;

use dbsync_coordinator::ManualClock;
use dbsync_pgtest::PgCluster;
use dbsync_proto::v1 as pb;
use pb::{TablePhase, TaskState};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn pg(db: &str) -> &'static PgCluster {
    let pg = tokio::task::spawn_blocking(PgCluster::shared)
        .await
        .unwrap();
    pg.create_database(db).await.unwrap();
    pg
}

/// Group count per live applier, from their heartbeats.
async fn spread(
    w: &mut dbsync_proto::v1::worker_service_client::WorkerServiceClient<tonic::transport::Channel>,
    ids: &[&str],
) -> Vec<usize> {
    let mut out = Vec::new();
    for id in ids {
        out.push(heartbeat(w, id).await.assignments.len());
    }
    out
}

#[tokio::test]
async fn groups_move_when_a_lease_expires_and_spread_when_an_applier_joins() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let server = Server::start(&dir.path().join("c.db"), None, clock.clone()).await;
    let capture = FakeCapture::new();
    let cap_shutdown = dbsync_telemetry::CancellationToken::new();
    let capture_url = capture.serve(cap_shutdown.clone()).await;
    let pg = pg("workers_leases").await;
    let mut c = server.client().await;
    let mut w = server.workers().await;
    // customers+orders, products, audit: three groups.
    c.create_task(pb::CreateTaskRequest {
        spec: spec_for("leases", &capture_url, pg, "workers_leases", ""),
    })
    .await
    .unwrap();
    let a1 = register(&mut w, "apply", "a1:1").await;
    let a2 = register(&mut w, "apply", "a2:1").await;
    c.start_task(task_ref("leases")).await.unwrap();
    let before = spread(&mut w, &[&a1, &a2]).await;
    assert_eq!(before.iter().sum::<usize>(), 3);
    assert!(before.iter().all(|n| *n >= 1), "{before:?}");
    let a2_groups = heartbeat(&mut w, &a2).await.assignments;

    // a2 stops heartbeating; once its lease is over, a1 owns everything with a new generation.
    clock.advance(Duration::from_secs(u64::from(LEASE_SECONDS) / 2));
    heartbeat(&mut w, &a1).await;
    clock.advance(Duration::from_secs(u64::from(LEASE_SECONDS) / 2 + 1));
    heartbeat(&mut w, &a1).await;
    let moved = eventually("a2's groups to move to a1", || {
        let mut w = w.clone();
        let a1 = a1.clone();
        async move {
            let h = heartbeat(&mut w, &a1).await;
            (h.assignments.len() == 3).then_some(h.assignments)
        }
    })
    .await;
    for g in &a2_groups {
        let now = moved.iter().find(|a| a.group_id == g.group_id).unwrap();
        assert!(
            now.generation > g.generation,
            "a moved group gets a new generation"
        );
    }
    let workers = c
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert!(!workers.iter().find(|x| x.worker_id == a2).unwrap().alive);
    let status = c
        .get_task_status(task_ref("leases"))
        .await
        .unwrap()
        .into_inner();
    assert!(status.tables.iter().all(|t| t.worker_id == a1));
    // The old owner is refused if it still reports.
    let err = w
        .report_progress(pb::ReportProgressRequest {
            worker_id: a2.clone(),
            task_id: "leases".into(),
            tables: vec![pb::TableProgress {
                source: Some(table_ref("shop", "dbo", "audit")),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    // A joining applier gets groups when the spread is uneven.
    let a3 = register(&mut w, "apply", "a3:1").await;
    let after = spread(&mut w, &[&a1, &a3]).await;
    assert_eq!(after.iter().sum::<usize>(), 3);
    assert!(after.iter().all(|n| *n >= 1), "{after:?}");
    cap_shutdown.cancel();
    server.stop().await;
}

#[tokio::test]
async fn a_coordinator_restart_keeps_tasks_groups_and_leases() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("c.db");
    restart_keeps_tasks_groups_and_leases(&store.to_string_lossy(), "workers_restart").await;
}

#[tokio::test]
async fn a_coordinator_restart_on_a_postgres_store_keeps_tasks_groups_and_leases() {
    let pg = pg("workers_restart_pg_store").await;
    let store = format!(
        "postgres://{}@{}:{}/workers_restart_pg_store",
        pg.superuser(),
        pg.host(),
        pg.port()
    );
    restart_keeps_tasks_groups_and_leases(&store, "workers_restart_pg").await;
}

async fn restart_keeps_tasks_groups_and_leases(store: &str, target_db: &str) {
    let capture = FakeCapture::new();
    let cap_shutdown = dbsync_telemetry::CancellationToken::new();
    let capture_url = capture.serve(cap_shutdown.clone()).await;
    let pg = pg(target_db).await;
    let server = Server::start_on(store, None, Arc::new(ManualClock::new())).await;
    let mut c = server.client().await;
    let mut w = server.workers().await;
    c.create_task(pb::CreateTaskRequest {
        spec: spec_for("keep", &capture_url, pg, target_db, ""),
    })
    .await
    .unwrap();
    let a1 = register(&mut w, "apply", "a1:1").await;
    c.start_task(task_ref("keep")).await.unwrap();
    let before = heartbeat(&mut w, &a1).await.assignments;
    assert_eq!(before.len(), 3);
    server.stop().await;

    // Restart on the same store, later in time than the old lease would have lasted.
    let clock = Arc::new(ManualClock::new());
    clock.advance(Duration::from_secs(u64::from(LEASE_SECONDS) * 3));
    let server = Server::start_on(store, None, clock).await;
    let mut c = server.client().await;
    let mut w = server.workers().await;
    let info = c.get_task(task_ref("keep")).await.unwrap().into_inner();
    assert_eq!(info.state, TaskState::Running as i32);
    let after = heartbeat(&mut w, &a1).await;
    assert!(
        !after.reregister,
        "a known worker keeps going without registering again"
    );
    let gens = |v: &[pb::Assignment]| {
        v.iter()
            .map(|a| (a.group_id.clone(), a.generation))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        gens(&after.assignments),
        gens(&before),
        "running data paths are not disturbed"
    );
    // An unknown worker is asked to register.
    assert!(heartbeat(&mut w, "apply-unknown").await.reregister);
    cap_shutdown.cancel();
    server.stop().await;
}

/// Accepts one webhook POST and returns its body.
async fn webhook_receiver() -> (String, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(i) = text.find("\r\n\r\n") {
                let len: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                if got.len() >= i + 4 + len {
                    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .await
                        .unwrap();
                    return text[i + 4..].to_string();
                }
            }
            if n == 0 {
                return text;
            }
        }
    });
    (url, handle)
}

/// Moves the clock forward in steps shorter than the lease, heartbeating after each step, so
/// the worker keeps its lease while time passes.
async fn advance_alive(
    clock: &ManualClock,
    w: &mut dbsync_proto::v1::worker_service_client::WorkerServiceClient<tonic::transport::Channel>,
    worker: &str,
    by: Duration,
) {
    let step = Duration::from_secs(u64::from(LEASE_SECONDS) / 2);
    let mut left = by;
    while !left.is_zero() {
        let d = left.min(step);
        clock.advance(d);
        heartbeat(w, worker).await;
        left -= d;
    }
}

fn error_report(worker: &str, task: &str, class: &str, error: &str) -> pb::ReportProgressRequest {
    pb::ReportProgressRequest {
        worker_id: worker.into(),
        task_id: task.into(),
        tables: vec![pb::TableProgress {
            source: Some(table_ref("shop", "dbo", "audit")),
            phase: TablePhase::Snapshot as i32,
            error: error.into(),
            error_transient: !error.is_empty() && class != "definite",
            error_class: class.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn retry_windows_tolerate_then_fail_the_task_with_an_alert() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let server = Server::start(&dir.path().join("c.db"), None, clock.clone()).await;
    let capture = FakeCapture::new();
    let cap_shutdown = dbsync_telemetry::CancellationToken::new();
    let capture_url = capture.serve(cap_shutdown.clone()).await;
    let pg = pg("workers_retry").await;
    let (hook, received) = webhook_receiver().await;
    let mut c = server.client().await;
    let mut w = server.workers().await;
    let extra = format!(
        "objects: {{ databases: [shop], include: ['shop.dbo.audit'] }}\nretry: {{ connection_minutes: 10, other_minutes: 2 }}\nalerts: {{ webhook_url: '{hook}' }}"
    );
    let spec = spec_for("retry", &capture_url, pg, "workers_retry", &extra)
        .replace("objects: { databases: [shop] }\n", "");
    c.create_task(pb::CreateTaskRequest { spec }).await.unwrap();
    let a = register(&mut w, "apply", "a:1").await;
    c.start_task(task_ref("retry")).await.unwrap();
    heartbeat(&mut w, &a).await;
    let state = |c: &mut pb::coordinator_service_client::CoordinatorServiceClient<
        tonic::transport::Channel,
    >| {
        let mut c = c.clone();
        async move { c.get_task(task_ref("retry")).await.unwrap().into_inner() }
    };

    // "Other" failures: tolerated for 2 minutes; recovery resets the episode.
    w.report_progress(error_report(&a, "retry", "transient", "deadlock victim"))
        .await
        .unwrap();
    advance_alive(&clock, &mut w, &a, Duration::from_secs(100)).await;
    w.report_progress(error_report(&a, "retry", "transient", "deadlock victim"))
        .await
        .unwrap();
    assert_eq!(state(&mut c).await.state, TaskState::Running as i32);
    w.report_progress(error_report(&a, "retry", "", ""))
        .await
        .unwrap();
    advance_alive(&clock, &mut w, &a, Duration::from_secs(100)).await;
    w.report_progress(error_report(&a, "retry", "transient", "deadlock victim"))
        .await
        .unwrap();
    assert_eq!(
        state(&mut c).await.state,
        TaskState::Running as i32,
        "a success in between starts a new window"
    );

    // Connection failures have their own, longer window: 9 minutes are fine...
    w.report_progress(error_report(
        &a,
        "retry",
        "connection",
        "connection refused",
    ))
    .await
    .unwrap();
    advance_alive(&clock, &mut w, &a, Duration::from_secs(9 * 60)).await;
    w.report_progress(error_report(
        &a,
        "retry",
        "connection",
        "connection refused",
    ))
    .await
    .unwrap();
    assert_eq!(state(&mut c).await.state, TaskState::Running as i32);
    // ...past 10 minutes the task fails even if the worker goes quiet (the tick checks too).
    advance_alive(&clock, &mut w, &a, Duration::from_secs(61 + 60)).await;
    let failed = eventually("the task to fail", || {
        let mut c = c.clone();
        async move {
            let t = c.get_task(task_ref("retry")).await.unwrap().into_inner();
            (t.state == TaskState::Failed as i32).then_some(t)
        }
    })
    .await;
    assert!(
        failed
            .last_error
            .contains("connection failures kept recurring for more than 10 minutes"),
        "{}",
        failed.last_error
    );
    assert!(failed.last_error.contains("connection refused"));
    let status = c
        .get_task_status(task_ref("retry"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        status
            .alerts
            .iter()
            .any(|a| a.contains("task retry failed")),
        "{:?}",
        status.alerts
    );
    let body = tokio::time::timeout(Duration::from_secs(10), received)
        .await
        .unwrap()
        .unwrap();
    assert!(
        body.contains("\"kind\":\"task_failed\"") && body.contains("\"task_name\":\"retry\""),
        "{body}"
    );
    // A failed task hands out nothing; start resumes it.
    assert!(heartbeat(&mut w, &a).await.assignments.is_empty());
    assert_eq!(
        c.start_task(task_ref("retry"))
            .await
            .unwrap()
            .into_inner()
            .state,
        TaskState::Running as i32
    );
    assert_eq!(heartbeat(&mut w, &a).await.assignments.len(), 1);

    // A definite task error fails the task at once.
    w.report_progress(pb::ReportProgressRequest {
        worker_id: a.clone(),
        task_id: "retry".into(),
        task_error: "change data cleaned up below the resume position".into(),
        task_error_class: "definite".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let t = state(&mut c).await;
    assert_eq!(t.state, TaskState::Failed as i32);
    assert!(t.last_error.contains("cleaned up"));
    cap_shutdown.cancel();
    server.stop().await;
}

#[tokio::test]
async fn lag_over_the_threshold_raises_an_alert_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let server = Server::start(&dir.path().join("c.db"), None, clock.clone()).await;
    let capture = FakeCapture::new();
    let cap_shutdown = dbsync_telemetry::CancellationToken::new();
    let capture_url = capture.serve(cap_shutdown.clone()).await;
    let pg = pg("workers_lag").await;
    let mut c = server.client().await;
    let mut w = server.workers().await;
    let spec = spec_for(
        "lag",
        &capture_url,
        pg,
        "workers_lag",
        "objects: { databases: [shop], include: ['shop.dbo.audit'] }\nalerts: { lag_seconds: 30 }",
    )
    .replace("objects: { databases: [shop] }\n", "");
    c.create_task(pb::CreateTaskRequest { spec }).await.unwrap();
    let a = register(&mut w, "apply", "a:1").await;
    c.start_task(task_ref("lag")).await.unwrap();
    heartbeat(&mut w, &a).await;
    let streaming = |applied_us: i64| pb::ReportProgressRequest {
        worker_id: a.clone(),
        task_id: "lag".into(),
        tables: vec![pb::TableProgress {
            source: Some(table_ref("shop", "dbo", "audit")),
            phase: TablePhase::Streaming as i32,
            applied_source_time_unix_micros: applied_us,
            changes_applied: 5,
            ..Default::default()
        }],
        ..Default::default()
    };
    let now_us = || dbsync_coordinator::Clock::now_us(clock.as_ref());
    w.report_progress(streaming(now_us() - 5_000_000))
        .await
        .unwrap();
    let status = c
        .get_task_status(task_ref("lag"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        (status.lag_seconds - 5.0).abs() < 0.5,
        "{}",
        status.lag_seconds
    );
    advance_alive(&clock, &mut w, &a, Duration::from_secs(60)).await;
    eventually("a lag alert", || {
        let mut c = c.clone();
        async move {
            let s = c
                .get_task_status(task_ref("lag"))
                .await
                .unwrap()
                .into_inner();
            s.alerts
                .iter()
                .any(|a| a.contains("exceeds 30 s"))
                .then_some(())
        }
    })
    .await;
    w.report_progress(streaming(now_us())).await.unwrap();
    eventually("the lag recovery notice", || {
        let mut c = c.clone();
        async move {
            let s = c
                .get_task_status(task_ref("lag"))
                .await
                .unwrap()
                .into_inner();
            s.alerts
                .iter()
                .any(|a| a.contains("lag back to"))
                .then_some(())
        }
    })
    .await;
    cap_shutdown.cancel();
    server.stop().await;
}

#[tokio::test]
async fn calls_without_the_token_are_rejected_and_health_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("c.db"),
        Some("s3cr3t-token"),
        Arc::new(ManualClock::new()),
    )
    .await;
    let mut c = server.client().await;
    let err = c.list_tasks(pb::ListTasksRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut wrong = tonic::Request::new(pb::ListTasksRequest {});
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(
        c.list_tasks(wrong).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let mut right = tonic::Request::new(pb::ListTasksRequest {});
    right
        .metadata_mut()
        .insert("authorization", "Bearer s3cr3t-token".parse().unwrap());
    c.list_tasks(right).await.unwrap();

    let mut w = server.workers().await;
    let err = w
        .register(pb::RegisterRequest {
            kind: "apply".into(),
            address: "a:1".into(),
            worker_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::Unauthenticated,
        "assignments carry passwords: workers authenticate too"
    );

    let channel = tonic::transport::Channel::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let served = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "dbsync.v1.CoordinatorService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        served.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    server.stop().await;
}

#[tokio::test]
async fn modifying_throttles_and_alerts_keeps_generations_and_reaches_running_workers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let server = Server::start(&dir.path().join("c.db"), None, clock).await;
    let capture = FakeCapture::new();
    let cap_shutdown = dbsync_telemetry::CancellationToken::new();
    let capture_url = capture.serve(cap_shutdown.clone()).await;
    let pg = pg("workers_live_throttle").await;
    let mut c = server.client().await;
    let mut w = server.workers().await;
    c.create_task(pb::CreateTaskRequest {
        spec: spec_for(
            "live",
            &capture_url,
            pg,
            "workers_live_throttle",
            "throttle: { incremental: { rows_per_second: 100 } }",
        ),
    })
    .await
    .unwrap();
    let a1 = register(&mut w, "apply", "a1:1").await;
    let cap = register(&mut w, "capture", &capture_url).await;
    let task_id = c
        .start_task(task_ref("live"))
        .await
        .unwrap()
        .into_inner()
        .task_id;
    let before = heartbeat(&mut w, &a1).await.assignments;
    assert_eq!(before.len(), 3);
    assert_eq!(
        before[0].incremental_throttle.unwrap().rows_per_second,
        100.0
    );

    c.modify_task(pb::ModifyTaskRequest {
        task_id: "live".into(),
        full_throttle: Some(pb::Throttle {
            queries_per_second: 3.0,
            ..Default::default()
        }),
        incremental_throttle: Some(pb::Throttle {
            rows_per_second: 2500.0,
            megabytes_per_second: 4.0,
            ..Default::default()
        }),
        lag_alert_seconds: Some(30),
        ..Default::default()
    })
    .await
    .unwrap();

    // The applier's assignments keep their generations (its data paths keep running) and
    // carry the new limits; the capture service gets them in its heartbeat and enforces them.
    let after = heartbeat(&mut w, &a1).await.assignments;
    let gens = |v: &[pb::Assignment]| {
        v.iter()
            .map(|a| (a.group_id.clone(), a.generation))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        gens(&after),
        gens(&before),
        "a throttle change restarts nothing"
    );
    for a in &after {
        let inc = a.incremental_throttle.unwrap();
        assert_eq!(
            (inc.rows_per_second, inc.megabytes_per_second),
            (2500.0, 4.0)
        );
        assert_eq!(a.full_throttle.unwrap().queries_per_second, 3.0);
    }
    let throttles = heartbeat(&mut w, &cap).await.throttles;
    let t = throttles.iter().find(|t| t.task_id == task_id).unwrap();
    assert_eq!(t.incremental.unwrap().rows_per_second, 2500.0);
    assert_eq!(t.full.unwrap().queries_per_second, 3.0);

    // Changing the table set does restart the group data paths.
    c.modify_task(pb::ModifyTaskRequest {
        task_id: "live".into(),
        remove_tables: vec!["shop.dbo.audit".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let removed = heartbeat(&mut w, &a1).await.assignments;
    assert_eq!(removed.len(), 2);
    for a in &removed {
        let old = before.iter().find(|b| b.group_id == a.group_id).unwrap();
        assert!(
            a.generation > old.generation,
            "{} keeps generation {}",
            a.group_id,
            a.generation
        );
    }
    cap_shutdown.cancel();
    server.stop().await;
}

#[tokio::test]
async fn assignments_carry_the_selected_sequences_named_for_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("c.db"), None, Arc::new(ManualClock::new())).await;
    let capture = FakeCapture::new();
    let seq = |schema: &str, name: &str, current: i64| pb::SequenceSchema {
        database: "shop".into(),
        schema: schema.into(),
        name: name.into(),
        type_name: "bigint".into(),
        increment: 1,
        current_value: current,
        ..Default::default()
    };
    *capture.sequences.lock().unwrap() = vec![
        seq("dbo", "InvoiceNo", 41),
        seq("dbo", "TmpCounter", 7),
        seq("Audit", "EventNo", 9),
    ];
    let cap_shutdown = dbsync_telemetry::CancellationToken::new();
    let capture_url = capture.serve(cap_shutdown.clone()).await;
    let pg = pg("workers_sequences").await;
    let mut c = server.client().await;
    let mut w = server.workers().await;
    // Selection by table patterns plus one sequence pattern; dbo renamed; upper case.
    let spec = spec_for("seqs", &capture_url, pg, "workers_sequences", "")
        .replace(
            "objects: { databases: [shop] }",
            "objects: { databases: [shop], include: ['shop.dbo.*'], exclude: ['shop.dbo.Tmp*'], schemas: { shop.dbo: Sales }, capitalization: upper }",
        );
    c.create_task(pb::CreateTaskRequest { spec }).await.unwrap();
    let a1 = register(&mut w, "apply", "a1:1").await;
    c.start_task(task_ref("seqs")).await.unwrap();
    let assignments = heartbeat(&mut w, &a1).await.assignments;
    assert_eq!(assignments.len(), 3);
    let carrying: Vec<&pb::Assignment> = assignments
        .iter()
        .filter(|a| !a.sequences.is_empty())
        .collect();
    assert_eq!(
        carrying.len(),
        1,
        "one group of the database creates its sequences"
    );
    let names: Vec<(String, String, i64)> = carrying[0]
        .sequences
        .iter()
        .map(|q| (q.schema.clone(), q.name.clone(), q.current_value))
        .collect();
    assert_eq!(names, [("Sales".to_string(), "INVOICENO".to_string(), 41)]);
    cap_shutdown.cancel();
    server.stop().await;
}
