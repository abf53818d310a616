//! Registration with the coordinator: `WorkerService.Register` (kind `capture`), then a
//! heartbeat every few seconds. Heartbeat responses carry per-task throttles, which replace
//! the running ones; `reregister` (the coordinator restarted) starts over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dbsync_core::Secret;
use dbsync_proto::v1::worker_service_client::WorkerServiceClient;
use dbsync_proto::v1::{HeartbeatRequest, RegisterRequest};
use dbsync_telemetry::CancellationToken;
use tonic::transport::Channel;

use crate::throttle::Phase;
use crate::CaptureState;

/// Seconds between heartbeats.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);

/// The address to advertise when none is configured.
pub fn default_advertise(local: SocketAddr) -> String {
    let host = if local.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        local.ip().to_string()
    };
    format!("http://{host}:{}", local.port())
}

fn request<T>(message: T, token: &Option<Secret>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Some(t) = token {
        if let Ok(v) = format!("Bearer {}", t.expose()).parse() {
            req.metadata_mut().insert("authorization", v);
        }
    }
    req
}

async fn register(
    client: &mut WorkerServiceClient<Channel>,
    address: &str,
    token: &Option<Secret>,
) -> Result<String, tonic::Status> {
    let resp = client
        .register(request(
            RegisterRequest {
                kind: "capture".into(),
                address: address.to_string(),
                worker_id: String::new(),
            },
            token,
        ))
        .await?
        .into_inner();
    tracing::info!(worker_id = %resp.worker_id, %address, "registered with the coordinator");
    Ok(resp.worker_id)
}

/// Runs until `shutdown`: register, heartbeat, apply throttles; retries every failure.
pub async fn run(
    coordinator: String,
    address: String,
    token: Option<Secret>,
    state: Arc<CaptureState>,
    shutdown: CancellationToken,
) {
    let endpoint = match Channel::from_shared(coordinator.clone()) {
        Ok(e) => e.connect_timeout(Duration::from_secs(5)),
        Err(e) => {
            tracing::error!(%coordinator, error = %e, "invalid coordinator URL: registration disabled");
            return;
        }
    };
    let mut client = WorkerServiceClient::new(dbsync_telemetry::connect_lazy(endpoint));
    let mut worker_id: Option<String> = None;
    loop {
        let step = async {
            let id = match &worker_id {
                Some(id) => id.clone(),
                None => register(&mut client, &address, &token).await?,
            };
            worker_id = Some(id.clone());
            let resp = client
                .heartbeat(request(HeartbeatRequest { worker_id: id }, &token))
                .await?
                .into_inner();
            if resp.reregister {
                tracing::info!("coordinator asked to register again");
                worker_id = None;
            }
            for t in resp.throttles {
                if let Some(full) = t.full {
                    state.throttles.update(&t.task_id, Phase::Full, full);
                }
                if let Some(inc) = t.incremental {
                    state.throttles.update(&t.task_id, Phase::Incremental, inc);
                }
            }
            Ok::<(), tonic::Status>(())
        };
        if let Err(status) = step.await {
            tracing::warn!(%coordinator, code = ?status.code(), message = status.message(), "coordinator heartbeat failed; retrying");
            if status.code() == tonic::Code::NotFound {
                worker_id = None;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
        }
    }
}
