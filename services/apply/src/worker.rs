//! The worker loop: register with the coordinator, heartbeat, run the assignments it hands
//! out (one task per assignment, restarted when its generation changes), report progress.
//!
//! Retries: a failed assignment is retried with capped exponential back-off (1 s doubling to
//! 60 s) while its error is retryable (connection or transient); a definite error is reported
//! and the assignment stays stopped until the coordinator changes its generation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dbsync_core::error::Classify;
use dbsync_proto::v1::worker_service_client::WorkerServiceClient;
use dbsync_proto::v1::{Assignment, HeartbeatRequest, RegisterRequest, ReportProgressRequest};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::assignment::{run_assignment, AssignmentOutcome, RunOptions};
use crate::capture::{connect_channel, AuthInterceptor};
use crate::error::ApplyError;
use crate::progress::ProgressBoard;
use crate::stream::adopt_followed_schemas;
use crate::ApplyConfig;

type WorkerClient = WorkerServiceClient<InterceptedService<Channel, AuthInterceptor>>;

struct Running {
    generation: u64,
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

/// Runs until `shutdown`; coordinator outages are waited out.
pub async fn run_worker(config: ApplyConfig, address: String, shutdown: CancellationToken) {
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut backoff = Duration::from_millis(500);
    'connect: while !shutdown.is_cancelled() {
        let mut client = match connect_coordinator(&config).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "coordinator not reachable; retrying");
                if sleep_or_cancel(backoff, &shutdown).await {
                    break;
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        let mut worker_id = config.worker_id.clone().unwrap_or_default();
        match client
            .register(RegisterRequest {
                kind: "apply".into(),
                address: address.clone(),
                worker_id: worker_id.clone(),
            })
            .await
        {
            Ok(r) => {
                worker_id = r.into_inner().worker_id;
                tracing::info!(worker_id = %worker_id, "registered with the coordinator");
                backoff = Duration::from_millis(500);
            }
            Err(status) => {
                tracing::warn!(error = %status.message(), "registration failed; retrying");
                if sleep_or_cancel(backoff, &shutdown).await {
                    break 'connect;
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue 'connect;
            }
        }
        loop {
            let response = match client
                .heartbeat(HeartbeatRequest {
                    worker_id: worker_id.clone(),
                })
                .await
            {
                Ok(r) => r.into_inner(),
                Err(status) => {
                    tracing::warn!(error = %status.message(), "heartbeat failed; reconnecting");
                    if sleep_or_cancel(Duration::from_secs(1), &shutdown).await {
                        break 'connect;
                    }
                    continue 'connect;
                }
            };
            if response.reregister {
                tracing::info!("coordinator asked to register again");
                match client
                    .register(RegisterRequest {
                        kind: "apply".into(),
                        address: address.clone(),
                        worker_id: worker_id.clone(),
                    })
                    .await
                {
                    Ok(r) => worker_id = r.into_inner().worker_id,
                    Err(status) => tracing::warn!(error = %status.message(), "registration failed"),
                }
            }
            reconcile(
                &mut running,
                response.assignments,
                &client,
                &worker_id,
                &config,
                &shutdown,
            );
            if sleep_or_cancel(config.heartbeat_interval, &shutdown).await {
                break 'connect;
            }
        }
    }
    for (_, r) in running.drain() {
        r.cancel.cancel();
        let _ = r.handle.await;
    }
}

async fn connect_coordinator(config: &ApplyConfig) -> Result<WorkerClient, ApplyError> {
    let channel =
        connect_channel(&config.coordinator)
            .await
            .map_err(|e| ApplyError::Coordinator {
                address: config.coordinator.clone(),
                detail: e.to_string(),
            })?;
    Ok(WorkerServiceClient::with_interceptor(
        channel,
        AuthInterceptor::new(config.auth_token.as_ref()),
    ))
}

/// True when cancelled.
async fn sleep_or_cancel(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.cancelled() => true,
    }
}

fn assignment_key(a: &Assignment) -> String {
    format!("{}/{}", a.task_id, a.group_id)
}

/// Starts new or changed assignments, stops removed or paused ones.
fn reconcile(
    running: &mut HashMap<String, Running>,
    assignments: Vec<Assignment>,
    client: &WorkerClient,
    worker_id: &str,
    config: &ApplyConfig,
    shutdown: &CancellationToken,
) {
    let wanted: HashMap<String, Assignment> = assignments
        .into_iter()
        .filter(|a| !a.paused)
        .map(|a| (assignment_key(&a), a))
        .collect();
    running.retain(|key, r| {
        // A finished assignment (completed, or stopped by a definite error) stays until the
        // coordinator changes its generation, so it is not restarted every heartbeat.
        let keep = wanted
            .get(key)
            .is_some_and(|a| a.generation == r.generation);
        if !keep {
            tracing::info!(assignment = %key, "stopping assignment");
            r.cancel.cancel();
        }
        keep
    });
    for (key, a) in wanted {
        if running.contains_key(&key) {
            continue;
        }
        tracing::info!(assignment = %key, generation = a.generation, tables = a.tables.len(), "starting assignment");
        let cancel = shutdown.child_token();
        let generation = a.generation;
        let handle = tokio::spawn(supervise(
            a,
            client.clone(),
            worker_id.to_string(),
            config.clone(),
            cancel.clone(),
        ));
        running.insert(
            key,
            Running {
                generation,
                cancel,
                handle,
            },
        );
    }
}

