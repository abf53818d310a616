//! Drives the coordinator with grpcurl through server reflection only (no proto files), as
//! deploy/README.md shows: list and describe services, create, start and inspect a task,
//! register and heartbeat a worker, and see calls without the token refused.
//! grpcurl is installed by scripts/install-deps.sh; without it the test says so and passes.

mod support;

use std::process::Command;

use dbsync_pgtest::PgCluster;
use support::*;

const TOKEN: &str = "grpcurl-token";

/// Runs grpcurl; returns (success, stdout + stderr).
async fn grpcurl(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("grpcurl")
            .args(&args)
            .output()
            .expect("run grpcurl");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
    .await
    .unwrap()
}

fn call(addr: &str, method: &str, body: serde_json::Value, token: bool) -> Vec<String> {
    let mut args = vec!["-plaintext".to_string()];
    if token {
        args.extend(["-H".to_string(), format!("authorization: Bearer {TOKEN}")]);
    }
    args.extend([
        "-d".to_string(),
        body.to_string(),
        addr.to_string(),
        method.to_string(),
    ]);
    args
}

#[tokio::test]
async fn grpcurl_creates_starts_and_inspects_a_task_through_reflection() {
    if Command::new("grpcurl").arg("-version").output().is_err() {
        eprintln!("grpcurl is not installed (scripts/install-deps.sh installs it): skipping the grpcurl session");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("c.db"), Some(TOKEN), Default::default()).await;
    let addr = server.url.trim_start_matches("http://").to_string();
    let capture = FakeCapture::new();
    let cap_shutdown = dbsync_telemetry::CancellationToken::new();
    let capture_url = capture.serve(cap_shutdown.clone()).await;
    let pg = tokio::task::spawn_blocking(PgCluster::shared)
        .await
        .unwrap();
    pg.create_database("grpcurl_db").await.unwrap();

    let (ok, out) = grpcurl(vec!["-plaintext".into(), addr.clone(), "list".into()]).await;
    assert!(ok, "{out}");
    for service in [
        "dbsync.v1.CoordinatorService",
        "dbsync.v1.WorkerService",
        "grpc.health.v1.Health",
    ] {
        assert!(out.contains(service), "{out}");
    }
    let (ok, out) = grpcurl(vec![
        "-plaintext".into(),
        addr.clone(),
        "describe".into(),
        "dbsync.v1.CoordinatorService".into(),
    ])
    .await;
    assert!(ok && out.contains("rpc CreateTask"), "{out}");

    let spec = spec_for("via-grpcurl", &capture_url, pg, "grpcurl_db", "");
    let (ok, out) = grpcurl(call(
        &addr,
        "dbsync.v1.CoordinatorService/CreateTask",
        serde_json::json!({ "spec": spec }),
        false,
    ))
    .await;
    assert!(
        !ok && out.contains("Unauthenticated"),
        "calls without the token are refused: {out}"
    );
    let (ok, out) = grpcurl(call(
        &addr,
        "dbsync.v1.CoordinatorService/CreateTask",
        serde_json::json!({ "spec": spec }),
        true,
    ))
    .await;
    assert!(ok, "{out}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["name"], "via-grpcurl");
    assert_eq!(created["state"], "TASK_STATE_CREATED");
    assert!(!out.contains("Tgt-Pa55word!"));

    let (ok, out) = grpcurl(call(
        &addr,
        "dbsync.v1.WorkerService/Register",
        serde_json::json!({ "kind": "apply", "address": "10.0.0.7:7302" }),
        true,
    ))
    .await;
    assert!(ok, "{out}");
    let worker: serde_json::Value = serde_json::from_str(&out).unwrap();
    let worker_id = worker["workerId"].as_str().unwrap().to_string();

    let (ok, out) = grpcurl(call(
        &addr,
        "dbsync.v1.CoordinatorService/PrecheckTask",
        serde_json::json!({ "taskId": "via-grpcurl" }),
        true,
    ))
    .await;
    assert!(
        ok && out.contains("target.connect") && out.contains("PRECHECK_STATUS_PASS"),
        "{out}"
    );
    let (ok, out) = grpcurl(call(
        &addr,
        "dbsync.v1.CoordinatorService/StartTask",
        serde_json::json!({ "taskId": "via-grpcurl" }),
        true,
    ))
    .await;
    assert!(ok && out.contains("TASK_STATE_RUNNING"), "{out}");
    let (ok, out) = grpcurl(call(
        &addr,
        "dbsync.v1.WorkerService/Heartbeat",
        serde_json::json!({ "workerId": worker_id }),
        true,
    ))
    .await;
    assert!(ok, "{out}");
    let beat: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(beat["assignments"].as_array().unwrap().len(), 3, "{out}");
    let (ok, out) = grpcurl(call(
        &addr,
        "dbsync.v1.CoordinatorService/GetTaskStatus",
        serde_json::json!({ "taskId": "via-grpcurl" }),
        true,
    ))
    .await;
    assert!(ok, "{out}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["task"]["state"], "TASK_STATE_RUNNING");
    assert_eq!(status["tables"].as_array().unwrap().len(), 4);
    assert!(status["tables"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["workerId"] == worker_id.as_str()));

    let (ok, out) = grpcurl(vec![
        "-plaintext".into(),
        "-d".into(),
        r#"{"service":"dbsync.v1.CoordinatorService"}"#.into(),
        addr.clone(),
        "grpc.health.v1.Health/Check".into(),
    ])
    .await;
    assert!(ok && out.contains("SERVING"), "health stays open: {out}");
    cap_shutdown.cancel();
    server.stop().await;
}
