//! TLS for gRPC between services and from clients, with certificates made in the test (rcgen):
//! a CA, a server certificate for localhost / 127.0.0.1 and a client certificate, so every
//! connection is mutual TLS. The servers take `DBSYNC_TLS_CERT`/`DBSYNC_TLS_KEY`/
//! `DBSYNC_TLS_CLIENT_CA`, the clients `DBSYNC_TLS_CA`/`DBSYNC_TLS_CLIENT_CERT`/
//! `DBSYNC_TLS_CLIENT_KEY`, exactly as deployed. One test per process: the environment is global.
//!
//! Shown working: the coordinator serving TLS to the CLI's client and calling capture over TLS;
//! capture and apply registering with it over TLS (their coordinator clients) and serving health
//! over TLS themselves. Shown refused: a plaintext client, a client trusting another CA, a
//! client without a certificate.

use std::time::{Duration, Instant};

use dbsync_ops_tests::{require_tool, run_tool, Coordinator};
use dbsync_proto::v1 as pb;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tonic::transport::Endpoint;

const TOKEN: &str = "tls-test-token";

struct Pair {
    cert: String,
    key: String,
}

fn ca(name: &str) -> (Pair, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let pair = Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    };
    (pair, Issuer::new(params, key))
}

fn leaf(names: &[&str], issuer: &Issuer<'static, KeyPair>) -> Pair {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn health(channel: tonic::transport::Channel) -> Result<i32, tonic::Status> {
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    Ok(client
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner()
        .status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_clients_speak_mutual_tls() {
    let (ca_pair, issuer) = ca("dbsync test CA");
    let server = leaf(&["localhost", "127.0.0.1"], &issuer);
    let client = leaf(&["dbsync-client"], &issuer);
    let (rogue_ca, _) = ca("someone else's CA");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    // Before the runtime's other threads read the environment.
    for (var, name, text) in [
        ("DBSYNC_TLS_CERT", "server.pem", &server.cert),
        ("DBSYNC_TLS_KEY", "server.key", &server.key),
        ("DBSYNC_TLS_CLIENT_CA", "ca.pem", &ca_pair.cert),
        ("DBSYNC_TLS_CA", "ca.pem", &ca_pair.cert),
        ("DBSYNC_TLS_CLIENT_CERT", "client.pem", &client.cert),
        ("DBSYNC_TLS_CLIENT_KEY", "client.key", &client.key),
    ] {
        std::env::set_var(var, write(name, text));
    }

    let coordinator = Coordinator::start(Some(TOKEN)).await;
    let port = coordinator.addr.rsplit(':').next().unwrap().to_string();
    let https = format!("https://localhost:{port}");

    // A client that connects and never starts its handshake does not hold up the others.
    let _stalled = tokio::net::TcpStream::connect(&coordinator.addr)
        .await
        .unwrap();

    // The CLI's client, over TLS with the token.
    let started = Instant::now();
    let mut cli = dbsync_cli::connect(&https, Some(TOKEN))
        .await
        .expect("the CLI connects over TLS");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a stalled handshake held up the accept loop"
    );
    let tasks = cli
        .list_tasks(pb::ListTasksRequest {})
        .await
        .expect("ListTasks over TLS")
        .into_inner();
    assert!(tasks.tasks.is_empty());
    // grpcurl, an independent client, with the same files.
    require_tool("grpcurl", "-version");
    let file = |name: &str| dir.path().join(name).display().to_string();
    let (ok, out) = run_tool(
        "grpcurl",
        vec![
            "-cacert".into(),
            file("ca.pem"),
            "-cert".into(),
            file("client.pem"),
            "-key".into(),
            file("client.key"),
            "-H".into(),
            format!("authorization: Bearer {TOKEN}"),
            "-d".into(),
            "{}".into(),
            format!("localhost:{port}"),
            "dbsync.v1.CoordinatorService/ListTasks".into(),
        ],
    )
    .await;
    assert!(
        ok && serde_json::from_str::<serde_json::Value>(&out).ok() == Some(serde_json::json!({})),
        "grpcurl over mutual TLS: {out}"
    );
    let (ok, out) = run_tool(
        "grpcurl",
        vec![
            "-plaintext".into(),
            "-connect-timeout".into(),
            "2".into(),
            format!("localhost:{port}"),
            "list".into(),
        ],
    )
    .await;
    assert!(
        !ok,
        "grpcurl -plaintext against the TLS port must fail: {out}"
    );
    // By IP address too (the certificate names 127.0.0.1).
    let by_ip = dbsync_telemetry::connect(
        Endpoint::from_shared(format!("https://127.0.0.1:{port}")).unwrap(),
    )
    .await
    .expect("connect by IP");
    assert_eq!(
        health(by_ip).await.expect("health by IP"),
        tonic_health::ServingStatus::Serving as i32
    );

    // Refused: plaintext, a client trusting another CA, a client without a certificate.
    let plain = Endpoint::from_shared(format!("http://{}", coordinator.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5));
    let plain_result = match plain.connect().await {
        Ok(channel) => health(channel).await.map(|_| ()),
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    assert!(
        plain_result.is_err(),
        "a plaintext client must not get an answer from a TLS server"
    );
    let rogue = dbsync_telemetry::client_tls(
        rogue_ca.cert.as_bytes(),
        Some((client.cert.as_bytes(), client.key.as_bytes())),
    )
    .unwrap();
    let err = dbsync_telemetry::connect_with(Endpoint::from_shared(https.clone()).unwrap(), &rogue)
        .await
        .expect_err("a server certificate from an unknown CA is refused");
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
    let anonymous = dbsync_telemetry::client_tls(ca_pair.cert.as_bytes(), None).unwrap();
    let anonymous_result = match dbsync_telemetry::connect_with(
        Endpoint::from_shared(https.clone()).unwrap(),
        &anonymous,
    )
    .await
    {
        Ok(channel) => health(channel).await.map(|_| ()),
        Err(e) => Err(tonic::Status::unavailable(format!("{e:?}"))),
    };
    assert!(
        anonymous_result.is_err(),
        "a client without a certificate is refused when DBSYNC_TLS_CLIENT_CA is set"
    );

    // Capture and apply serve TLS and register with the coordinator over TLS.
    let shutdown = dbsync_telemetry::CancellationToken::new();
    let capture_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let capture_port = capture_listener.local_addr().unwrap().port();
    let capture_config = dbsync_capture::CaptureConfig {
        coordinator: Some(https.clone()),
        advertise_address: Some(format!("https://localhost:{capture_port}")),
        auth_token: Some(dbsync_core::Secret::new(TOKEN)),
        ..Default::default()
    };
    let capture = tokio::spawn(dbsync_capture::serve(
        capture_config,
        capture_listener,
        shutdown.clone(),
    ));
    let apply_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let apply_port = apply_listener.local_addr().unwrap().port();
    let apply_config = dbsync_apply::ApplyConfig {
        coordinator: https.clone(),
        advertise_address: Some(format!("localhost:{apply_port}")),
        auth_token: Some(dbsync_core::Secret::new(TOKEN)),
        heartbeat_interval: Duration::from_millis(200),
        ..Default::default()
    };
    let apply = tokio::spawn(dbsync_apply::serve(
        apply_config,
        apply_listener,
        shutdown.clone(),
    ));
    let workers = until("capture and apply to register over TLS", || {
        let mut cli = cli.clone();
        async move {
            let workers = cli
                .list_workers(pb::ListWorkersRequest {})
                .await
                .ok()?
                .into_inner()
                .workers;
            let kinds: Vec<&str> = workers
                .iter()
                .filter(|w| w.alive)
                .map(|w| w.kind.as_str())
                .collect();
            (kinds.contains(&"capture") && kinds.contains(&"apply")).then_some(workers)
        }
    })
    .await;
    assert_eq!(workers.len(), 2, "{workers:?}");
    for (what, port) in [("capture", capture_port), ("apply", apply_port)] {
        let channel = dbsync_telemetry::connect(
            Endpoint::from_shared(format!("https://localhost:{port}")).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("{what} over TLS: {e:?}"));
        assert_eq!(
            health(channel).await.unwrap(),
            tonic_health::ServingStatus::Serving as i32,
            "{what}"
        );
        let plain = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5));
        let plain_result = match plain.connect().await {
            Ok(channel) => health(channel).await.map(|_| ()),
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        };
        assert!(plain_result.is_err(), "{what} refuses plaintext");
    }

    // The coordinator calls capture over TLS (an https:// capture address). The source and
    // target are addresses nothing listens on: capture answers with the source's connection
    // error, which shows that the call went through.
    let spec = format!(
        "{{name: over-tls, source: {{host: 127.0.0.1, port: 1, user: sa, password: Src-Pa55word!}}, \
         target: {{host: 127.0.0.1, port: 1, user: u, password: p, database: d}}, \
         capture_address: 'https://localhost:{capture_port}', objects: {{databases: [shop]}}}}"
    );
    cli.create_task(pb::CreateTaskRequest { spec })
        .await
        .expect("create");
    let report = cli
        .precheck_task(pb::PrecheckTaskRequest {
            task_id: "over-tls".into(),
            ..Default::default()
        })
        .await
        .expect("precheck")
        .into_inner();
    let item = |id: &str| {
        report
            .items
            .iter()
            .find(|i| i.id == id)
            .unwrap_or_else(|| panic!("no {id} item: {report:#?}"))
    };
    assert_eq!(
        item("capture.available").status,
        pb::PrecheckStatus::Pass as i32,
        "{report:#?}"
    );
    let schema = item("source.schema");
    assert!(
        !schema.detail.contains("transport error")
            && schema
                .detail
                .contains("Cannot connect to SQL Server at 127.0.0.1:1"),
        "capture's own answer: {report:#?}"
    );

    shutdown.cancel();
    capture.await.unwrap().unwrap();
    apply.await.unwrap().unwrap();
    coordinator.stop().await;
}

#[test]
fn tls_configuration_errors_name_the_setting_and_the_fix() {
    let err = dbsync_telemetry::ServerTls::from_pem(b"not pem", b"not pem", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("certificate") && err.contains("PEM"), "{err}");
    let (ca_pair, issuer) = ca("ca");
    let server = leaf(&["localhost"], &issuer);
    let other = leaf(&["localhost"], &issuer);
    let err =
        dbsync_telemetry::ServerTls::from_pem(server.cert.as_bytes(), other.key.as_bytes(), None)
            .unwrap_err()
            .to_string();
    assert!(err.contains("do not fit"), "{err}");
    assert!(dbsync_telemetry::ServerTls::from_pem(
        server.cert.as_bytes(),
        server.key.as_bytes(),
        Some(ca_pair.cert.as_bytes())
    )
    .is_ok());
    let err = dbsync_telemetry::client_tls(b"", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("DBSYNC_TLS_CA"), "{err}");
}
