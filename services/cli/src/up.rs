//! `dbsync up`: the coordinator, one capture and N appliers in one process, wired to each other
//! over loopback gRPC exactly as separate deployments would be. Ctrl-C or SIGTERM stops all.

use std::net::SocketAddr;

use dbsync_core::Secret;
use dbsync_telemetry::CancellationToken;

#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    /// Coordinator gRPC listen address (the CLI's default --coordinator points here).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Capture gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:50061")]
    pub capture_listen: SocketAddr,
    /// How many apply workers to run.
    #[arg(long, default_value_t = 1)]
    pub appliers: usize,
    /// SQLite file of the coordinator's state.
    #[arg(
        long,
        env = "DBSYNC_COORDINATOR_STORE",
        default_value = "dbsync-coordinator.db"
    )]
    pub store: String,
    /// Serve Prometheus /metrics here (one endpoint for all services of the process).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Seconds a worker's lease lasts without a heartbeat.
    #[arg(long, default_value_t = 15)]
    pub lease_seconds: u32,
}

/// Runs until a shutdown signal; fails if any service fails (stopping the others).
pub async fn run(args: UpArgs, token: Option<String>) -> anyhow::Result<()> {
    dbsync_telemetry::init_tracing("dbsync");
    if let Some(addr) = args.metrics_listen {
        dbsync_telemetry::install_metrics(addr)?;
    }
    let shutdown = dbsync_telemetry::shutdown_on_signal();
    let services = start(args, token.map(Secret::new), shutdown.clone()).await?;
    services.wait(shutdown).await
}

/// The running services of `dbsync up`.
pub struct Services {
    pub coordinator_url: String,
    pub capture_url: String,
    tasks: tokio::task::JoinSet<(String, anyhow::Result<()>)>,
}

fn spawn_named(
    tasks: &mut tokio::task::JoinSet<(String, anyhow::Result<()>)>,
    name: String,
    service: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
) {
    tasks.spawn(async move { (name, service.await) });
}

/// Binds every listener first (so address errors surface before anything runs), then starts
/// coordinator, capture and appliers.
pub async fn start(
    args: UpArgs,
    token: Option<Secret>,
    shutdown: CancellationToken,
) -> anyhow::Result<Services> {
    let bind = |addr: SocketAddr, what: &'static str| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for the {what}: {e}"))
    };
    let coordinator_listener = bind(args.listen, "coordinator").await?;
    let capture_listener = bind(args.capture_listen, "capture service").await?;
    let coordinator_url = format!("http://{}", coordinator_listener.local_addr()?);
    let capture_url = format!("http://{}", capture_listener.local_addr()?);
    let mut tasks = tokio::task::JoinSet::new();

    let coordinator = dbsync_coordinator::CoordinatorConfig {
        listen: args.listen,
        store: args.store.clone(),
        lease_seconds: args.lease_seconds,
        auth_token: token.clone(),
        metrics_listen: None,
        ..Default::default()
    };
    spawn_named(
        &mut tasks,
        "coordinator".into(),
        dbsync_coordinator::serve(coordinator, coordinator_listener, shutdown.clone()),
    );

    let capture = dbsync_capture::CaptureConfig {
        listen: args.capture_listen,
        coordinator: Some(coordinator_url.clone()),
        advertise_address: Some(capture_url.clone()),
        metrics_listen: None,
        auth_token: token.clone(),
    };
    spawn_named(
        &mut tasks,
        "capture".into(),
        dbsync_capture::serve(capture, capture_listener, shutdown.clone()),
    );

    for i in 0..args.appliers.max(1) {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)), "apply worker").await?;
        let apply = dbsync_apply::ApplyConfig {
            coordinator: coordinator_url.clone(),
            worker_id: Some(format!("apply-local-{}", i + 1)),
            auth_token: token.clone(),
            ..Default::default()
        };
        spawn_named(
            &mut tasks,
            format!("apply worker {}", i + 1),
            dbsync_apply::serve(apply, listener, shutdown.clone()),
        );
    }
    tracing::info!(coordinator = %coordinator_url, capture = %capture_url, appliers = args.appliers.max(1), "dbsync up: all services started");
    Ok(Services {
        coordinator_url,
        capture_url,
        tasks,
    })
}

impl Services {
    /// Waits for every service; the first failure cancels the rest and is returned.
    pub async fn wait(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            let outcome = match joined {
                Ok((_, Ok(()))) => Ok(()),
                Ok((name, Err(e))) => Err(anyhow::anyhow!("{name} failed: {e:#}")),
                Err(e) => Err(anyhow::anyhow!("a service panicked: {e}")),
            };
            if let Err(e) = outcome {
                tracing::error!(error = %e, "stopping all services");
                shutdown.cancel();
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
