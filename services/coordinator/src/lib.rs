//! The coordinator: dbsync's control plane. It keeps tasks in an embedded SQLite store (or a
//! shared PostgreSQL store for a highly available pair, see [`leader`]), runs
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
pub mod leader;
pub mod metrics;
pub mod pg_store;
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
pub use pg_store::PgStore;
pub use spec::TaskSpec;
pub use store::{open_store, SqliteStore, TaskStore};

/// Coordinator settings: flags, each with an environment variable (and a key in the
/// `--config` file; see deploy/README.md).
#[derive(Clone, clap::Args)]
pub struct CoordinatorConfig {
    /// Address the gRPC server listens on (used by the binary; `serve` takes a bound listener).
    #[arg(
        long = "listen",
        env = "DBSYNC_COORDINATOR_LISTEN",
        default_value = "0.0.0.0:50051"
    )]
    pub listen: SocketAddr,
    /// The store: path of a SQLite file (created if missing), or a PostgreSQL URL
    /// (postgres://user:password@host:port/database; schema created on first start) shared by
    /// coordinators run as a highly available group: one leads, the others stand by.
    #[arg(
        long = "store",
        env = "DBSYNC_COORDINATOR_STORE",
        default_value = "dbsync-coordinator.db",
        hide_env_values = true
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

/// The `dbsync-coordinator` command line.
#[derive(clap::Parser, Debug)]
#[command(
    name = "dbsync-coordinator",
    version,
    about = "dbsync control plane: tasks, prechecks, assignments, progress"
)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    pub config: CoordinatorConfig,
}

impl CoordinatorArgs {
    /// Flags, environment and `--config` file (TOML or YAML) of this process.
    pub fn from_process() -> CoordinatorArgs {
        dbsync_config::parse()
    }
}

fn parse_secret(value: &str) -> Result<Secret, String> {
    if value.is_empty() {
        Err("the token must not be empty".into())
    } else {
        Ok(Secret::new(value))
    }
}

