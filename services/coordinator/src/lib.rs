//! The coordinator: dbsync's control plane. It keeps tasks in an embedded SQLite store, runs
//! prechecks, plans tables and groups, hands groups to appliers through heartbeats, moves them
//! when an applier's lease expires, tracks progress and lag, enforces retry windows and raises
//! alerts.
//!
//! Serves `dbsync.v1.CoordinatorService` (users, the `dbsync` CLI, grpcurl) and
//! `dbsync.v1.WorkerService` (capture and apply workers), plus gRPC health and reflection.
//! With an auth token configured, both services require `authorization: Bearer <token>`
//! (assignments carry database passwords, so workers authenticate too); health and reflection
//! stay open for probes and grpcurl's `describe`.
//!
//! Entry points: [`serve`] (from a [`CoordinatorConfig`]) and [`serve_engine`] (with a prepared
//! [`Coordinator`], e.g. with a [`ManualClock`] in tests).

// Protobuf literals end in `..Default::default()` even when complete, so that fields added to
// the contracts later never break this crate.
#![allow(clippy::needless_update)]

pub mod alert;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod plan;
pub mod spec;
pub mod store;
pub mod target;
pub mod verify_stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dbsync_core::Secret;
use dbsync_proto::v1::coordinator_service_server::CoordinatorServiceServer;
use dbsync_proto::v1::worker_service_server::WorkerServiceServer;
pub use dbsync_telemetry::CancellationToken;

pub use engine::{Clock, Coordinator, EngineSettings, ManualClock, SystemClock};
pub use error::CoordinatorError;
pub use spec::TaskSpec;
pub use store::{SqliteStore, TaskStore};

/// Coordinator settings: flags, each with an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorConfig {
    /// Address the gRPC server listens on (used by the binary; `serve` takes a bound listener).
    #[arg(
        long = "listen",
        env = "DBSYNC_COORDINATOR_LISTEN",
        default_value = "0.0.0.0:50051"
    )]
    pub listen: SocketAddr,
    /// Path of the SQLite store (created if missing).
    #[arg(
        long = "store",
        env = "DBSYNC_COORDINATOR_STORE",
        default_value = "dbsync-coordinator.db"
    )]
    pub store: String,
    /// Seconds a worker's lease lasts without a heartbeat; workers heartbeat about every third of it.
    #[arg(
        long = "lease-seconds",
        env = "DBSYNC_LEASE_SECONDS",
        default_value_t = 15
    )]
    pub lease_seconds: u32,
    /// Bearer token required on CoordinatorService and WorkerService calls (none: open); also
    /// sent to capture services, which share it.
    #[arg(long = "auth-token", env = "DBSYNC_AUTH_TOKEN", value_parser = parse_secret, hide_env_values = true)]
    pub auth_token: Option<Secret>,
    /// Serve Prometheus `/metrics` here.
    #[arg(long = "metrics-listen", env = "DBSYNC_COORDINATOR_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// How often leases, retry windows and lag alerts are checked, in milliseconds.
    #[arg(
        long = "tick-ms",
        env = "DBSYNC_COORDINATOR_TICK_MS",
        default_value_t = 1000
    )]
    pub tick_ms: u64,
}

fn parse_secret(value: &str) -> Result<Secret, String> {
    if value.is_empty() {
        Err("the token must not be empty".into())
    } else {
        Ok(Secret::new(value))
    }
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            listen: "0.0.0.0:50051".parse().expect("valid address"),
            store: "dbsync-coordinator.db".into(),
            lease_seconds: 15,
            auth_token: None,
            metrics_listen: None,
            tick_ms: 1000,
        }
    }
}

/// Opens the store and serves until `shutdown` is cancelled.
pub async fn serve(
    config: CoordinatorConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(addr) = config.metrics_listen {
        dbsync_telemetry::install_metrics(addr)?;
    }
    let store = SqliteStore::open(&config.store)
        .map_err(|e| anyhow::anyhow!("cannot open the coordinator store {}: {e}", config.store))?;
    let settings = EngineSettings {
        lease_seconds: config.lease_seconds.max(1),
        capture_token: config.auth_token.clone(),
        ..Default::default()
    };
    let coordinator = Coordinator::new(Arc::new(store), settings, Arc::new(SystemClock));
    tracing::info!(store = %config.store, "coordinator store opened");
    serve_engine(
        coordinator,
        config.auth_token,
        Duration::from_millis(config.tick_ms.max(10)),
        listener,
        shutdown,
    )
    .await
}

/// Serves a prepared coordinator: both services, health, reflection, and the periodic tick.
pub async fn serve_engine(
    coordinator: Arc<Coordinator>,
    auth_token: Option<Secret>,
    tick: Duration,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let ticker = {
        let coordinator = coordinator.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = interval.tick() => {
                        if let Err(e) = coordinator.tick().await {
                            tracing::warn!(error = %e, "coordinator tick failed");
                        }
                        match coordinator.due_verifications() {
                            Ok(due) => {
                                for task_id in due {
                                    let coordinator = coordinator.clone();
                                    tokio::spawn(async move {
                                        coordinator.verify_after_full_sync(&task_id).await;
                                    });
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot look for due verifications"),
                        }
                    }
                }
            }
        })
    };
    let (health_reporter, health) = dbsync_telemetry::health_service();
    health_reporter
        .set_serving::<CoordinatorServiceServer<grpc::CoordinatorGrpc>>()
        .await;
    health_reporter
        .set_serving::<WorkerServiceServer<grpc::WorkerGrpc>>()
        .await;
    let (reflection, reflection_v1alpha) = dbsync_telemetry::reflection_services(&[
        "dbsync.v1.CoordinatorService",
        "dbsync.v1.WorkerService",
    ])?;
    let auth = BearerAuth(auth_token.map(Arc::new));
    tracing::info!(%local, auth = auth.0.is_some(), "coordinator serving");
    let result = tonic::transport::Server::builder()
        .trace_fn(dbsync_telemetry::grpc_request_span)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(CoordinatorServiceServer::with_interceptor(
            grpc::CoordinatorGrpc(coordinator.clone(), shutdown.clone()),
            auth.clone(),
        ))
        .add_service(WorkerServiceServer::with_interceptor(
            grpc::WorkerGrpc(coordinator),
            auth,
        ))
        .serve_with_incoming_shutdown(
            dbsync_telemetry::incoming_tls(listener, dbsync_telemetry::server_tls_from_env()?),
            shutdown.cancelled(),
        )
        .await;
    ticker.abort();
    tracing::info!("coordinator stopped");
    Ok(result?)
}

/// Requires `authorization: Bearer <token>` when a token is configured.
#[derive(Clone)]
pub struct BearerAuth(Option<Arc<Secret>>);

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(token) = &self.0 else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
            Ok(request)
        } else {
            Err(tonic::Status::unauthenticated(
                "missing or wrong bearer token: pass --token or set DBSYNC_TOKEN (header authorization: Bearer <token>)",
            ))
        }
    }
}

/// Client side: adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Clone, Default)]
pub struct ClientToken(pub Option<Secret>);

impl tonic::service::Interceptor for ClientToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            let value = format!("Bearer {}", token.expose()).parse().map_err(|_| {
                tonic::Status::invalid_argument(
                    "the token contains characters not allowed in a header",
                )
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        dbsync_telemetry::inject_trace_context(request.metadata_mut());
        Ok(request)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
