//! Test helpers shared by capture's test binaries (`mod common;`).
// Each test binary uses part of these.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dbsync_capture::CancellationToken;
use dbsync_proto::v1::capture_service_client::CaptureServiceClient;
use dbsync_proto::v1::SourceConnection;
use dbsync_sqlserver_sim::engine::cdc::{Cdc, CdcConfig};
use dbsync_sqlserver_sim::engine::{Engine, EngineConfig};
use dbsync_sqlserver_sim::server::{Server, ServerHandle};
use tonic::transport::Channel;

/// The stand-in with database `db` and a capture service in-process, with a gRPC client.
pub struct Env {
    pub engine: Engine,
    pub sim: ServerHandle,
    pub source: SourceConnection,
    pub client: CaptureServiceClient<Channel>,
    pub shutdown: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn env(db: &str, setup: &str) -> Env {
    let engine = Engine::new(EngineConfig::default());
    Cdc::install(&engine, CdcConfig::default());
    engine
        .run("master", &format!("CREATE DATABASE {db}"))
        .expect("create database");
    if !setup.is_empty() {
        engine.run(db, setup).expect("setup sql");
    }
    let sim = Server::start("127.0.0.1:0".parse().unwrap(), Arc::new(engine.clone()))
        .await
        .unwrap();
    let source = SourceConnection {
        host: "127.0.0.1".into(),
        port: u32::from(sim.addr.port()),
        user: "sa".into(),
        password: engine.config().sa_password.clone(),
        database: db.into(),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(dbsync_capture::serve(
        Default::default(),
        listener,
        shutdown.clone(),
    ));
    let client = loop {
        match CaptureServiceClient::connect(format!("http://{addr}")).await {
            Ok(c) => break c.max_decoding_message_size(64 << 20),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    Env {
        engine,
        sim,
        source,
        client,
        shutdown,
    }
}

/// Last values of gauges by name and labels, as a global recorder (the stream code records
/// through the `metrics` macros).
#[derive(Default)]
pub struct GaugeRecorder(Arc<std::sync::Mutex<std::collections::HashMap<String, f64>>>);

struct GaugeCell(
    String,
    Arc<std::sync::Mutex<std::collections::HashMap<String, f64>>>,
);

impl metrics::GaugeFn for GaugeCell {
    fn increment(&self, value: f64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() += value;
    }
    fn decrement(&self, value: f64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() -= value;
    }
    fn set(&self, value: f64) {
        self.1.lock().unwrap().insert(self.0.clone(), value);
    }
}

impl metrics::Recorder for GaugeRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        metrics::Gauge::from_arc(Arc::new(GaugeCell(name, Arc::clone(&self.0))))
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

pub type Gauges = Arc<std::sync::Mutex<std::collections::HashMap<String, f64>>>;

pub fn gauges() -> &'static Gauges {
    static GAUGES: std::sync::OnceLock<Gauges> = std::sync::OnceLock::new();
    GAUGES.get_or_init(|| {
        let recorder = GaugeRecorder::default();
        let values = Arc::clone(&recorder.0);
        metrics::set_global_recorder(recorder).expect("no other recorder in this test binary");
        values
    })
}
