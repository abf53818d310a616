//! Waiting for a condition with a deadline (never a bare sleep standing in for a condition).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::anyhow;

/// Polls `probe` every 100 ms until it returns `Ok(Ok(value))`. `Ok(Err(state))` means "not
/// yet" and describes the state seen; `Err` stops at once. On timeout, the error names what
/// was awaited and the last state seen.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Result<T, String>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last: String;
    loop {
        match probe().await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(state)) => last = state,
            Err(e) if Instant::now() < deadline && is_transient(&e) => last = format!("{e:#}"),
            Err(e) => return Err(e.context(format!("while waiting for {what}"))),
        }
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "timed out after {timeout:?} waiting for {what}; last state:\n{last}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Connection errors while a service restarts are part of what tests exercise.
fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<tonic::Status>()
            .is_some_and(|s| s.code() == tonic::Code::Unavailable)
            || c.downcast_ref::<tonic::transport::Error>().is_some()
    })
}
