//! Per-task throttles on the source: queries/s, rows/s and MB/s, as `governor` token buckets.
//!
//! Each task has one [`TaskThrottle`] for its full-sync reads and one for its change stream.
//! Settings come from the request that starts the work and are replaced while it runs when
//! the coordinator's heartbeat carries new ones ([`Throttles::update`]). Buckets allow a
//! burst of one second's worth, so a limit is exact over any window longer than a second.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dbsync_proto::v1::Throttle;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::{Mutex, RwLock};

/// Bytes are counted in KiB so that one second of a large MB/s limit fits in a u32 burst.
const BYTES_PER_CELL: u64 = 1024;

struct Buckets {
    settings: Throttle,
    queries: Option<DefaultDirectRateLimiter>,
    rows: Option<DefaultDirectRateLimiter>,
    kib: Option<DefaultDirectRateLimiter>,
}

fn bucket(per_second: f64) -> Option<DefaultDirectRateLimiter> {
    if !(per_second.is_finite() && per_second > 0.0) {
        return None;
    }
    let burst = NonZeroU32::new(per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32)?;
    let period = Duration::from_secs_f64(1.0 / per_second);
    Quota::with_period(period).map(|q| RateLimiter::direct(q.allow_burst(burst)))
}

impl Buckets {
    fn new(settings: Throttle) -> Buckets {
        Buckets {
            queries: bucket(settings.queries_per_second),
            rows: bucket(settings.rows_per_second),
            kib: bucket(settings.megabytes_per_second * 1024.0),
            settings,
        }
    }
}

/// Which bucket of [`Buckets`] a wait draws from.
#[derive(Clone, Copy)]
enum Kind {
    Queries,
    Rows,
    Kib,
}

impl Buckets {
    fn limiter(&self, kind: Kind) -> Option<(&DefaultDirectRateLimiter, u64)> {
        let (limiter, per_second) = match kind {
            Kind::Queries => (&self.queries, self.settings.queries_per_second),
            Kind::Rows => (&self.rows, self.settings.rows_per_second),
            Kind::Kib => (&self.kib, self.settings.megabytes_per_second * 1024.0),
        };
        limiter.as_ref().map(|l| (l, per_second.ceil() as u64))
    }
}

/// The live throttle of one task and phase. Cheap to clone.
#[derive(Clone)]
pub struct TaskThrottle {
    buckets: Arc<RwLock<Arc<Buckets>>>,
}

impl TaskThrottle {
    pub fn new(settings: Throttle) -> TaskThrottle {
        TaskThrottle {
            buckets: Arc::new(RwLock::new(Arc::new(Buckets::new(settings)))),
        }
    }

    /// An unlimited throttle.
    pub fn unlimited() -> TaskThrottle {
        TaskThrottle::new(Throttle::default())
    }

    /// Replaces the limits (no-op when unchanged, so buckets keep their state).
    pub fn set(&self, settings: Throttle) {
        let mut b = self.buckets.write();
        if b.settings != settings {
            *b = Arc::new(Buckets::new(settings));
        }
    }

    pub fn settings(&self) -> Throttle {
        self.buckets.read().settings
    }

    fn current(&self) -> Arc<Buckets> {
        Arc::clone(&self.buckets.read())
    }

    /// Waits for one source query.
    pub async fn query(&self) {
        self.take(Kind::Queries, 1).await;
    }

    /// Waits for `rows` rows and `bytes` bytes.
    pub async fn rows_and_bytes(&self, rows: u64, bytes: u64) {
        self.take(Kind::Rows, rows).await;
        self.take(Kind::Kib, bytes.div_ceil(BYTES_PER_CELL)).await;
    }

    /// Waits until `n` cells are available, in pieces no larger than the burst. Each piece
    /// reads the current limits, so a change from the coordinator applies to a large batch
    /// that is already waiting, not only to the next one.
    async fn take(&self, kind: Kind, mut n: u64) {
        while n > 0 {
            let buckets = self.current();
            let Some((limiter, burst)) = buckets.limiter(kind) else {
                return;
            };
            let piece = n.min(burst.max(1));
            let cells = NonZeroU32::new(u32::try_from(piece).unwrap_or(u32::MAX))
                .unwrap_or(NonZeroU32::MIN);
            // InsufficientCapacity cannot happen: piece <= burst.
            let _ = limiter.until_n_ready(cells).await;
            n -= piece;
        }
    }
}

