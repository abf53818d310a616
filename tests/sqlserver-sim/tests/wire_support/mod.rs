//! Test-only engine for the wire tests: canned results keyed by SQL text, and a record of
//! everything the server decoded, so tests can check both directions through tiberius.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dbsync_sqlserver_sim::api::*;
use dbsync_sqlserver_sim::engine::{Engine, EngineConfig};
use dbsync_sqlserver_sim::server::{Server, ServerHandle};
use dbsync_sqlserver_sim::types::{Collation, SqlType, Value};
use parking_lot::Mutex;
use tiberius::{AuthMethod, Client, Config, EncryptionLevel, Row};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

pub const USER: &str = "sa";
pub const PASSWORD: &str = "Str0ng!pässword";
pub const DATABASE: &str = "testdb";
pub const LATIN1: Collation = Collation::SQL_LATIN1_GENERAL_CP1_CI_AS;

/// A canned response: runs against the sink when its SQL text (or RPC statement) arrives.
pub type Script = Arc<dyn Fn(&mut dyn ResultSink) -> Result<(), Cancelled> + Send + Sync>;

#[derive(Default)]
pub struct Recorded {
    pub logins: Vec<LoginRequest>,
    pub batches: Vec<String>,
    pub rpcs: Vec<(RpcProc, Vec<RpcParam>)>,
    pub transactions: Vec<(TransactionRequest, u64)>,
    pub bulk: Vec<(Vec<ResultColumn>, Vec<Vec<Value>>)>,
    pub disconnects: usize,
    /// Transaction descriptors the client echoed in ALL_HEADERS, one per request.
    pub descriptors: Vec<u64>,
    /// Scripts that stopped because the sink said Cancelled, and rows they had sent.
    pub cancelled_after_rows: Vec<u64>,
}

#[derive(Default)]
pub struct Canned {
    pub scripts: Mutex<HashMap<String, Script>>,
    pub recorded: Mutex<Recorded>,
}

impl Canned {
    pub fn on(
        &self,
        sql: &str,
        script: impl Fn(&mut dyn ResultSink) -> Result<(), Cancelled> + Send + Sync + 'static,
    ) {
        self.scripts
            .lock()
            .insert(sql.to_string(), Arc::new(script));
    }

    fn script(&self, sql: &str) -> Option<Script> {
        self.scripts.lock().get(sql).cloned()
    }
}

pub struct Factory(pub Arc<Canned>);

impl SessionFactory for Factory {
    fn login(&self, login: &LoginRequest) -> Result<Box<dyn Session>, SqlError> {
        self.0.recorded.lock().logins.push(login.clone());
        if login.password != PASSWORD {
            return Err(SqlError::new(
                18456,
                14,
                1,
                format!("Login failed for user '{}'.", login.user),
            ));
        }
        Ok(Box::new(CannedSession {
            canned: self.0.clone(),
            descriptor: 0,
            next_descriptor: 1,
        }))
    }
}

struct CannedSession {
    canned: Arc<Canned>,
    descriptor: u64,
    next_descriptor: u64,
}

impl CannedSession {
    fn run(&self, key: &str, sink: &mut dyn ResultSink, in_proc: bool) {
        match self.canned.script(key) {
            Some(script) => {
                let _ = script(sink);
            }
            None => {
                let _ = sink.done(StatementKind::Other, None, in_proc);
            }
        }
    }
}

impl Session for CannedSession {
    fn database(&self) -> String {
        DATABASE.to_string()
    }

    fn execute_batch(&mut self, sql: &str, sink: &mut dyn ResultSink) {
        self.canned.recorded.lock().batches.push(sql.to_string());
        self.run(sql, sink, false);
    }

    fn execute_rpc(&mut self, proc: &RpcProc, params: Vec<RpcParam>, sink: &mut dyn ResultSink) {
        let key = match proc {
            RpcProc::Id(10) => match params.first().map(|p| &p.value) {
                Some(Value::String(s)) => s.to_string(),
                _ => String::new(),
            },
            RpcProc::Id(id) => format!("proc#{id}"),
            RpcProc::Name(name) => name.clone(),
        };
        self.canned
            .recorded
            .lock()
            .rpcs
            .push((proc.clone(), params));
        self.run(&key, sink, true);
    }

