//! Observability and lifecycle plumbing shared by every dbsync service: structured logs,
//! Prometheus metrics, gRPC health and reflection, and one shutdown token.

use std::net::SocketAddr;

pub mod pg_tls;
pub mod tls;
pub use tls::{
    client_tls, client_tls_from_env, connect, connect_lazy, connect_with, incoming_tls,
    server_tls_from_env, ClientTls, ServerTls, TlsError,
};

pub use tokio_util::sync::CancellationToken;

/// Structured logs with `tracing`. `RUST_LOG` sets the filter (default `info`);
/// `DBSYNC_LOG_FORMAT=json` switches to one JSON object per line. When
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, spans are
/// also exported as OpenTelemetry traces over OTLP/HTTP (protobuf) to `<endpoint>/v1/traces`,
/// with `service.name` = `service` unless `OTEL_SERVICE_NAME` says otherwise; the standard
/// `OTEL_BSP_*` variables tune batching. Safe to call twice (the first call wins).
pub fn init_tracing(service: &'static str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, EnvFilter, Layer};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("DBSYNC_LOG_FORMAT")
        .map(|v| v == "json")
        .unwrap_or(false);
    let logs = if json {
        fmt::layer().json().with_current_span(false).boxed()
    } else {
        fmt::layer().with_target(true).boxed()
    };
    let (traces, trace_error) = match otel::layer(service) {
        Ok(layer) => (layer, None),
        Err(e) => (None, Some(e)),
    };
    let result = tracing_subscriber::registry()
        .with(traces)
        .with(logs)
        .with(filter)
        .try_init();
    if result.is_ok() {
        tracing::info!(service, traces = otel::enabled(), "logging initialised");
        if let Some(e) = trace_error {
            tracing::warn!(error = %e, "OpenTelemetry traces are off: the OTLP exporter could not be built");
        }
    }
}

/// Sends every finished span still buffered to the OTLP endpoint (no-op without one). Call it
/// before the process exits, and in tests before looking at the receiver.
pub fn flush_traces() {
    otel::flush();
}

/// The span of one gRPC request on a server: `Server::builder().trace_fn(grpc_request_span)`.
/// Named after the method (`otel.name`), kind server, and continuing the caller's trace when
/// the request carries a W3C `traceparent` header (see [`inject_trace_context`]).
pub fn grpc_request_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let method = request.uri().path().trim_start_matches('/');
    let span =
        tracing::info_span!("grpc", otel.name = %method, otel.kind = "server", rpc.system = "grpc");
    otel::continue_trace(&span, request.headers());
    span
}

/// Client side of trace propagation: adds the current span's W3C `traceparent` to outgoing
/// gRPC metadata (use it in a client interceptor). No-op when traces are off.
pub fn inject_trace_context(metadata: &mut tonic::metadata::MetadataMap) {
    otel::inject(metadata);
}

/// The OpenTelemetry pieces: the tracer provider (kept for flushing) and W3C trace context.
mod otel {
    use std::sync::OnceLock;

    use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

    pub fn enabled() -> bool {
        PROVIDER.get().is_some()
    }

    fn endpoint_configured() -> bool {
        [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
    }

    /// The tracing layer exporting spans, or `None` when no OTLP endpoint is configured.
    pub fn layer<S>(
        service: &'static str,
    ) -> anyhow::Result<
        Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>,
    >
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        if !endpoint_configured() || PROVIDER.get().is_some() {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()?;
        let name = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| service.to_string());
        // Export every second unless OTEL_BSP_SCHEDULE_DELAY says otherwise (the SDK's 5 s
        // default loses more spans when a process stops).
        let mut batch = opentelemetry_sdk::trace::BatchConfigBuilder::default();
        if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
            batch = batch.with_scheduled_delay(std::time::Duration::from_secs(1));
        }
        let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch.build())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(name)
                    .build(),
            )
            .build();
        let tracer = provider.tracer("dbsync");
        let _ = PROVIDER.set(provider);
        Ok(Some(tracing_opentelemetry::layer().with_tracer(tracer)))
    }

    pub fn flush() {
        if let Some(provider) = PROVIDER.get() {
            if let Err(e) = provider.force_flush() {
                tracing::warn!(error = %e, "flushing OpenTelemetry traces failed");
            }
        }
    }

    struct Headers<'a>(&'a tonic::codegen::http::HeaderMap);

    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }

    struct Metadata<'a>(&'a mut tonic::metadata::MetadataMap);

    impl Injector for Metadata<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(key), Ok(value)) = (
                tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
                value.parse(),
            ) {
                self.0.insert(key, value);
            }
        }
    }

    pub fn continue_trace(span: &tracing::Span, headers: &tonic::codegen::http::HeaderMap) {
        if enabled() && headers.contains_key("traceparent") {
            let parent = TraceContextPropagator::new().extract(&Headers(headers));
            let _ = span.set_parent(parent);
        }
    }

    pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
        if enabled() {
            let context = tracing::Span::current().context();
            TraceContextPropagator::new().inject_context(&context, &mut Metadata(metadata));
        }
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
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
        // Spans finished so far leave now; the batch timer sends those of the graceful stop.
        let _ = tokio::task::spawn_blocking(flush_traces).await;
    });
    token
}

/// Reflection under both names (`grpc.reflection.v1` and the older `v1alpha` that grpcurl
/// before 1.9 asks for) advertising only what a server serves: `served` (fully qualified, e.g.
/// `dbsync.v1.CoordinatorService`), health and reflection. Add both returned services.
#[allow(clippy::type_complexity)]
pub fn reflection_services(
    served: &[&str],
) -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let builder = || {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(dbsync_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .include_reflection_service(false);
        let always = [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ];
        for name in served.iter().chain(always.iter()) {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
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