/// Which work a throttle limits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Phase {
    Full,
    Incremental,
}

/// All task throttles of the process.
#[derive(Default)]
pub struct Throttles {
    /// The throttle of each task and phase, and whether the coordinator has set it.
    tasks: Mutex<HashMap<(String, Phase), (TaskThrottle, bool)>>,
}

impl Throttles {
    /// The task's throttle, created with `settings` or updated to them when they are set —
    /// unless the coordinator has set this task's limits: its heartbeats are the authority,
    /// since an applier's request may carry limits from before a ModifyTask (a request with
    /// no limits keeps the current ones too).
    pub fn for_task(
        &self,
        task_id: &str,
        phase: Phase,
        settings: Option<Throttle>,
    ) -> TaskThrottle {
        let mut tasks = self.tasks.lock();
        let (t, from_coordinator) = tasks
            .entry((task_id.to_string(), phase))
            .or_insert_with(|| (TaskThrottle::new(settings.unwrap_or_default()), false))
            .clone();
        if let Some(s) = settings.filter(|s| *s != Throttle::default() && !from_coordinator) {
            t.set(s);
        }
        t
    }

    /// New settings from the coordinator.
    pub fn update(&self, task_id: &str, phase: Phase, settings: Throttle) {
        let mut tasks = self.tasks.lock();
        let entry = tasks
            .entry((task_id.to_string(), phase))
            .or_insert_with(|| (TaskThrottle::new(settings), true));
        entry.1 = true;
        entry.0.set(settings);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn rows_per_second_limits_a_stream() {
        let t = TaskThrottle::new(Throttle {
            rows_per_second: 1000.0,
            ..Default::default()
        });
        let start = Instant::now();
        // burst of 1000, then 1000 more need about one second
        for _ in 0..20 {
            t.rows_and_bytes(100, 0).await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    }

    #[tokio::test]
    async fn unlimited_never_waits_and_updates_apply() {
        let throttles = Throttles::default();
        let t = throttles.for_task("t1", Phase::Full, None);
        let start = Instant::now();
        t.rows_and_bytes(10_000_000, 10_000_000_000).await;
        t.query().await;
        assert!(start.elapsed() < Duration::from_millis(100));
        throttles.update(
            "t1",
            Phase::Full,
            Throttle {
                queries_per_second: 5.0,
                ..Default::default()
            },
        );
        assert_eq!(t.settings().queries_per_second, 5.0);
        let same = throttles.for_task("t1", Phase::Full, None);
        assert_eq!(same.settings().queries_per_second, 5.0);
    }

    #[tokio::test]
    async fn the_coordinator_s_limits_beat_older_limits_in_requests() {
        let throttles = Throttles::default();
        let old = Throttle {
            rows_per_second: 10.0,
            ..Default::default()
        };
        // Before any heartbeat, a request's limits apply.
        assert_eq!(
            throttles
                .for_task("t1", Phase::Incremental, Some(old))
                .settings(),
            old
        );
        // A ModifyTask raised the limit; the applier's next request still carries the old one.
        let new = Throttle {
            rows_per_second: 5000.0,
            ..Default::default()
        };
        throttles.update("t1", Phase::Incremental, new);
        let t = throttles.for_task("t1", Phase::Incremental, Some(old));
        assert_eq!(t.settings(), new);
    }

    #[tokio::test]
    async fn a_raised_limit_speeds_up_a_batch_that_is_already_waiting() {
        let throttles = Arc::new(Throttles::default());
        throttles.update(
            "t1",
            Phase::Incremental,
            Throttle {
                rows_per_second: 10.0,
                ..Default::default()
            },
        );
        let t = throttles.for_task("t1", Phase::Incremental, None);
        let start = Instant::now();
        // 200 rows at 10 rows/s would take about 19 s.
        let waiting = tokio::spawn(async move { t.rows_and_bytes(200, 0).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        throttles.update(
            "t1",
            Phase::Incremental,
            Throttle {
                rows_per_second: 100_000.0,
                ..Default::default()
            },
        );
        waiting.await.unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }
}
