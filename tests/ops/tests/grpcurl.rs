//! Drives a coordinator (started by `dbsync_coordinator::serve`, the binary's entry point) with
//! the grpcurl binary only, through server reflection: no proto files, no Rust client.
//!
//! The session this test runs is the one `tests/ops/GRPCURL.md` shows: the test records every
//! command and its output (volatile values — address, task id, timestamps — replaced by fixed
//! sample values) and fails when the document differs, so the document is always exact.
//! After an intended API change, rewrite it with
//! `DBSYNC_BLESS=1 cargo test -p dbsync-ops-tests --test grpcurl`.
//!
//! The coordinator's own test (services/coordinator/tests/grpcurl.rs) covers precheck, start and
//! worker calls against a PostgreSQL target; this session covers the read side (GetTask,
//! ListTasks, GetTaskStatus), validation errors and token rejection, which need no reachable
//! source or target, so the task points at addresses nothing listens on.

use dbsync_ops_tests::{repo_path, require_tool, run_tool, Coordinator};

const TOKEN: &str = "s3cret-grpcurl-token";
const SHOWN_ADDR: &str = "localhost:50051";
const SHOWN_TASK_ID: &str = "9f2c41d07a3e";
const SPEC: &str =
    "{name: shop-to-pg, source: {host: mssql.internal, user: dbsync, password: Src-Pa55word!}, \
target: {host: pg.internal, user: dbsync, password: Tgt-Pa55word!, database: shop}, \
capture_address: http://capture.internal:50061, objects: {databases: [shop]}}";
const BAD_SPEC: &str =
    "{name: bad-retry, source: {host: mssql.internal, user: dbsync, password: x}, \
target: {host: pg.internal, user: dbsync, password: y, database: shop}, \
capture_address: http://capture.internal:50061, objects: {databases: [shop]}, \
retry: {connection_minutes: 5, other_minutes: 30}}";

/// One grpcurl call: the shell command users type, and what grpcurl printed.
struct Step {
    comment: &'static str,
    shell: String,
    output: String,
}

struct Session {
    addr: String,
    steps: Vec<Step>,
}

impl Session {
    /// Runs grpcurl with `args` (the address is inserted before the last `method` argument)
    /// and records the step; `token` adds the bearer header.
    async fn call(
        &mut self,
        comment: &'static str,
        token: bool,
        data: Option<&str>,
        tail: &[&str],
    ) -> (bool, String) {
        let mut args = vec!["-plaintext".to_string()];
        let mut shell = vec!["grpcurl".to_string(), "-plaintext".to_string()];
        if token {
            args.extend(["-H".into(), format!("authorization: Bearer {TOKEN}")]);
            shell.extend([
                "-H".into(),
                "\"authorization: Bearer $DBSYNC_TOKEN\"".into(),
            ]);
        }
        if let Some(data) = data {
            args.extend(["-d".into(), data.to_string()]);
            shell.extend(["-d".into(), format!("'{data}'")]);
        }
        args.push(self.addr.clone());
        shell.push(SHOWN_ADDR.into());
        for t in tail {
            args.push(t.to_string());
            shell.push(t.to_string());
        }
        let (ok, output) = run_tool("grpcurl", args).await;
        self.steps.push(Step {
            comment,
            shell: shell.join(" "),
            output: output.clone(),
        });
        (ok, output)
    }

