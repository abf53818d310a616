//! Error classes end to end: a real applier (dbsync-apply) runs a task against a real
//! PostgreSQL reached through a TCP proxy that the test can cut. A target that goes away is a
//! connection failure: the coordinator keeps the task running for the connection retry window
//! (longer than the window for other failures), and the task recovers when the target comes
//! back. A definite failure fails the task at once, with its reason.
//!
//! The source side likewise: the real capture service reads the SQL Server stand-in through a
//! proxy the test cuts; capture classifies the lost or refused connection as a connection
//! failure, the applier passes that class on, and the coordinator applies the same windows.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dbsync_coordinator::{CancellationToken, ManualClock};
use dbsync_proto::v1 as pb;
use pb::coordinator_service_client::CoordinatorServiceClient;
use pb::TaskState;
use support::*;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

type Client = CoordinatorServiceClient<Channel>;

/// Forwards TCP connections to `upstream` while up; going down cuts every open connection and
/// refuses new ones (accepted, then closed at once).
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<CancellationToken>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<CancellationToken>>> = Arc::default();
        let (up2, open2) = (up.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue;
                }
                let cut = CancellationToken::new();
                open2.lock().unwrap().push(cut.clone());
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.cancelled() => {}
                    }
                });
            }
        });
        Proxy { addr, up, open }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.open.lock().unwrap().drain(..) {
            c.cancel();
        }
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Polls the task's status until `check` accepts it (30 s at most: the applier backs off).
async fn until_status(
    c: &mut Client,
    task: &str,
    what: &str,
    check: impl Fn(&pb::TaskStatus) -> bool,
) -> pb::TaskStatus {
    until_status_within(c, task, what, Duration::from_secs(30), check).await
}

