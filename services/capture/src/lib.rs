//! The capture service: reads SQL Server catalogs, snapshots and CDC, and serves them over
//! gRPC (`dbsync.v1.CaptureService`).
//!
//! | module | owns |
//! |---|---|
//! | [`grpc`] | the thin gRPC handlers |
//! | [`mssql::client`] | tiberius connections and pools |
//! | [`mssql::inspect`] | every catalog and CDC query (the contract a server must satisfy) |
//! | [`mssql::decode`] | tiberius values ↔ proto values |
//! | [`mssql::cdc`] | the change-table poller (merge, transactions, fragments, resume) |
//! | [`source`] | [`dbsync_core::source::ChangeSource`] on top of the poller |
//! | [`snapshot`] | chunk planning, chunk reads, reads by key, checksums |
//! | [`precheck`] / [`setup`] | source prechecks; enabling and removing CDC |
//! | [`sql`] | pure T-SQL builders |
//! | [`throttle`] | per-task token buckets |
//! | [`registration`] | registering with the coordinator and heartbeats |

pub mod digests;
pub mod error;
pub mod grpc;
pub mod mssql;
pub mod precheck;
pub mod registration;
pub mod selection;
pub mod setup;
pub mod snapshot;
pub mod source;
pub mod sql;
pub mod throttle;

use std::net::SocketAddr;
use std::sync::Arc;

use dbsync_core::Secret;
use dbsync_proto::v1::capture_service_server::CaptureServiceServer;
pub use dbsync_telemetry::CancellationToken;
use serde::{Deserialize, Deserializer, Serialize};

pub use error::CaptureError;
pub use grpc::CaptureGrpc;

/// Configuration of one capture process (flags, environment, or a config file section).
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// Address the gRPC server listens on.
    #[arg(
        long = "listen",
        env = "DBSYNC_CAPTURE_LISTEN",
        default_value = "0.0.0.0:50061"
    )]
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Coordinator URL (e.g. http://127.0.0.1:50051). When set, the service registers with it
    /// and takes throttle settings from its heartbeats.
    #[arg(long = "coordinator", env = "DBSYNC_COORDINATOR")]
    #[serde(default)]
    pub coordinator: Option<String>,
    /// Address the coordinator and appliers use to reach this service (default: the listen
    /// address, with 127.0.0.1 for an unspecified IP).
    #[arg(long = "advertise-address", env = "DBSYNC_CAPTURE_ADVERTISE_ADDRESS")]
    #[serde(default)]
    pub advertise_address: Option<String>,
    /// Where to serve Prometheus `/metrics`; off when unset.
    #[arg(long = "metrics-listen", env = "DBSYNC_CAPTURE_METRICS_LISTEN")]
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Shared token: callers must send `authorization: Bearer <token>`, and the service sends
    /// it to the coordinator.
    #[arg(long = "auth-token", env = "DBSYNC_AUTH_TOKEN", value_parser = parse_secret, hide_env_values = true)]
    #[serde(default, skip_serializing, deserialize_with = "deserialize_secret")]
    pub auth_token: Option<Secret>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 50061))
}

fn parse_secret(s: &str) -> Result<Secret, String> {
    Ok(Secret::new(s))
}

fn deserialize_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<String>::deserialize(d)?
        .filter(|s| !s.is_empty())
        .map(Secret::new))
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            listen: default_listen(),
            coordinator: None,
            advertise_address: None,
            metrics_listen: None,
            auth_token: None,
        }
    }
}

/// The shared state behind every handler: connection pools and task throttles.
#[derive(Default)]
pub struct CaptureState {
    pub pools: mssql::client::Pools,
    pub throttles: throttle::Throttles,
}

/// The gRPC service for in-process use (e.g. tests, `dbsync up` with its own server).
pub fn capture_service() -> CaptureServiceServer<CaptureGrpc> {
    capture_service_with_state(Arc::new(CaptureState::default()))
}

/// The gRPC service over a given state (so a registration loop can update its throttles).
pub fn capture_service_with_state(state: Arc<CaptureState>) -> CaptureServiceServer<CaptureGrpc> {
    CaptureServiceServer::new(CaptureGrpc::new(state))
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(256 * 1024 * 1024)
}

/// Checks `authorization: Bearer <token>` when a token is configured.
fn check_token(
    token: Option<Secret>,
) -> impl Fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |req: tonic::Request<()>| {
        let Some(expected) = &token else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if given.strip_prefix("Bearer ").map(str::trim) == Some(expected.expose()) {
            Ok(req)
        } else {
            Err(tonic::Status::unauthenticated(
                "Missing or wrong authorization token: send 'authorization: Bearer <token>'",
            ))
        }
    }
}

/// Serves CaptureService, gRPC health and reflection on `listener` until `shutdown` is
/// cancelled; registers with the coordinator when one is configured.
pub async fn serve(
    config: CaptureConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(addr) = config.metrics_listen {
        dbsync_telemetry::install_metrics(addr)?;
    }
    let local = listener.local_addr()?;
    let state = Arc::new(CaptureState::default());
    let (health_reporter, health) = dbsync_telemetry::health_service();
    health_reporter
        .set_serving::<CaptureServiceServer<CaptureGrpc>>()
        .await;
    let (reflection, reflection_v1alpha) =
        dbsync_telemetry::reflection_services(&["dbsync.v1.CaptureService"])?;

    if let Some(coordinator) = config.coordinator.clone() {
        let advertise = config
            .advertise_address
            .clone()
            .unwrap_or_else(|| registration::default_advertise(local));
        tokio::spawn(registration::run(
            coordinator,
            advertise,
            config.auth_token.clone(),
            Arc::clone(&state),
            shutdown.clone(),
        ));
    }

    let service = tonic::service::interceptor::InterceptedService::new(
        capture_service_with_state(Arc::clone(&state)),
        check_token(config.auth_token.clone()),
    );
    tracing::info!(addr = %local, "capture service listening");
    tonic::transport::Server::builder()
        .trace_fn(dbsync_telemetry::grpc_request_span)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(service)
        .serve_with_incoming_shutdown(
            dbsync_telemetry::incoming_tls(listener, dbsync_telemetry::server_tls_from_env()?),
            shutdown.cancelled_owned(),
        )
        .await?;
    tracing::info!("capture service stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_deserializes_and_never_prints_the_token() {
        let c: CaptureConfig = from_json(r#"{"listen":"127.0.0.1:7000","auth_token":"tok3n"}"#);
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(
            c.auth_token.as_ref().map(|t| t.expose().to_string()),
            Some("tok3n".into())
        );
        assert!(!format!("{c:?}").contains("tok3n"));
        let check = check_token(c.auth_token.clone());
        assert!(check(tonic::Request::new(())).is_err());
        let mut ok = tonic::Request::new(());
        ok.metadata_mut()
            .insert("authorization", "Bearer tok3n".parse().unwrap());
        assert!(check(ok).is_ok());
    }

    fn from_json(json: &str) -> CaptureConfig {
        serde_json::from_str(json).unwrap()
    }
}