    fn transaction(&mut self, request: &TransactionRequest, sink: &mut dyn ResultSink) {
        let result = match request {
            TransactionRequest::Begin { .. } => {
                self.descriptor = self.next_descriptor;
                self.next_descriptor += 1;
                sink.env_change(&EnvChange::BeginTransaction {
                    descriptor: self.descriptor,
                })
            }
            TransactionRequest::Commit { .. } => {
                let descriptor = std::mem::take(&mut self.descriptor);
                sink.env_change(&EnvChange::CommitTransaction { descriptor })
            }
            TransactionRequest::Rollback { .. } => {
                let descriptor = std::mem::take(&mut self.descriptor);
                sink.env_change(&EnvChange::RollbackTransaction { descriptor })
            }
            TransactionRequest::Save { .. } => Ok(()),
        };
        let _ = result;
        self.canned
            .recorded
            .lock()
            .transactions
            .push((request.clone(), self.descriptor));
    }

    fn bulk_rows(
        &mut self,
        columns: &[ResultColumn],
        rows: Vec<Vec<Value>>,
        sink: &mut dyn ResultSink,
    ) {
        let n = rows.len() as u64;
        self.canned
            .recorded
            .lock()
            .bulk
            .push((columns.to_vec(), rows));
        let _ = sink.done(StatementKind::Insert, Some(n), false);
    }

    fn transaction_descriptor(&self) -> u64 {
        self.descriptor
    }

    fn request_descriptor(&mut self, descriptor: u64) {
        self.canned.recorded.lock().descriptors.push(descriptor);
    }

    fn disconnect(&mut self) {
        self.canned.recorded.lock().disconnects += 1;
    }
}

pub async fn start() -> (ServerHandle, Arc<Canned>) {
    let canned = Arc::new(Canned::default());
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let handle = Server::start(addr, Arc::new(Factory(canned.clone())))
        .await
        .expect("server starts");
    (handle, canned)
}

pub type TestClient = Client<Compat<TcpStream>>;

pub fn config(addr: SocketAddr, password: &str) -> Config {
    let mut config = Config::new();
    config.host("127.0.0.1");
    config.port(addr.port());
    config.database(DATABASE);
    config.authentication(AuthMethod::sql_server(USER, password));
    config.encryption(EncryptionLevel::NotSupported);
    config.trust_cert();
    config
}

pub async fn connect_with(addr: SocketAddr, config: Config) -> tiberius::Result<TestClient> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Client::connect(config, tcp.compat_write()).await
}

pub async fn connect(addr: SocketAddr) -> TestClient {
    connect_with(addr, config(addr, PASSWORD))
        .await
        .expect("login succeeds")
}

/// Poll `condition` until it holds or the deadline passes.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn col(name: &str, ty: SqlType, nullable: bool) -> ResultColumn {
    ResultColumn::expr(name, ty, nullable)
}

pub fn s(text: &str) -> Value {
    Value::String(text.into())
}

pub fn b(bytes: &[u8]) -> Value {
    Value::Binary(bytes.into())
}

/// Rows until the sink refuses (attention or disconnect); records how many went out.
pub fn endless(
    canned: &Arc<Canned>,
) -> impl Fn(&mut dyn ResultSink) -> Result<(), Cancelled> + Send + Sync {
    let canned = canned.clone();
    move |sink| {
        sink.columns(&[
            col("n", SqlType::BigInt, false),
            col(
                "text",
                SqlType::NVarChar {
                    len: Some(100),
                    collation: LATIN1,
                },
                true,
            ),
        ])?;
        let text = s("a row that takes some room in the packet");
        let mut n = 0u64;
        loop {
            if sink.row(&[Value::BigInt(n as i64), text.clone()]).is_err() {
                canned.recorded.lock().cancelled_after_rows.push(n);
                return Err(Cancelled);
            }
            n += 1;
        }
    }
}

/// Emit a result set of the given rows followed by DONE(COUNT).
pub fn result_set(
    columns: Vec<ResultColumn>,
    rows: Vec<Vec<Value>>,
) -> impl Fn(&mut dyn ResultSink) -> Result<(), Cancelled> + Send + Sync {
    move |sink| {
        sink.columns(&columns)?;
        for row in &rows {
            sink.row(row)?;
        }
        sink.done(StatementKind::Select, Some(rows.len() as u64), false)
    }
}

