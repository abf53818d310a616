//! One dbsync service running in-process on its own tokio runtime.
//!
//! Each service gets a runtime of its own so that [`Service::kill`] is a real crash: dropping
//! the runtime drops every task the service spawned (gRPC connections, streams, database
//! connections) at whatever await point they are, with no graceful shutdown. [`Service::stop`]
//! is the graceful path (cancel the token, wait). A restarted service binds the same address,
//! so the coordinator, the task's `capture_address` and the appliers find it again.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// What a service is, with the settings it needs to start again.
#[derive(Clone, Debug)]
pub enum ServiceKind {
    Coordinator {
        store: PathBuf,
        lease_seconds: u32,
    },
    Capture {
        coordinator: String,
    },
    Apply {
        coordinator: String,
        worker_id: String,
    },
}

enum Running {
    InProcess {
        runtime: tokio::runtime::Runtime,
        token: CancellationToken,
        done: oneshot::Receiver<anyhow::Result<()>>,
    },
    /// The service's own binary as a child process (for per-service memory measurements).
    Process(std::process::Child),
}

/// A service that can be started, killed and restarted on one address.
pub struct Service {
    pub name: String,
    pub kind: ServiceKind,
    addr: SocketAddr,
    running: Option<Running>,
    /// Directory of the `dbsync-*` binaries when the service runs as a child process.
    binaries: Option<PathBuf>,
}

impl Service {
    /// Starts the service on `addr` (port 0: a free port, kept for restarts).
    pub async fn start(
        name: impl Into<String>,
        kind: ServiceKind,
        addr: SocketAddr,
    ) -> anyhow::Result<Service> {
        let mut service = Service {
            name: name.into(),
            kind,
            addr,
            running: None,
            binaries: None,
        };
        service.launch().await?;
        Ok(service)
    }

    /// Starts the service as a child process running its binary from `binaries`.
    pub async fn start_process(
        name: impl Into<String>,
        kind: ServiceKind,
        binaries: PathBuf,
    ) -> anyhow::Result<Service> {
        let free = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut service = Service {
            name: name.into(),
            kind,
            addr: free,
            running: None,
            binaries: Some(binaries),
        };
        service.launch().await?;
        Ok(service)
    }

