//! The apply service registers with a real in-process coordinator, keeps its lease by
//! heartbeating, and serves gRPC health.

use std::time::{Duration, Instant};

use dbsync_apply::{serve, ApplyConfig};
use dbsync_coordinator::CoordinatorConfig;
use dbsync_proto::v1::coordinator_service_client::CoordinatorServiceClient;
use dbsync_proto::v1::ListWorkersRequest;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn apply_registers_heartbeats_and_serves_health() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let coordinator_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let coordinator_addr = coordinator_listener.local_addr().unwrap();
    let config = CoordinatorConfig {
        store: dir.path().join("store.db").to_string_lossy().into_owned(),
        lease_seconds: 3,
        tick_ms: 100,
        ..Default::default()
    };
    let coordinator = tokio::spawn(dbsync_coordinator::serve(
        config,
        coordinator_listener,
        shutdown.clone(),
    ));

    let apply_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let apply_addr = apply_listener.local_addr().unwrap();
    let apply_config = ApplyConfig {
        coordinator: format!("http://{coordinator_addr}"),
        worker_id: Some("apply-test-1".into()),
        heartbeat_interval: Duration::from_millis(200),
        ..Default::default()
    };
    let apply = tokio::spawn(serve(apply_config, apply_listener, shutdown.clone()));

    let mut client = loop {
        if let Ok(c) = CoordinatorServiceClient::connect(format!("http://{coordinator_addr}")).await
        {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let workers = client
            .list_workers(ListWorkersRequest {})
            .await
            .unwrap()
            .into_inner()
            .workers;
        if let Some(w) = workers.iter().find(|w| w.kind == "apply") {
            assert_eq!(w.worker_id, "apply-test-1");
            assert_eq!(w.address, apply_addr.to_string());
            if w.alive {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "apply worker never showed up alive: {workers:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Still alive after more than one lease: heartbeats renew it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let workers = client
        .list_workers(ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert!(
        workers.iter().any(|w| w.kind == "apply" && w.alive),
        "{workers:?}"
    );

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{apply_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), apply)
        .await
        .expect("apply stops on shutdown")
        .unwrap()
        .unwrap();
    let _ = coordinator.await;
}
