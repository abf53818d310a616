//! Error classes end to end: a real applier (dbsync-apply) runs a task against a real
//! PostgreSQL reached through a TCP proxy that the test can cut. A target that goes away is a
//! connection failure: the coordinator keeps the task running for the connection retry window
//! (longer than the window for other failures), and the task recovers when the target comes
//! back. A definite failure fails the task at once, with its reason.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dbsync_coordinator::{CancellationToken, ManualClock};
use dbsync_proto::v1 as pb;
use pb::TaskState;
use support::*;

/// Forwards TCP connections to `upstream` while up; going down cuts every open connection and
/// refuses new ones (accepted, then closed at once).
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<CancellationToken>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<CancellationToken>>> = Arc::default();
        let (up2, open2) = (up.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue;
                }
                let cut = CancellationToken::new();
                open2.lock().unwrap().push(cut.clone());
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.cancelled() => {}
                    }
                });
            }
        });
        Proxy { addr, up, open }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.open.lock().unwrap().drain(..) {
            c.cancel();
        }
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Polls the task's status until `check` accepts it (30 s at most: the applier backs off).
async fn until_status(
    c: &mut dbsync_proto::v1::coordinator_service_client::CoordinatorServiceClient<
        tonic::transport::Channel,
    >,
    task: &str,
    what: &str,
    check: impl Fn(&pb::TaskStatus) -> bool,
) -> pb::TaskStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = c
            .get_task_status(task_ref(task))
            .await
            .unwrap()
            .into_inner();
        if check(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn info(s: &pb::TaskStatus) -> &pb::TaskInfo {
    s.task.as_ref().unwrap()
}

#[tokio::test]
async fn a_target_back_inside_the_connection_window_recovers_and_a_definite_error_fails() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    // Leases far longer than the time moved below, so no group moves while the clock jumps.
    let server = Server::start_with_lease(
        &dir.path().join("c.db").to_string_lossy(),
        None,
        clock.clone(),
        3600,
    )
    .await;
    let capture = FakeCapture::new();
    // nvarchar(100): a column the applier can create.
    for t in capture.tables.lock().unwrap().iter_mut() {
        t.columns[1].max_length = 200;
    }
    // A table whose plan an applier cannot run (its key names no column): a definite error.
    let mut broken = table("shop", "broken", &[]);
    broken.key_columns = vec!["Nope".into()];
    capture.tables.lock().unwrap().push(broken);
    let cap_shutdown = CancellationToken::new();
    let capture_url = capture.serve(cap_shutdown.clone()).await;
    let pg = tokio::task::spawn_blocking(dbsync_pgtest::PgCluster::shared)
        .await
        .unwrap();
    pg.create_database("retries_target").await.unwrap();
    let proxy = Proxy::start(format!("{}:{}", pg.host(), pg.port())).await;

    let shutdown = CancellationToken::new();
    let apply_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let apply = tokio::spawn(dbsync_apply::serve(
        dbsync_apply::ApplyConfig {
            coordinator: server.url.clone(),
            worker_id: Some("apply-retries".into()),
            heartbeat_interval: Duration::from_millis(200),
            ..Default::default()
        },
        apply_listener,
        shutdown.clone(),
    ));

    let mut c = server.client().await;
    let spec = |name: &str, include: &str| {
        spec_for(
            name,
            &capture_url,
            pg,
            "retries_target",
            "sync: { schema: true, full: false, incremental: false }\nretry: { connection_minutes: 30, other_minutes: 1 }",
        )
        .replace(
            &format!("port: {}", pg.port()),
            &format!("port: {}", proxy.addr.port()),
        )
        .replace(
            "objects: { databases: [shop] }",
            &format!("objects: {{ databases: [shop], include: ['{include}'] }}"),
        )
    };
    c.create_task(pb::CreateTaskRequest {
        spec: spec("comeback", "shop.dbo.customers"),
    })
    .await
    .unwrap();
    c.precheck_task(pb::PrecheckTaskRequest {
        task_id: "comeback".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    // The target goes away before the applier gets to it.
    proxy.down();
    c.start_task(task_ref("comeback")).await.unwrap();
    until_status(
        &mut c,
        "comeback",
        "the applier to report a connection failure",
        |s| info(s).last_error.starts_with("connection failure"),
    )
    .await;
    // Longer than the window for other failures (1 min), inside the connection window (30 min).
    clock.advance(Duration::from_secs(5 * 60));
    let retrying = until_status(&mut c, "comeback", "a report after the clock moved", |s| {
        info(s)
            .last_error
            .strip_prefix("connection failure, retrying for ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|secs| secs.parse::<i64>().ok())
            .is_some_and(|secs| secs >= 300)
    })
    .await;
    assert_eq!(
        info(&retrying).state,
        TaskState::Running as i32,
        "{retrying:?}"
    );
    assert!(
        info(&retrying).last_error.contains("PostgreSQL connection"),
        "{retrying:?}"
    );
    assert!(
        !info(&retrying).last_error.contains("Tgt-Pa55word!"),
        "no password in the status"
    );

    // The target comes back: the applier's next retry creates the table and the task completes.
    proxy.up();
    let done = until_status(&mut c, "comeback", "the task to complete", |s| {
        info(s).state != TaskState::Running as i32
    })
    .await;
    assert_eq!(info(&done).state, TaskState::Completed as i32, "{done:?}");
    assert!(info(&done).last_error.is_empty(), "{done:?}");
    let target = pg.connect("retries_target").await.unwrap();
    let tables: i64 = target
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'dbo' AND table_name = 'customers'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        tables, 1,
        "the schema was created after the target came back"
    );

    // A definite failure: the task fails at once with the applier's reason.
    c.create_task(pb::CreateTaskRequest {
        spec: spec("broken", "shop.dbo.broken"),
    })
    .await
    .unwrap();
    c.start_task(task_ref("broken")).await.unwrap();
    let failed = until_status(&mut c, "broken", "the task to fail", |s| {
        info(s).state == TaskState::Failed as i32
    })
    .await;
    assert!(
        info(&failed)
            .last_error
            .contains("key column Nope is not a column of the table"),
        "{failed:?}"
    );

    shutdown.cancel();
    let _ = apply.await;
    cap_shutdown.cancel();
    server.stop().await;
}
