//! No password appears in any log line, status, precheck report, task info or error, even when
//! a capture service or a worker echoes it back. Logs are captured with a tracing subscriber
//! at debug level for the whole process (this file is its own test binary).

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use dbsync_pgtest::PgCluster;
use dbsync_proto::v1 as pb;
use support::*;

const SOURCE_SECRET: &str = "Echo-Src-Secret-7f3a";
const SOURCE_OK_SECRET: &str = "Src-Secret-Good-91c2";
const TARGET_SECRET: &str = "Tgt-Secret-4be8";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_password_in_logs_status_reports_or_errors() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("c.db"), None, Default::default()).await;
    let capture = FakeCapture::new();
    let cap_shutdown = dbsync_telemetry::CancellationToken::new();
    let capture_url = capture.serve(cap_shutdown.clone()).await;
    let pg = tokio::task::spawn_blocking(PgCluster::shared)
        .await
        .unwrap();
    pg.create_database("secrets_db").await.unwrap();
    let mut c = server.client().await;
    let mut w = server.workers().await;
    let mut seen = Vec::<String>::new();

    // A source whose driver echoes the password in its login error.
    let spec = spec_for("echo", &capture_url, pg, "secrets_db", "")
        .replace("Src-Pa55word!", SOURCE_SECRET)
        .replace("Tgt-Pa55word!", TARGET_SECRET);
    let info = c
        .create_task(pb::CreateTaskRequest { spec })
        .await
        .unwrap()
        .into_inner();
    seen.push(format!("{info:?}"));
    let report = c
        .precheck_task(pb::PrecheckTaskRequest {
            task_id: "echo".into(),
            acknowledge: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        report
            .items
            .iter()
            .any(|i| i.id == "source.schema" && i.detail.contains("Login failed")),
        "{report:#?}"
    );
    seen.push(format!("{report:?}"));
    let err = c.start_task(task_ref("echo")).await.unwrap_err();
    seen.push(format!("{err:?}"));

    // A running task whose worker reports errors that contain the passwords.
    let spec = spec_for("run", &capture_url, pg, "secrets_db", "")
        .replace("Src-Pa55word!", SOURCE_OK_SECRET)
        .replace("Tgt-Pa55word!", TARGET_SECRET);
    c.create_task(pb::CreateTaskRequest { spec }).await.unwrap();
    let a = register(&mut w, "apply", "a:1").await;
    c.start_task(task_ref("run")).await.unwrap();
    let hb = heartbeat(&mut w, &a).await;
    assert_eq!(
        hb.assignments[0].source.as_ref().unwrap().password,
        SOURCE_OK_SECRET,
        "workers need the real secret"
    );
    w.report_progress(pb::ReportProgressRequest {
        worker_id: a.clone(),
        task_id: "run".into(),
        tables: vec![pb::TableProgress {
            source: Some(table_ref("shop", "dbo", "audit")),
            error: format!("connect failed: password={TARGET_SECRET}"),
            error_transient: true,
            error_class: "connection".into(),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    w.report_progress(pb::ReportProgressRequest {
        worker_id: a.clone(),
        task_id: "run".into(),
        task_error: format!("fatal: login with {SOURCE_OK_SECRET} rejected"),
        task_error_class: "definite".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let status = c
        .get_task_status(task_ref("run"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.task.as_ref().unwrap().state,
        pb::TaskState::Failed as i32
    );
    assert!(status
        .task
        .as_ref()
        .unwrap()
        .last_error
        .contains("fatal: login with *** rejected"));
    assert!(!status.alerts.is_empty());
    seen.push(format!("{status:?}"));
    for t in c
        .list_tasks(pb::ListTasksRequest {})
        .await
        .unwrap()
        .into_inner()
        .tasks
    {
        seen.push(format!("{t:?}"));
    }
    cap_shutdown.cancel();
    server.stop().await;

    let log_text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        log_text.contains("task state changed"),
        "the subscriber captured the coordinator's logs"
    );
    assert!(
        log_text.contains("dbsync_alert"),
        "the failure alert was logged"
    );
    for secret in [SOURCE_SECRET, SOURCE_OK_SECRET, TARGET_SECRET] {
        assert!(
            !log_text.contains(secret),
            "a log line contains a password:\n{log_text}"
        );
        for s in &seen {
            assert!(!s.contains(secret), "a response contains a password: {s}");
        }
    }
}