    /// The Markdown document: every step, volatile values replaced by `replacements`.
    fn document(&self, grpcurl_version: &str, replacements: &[(String, String)]) -> String {
        let mut doc = format!(
            "# A grpcurl session with the coordinator\n\n{VERSION_LINE}{grpcurl_version}.\n\n"
        );
        doc.push_str(
            "Recorded by `tests/ops/tests/grpcurl.rs`, which runs exactly these commands against a\n\
             coordinator (`dbsync-coordinator --auth-token …`) and fails when this file differs from\n\
             what that grpcurl prints (addresses, ids and timestamps are shown as fixed sample values).\n\
             The coordinator serves gRPC reflection, so grpcurl needs no proto files. Health and\n\
             reflection are open; CoordinatorService and WorkerService need the bearer token when\n\
             one is configured. `deploy/README.md` continues with precheck, start, watch and throttle.\n\n\
             ```sh\nexport DBSYNC_TOKEN=…   # the coordinator's --auth-token / DBSYNC_AUTH_TOKEN\n```\n",
        );
        for step in &self.steps {
            let mut output = step.output.clone();
            for (from, to) in replacements {
                output = output.replace(from, to);
            }
            doc.push_str(&format!(
                "\n{}\n\n```sh\n$ {}\n{}",
                step.comment, step.shell, output
            ));
            if !output.ends_with('\n') {
                doc.push('\n');
            }
            doc.push_str("```\n");
        }
        doc
    }
}

const VERSION_LINE: &str = "Recorded with ";

/// `grpcurl v1.8.6`, as `grpcurl -version` prints it.
async fn grpcurl_version() -> String {
    let (_, out) = run_tool("grpcurl", vec!["-version".into()]).await;
    out.trim().to_string()
}

fn json(output: &str) -> serde_json::Value {
    serde_json::from_str(output)
        .unwrap_or_else(|e| panic!("grpcurl printed no JSON ({e}): {output}"))
}

