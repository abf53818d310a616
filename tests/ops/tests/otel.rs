//! OpenTelemetry traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, `init_tracing` exports spans
//! over OTLP/HTTP. A tiny OTLP receiver (HTTP on 127.0.0.1 accepting POST /v1/traces) gets the
//! span of a coordinator call, named after the method, continuing the caller's `traceparent`,
//! with the service name as resource attribute.
//! One test per process: the tracing subscriber is global.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dbsync_ops_tests::Coordinator;
use dbsync_proto::v1 as pb;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tracing::Instrument;

/// Bodies of the POST /v1/traces requests received, decoded.
type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// Serves HTTP/1.1 on 127.0.0.1:0 (keep-alive), answering 200 to POST /v1/traces and 404 to
/// anything else; returns the endpoint URL.
async fn otlp_receiver(received: Received) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let received = received.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut request_line = String::new();
                    if stream.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0usize;
                    loop {
                        let mut header = String::new();
                        stream.read_line(&mut header).await.unwrap();
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap();
                            }
                        }
                    }
                    let mut body = vec![0u8; length];
                    stream.read_exact(&mut body).await.unwrap();
                    let status = if request_line.starts_with("POST /v1/traces ") {
                        received.lock().unwrap().push(
                            ExportTraceServiceRequest::decode(body.as_slice())
                                .expect("OTLP protobuf body"),
                        );
                        "200 OK"
                    } else {
                        "404 Not Found"
                    };
                    let response = format!("HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n");
                    stream
                        .get_mut()
                        .write_all(response.as_bytes())
                        .await
                        .unwrap();
                }
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_a_service_call_reach_the_otlp_endpoint() {
    let received = Received::default();
    let endpoint = otlp_receiver(received.clone()).await;
    // Set before any other thread reads the environment (the runtime's workers do not).
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    dbsync_telemetry::init_tracing("dbsync-ops-test");

    let coordinator = Coordinator::start(None).await;
    let mut client = pb::coordinator_service_client::CoordinatorServiceClient::connect(format!(
        "http://{}",
        coordinator.addr
    ))
    .await
    .unwrap();
    // The caller's trace: the server span must continue it.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_span = "00f067aa0ba902b7";
    let mut request = tonic::Request::new(pb::ListTasksRequest {});
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_span}-01").parse().unwrap(),
    );
    client.list_tasks(request).await.unwrap();

    // A client span's context goes out as traceparent.
    let mut outgoing = tonic::metadata::MetadataMap::new();
    let client_span = tracing::info_span!("client_call");
    client_span.in_scope(|| dbsync_telemetry::inject_trace_context(&mut outgoing));
    let injected = outgoing
        .get("traceparent")
        .expect("traceparent injected")
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        injected.starts_with("00-") && injected.len() == 55,
        "{injected}"
    );
    drop(client_span);

    tokio::task::spawn_blocking(dbsync_telemetry::flush_traces)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (span, service_name) = loop {
        let found = received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .find_map(|rs| {
                let service = rs
                    .resource
                    .as_ref()?
                    .attributes
                    .iter()
                    .find(|a| a.key == "service.name")?
                    .value
                    .clone()?;
                let span = rs
                    .scope_spans
                    .iter()
                    .flat_map(|s| &s.spans)
                    .find(|s| s.name == "dbsync.v1.CoordinatorService/ListTasks")?
                    .clone();
                Some((span, service))
            });
        if let Some(found) = found {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no ListTasks span reached the OTLP receiver; got {} export requests",
            received.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        hex(&span.trace_id),
        trace_id,
        "the server span continues the caller's trace"
    );
    assert_eq!(hex(&span.parent_span_id), parent_span);
    assert_eq!(
        span.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
    );
    assert!(span.end_time_unix_nano > span.start_time_unix_nano);
    assert_eq!(
        service_name.value,
        Some(
            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                "dbsync-ops-test".into()
            )
        )
    );
    // The injected client context names the client span's trace, which was exported too.
    let client_trace = injected.split('-').nth(1).unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::task::spawn_blocking(dbsync_telemetry::flush_traces)
            .await
            .unwrap();
        let exported = received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|s| &s.spans)
            .any(|s| s.name == "client_call" && hex(&s.trace_id) == client_trace);
        if exported {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client span was not exported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The CLI's client carries its caller's trace to the coordinator (its interceptor injects
    // traceparent): the server span is a child of the span the call ran in.
    let mut cli = dbsync_cli::connect(&format!("http://{}", coordinator.addr), None)
        .await
        .unwrap();
    let cli_span = tracing::info_span!("cli_call");
    let mut probe = tonic::metadata::MetadataMap::new();
    cli_span.in_scope(|| dbsync_telemetry::inject_trace_context(&mut probe));
    let probe = probe
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let (cli_trace, cli_span_id) = (probe[3..35].to_string(), probe[36..52].to_string());
    cli.list_tasks(pb::ListTasksRequest {})
        .instrument(cli_span)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::task::spawn_blocking(dbsync_telemetry::flush_traces)
            .await
            .unwrap();
        let continued = received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|s| &s.spans)
            .any(|s| {
                s.name == "dbsync.v1.CoordinatorService/ListTasks"
                    && hex(&s.trace_id) == cli_trace
                    && hex(&s.parent_span_id) == cli_span_id
            });
        if continued {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no server span continues the CLI call's trace {cli_trace}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    coordinator.stop().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