    /// Peak resident memory of a service running as a process (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        peak_rss_of(&format!("/proc/{}/status", self.pid()?))
    }

    /// Process id of a service running as a process.
    pub fn pid(&self) -> Option<u32> {
        let Some(Running::Process(child)) = &self.running else {
            return None;
        };
        Some(child.id())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Crash: every task of the service is dropped where it stands.
    pub fn kill(&mut self) {
        match self.running.take() {
            Some(Running::InProcess { runtime, token, .. }) => {
                token.cancel();
                runtime.shutdown_background();
            }
            Some(Running::Process(mut child)) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            None => {}
        }
    }

    /// Graceful shutdown: cancel the token and wait (bounded) for `serve` to return.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let (runtime, token, done) = match self.running.take() {
            Some(Running::InProcess {
                runtime,
                token,
                done,
            }) => (runtime, token, done),
            Some(other) => {
                self.running = Some(other);
                self.kill();
                return Ok(());
            }
            None => return Ok(()),
        };
        token.cancel();
        let result = tokio::time::timeout(Duration::from_secs(20), done).await;
        runtime.shutdown_background();
        match result {
            Ok(Ok(served)) => served,
            Ok(Err(_)) => Ok(()),
            Err(_) => Err(anyhow!(
                "{} did not stop within 20 s of cancellation",
                self.name
            )),
        }
    }

    /// Starts a killed or stopped service again on the same address.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.launch().await
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        if let Some(binaries) = self.binaries.clone() {
            return self.launch_process(&binaries).await;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("{}-rt", self.name))
            .enable_all()
            .build()
            .context("build a service runtime")?;
        let token = CancellationToken::new();
        let (bound_tx, bound_rx) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let kind = self.kind.clone();
        let wanted = self.addr;
        let shutdown = token.clone();
        runtime.spawn(async move {
            let listener = match bind_with_retry(wanted).await {
                Ok(l) => l,
                Err(e) => {
                    let _ = bound_tx.send(Err(e));
                    return;
                }
            };
            let addr = listener
                .local_addr()
                .expect("bound listener has an address");
            let _ = bound_tx.send(Ok(addr));
            let served = serve(kind, addr, listener, shutdown).await;
            if let Err(e) = &served {
                tracing::warn!(error = %e, "service ended with an error");
            }
            let _ = done_tx.send(served);
        });
        let addr = match bound_rx.await {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => {
                runtime.shutdown_background();
                return Err(e.context(format!("start {}", self.name)));
            }
            Err(_) => {
                runtime.shutdown_background();
                return Err(anyhow!("{} runtime stopped before binding", self.name));
            }
        };
        self.addr = addr;
        self.running = Some(Running::InProcess {
            runtime,
            token,
            done,
        });
        Ok(())
    }

    async fn launch_process(&mut self, binaries: &std::path::Path) -> anyhow::Result<()> {
        let addr = self.addr.to_string();
        let (binary, args): (&str, Vec<String>) = match &self.kind {
            ServiceKind::Coordinator {
                store,
                lease_seconds,
            } => (
                "dbsync-coordinator",
                vec![
                    "--listen".into(),
                    addr.clone(),
                    "--store".into(),
                    store.to_string_lossy().into_owned(),
                    "--lease-seconds".into(),
                    lease_seconds.to_string(),
                    "--tick-ms".into(),
                    "200".into(),
                ],
            ),
            ServiceKind::Capture { coordinator } => (
                "dbsync-capture",
                vec![
                    "--listen".into(),
                    addr.clone(),
                    "--coordinator".into(),
                    coordinator.clone(),
                    "--advertise-address".into(),
                    format!("http://{addr}"),
                ],
            ),
            ServiceKind::Apply {
                coordinator,
                worker_id,
            } => (
                "dbsync-apply",
                vec![
                    "--listen".into(),
                    addr.clone(),
                    "--coordinator".into(),
                    coordinator.clone(),
                    "--worker-id".into(),
                    worker_id.clone(),
                    "--advertise-address".into(),
                    addr.clone(),
                ],
            ),
        };
        let path = binaries.join(binary);
        let child = std::process::Command::new(&path)
            .args(&args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(std::process::Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "run {} (build it with cargo build --release --bins)",
                    path.display()
                )
            })?;
        self.running = Some(Running::Process(child));
        // Ready when it accepts connections.
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            if Instant::now() > deadline {
                self.kill();
                return Err(anyhow!(
                    "{} did not start listening on {} within 30 s",
                    self.name,
                    self.addr
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

/// VmHWM of a `/proc/<pid>/status` file, in bytes.
pub fn peak_rss_of(status_path: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status_path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve(
    kind: ServiceKind,
    addr: SocketAddr,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> {
    match kind {
        ServiceKind::Coordinator {
            store,
            lease_seconds,
        } => {
            let config = dbsync_coordinator::CoordinatorConfig {
                listen: addr,
                store: store.to_string_lossy().into_owned(),
                lease_seconds,
                tick_ms: 200,
                ..Default::default()
            };
            Box::pin(dbsync_coordinator::serve(config, listener, shutdown))
        }
        ServiceKind::Capture { coordinator } => {
            let config = dbsync_capture::CaptureConfig {
                listen: addr,
                coordinator: Some(coordinator),
                advertise_address: Some(format!("http://{addr}")),
                ..Default::default()
            };
            Box::pin(dbsync_capture::serve(config, listener, shutdown))
        }
        ServiceKind::Apply {
            coordinator,
            worker_id,
        } => {
            let config = dbsync_apply::ApplyConfig {
                coordinator,
                worker_id: Some(worker_id),
                advertise_address: Some(addr.to_string()),
                heartbeat_interval: Duration::from_millis(500),
                ..Default::default()
            };
            Box::pin(dbsync_apply::serve(config, listener, shutdown))
        }
    }
}

/// Binds `addr` with SO_REUSEADDR; a restarted service may have to wait for the old socket of
/// a killed runtime to be released.
async fn bind_with_retry(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let attempt = (|| {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(1024)
        })();
        match attempt {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(anyhow!(e).context(format!("bind {addr}"))),
        }
    }
}
