//! End-to-end lag: source commit → applied on the target, as the coordinator reports it.
//!
//! Every `interval` the probe notes the source's latest commit LSN with the time it saw it,
//! and the task's applied LSN (the minimum over its tables); a noted LSN's lag is the time
//! until the applied LSN reaches it. The resolution is the probe interval plus how often
//! appliers report progress.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::TestEnv;

/// Lag samples in milliseconds, sorted.
#[derive(Clone, Debug, Default)]
pub struct LagStats {
    pub samples_ms: Vec<f64>,
    /// Source positions seen but never applied before the probe stopped.
    pub unconfirmed: usize,
}

impl LagStats {
    pub fn percentile(&self, p: f64) -> Option<f64> {
        if self.samples_ms.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * (self.samples_ms.len() - 1) as f64).round() as usize;
        Some(self.samples_ms[rank.min(self.samples_ms.len() - 1)])
    }

    pub fn summary(&self) -> String {
        match (self.percentile(50.0), self.percentile(99.0)) {
            (Some(p50), Some(p99)) => format!(
                "p50 {p50:.0} ms, p99 {p99:.0} ms ({} samples)",
                self.samples_ms.len()
            ),
            _ => "no samples".to_string(),
        }
    }
}

/// Samples lag until `stop` is cancelled, then keeps going (up to `drain`) until every noted
/// position that CDC captured has been applied.
pub async fn measure_lag(
    env: &TestEnv,
    task: &str,
    database: &str,
    interval: Duration,
    drain: Duration,
    stop: CancellationToken,
) -> LagStats {
    let mut pending: VecDeque<(Vec<u8>, Instant)> = VecDeque::new();
    let mut stats = LagStats::default();
    let mut last_noted: Vec<u8> = Vec::new();
    let mut drain_deadline: Option<Instant> = None;
    loop {
        let stopping = stop.is_cancelled();
        if stopping && drain_deadline.is_none() {
            drain_deadline = Some(Instant::now() + drain);
        }
        if !stopping {
            if let Some(lsn) = env.standin.engine.current_lsn(database) {
                let bytes = lsn.to_bytes().to_vec();
                if bytes != last_noted {
                    pending.push_back((bytes.clone(), Instant::now()));
                    last_noted = bytes;
                }
            }
        }
        if let Ok(status) = env.status(task).await {
            let applied = status.applied_lsn;
            let now = Instant::now();
            while pending
                .front()
                .is_some_and(|(lsn, _)| !applied.is_empty() && *lsn <= applied)
            {
                let (_, seen) = pending.pop_front().expect("front exists");
                stats
                    .samples_ms
                    .push(now.duration_since(seen).as_secs_f64() * 1000.0);
            }
        }
        if stopping {
            // Positions above what CDC captured (rolled-back or untracked work) never apply.
            let captured = env.standin.max_lsn(database).unwrap_or_default();
            pending.retain(|(lsn, _)| *lsn <= captured);
            if pending.is_empty() || drain_deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        tokio::time::sleep(interval).await;
    }
    stats.unconfirmed = pending.len();
    stats.samples_ms.sort_by(|a, b| a.total_cmp(b));
    stats
}