#[tokio::test]
async fn grpcurl_session_through_reflection_matches_grpcurl_md() {
    require_tool("grpcurl", "-version");
    let coordinator = Coordinator::start(Some(TOKEN)).await;
    let mut s = Session {
        addr: coordinator.addr.clone(),
        steps: Vec::new(),
    };

    let (ok, out) = s
        .call("The services it serves:", false, None, &["list"])
        .await;
    assert!(ok, "{out}");
    for service in [
        "dbsync.v1.CoordinatorService",
        "dbsync.v1.WorkerService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            out.lines().any(|l| l == service),
            "list shows {service}: {out}"
        );
    }
    let (ok, out) = s
        .call(
            "The calls of the control-plane API:",
            false,
            None,
            &["list", "dbsync.v1.CoordinatorService"],
        )
        .await;
    assert!(ok, "{out}");
    for rpc in [
        "CreateTask",
        "GetTask",
        "ListTasks",
        "GetTaskStatus",
        "StartTask",
        "WatchTaskStatus",
        "ModifyTask",
    ] {
        assert!(
            out.contains(&format!("dbsync.v1.CoordinatorService.{rpc}")),
            "{rpc} listed: {out}"
        );
    }
    let (ok, out) = s.call("What a call takes (the task definition is YAML or JSON text, as in `deploy/task.example.yaml`):", false, None, &["describe", "dbsync.v1.CreateTaskRequest"]).await;
    assert!(
        ok && out.contains("message CreateTaskRequest") && out.contains("string spec = 1;"),
        "{out}"
    );
    let (ok, out) = s
        .call(
            "",
            false,
            None,
            &["describe", "dbsync.v1.CoordinatorService.GetTaskStatus"],
        )
        .await;
    assert!(
        ok && out.contains(
            "rpc GetTaskStatus ( .dbsync.v1.TaskRef ) returns ( .dbsync.v1.TaskStatus );"
        ),
        "{out}"
    );
    s.steps.last_mut().unwrap().comment = "A call's request and response types:";

    let create = serde_json::json!({ "spec": SPEC }).to_string();
    let (ok, out) = s
        .call(
            "Without the token the API refuses the call:",
            false,
            Some(&create),
            &["dbsync.v1.CoordinatorService/CreateTask"],
        )
        .await;
    assert!(
        !ok && out.contains("Code: Unauthenticated") && out.contains("bearer token"),
        "calls without the token are refused: {out}"
    );

    let (ok, out) = s
        .call(
            "With it, the task is created (passwords come back as `***`):",
            true,
            Some(&create),
            &["dbsync.v1.CoordinatorService/CreateTask"],
        )
        .await;
    assert!(ok, "{out}");
    let created = json(&out);
    assert_eq!(created["name"], "shop-to-pg");
    assert_eq!(created["state"], "TASK_STATE_CREATED");
    assert!(
        created["specRedacted"].as_str().unwrap().contains("***"),
        "{out}"
    );
    let task_id = created["taskId"].as_str().expect("taskId").to_string();
    assert_eq!(task_id.len(), 12, "{out}");

    let bad = serde_json::json!({ "spec": BAD_SPEC }).to_string();
    let (ok, out) = s.call("Out-of-range or contradictory values are refused, naming the field and the allowed range:", true, Some(&bad), &["dbsync.v1.CoordinatorService/CreateTask"]).await;
    assert!(
        !ok && out.contains("Code: InvalidArgument") && out.contains("retry.connection_minutes"),
        "{out}"
    );

    let (ok, out) = s
        .call(
            "A task by name (or id):",
            true,
            Some(r#"{"taskId": "shop-to-pg"}"#),
            &["dbsync.v1.CoordinatorService/GetTask"],
        )
        .await;
    assert!(ok, "{out}");
    let got = json(&out);
    assert_eq!(got["taskId"], task_id.as_str());
    assert_eq!(got["specRedacted"], created["specRedacted"]);
    let by_id = format!(r#"{{"taskId": "{task_id}"}}"#);
    let (ok, out2) = run_tool(
        "grpcurl",
        vec![
            "-plaintext".into(),
            "-H".into(),
            format!("authorization: Bearer {TOKEN}"),
            "-d".into(),
            by_id,
            s.addr.clone(),
            "dbsync.v1.CoordinatorService/GetTask".into(),
        ],
    )
    .await;
    assert!(
        ok && json(&out2)["name"] == "shop-to-pg",
        "GetTask by id: {out2}"
    );

    let (ok, out) = s
        .call(
            "Every task:",
            true,
            Some("{}"),
            &["dbsync.v1.CoordinatorService/ListTasks"],
        )
        .await;
    assert!(ok, "{out}");
    let listed = json(&out);
    let tasks = listed["tasks"].as_array().expect("tasks");
    assert_eq!(
        tasks.len(),
        1,
        "the refused definition created nothing: {out}"
    );
    assert_eq!(tasks[0]["taskId"], task_id.as_str());

    let (ok, out) = s
        .call(
            "Its status (phase per task and table, progress, lag, last error):",
            true,
            Some(r#"{"taskId": "shop-to-pg"}"#),
            &["dbsync.v1.CoordinatorService/GetTaskStatus"],
        )
        .await;
    assert!(ok, "{out}");
    let status = json(&out);
    assert_eq!(status["task"]["taskId"], task_id.as_str());
    assert_eq!(status["task"]["state"], "TASK_STATE_CREATED");

    let (ok, out) = s
        .call(
            "A task that does not exist:",
            true,
            Some(r#"{"taskId": "no-such-task"}"#),
            &["dbsync.v1.CoordinatorService/GetTaskStatus"],
        )
        .await;
    assert!(
        !ok && out.contains("Code: NotFound") && out.contains("no-such-task"),
        "{out}"
    );

    let (ok, out) = s
        .call(
            "Health needs no token (for probes):",
            false,
            Some(r#"{"service": "dbsync.v1.CoordinatorService"}"#),
            &["grpc.health.v1.Health/Check"],
        )
        .await;
    assert!(ok && out.contains("\"SERVING\""), "{out}");

    for step in &s.steps {
        for secret in ["Src-Pa55word!", "Tgt-Pa55word!", TOKEN] {
            assert!(
                !step.output.contains(secret),
                "{secret} echoed by `{}`: {}",
                step.shell,
                step.output
            );
        }
    }

    // Volatile values become fixed sample values in the document.
    let mut replacements = vec![
        (coordinator.addr.clone(), SHOWN_ADDR.to_string()),
        (task_id.clone(), SHOWN_TASK_ID.to_string()),
    ];
    let mut micros = Vec::new();
    for v in [&created, &got, &status["task"], &tasks[0]] {
        for field in ["createdUnixMicros", "updatedUnixMicros"] {
            if let Some(m) = v[field].as_str() {
                micros.push(m.to_string());
            }
        }
    }
    micros.sort();
    micros.dedup();
    for (i, m) in micros.iter().enumerate() {
        replacements.push((
            format!("\"{m}\""),
            format!("\"{}\"", 1_764_000_000_000_000u64 + i as u64 * 1000),
        ));
    }
    let version = grpcurl_version().await;
    let document = s.document(&version, &replacements);
    let path = repo_path("tests/ops/GRPCURL.md");
    if std::env::var("DBSYNC_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &document).unwrap();
    } else {
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        let recorded_with = current
            .lines()
            .find_map(|l| l.strip_prefix(VERSION_LINE))
            .map(|v| v.trim_end_matches('.'));
        if recorded_with != Some(version.as_str()) {
            // Another grpcurl formats some output differently: the assertions above still hold.
            eprintln!("GRPCURL.md was recorded with {recorded_with:?}, this is {version}: the document is not compared");
        } else if current != document {
            let first = current
                .lines()
                .zip(document.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(current.lines().count().min(document.lines().count()));
            panic!(
                "tests/ops/GRPCURL.md no longer shows what grpcurl prints (first difference at line {}: now {:?}); \
                 if the change is intended run `DBSYNC_BLESS=1 cargo test -p dbsync-ops-tests --test grpcurl`",
                first + 1,
                document.lines().nth(first).unwrap_or("<end>")
            );
        }
    }
    coordinator.stop().await;
}

/// Every service serves health and reflection, and reflection lists only what it serves.
#[tokio::test]
async fn grpcurl_lists_what_capture_and_apply_serve() {
    require_tool("grpcurl", "-version");
    let shutdown = dbsync_telemetry::CancellationToken::new();
    let capture_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let capture_addr = capture_listener.local_addr().unwrap().to_string();
    let capture = tokio::spawn(dbsync_capture::serve(
        Default::default(),
        capture_listener,
        shutdown.clone(),
    ));
    let apply_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let apply_addr = apply_listener.local_addr().unwrap().to_string();
    // No coordinator listens there: the worker keeps retrying while the server answers.
    let apply_config = dbsync_apply::ApplyConfig {
        coordinator: "http://127.0.0.1:1".into(),
        ..Default::default()
    };
    let apply = tokio::spawn(dbsync_apply::serve(
        apply_config,
        apply_listener,
        shutdown.clone(),
    ));

    let always = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    for (addr, served) in [
        (&capture_addr, vec!["dbsync.v1.CaptureService"]),
        (&apply_addr, vec![]),
    ] {
        let (ok, out) = run_tool(
            "grpcurl",
            vec!["-plaintext".into(), addr.clone(), "list".into()],
        )
        .await;
        assert!(ok, "{out}");
        let mut expected: Vec<&str> = served.into_iter().chain(always).collect();
        expected.sort();
        assert_eq!(out.lines().collect::<Vec<_>>(), expected, "{addr}");
        let (ok, out) = run_tool(
            "grpcurl",
            vec![
                "-plaintext".into(),
                addr.clone(),
                "grpc.health.v1.Health/Check".into(),
            ],
        )
        .await;
        assert!(ok && out.contains("\"SERVING\""), "{addr}: {out}");
    }
    let (ok, out) = run_tool(
        "grpcurl",
        vec![
            "-plaintext".into(),
            capture_addr.clone(),
            "describe".into(),
            "dbsync.v1.CaptureService".into(),
        ],
    )
    .await;
    assert!(ok && out.contains("rpc StreamChanges"), "{out}");

    shutdown.cancel();
    capture.await.unwrap().unwrap();
    apply.await.unwrap().unwrap();
}
