//! The apply service: writes schemas, snapshot chunks and changes into PostgreSQL.
//!
//! A worker: it registers with the coordinator, heartbeats, and runs each assignment (a
//! task's table group) itself — schema ([`schema`]), full sync ([`full`], binary COPY with
//! chunk checkpoints), incremental sync ([`stream`], transactions in commit order with the
//! stream position in the same PostgreSQL transaction). The data-path pieces are public so
//! tests can drive them without a coordinator: [`run_assignment`], [`pg::copy::ChunkWriter`],
//! [`pg::changes::ChangeApplier`].

pub mod assignment;
pub mod capture;
pub mod cli;
pub mod error;
pub mod etl;
pub mod full;
pub mod pg;
pub mod plan;
pub mod progress;
pub mod schema;
pub mod stream;
pub mod worker;

use std::net::SocketAddr;
use std::time::Duration;

use dbsync_core::Secret;
use tokio_util::sync::CancellationToken;

pub use assignment::{run_assignment, AssignmentOutcome, RunOptions};
pub use error::ApplyError;
pub use progress::{ProgressBoard, ProgressSink};

/// Settings of one apply instance.
#[derive(Clone, Debug)]
pub struct ApplyConfig {
    /// Coordinator URL, e.g. `http://127.0.0.1:7300`.
    pub coordinator: String,
    /// Stable id across restarts; the coordinator assigns one when absent.
    pub worker_id: Option<String>,
    /// Address others reach this instance at; default: the listener's address.
    pub advertise_address: Option<String>,
    /// Prometheus `/metrics` listen address.
    pub metrics_listen: Option<SocketAddr>,
    /// Bearer token sent to the coordinator and capture.
    pub auth_token: Option<Secret>,
    /// Upper bound on snapshot chunks loaded at once.
    pub max_parallel_chunks: usize,
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
}

impl Default for ApplyConfig {
    fn default() -> Self {
        ApplyConfig {
            coordinator: "http://127.0.0.1:7300".into(),
            worker_id: None,
            advertise_address: None,
            metrics_listen: None,
            auth_token: None,
            max_parallel_chunks: 4,
            heartbeat_interval: Duration::from_secs(2),
        }
    }
}

/// Serves gRPC health and reflection on `listener` and runs the worker loop until
/// `shutdown` is cancelled.
pub async fn serve(
    config: ApplyConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(addr) = config.metrics_listen {
        dbsync_telemetry::install_metrics(addr)?;
    }
    let local = listener.local_addr()?;
    let address = config
        .advertise_address
        .clone()
        .unwrap_or_else(|| local.to_string());
    let (health_reporter, health) = dbsync_telemetry::health_service();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let (reflection, reflection_v1alpha) = dbsync_telemetry::reflection_services(&[])?;
    let server = tonic::transport::Server::builder()
        .trace_fn(dbsync_telemetry::grpc_request_span)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(
            dbsync_telemetry::incoming_tls(listener, dbsync_telemetry::server_tls_from_env()?),
            shutdown.clone().cancelled_owned(),
        );
    tracing::info!(%local, coordinator = %config.coordinator, "apply service listening");
    let worker = worker::run_worker(config, address, shutdown.clone());
    let (served, ()) = tokio::join!(server, worker);
    served?;
    Ok(())
}
