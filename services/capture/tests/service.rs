//! The capture service as a process part: gRPC server with health and auth, and its
//! registration with a coordinator (a minimal WorkerService stand-in over real gRPC).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dbsync_capture::throttle::Phase;
use dbsync_capture::{serve, CancellationToken, CaptureConfig, CaptureState};
use dbsync_core::Secret;
use dbsync_proto::v1::capture_service_client::CaptureServiceClient;
use dbsync_proto::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use dbsync_proto::v1::{
    GetSourceInfoRequest, HeartbeatRequest, HeartbeatResponse, RegisterRequest, RegisterResponse,
    ReportProgressRequest, ReportProgressResponse, SourceConnection, TaskThrottle, Throttle,
};
use tonic::{Request, Response, Status};

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Default)]
struct FakeCoordinator {
    registrations: AtomicUsize,
    heartbeats: AtomicUsize,
    kinds: parking_lot::Mutex<Vec<(String, String)>>,
}

struct Fake(Arc<FakeCoordinator>);

#[tonic::async_trait]
impl WorkerService for Fake {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let n = self.0.registrations.fetch_add(1, Ordering::SeqCst) + 1;
        let r = req.into_inner();
        self.0.kinds.lock().push((r.kind, r.address));
        Ok(Response::new(RegisterResponse {
            worker_id: format!("w{n}"),
            lease_seconds: 10,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let n = self.0.heartbeats.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(req.get_ref().worker_id.starts_with('w'));
        Ok(Response::new(HeartbeatResponse {
            assignments: vec![],
            // The first heartbeat pretends the coordinator restarted.
            reregister: n == 1,
            throttles: vec![TaskThrottle {
                task_id: "t1".into(),
                full: Some(Throttle {
                    queries_per_second: 7.0,
                    rows_per_second: 1000.0,
                    megabytes_per_second: 2.0,
                }),
                incremental: Some(Throttle {
                    rows_per_second: 500.0,
                    ..Default::default()
                }),
            }],
        }))
    }

    async fn report_progress(
        &self,
        _: Request<ReportProgressRequest>,
    ) -> Result<Response<ReportProgressResponse>, Status> {
        Ok(Response::new(ReportProgressResponse {}))
    }
}

#[tokio::test]
async fn registers_as_capture_reregisters_when_told_and_applies_heartbeat_throttles() {
    let fake = Arc::new(FakeCoordinator::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let fake = Arc::clone(&fake);
        let token = shutdown.clone();
        async move {
            tonic::transport::Server::builder()
                .add_service(WorkerServiceServer::new(Fake(fake)))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    token.cancelled_owned(),
                )
                .await
        }
    });
    let state = Arc::new(CaptureState::default());
    let reg = tokio::spawn(dbsync_capture::registration::run(
        format!("http://{addr}"),
        "http://capture.example:1".into(),
        None,
        Arc::clone(&state),
        shutdown.clone(),
    ));
    wait_until(
        "the service registered twice (re-register after the first heartbeat)",
        || fake.registrations.load(Ordering::SeqCst) >= 2,
    )
    .await;
    wait_until("heartbeat throttles reached the task", || {
        state
            .throttles
            .for_task("t1", Phase::Full, None)
            .settings()
            .queries_per_second
            == 7.0
    })
    .await;
    assert_eq!(
        state
            .throttles
            .for_task("t1", Phase::Incremental, None)
            .settings()
            .rows_per_second,
        500.0
    );
    assert_eq!(
        fake.kinds.lock()[0],
        (
            "capture".to_string(),
            "http://capture.example:1".to_string()
        )
    );
    shutdown.cancel();
    reg.await.unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn serves_health_and_rejects_calls_without_the_token() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let config = CaptureConfig {
        auth_token: Some(Secret::new("s3cr3t-token")),
        ..Default::default()
    };
    let server = tokio::spawn(serve(config, listener, shutdown.clone()));
    let channel = loop {
        match tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "dbsync.v1.CaptureService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut client = CaptureServiceClient::new(channel);
    let req = GetSourceInfoRequest {
        source: Some(SourceConnection {
            host: "127.0.0.1".into(),
            port: 1,
            user: "sa".into(),
            password: "very-secret-pw".into(),
            ..Default::default()
        }),
    };
    let err = client.get_source_info(req.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut authed = Request::new(req);
    authed
        .metadata_mut()
        .insert("authorization", "Bearer s3cr3t-token".parse().unwrap());
    let err = client.get_source_info(authed).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("127.0.0.1:1") && !err.message().contains("very-secret-pw"),
        "{}",
        err.message()
    );
    shutdown.cancel();
    server.await.unwrap().unwrap();
}