/// Runs an assignment with retries and reports its progress every second and on change.
async fn supervise(
    assignment: Assignment,
    client: WorkerClient,
    worker_id: String,
    config: ApplyConfig,
    cancel: CancellationToken,
) {
    let board = Arc::new(ProgressBoard::default());
    let reporter = Reporter {
        board: Arc::clone(&board),
        client,
        worker_id,
        task_id: assignment.task_id.clone(),
        generation: assignment.generation,
    };
    let reporting = tokio::spawn(reporter.clone().run(cancel.clone()));
    let options = RunOptions {
        max_parallel_chunks: config.max_parallel_chunks,
        auth_token: config.auth_token.clone(),
    };
    let mut backoff = Duration::from_secs(1);
    let mut failing = false;
    loop {
        let attempt = async {
            let mut assignment = assignment.clone();
            adopt_followed_schemas(&mut assignment).await?;
            run_assignment(assignment, &options, board.clone(), cancel.clone()).await
        };
        let result = if failing {
            recover_or_fail(attempt, &board).await
        } else {
            attempt.await
        };
        match result {
            Ok(outcome) => {
                tracing::info!(task_id = %assignment.task_id, ?outcome, "assignment finished");
                board.clear_task_error();
                break;
            }
            Err(ApplyError::Cancelled) => break,
            Err(e) => {
                let class = e.class();
                tracing::error!(task_id = %assignment.task_id, error = %e, ?class, "assignment failed");
                crate::progress::ProgressSink::task_error(&*board, e.to_string(), class);
                failing = true;
                if !class.is_retryable() || sleep_or_cancel(backoff, &cancel).await {
                    break;
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
    // The final state (done, or the error) is always reported.
    reporting.abort();
    reporter.clone().send().await;
}

/// Awaits a retry of a failed assignment. The error stays reported (so the coordinator keeps
/// counting the failure episode against its retry window) until the retry shows that the
/// whole data path works again: a table of this attempt reaches catch-up, streaming or done,
/// or loads more rows than before. Then the error is cleared and the episode ends.
async fn recover_or_fail(
    attempt: impl std::future::Future<Output = Result<AssignmentOutcome, ApplyError>>,
    board: &ProgressBoard,
) -> Result<AssignmentOutcome, ApplyError> {
    use dbsync_proto::v1::TablePhase;
    let rows_before: HashMap<String, u64> = board
        .snapshot()
        .into_iter()
        .map(|p| (table_key(&p), p.rows_done))
        .collect();
    let recovered = || {
        board.snapshot().iter().any(|p| {
            let phase = TablePhase::try_from(p.phase).unwrap_or(TablePhase::Unspecified);
            p.error.is_empty()
                && (matches!(
                    phase,
                    TablePhase::CatchingUp | TablePhase::Streaming | TablePhase::Done
                ) || p.rows_done > rows_before.get(&table_key(p)).copied().unwrap_or(0))
        })
    };
    tokio::pin!(attempt);
    loop {
        tokio::select! {
            result = &mut attempt => return result,
            _ = board.changed() => {
                if recovered() {
                    tracing::info!("assignment recovered; clearing its error");
                    board.clear_task_error();
                    return attempt.await;
                }
            }
        }
    }
}

fn table_key(p: &dbsync_proto::v1::TableProgress) -> String {
    p.source
        .as_ref()
        .map(crate::plan::source_name)
        .unwrap_or_default()
}

/// Sends an assignment's progress to the coordinator.
#[derive(Clone)]
struct Reporter {
    board: Arc<ProgressBoard>,
    client: WorkerClient,
    worker_id: String,
    task_id: String,
    generation: u64,
}

impl Reporter {
    async fn send(mut self) -> Self {
        let error = self.board.task_error();
        let request = ReportProgressRequest {
            worker_id: self.worker_id.clone(),
            task_id: self.task_id.clone(),
            generation: self.generation,
            tables: self.board.snapshot(),
            task_error: error.as_ref().map(|e| e.0.clone()).unwrap_or_default(),
            task_error_transient: error.as_ref().map(|e| e.1.is_retryable()).unwrap_or(false),
            task_error_class: error
                .map(|e| crate::progress::class_name(e.1).to_string())
                .unwrap_or_default(),
        };
        if let Err(status) = self.client.report_progress(request).await {
            tracing::debug!(error = %status.message(), "progress report failed");
        }
        self
    }

    /// Every second, and shortly after each change.
    async fn run(mut self, cancel: CancellationToken) {
        loop {
            self = self.send().await;
            tokio::select! {
                _ = self.board.changed() => tokio::time::sleep(Duration::from_millis(200)).await,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }
}