impl std::fmt::Debug for CoordinatorConfig {
    // By hand: the store URL may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorConfig")
            .field("listen", &self.listen)
            .field("store", &pg_store::store_label(&self.store))
            .field("lease_seconds", &self.lease_seconds)
            .field("auth_token", &self.auth_token)
            .field("metrics_listen", &self.metrics_listen)
            .field("tick_ms", &self.tick_ms)
            .finish()
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

/// Opens the store and serves until `shutdown` is cancelled. On a PostgreSQL store the
/// coordinator first contends for leadership and stands by (health NOT_SERVING, API calls
/// refused with UNAVAILABLE) while another coordinator leads.
pub async fn serve(
    config: CoordinatorConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(addr) = config.metrics_listen {
        dbsync_telemetry::install_metrics(addr)?;
    }
    let label = pg_store::store_label(&config.store);
    let store = tokio::task::spawn_blocking({
        let store = config.store.clone();
        move || open_store(&store)
    })
    .await?
    .map_err(|e| anyhow::anyhow!("cannot open the coordinator store {label}: {e}"))?;
    let settings = EngineSettings {
        lease_seconds: config.lease_seconds.max(1),
        capture_token: config.auth_token.clone(),
        ..Default::default()
    };
    let tick = Duration::from_millis(config.tick_ms.max(10));
    let leader = if pg_store::is_postgres_url(&config.store) {
        let lease = leader::LeaderLease::new(&config.store)
            .map_err(|e| anyhow::anyhow!("coordinator store {label}: {e}"))?;
        Some(leader::spawn_election(lease, tick, shutdown.clone()))
    } else {
        None
    };
    let coordinator = match leader {
        Some(_) => Coordinator::new_standby(store, settings, Arc::new(SystemClock)),
        None => Coordinator::new(store, settings, Arc::new(SystemClock)),
    };
    tracing::info!(store = %label, shared = leader.is_some(), "coordinator store opened");
    serve_engine_with(
        coordinator,
        ServeOptions {
            auth_token: config.auth_token,
            tick,
            leader,
        },
        listener,
        shutdown,
    )
    .await
}

/// How [`serve_engine_with`] runs a prepared coordinator.
pub struct ServeOptions {
    /// Bearer token required on both services (none: open).
    pub auth_token: Option<Secret>,
    /// Period of lease expiry, retry-window and lag checks.
    pub tick: Duration,
    /// Leadership from [`leader::spawn_election`]; `None`: this coordinator always leads.
    pub leader: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Serves a prepared coordinator that always leads: both services, health, reflection, and
/// the periodic tick.
pub async fn serve_engine(
    coordinator: Arc<Coordinator>,
    auth_token: Option<Secret>,
    tick: Duration,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_engine_with(
        coordinator,
        ServeOptions {
            auth_token,
            tick,
            leader: None,
        },
        listener,
        shutdown,
    )
    .await
}

/// Serves a prepared coordinator; with a leadership receiver it drives tasks only while it
/// leads and takes over (fresh worker leases, state from the store) when it becomes leader.
pub async fn serve_engine_with(
    coordinator: Arc<Coordinator>,
    options: ServeOptions,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let (health_reporter, health) = dbsync_telemetry::health_service();
    // Without an election this coordinator always leads (the sender lives in the ticker).
    let (always, always_leading) = tokio::sync::watch::channel(true);
    let leading = options.leader.clone().unwrap_or(always_leading);
    let ticker = {
        let coordinator = coordinator.clone();
        let shutdown = shutdown.clone();
        let mut leading = leading.clone();
        let health_reporter = health_reporter.clone();
        let tick = options.tick;
        tokio::spawn(async move {
            let _always = always;
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // None: health not reported yet (a standby says NOT_SERVING from the start).
            let mut was_leading: Option<bool> = None;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Ok(()) = leading.changed() => {}
                    _ = interval.tick() => {}
                }
                let leads = *leading.borrow_and_update();
                if Some(leads) != was_leading {
                    if leads {
                        // A coordinator that always leads did its restart work when it was
                        // created; one that won the election starts over from the store.
                        if options.leader.is_some() {
                            coordinator.take_over();
                        }
                        health_reporter
                            .set_serving::<CoordinatorServiceServer<grpc::CoordinatorGrpc>>()
                            .await;
                        health_reporter
                            .set_serving::<WorkerServiceServer<grpc::WorkerGrpc>>()
                            .await;
                    } else {
                        health_reporter
                            .set_not_serving::<CoordinatorServiceServer<grpc::CoordinatorGrpc>>()
                            .await;
                        health_reporter
                            .set_not_serving::<WorkerServiceServer<grpc::WorkerGrpc>>()
                            .await;
                    }
                    was_leading = Some(leads);
                }
                if !leads {
                    continue;
                }
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
        })
    };
    let (reflection, reflection_v1alpha) = dbsync_telemetry::reflection_services(&[
        "dbsync.v1.CoordinatorService",
        "dbsync.v1.WorkerService",
    ])?;
    let gate = Gate {
        auth: BearerAuth(options.auth_token.map(Arc::new)),
        leading,
    };
    tracing::info!(%local, auth = gate.auth.0.is_some(), "coordinator serving");
    let result = tonic::transport::Server::builder()
        .trace_fn(dbsync_telemetry::grpc_request_span)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(CoordinatorServiceServer::with_interceptor(
            grpc::CoordinatorGrpc(coordinator.clone(), shutdown.clone()),
            gate.clone(),
        ))
        .add_service(WorkerServiceServer::with_interceptor(
            grpc::WorkerGrpc(coordinator),
            gate,
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

/// Both services' interceptor: the bearer token, then leadership (a standby refuses calls so
/// that exactly one coordinator drives tasks; clients and workers retry on UNAVAILABLE).
#[derive(Clone)]
pub struct Gate {
    auth: BearerAuth,
    leading: tokio::sync::watch::Receiver<bool>,
}

impl tonic::service::Interceptor for Gate {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let request = self.auth.call(request)?;
        if *self.leading.borrow() {
            Ok(request)
        } else {
            Err(tonic::Status::unavailable(
                "this coordinator is a standby (another coordinator on the same store leads); retry, or call the leader",
            ))
        }
    }
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
