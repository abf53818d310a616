//! The CLI against a real coordinator on 127.0.0.1:0, and `dbsync up` with the real capture and
//! apply services registering with its coordinator.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use dbsync_cli::{run, Cli};
use dbsync_proto::v1 as pb;
use dbsync_telemetry::CancellationToken;

async fn coordinator(dir: &std::path::Path, token: Option<&str>) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = dbsync_coordinator::CoordinatorConfig {
        store: dir.join("c.db").display().to_string(),
        auth_token: token.map(dbsync_core::Secret::new),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(dbsync_coordinator::serve(
        config,
        listener,
        shutdown.clone(),
    ));
    (url, shutdown)
}

async fn dbsync(args: &[&str]) -> anyhow::Result<ExitCode> {
    let mut argv = vec!["dbsync"];
    argv.extend_from_slice(args);
    run(Cli::try_parse_from(argv)?).await
}

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/task.example.yaml"
);

#[tokio::test]
async fn task_commands_drive_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let (url, shutdown) = coordinator(dir.path(), Some("cli-token")).await;
    let with = |rest: &[&'static str]| {
        let mut v: Vec<&str> = vec![
            "--coordinator",
            Box::leak(url.clone().into_boxed_str()),
            "--token",
            "cli-token",
        ];
        v.extend_from_slice(rest);
        v
    };
    assert_eq!(
        dbsync(&with(&["task", "create", "-f", EXAMPLE]))
            .await
            .unwrap(),
        ExitCode::SUCCESS
    );
    assert_eq!(
        dbsync(&with(&["task", "list"])).await.unwrap(),
        ExitCode::SUCCESS
    );
    assert_eq!(
        dbsync(&with(&["task", "get", "sales-to-pg"]))
            .await
            .unwrap(),
        ExitCode::SUCCESS
    );
    // No capture service is reachable: the precheck reports a failure and exits 1.
    assert_eq!(
        dbsync(&with(&["task", "precheck", "sales-to-pg"]))
            .await
            .unwrap(),
        ExitCode::from(1)
    );
    let err = dbsync(&with(&["task", "start", "sales-to-pg"]))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Precheck of task 'sales-to-pg' failed"),
        "{err}"
    );
    assert_eq!(
        dbsync(&with(&["task", "status", "sales-to-pg"]))
            .await
            .unwrap(),
        ExitCode::SUCCESS
    );
    // --watch follows the status stream and returns once the task is not running.
    let watch_args = with(&["task", "status", "sales-to-pg", "--watch"]);
    let watched = tokio::time::timeout(Duration::from_secs(10), dbsync(&watch_args));
    assert_eq!(
        watched
            .await
            .expect("watch ends for a task that is not running")
            .unwrap(),
        ExitCode::SUCCESS
    );
    assert_eq!(
        dbsync(&with(&["workers"])).await.unwrap(),
        ExitCode::SUCCESS
    );
    assert_eq!(
        dbsync(&with(&[
            "task",
            "modify",
            "sales-to-pg",
            "--full-rows-per-second",
            "1234",
            "--lag-alert-seconds",
            "90"
        ]))
        .await
        .unwrap(),
        ExitCode::SUCCESS
    );
    let mut client = dbsync_cli::connect(&url, Some("cli-token")).await.unwrap();
    let info = client
        .get_task(pb::TaskRef {
            task_id: "sales-to-pg".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        info.spec_redacted.contains("rows_per_second: 1234"),
        "{}",
        info.spec_redacted
    );
    assert!(
        info.spec_redacted.contains("queries_per_second: 50"),
        "unset throttle flags keep their value"
    );
    assert!(info.spec_redacted.contains("lag_seconds: 90"));
    assert_eq!(
        dbsync(&with(&["task", "delete", "sales-to-pg"]))
            .await
            .unwrap(),
        ExitCode::SUCCESS
    );
    assert!(dbsync(&with(&["task", "get", "sales-to-pg"]))
        .await
        .unwrap_err()
        .to_string()
        .contains("NotFound"));

    // Without the token the coordinator refuses.
    let err = dbsync(&["--coordinator", &url, "task", "list"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Unauthenticated"), "{err}");
    shutdown.cancel();
}

#[tokio::test]
async fn up_runs_coordinator_capture_and_appliers_that_register() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("up.db").display().to_string();
    let args = dbsync_cli::up::UpArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        capture_listen: "127.0.0.1:0".parse().unwrap(),
        appliers: 2,
        store,
        metrics_listen: None,
        lease_seconds: 15,
    };
    let shutdown = CancellationToken::new();
    let services = dbsync_cli::up::start(
        args,
        Some(dbsync_core::Secret::new("up-token")),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let mut client = dbsync_cli::connect(&services.coordinator_url, Some("up-token"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let workers = client
            .list_workers(pb::ListWorkersRequest {})
            .await
            .unwrap()
            .into_inner()
            .workers;
        let captures = workers
            .iter()
            .filter(|w| w.kind == "capture" && w.alive)
            .count();
        let appliers = workers
            .iter()
            .filter(|w| w.kind == "apply" && w.alive)
            .count();
        if captures == 1 && appliers == 2 {
            assert!(workers.iter().any(|w| w.address == services.capture_url));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "workers did not register: {workers:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), services.wait(shutdown))
        .await
        .expect("all services stop")
        .unwrap();
}