// ---- the independent client (pymssql) ----

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/independent_client/pymssql_check.py"
);

/// True when pymssql can be imported (installing it if needed); false (with a printed reason)
/// when python3 or pip is missing. Checked once per test process, so that parallel tests do
/// not run pip at the same time.
pub fn pymssql_ready() -> bool {
    static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *READY.get_or_init(install_pymssql)
}

fn install_pymssql() -> bool {
    let python = std::process::Command::new("python3")
        .arg("--version")
        .output();
    if !matches!(python, Ok(ref o) if o.status.success()) {
        println!("SKIPPED: python3 is not installed; the pymssql conformance check did not run");
        return false;
    }
    let import = std::process::Command::new("python3")
        .args(["-c", "import pymssql"])
        .output()
        .unwrap();
    if import.status.success() {
        return true;
    }
    let pip = std::process::Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .unwrap();
    if !pip.status.success() {
        println!(
            "SKIPPED: pip is not installed for python3; the pymssql conformance check did not run"
        );
        return false;
    }
    let install = std::process::Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "pymssql"])
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "pip install pymssql failed: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    true
}

/// Run the check script in `mode` against `port`; panics with its output when it fails.
pub async fn run_pymssql_check(mode: &str, port: u16, user: &str, password: &str, database: &str) {
    assert!(Path::new(SCRIPT).exists(), "{SCRIPT} is missing");
    let output = tokio::process::Command::new("python3")
        .arg(SCRIPT)
        .arg(mode)
        .env("SQLSIM_PORT", port.to_string())
        .env("SQLSIM_USER", user)
        .env("SQLSIM_PASSWORD", password)
        .env("SQLSIM_DATABASE", database)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "pymssql check failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    println!("{stdout}");
}

// ---------------------------------------------------------------------------------------
// Conformance targets: the stand-in in process, or a real SQL Server (MSSQL_TEST_URL)
// ---------------------------------------------------------------------------------------

/// The database the conformance tests run in.
pub const CHECK_DATABASE: &str = "conformance";

/// Where the tests connect: the stand-in in process, or the server of `MSSQL_TEST_URL`.
pub struct Target {
    /// Kept alive for the test's duration (None against a real server).
    pub server: Option<ServerHandle>,
    pub engine: Option<Engine>,
    pub config: tiberius::Config,
}

impl Target {
    pub async fn start() -> Target {
        if let Ok(url) = std::env::var("MSSQL_TEST_URL") {
            let config = tiberius::Config::from_ado_string(&url)
                .expect("MSSQL_TEST_URL is an ADO connection string");
            return Target {
                server: None,
                engine: None,
                config,
            };
        }
        let engine_config = EngineConfig::default();
        let password = engine_config.sa_password.clone();
        let engine = Engine::new(engine_config);
        engine
            .run("master", &format!("CREATE DATABASE {CHECK_DATABASE}"))
            .expect("database created");
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let server = Server::start(addr, Arc::new(engine.clone()))
            .await
            .expect("server starts");
        let mut config = config(server.addr, &password);
        config.database(CHECK_DATABASE);
        Target {
            server: Some(server),
            engine: Some(engine),
            config,
        }
    }

    pub fn is_standin(&self) -> bool {
        self.engine.is_some()
    }

    pub async fn client(&self) -> TestClient {
        let tcp = tokio::net::TcpStream::connect(self.config.get_addr())
            .await
            .expect("server is reachable");
        tcp.set_nodelay(true).unwrap();
        tiberius::Client::connect(
            self.config.clone(),
            tokio_util::compat::TokioAsyncWriteCompatExt::compat_write(tcp),
        )
        .await
        .expect("login succeeds")
    }
}

pub async fn exec(client: &mut TestClient, sql: &str) {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_results()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

pub async fn rows(client: &mut TestClient, sql: &str) -> Vec<Row> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_first_result()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub async fn fresh_table(client: &mut TestClient, name: &str, ddl: &str) {
    exec(
        client,
        &format!("IF OBJECT_ID(N'dbo.{name}') IS NOT NULL DROP TABLE dbo.{name}"),
    )
    .await;
    exec(client, ddl).await;
}
