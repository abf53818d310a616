//! Two coordinators on one PostgreSQL store, through the real gRPC API: exactly one leads
//! (serves, ticks, hands out assignments); the other stands by (health NOT_SERVING, calls
//! refused with UNAVAILABLE) and takes over with the tasks, groups and generations in the
//! store when the leader goes away.

mod support;

use std::time::{Duration, Instant};

use dbsync_coordinator::{CancellationToken, CoordinatorConfig};
use dbsync_proto::v1 as pb;
use dbsync_proto::v1::coordinator_service_client::CoordinatorServiceClient;
use dbsync_proto::v1::worker_service_client::WorkerServiceClient;
use pb::TaskState;
use support::*;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

struct Running {
    url: String,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn coordinator(store: &str) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = CoordinatorConfig {
        store: store.to_string(),
        lease_seconds: LEASE_SECONDS,
        tick_ms: 50,
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(dbsync_coordinator::serve(
        config,
        listener,
        shutdown.clone(),
    ));
    Running {
        url,
        shutdown,
        handle,
    }
}

async fn health(url: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .ok()?;
    let status = HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "dbsync.v1.CoordinatorService".into(),
        })
        .await
        .ok()?
        .into_inner()
        .status;
    ServingStatus::try_from(status).ok()
}

async fn wait_health(url: &str, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if health(url).await == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never became {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_standby_coordinator_takes_over_when_the_leader_goes_away() {
    let pg = tokio::task::spawn_blocking(dbsync_pgtest::PgCluster::shared)
        .await
        .unwrap();
    pg.create_database("ha_store").await.unwrap();
    pg.create_database("ha_target").await.unwrap();
    let store = format!(
        "postgres://{}@{}:{}/ha_store",
        pg.superuser(),
        pg.host(),
        pg.port()
    );
    let capture = FakeCapture::new();
    let cap_shutdown = CancellationToken::new();
    let capture_url = capture.serve(cap_shutdown.clone()).await;

    let a = coordinator(&store).await;
    wait_health(&a.url, ServingStatus::Serving).await;
    let b = coordinator(&store).await;
    wait_health(&b.url, ServingStatus::NotServing).await;

    // The standby refuses to drive anything.
    let mut cb = CoordinatorServiceClient::connect(b.url.clone())
        .await
        .unwrap();
    let refused = cb
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(
        refused.message().contains("standby"),
        "{}",
        refused.message()
    );
    let mut wb = WorkerServiceClient::connect(b.url.clone()).await.unwrap();
    assert_eq!(
        wb.heartbeat(pb::HeartbeatRequest {
            worker_id: "x".into()
        })
        .await
        .unwrap_err()
        .code(),
        tonic::Code::Unavailable
    );

    // The leader runs a task with one applier.
    let mut ca = CoordinatorServiceClient::connect(a.url.clone())
        .await
        .unwrap();
    let mut wa = WorkerServiceClient::connect(a.url.clone()).await.unwrap();
    ca.create_task(pb::CreateTaskRequest {
        spec: spec_for("ha", &capture_url, pg, "ha_target", ""),
    })
    .await
    .unwrap();
    let a1 = register(&mut wa, "apply", "a1:1").await;
    ca.start_task(task_ref("ha")).await.unwrap();
    let before = heartbeat(&mut wa, &a1).await.assignments;
    assert_eq!(before.len(), 3);

    // The leader goes away; the standby takes the lock, serves, and carries on from the store.
    a.shutdown.cancel();
    a.handle.await.unwrap().unwrap();
    wait_health(&b.url, ServingStatus::Serving).await;
    let info = cb.get_task(task_ref("ha")).await.unwrap().into_inner();
    assert_eq!(info.state, TaskState::Running as i32);
    let after = heartbeat(&mut wb, &a1).await;
    assert!(!after.reregister, "the applier is known to the new leader");
    let gens = |v: &[pb::Assignment]| {
        let mut g: Vec<(String, u64)> = v
            .iter()
            .map(|a| (a.group_id.clone(), a.generation))
            .collect();
        g.sort();
        g
    };
    assert_eq!(
        gens(&after.assignments),
        gens(&before),
        "the applier keeps its groups: its data paths are not disturbed by the failover"
    );

    // A coordinator started again on the store stands by behind the new leader.
    let a2 = coordinator(&store).await;
    wait_health(&a2.url, ServingStatus::NotServing).await;
    a2.shutdown.cancel();
    a2.handle.await.unwrap().unwrap();
    b.shutdown.cancel();
    b.handle.await.unwrap().unwrap();
    cap_shutdown.cancel();
}

#[tokio::test]
async fn the_store_url_password_never_appears_in_errors() {
    let pg = tokio::task::spawn_blocking(dbsync_pgtest::PgCluster::shared)
        .await
        .unwrap();
    // Wrong password on a database that does not exist: the error names neither secret.
    let store = format!(
        "postgres://nobody:Store-Pa55word!@{}:{}/missing_db",
        pg.host(),
        pg.port()
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = CoordinatorConfig {
        store: store.clone(),
        ..Default::default()
    };
    assert!(!format!("{config:?}").contains("Store-Pa55word!"));
    let error = dbsync_coordinator::serve(config, listener, CancellationToken::new())
        .await
        .unwrap_err();
    let text = format!("{error:#} {error:?}");
    assert!(!text.contains("Store-Pa55word!"), "{text}");
    assert!(text.contains("postgres://nobody@"), "{text}");
}

#[tokio::test]
async fn a_leader_that_loses_its_lock_session_steps_down_and_one_coordinator_leads() {
    let pg = tokio::task::spawn_blocking(dbsync_pgtest::PgCluster::shared)
        .await
        .unwrap();
    pg.create_database("ha_lost_session").await.unwrap();
    let store = format!(
        "postgres://{}@{}:{}/ha_lost_session",
        pg.superuser(),
        pg.host(),
        pg.port()
    );
    let a = coordinator(&store).await;
    wait_health(&a.url, ServingStatus::Serving).await;
    let b = coordinator(&store).await;
    wait_health(&b.url, ServingStatus::NotServing).await;

    // The server ends the session that holds the leader lock (as a network cut or a failover
    // of the store would).
    let admin = pg.connect("ha_lost_session").await.unwrap();
    let holder = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = \
                  (SELECT oid FROM pg_database WHERE datname = current_database())";
    let ended: i32 = admin.query_one(holder, &[]).await.unwrap().get(0);
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&ended])
        .await
        .unwrap();

    // Whoever wins the lock next, on a new session, leads; the other stands by. The state
    // must hold steadily (five checks in a row), so a leader that has not yet noticed its loss
    // does not count.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut steady = 0;
    while steady < 5 {
        let (sa, sb) = (health(&a.url).await, health(&b.url).await);
        let serving = [sa, sb]
            .iter()
            .filter(|s| **s == Some(ServingStatus::Serving))
            .count();
        let standing_by = [sa, sb]
            .iter()
            .filter(|s| **s == Some(ServingStatus::NotServing))
            .count();
        let holders: Vec<i32> = admin
            .query(holder, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let one_new_holder = holders.len() == 1 && holders[0] != ended;
        steady = if serving == 1 && standing_by == 1 && one_new_holder {
            steady + 1
        } else {
            0
        };
        assert!(
            Instant::now() < deadline,
            "no single leader after the lock session ended: a {sa:?}, b {sb:?}, lock held by {holders:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for c in [a, b] {
        c.shutdown.cancel();
        c.handle.await.unwrap().unwrap();
    }
}