/// Like [`until_status`], with a deadline of `within`: a real capture service and applier back
/// off between retries, and a full sync runs after the source comes back.
async fn until_status_within(
    c: &mut Client,
    task: &str,
    what: &str,
    within: Duration,
    check: impl Fn(&pb::TaskStatus) -> bool,
) -> pb::TaskStatus {
    let deadline = Instant::now() + within;
    loop {
        let status = c
            .get_task_status(task_ref(task))
            .await
            .unwrap()
            .into_inner();
        if check(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn info(s: &pb::TaskStatus) -> &pb::TaskInfo {
    s.task.as_ref().unwrap()
}

/// True once the applier reports a connection failure retried for at least `seconds`.
fn retrying_for_at_least(s: &pb::TaskStatus, seconds: i64) -> bool {
    info(s)
        .last_error
        .strip_prefix("connection failure, retrying for ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|secs| secs.parse::<i64>().ok())
        .is_some_and(|secs| secs >= seconds)
}

/// A coordinator on a manual clock (`server.clock`) with its store in `dir`. Leases are far
/// longer than the time the tests move the clock, so no group moves while the clock jumps.
async fn coordinator_on_manual_clock(dir: &std::path::Path) -> Server {
    Server::start_with_lease(
        &dir.join("c.db").to_string_lossy(),
        None,
        Arc::new(ManualClock::new()),
        3600,
    )
    .await
}

/// Serves a real applier registered as `worker_id`; it gets its groups from the coordinator.
async fn spawn_apply(
    coordinator: &str,
    worker_id: &str,
    shutdown: CancellationToken,
) -> JoinHandle<anyhow::Result<()>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    tokio::spawn(dbsync_apply::serve(
        dbsync_apply::ApplyConfig {
            coordinator: coordinator.into(),
            worker_id: Some(worker_id.into()),
            heartbeat_interval: Duration::from_millis(200),
            ..Default::default()
        },
        listener,
        shutdown,
    ))
}

/// Creates a task from `spec` and prechecks it.
async fn create_and_precheck(c: &mut Client, name: &str, spec: String) {
    c.create_task(pb::CreateTaskRequest { spec }).await.unwrap();
    c.precheck_task(pb::PrecheckTaskRequest {
        task_id: name.into(),
        ..Default::default()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_target_back_inside_the_connection_window_recovers_and_a_definite_error_fails() {
    let dir = tempfile::tempdir().unwrap();
    let server = coordinator_on_manual_clock(dir.path()).await;
    let capture = FakeCapture::new();
    // nvarchar(100): a column the applier can create.
    for t in capture.tables.lock().unwrap().iter_mut() {
        t.columns[1].max_length = 200;
    }
    // A table whose plan an applier cannot run (its key names no column): a definite error.
    let mut broken = table("shop", "broken", &[]);
    broken.key_columns = vec!["Nope".into()];
    capture.tables.lock().unwrap().push(broken);
    let cap_shutdown = CancellationToken::new();
    let capture_url = capture.serve(cap_shutdown.clone()).await;
    let pg = tokio::task::spawn_blocking(dbsync_pgtest::PgCluster::shared)
        .await
        .unwrap();
    pg.create_database("retries_target").await.unwrap();
    let proxy = Proxy::start(format!("{}:{}", pg.host(), pg.port())).await;

    let shutdown = CancellationToken::new();
    let apply = spawn_apply(&server.url, "apply-retries", shutdown.clone()).await;

    let mut c = server.client().await;
    let spec = |name: &str, include: &str| {
        spec_for(
            name,
            &capture_url,
            pg,
            "retries_target",
            "sync: { schema: true, full: false, incremental: false }\nretry: { connection_minutes: 30, other_minutes: 1 }",
        )
        .replace(
            &format!("port: {}", pg.port()),
            &format!("port: {}", proxy.addr.port()),
        )
        .replace(
            "objects: { databases: [shop] }",
            &format!("objects: {{ databases: [shop], include: ['{include}'] }}"),
        )
    };
    create_and_precheck(&mut c, "comeback", spec("comeback", "shop.dbo.customers")).await;

    // The target goes away before the applier gets to it.
    proxy.down();
    c.start_task(task_ref("comeback")).await.unwrap();
    until_status(
        &mut c,
        "comeback",
        "the applier to report a connection failure",
        |s| info(s).last_error.starts_with("connection failure"),
    )
    .await;
    // Longer than the window for other failures (1 min), inside the connection window (30 min).
    server.clock.advance(Duration::from_secs(5 * 60));
    let retrying = until_status(&mut c, "comeback", "a report after the clock moved", |s| {
        retrying_for_at_least(s, 300)
    })
    .await;
    assert_eq!(
        info(&retrying).state,
        TaskState::Running as i32,
        "{retrying:?}"
    );
    assert!(
        info(&retrying).last_error.contains("PostgreSQL connection"),
        "{retrying:?}"
    );
    assert!(
        !info(&retrying).last_error.contains("Tgt-Pa55word!"),
        "no password in the status"
    );

    // The target comes back: the applier's next retry creates the table and the task completes.
    proxy.up();
    let done = until_status(&mut c, "comeback", "the task to complete", |s| {
        info(s).state != TaskState::Running as i32
    })
    .await;
    assert_eq!(info(&done).state, TaskState::Completed as i32, "{done:?}");
    assert!(info(&done).last_error.is_empty(), "{done:?}");
    let target = pg.connect("retries_target").await.unwrap();
    let tables: i64 = target
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'dbo' AND table_name = 'customers'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        tables, 1,
        "the schema was created after the target came back"
    );

    // A definite failure: the task fails at once with the applier's reason.
    c.create_task(pb::CreateTaskRequest {
        spec: spec("broken", "shop.dbo.broken"),
    })
    .await
    .unwrap();
    c.start_task(task_ref("broken")).await.unwrap();
    let failed = until_status(&mut c, "broken", "the task to fail", |s| {
        info(s).state == TaskState::Failed as i32
    })
    .await;
    assert!(
        info(&failed)
            .last_error
            .contains("key column Nope is not a column of the table"),
        "{failed:?}"
    );

    shutdown.cancel();
    let _ = apply.await;
    cap_shutdown.cancel();
    server.stop().await;
}

/// Rows of the source table `src.dbo.items` (created by [`SourceRig::start`]).
const SOURCE_ROWS: i32 = 500;

/// A real source side: the SQL Server stand-in (in-process, database `src` with table
/// `dbo.items`) reached through a [`Proxy`] the test can cut, the real capture service, a
/// coordinator on a manual clock, and a real applier started on demand.
struct SourceRig {
    server: Server,
    standin: dbsync_sqlserver_sim::engine::Engine,
    standin_server: dbsync_sqlserver_sim::server::ServerHandle,
    password: String,
    proxy: Proxy,
    capture_url: String,
    pg: &'static dbsync_pgtest::PgCluster,
    target_db: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl SourceRig {
    async fn start(target_db: &str) -> SourceRig {
        use dbsync_sqlserver_sim::engine::{Engine, EngineConfig};
        let dir = tempfile::tempdir().unwrap();
        let server = coordinator_on_manual_clock(dir.path()).await;

        let config = EngineConfig::default();
        let password = config.sa_password.clone();
        let standin = Engine::new(config);
        let mut session = standin.system_session("master");
        let values: Vec<String> = (1..=SOURCE_ROWS)
            .map(|i| format!("({i}, N'item {i}')"))
            .collect();
        for sql in [
            "CREATE DATABASE [src]".to_string(),
            "CREATE TABLE [src].[dbo].[items] (id int NOT NULL PRIMARY KEY, name nvarchar(50) NOT NULL)".into(),
            format!("INSERT INTO [src].[dbo].[items] (id, name) VALUES {}", values.join(", ")),
            // What a DBA does before pointing dbsync at a database (as tests/integration does).
            "ALTER DATABASE [src] SET ALLOW_SNAPSHOT_ISOLATION ON".into(),
            "ALTER DATABASE [src] SET READ_COMMITTED_SNAPSHOT ON".into(),
            "BACKUP DATABASE [src] TO DISK = N'/dev/null'".into(),
            "BACKUP LOG [src] TO DISK = N'/dev/null'".into(),
        ] {
            session
                .run(&sql)
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        }
        let standin_server = dbsync_sqlserver_sim::server::Server::start(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(standin.clone()),
        )
        .await
        .unwrap();
        let proxy = Proxy::start(standin_server.addr.to_string()).await;

        let shutdown = CancellationToken::new();
        let capture_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let capture_addr = capture_listener.local_addr().unwrap();
        tokio::spawn(dbsync_capture::serve(
            dbsync_capture::CaptureConfig {
                listen: capture_addr,
                ..Default::default()
            },
            capture_listener,
            shutdown.clone(),
        ));

        let pg = tokio::task::spawn_blocking(dbsync_pgtest::PgCluster::shared)
            .await
            .unwrap();
        pg.create_database(target_db).await.unwrap();
        SourceRig {
            server,
            standin,
            standin_server,
            password,
            proxy,
            capture_url: format!("http://{capture_addr}"),
            pg,
            target_db: target_db.into(),
            shutdown,
            _dir: dir,
        }
    }

    /// A full sync of `src.dbo.items`, the source reached through the proxy.
    fn spec(&self, name: &str) -> String {
        format!(
            r#"
name: {name}
environment: test
source: {{ host: 127.0.0.1, port: {sport}, user: sa, password: "{spass}" }}
target: {{ host: {thost}, port: {tport}, user: {tuser}, password: unused, database: {tdb}, sslmode: disable }}
capture_address: {capture}
objects: {{ databases: [src] }}
sync: {{ schema: true, full: true, incremental: false }}
retry: {{ connection_minutes: 30, other_minutes: 1 }}
"#,
            sport = self.proxy.addr.port(),
            spass = self.password,
            thost = self.pg.host(),
            tport = self.pg.port(),
            tuser = self.pg.superuser(),
            tdb = self.target_db,
            capture = self.capture_url,
        )
    }

    /// Creates, prechecks and starts a task while the source is up (starting reads the source's
    /// tables through capture, whose pool keeps those connections open).
    async fn start_task(&self, name: &str) {
        let mut c = self.server.client().await;
        create_and_precheck(&mut c, name, self.spec(name)).await;
        c.start_task(task_ref(name)).await.unwrap();
    }

    /// Starts the real applier; it gets the task's groups from the coordinator.
    async fn start_apply(&self) -> JoinHandle<anyhow::Result<()>> {
        spawn_apply(
            &self.server.url,
            "apply-source-retries",
            self.shutdown.clone(),
        )
        .await
    }

    /// `(id, name)` of every source row, by id.
    fn source_rows(&self) -> Vec<(i32, String)> {
        use dbsync_sqlserver_sim::types::Value;
        let results = self
            .standin
            .run("src", "SELECT id, name FROM dbo.items ORDER BY id")
            .unwrap();
        results[0]
            .rows
            .iter()
            .map(|row| match (&row[0], &row[1]) {
                (Value::Int(id), Value::String(name)) => (*id, name.to_string()),
                other => panic!("unexpected source row {other:?}"),
            })
            .collect()
    }

    /// `(id, name)` of every target row, by id.
    async fn target_rows(&self) -> Vec<(i32, String)> {
        let target = self.pg.connect(&self.target_db).await.unwrap();
        target
            .query("SELECT id, name FROM dbo.items ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// Starts task `name` while the source is up, then takes the source away (open connections
    /// cut, new ones refused) and starts the applier; returns once the applier reported the
    /// source connection failure, with a coordinator client and the applier.
    async fn start_task_then_lose_the_source(
        &self,
        name: &str,
    ) -> (Client, JoinHandle<anyhow::Result<()>>) {
        let mut c = self.server.client().await;
        self.start_task(name).await;
        self.proxy.down();
        let apply = self.start_apply().await;
        until_source_connection_failure(&mut c, name).await;
        (c, apply)
    }

    async fn stop(self, apply: JoinHandle<anyhow::Result<()>>) {
        self.shutdown.cancel();
        let _ = apply.await;
        self.standin_server.shutdown();
        self.server.stop().await;
    }
}

/// The first connection failure the applier reports for the source: capture classifies a
/// lost or refused SQL Server connection as a connection failure, the applier passes it on.
async fn until_source_connection_failure(c: &mut Client, task: &str) -> pb::TaskStatus {
    let status = until_status_within(
        c,
        task,
        "the applier to report a source connection failure",
        Duration::from_secs(60),
        |s| info(s).last_error.starts_with("connection failure"),
    )
    .await;
    assert!(
        info(&status).last_error.contains("SQL Server"),
        "the failure names the source connection: {status:?}"
    );
    status
}

#[tokio::test]
async fn a_source_back_inside_the_connection_window_recovers_and_the_target_equals_the_source() {
    let rig = SourceRig::start("source_retries_back").await;
    // The source goes away before the applier runs.
    let (mut c, apply) = rig.start_task_then_lose_the_source("source-back").await;

    // Longer than the window for other failures (1 min), inside the connection window (30 min).
    rig.server.clock.advance(Duration::from_secs(5 * 60));
    let retrying = until_status_within(
        &mut c,
        "source-back",
        "a report after the clock moved",
        Duration::from_secs(60),
        |s| retrying_for_at_least(s, 300),
    )
    .await;
    assert_eq!(
        info(&retrying).state,
        TaskState::Running as i32,
        "{retrying:?}"
    );
    assert!(
        info(&retrying).last_error.contains("SQL Server"),
        "{retrying:?}"
    );
    assert!(
        !info(&retrying).last_error.contains(&rig.password),
        "no password in the status"
    );

    // The source comes back: the applier's next retry loads the table and the task completes.
    rig.proxy.up();
    let done = until_status_within(
        &mut c,
        "source-back",
        "the task to complete",
        Duration::from_secs(120),
        |s| info(s).state != TaskState::Running as i32,
    )
    .await;
    assert_eq!(info(&done).state, TaskState::Completed as i32, "{done:?}");
    assert!(info(&done).last_error.is_empty(), "{done:?}");
    let source = rig.source_rows();
    assert_eq!(source.len(), SOURCE_ROWS as usize);
    let target = rig.target_rows().await;
    assert_eq!(target.len(), source.len(), "row counts");
    assert!(target == source, "the target rows equal the source rows");

    rig.stop(apply).await;
}

#[tokio::test]
async fn a_source_away_past_the_connection_window_fails_the_task_naming_the_source() {
    let rig = SourceRig::start("source_retries_gone").await;
    let (mut c, apply) = rig.start_task_then_lose_the_source("source-gone").await;

    // Past the connection window (30 min): the next report of the same failure fails the task.
    rig.server.clock.advance(Duration::from_secs(31 * 60));
    let failed = until_status_within(
        &mut c,
        "source-gone",
        "the task to fail",
        Duration::from_secs(60),
        |s| info(s).state != TaskState::Running as i32,
    )
    .await;
    assert_eq!(info(&failed).state, TaskState::Failed as i32, "{failed:?}");
    let reason = &info(&failed).last_error;
    assert!(
        reason.contains("connection failures kept recurring for more than 30 minutes"),
        "{failed:?}"
    );
    assert!(
        reason.contains(&format!(
            "Cannot connect to SQL Server at 127.0.0.1:{}",
            rig.proxy.addr.port()
        )) || reason.contains("Connection to SQL Server failed"),
        "the reason names the source connection: {failed:?}"
    );
    assert!(!reason.contains(&rig.password), "no password in the reason");

    rig.stop(apply).await;
}
