//! The capture job in agent mode: a background thread that wakes every polling interval and
//! runs up to `maxscans` scans of `maxtrans` transactions per database, writing an idle
//! mapping row when a cycle found nothing.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{capture, CaptureMode, Cdc};

/// How long the thread sleeps when no database is in agent mode (it is woken on changes).
const IDLE_WAIT: Duration = Duration::from_millis(500);

#[derive(Default)]
pub(super) struct AgentHandle {
    signal: Arc<(Mutex<bool>, Condvar)>,
}

impl AgentHandle {
    pub fn wake(&self) {
        let (flag, cv) = &*self.signal;
        *flag.lock() = true;
        cv.notify_all();
    }
}

pub(super) fn start(cdc: &Arc<Cdc>) {
    let weak: Weak<Cdc> = Arc::downgrade(cdc);
    let signal = cdc.agent.signal.clone();
    let spawned = std::thread::Builder::new()
        .name("cdc-capture-agent".into())
        .spawn(move || run(weak, signal));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the CDC capture agent thread; agent mode will not capture");
    }
}

fn run(weak: Weak<Cdc>, signal: Arc<(Mutex<bool>, Condvar)>) {
    let mut next_due: HashMap<i32, Instant> = HashMap::new();
    loop {
        let wait = {
            let Some(cdc) = weak.upgrade() else { return };
            let Some(engine) = cdc.engine() else { return };
            let config = cdc.config();
            let now = Instant::now();
            let mut wait = IDLE_WAIT;
            for state in cdc.all_states() {
                let (id, mode, running, jobs) = {
                    let s = state.lock();
                    (s.database_id, s.mode, s.capture_running, s.jobs.clone())
                };
                if mode != CaptureMode::Agent || !running {
                    next_due.remove(&id);
                    continue;
                }
                let interval = config
                    .agent_poll_override
                    .unwrap_or(Duration::from_secs(jobs.pollinginterval.max(0) as u64));
                let due = *next_due.entry(id).or_insert(now);
                if due <= now {
                    let mut captured = 0;
                    for _ in 0..jobs.maxscans.max(1) {
                        let outcome =
                            capture::scan(&engine, &state, jobs.maxtrans.max(1) as usize, false);
                        captured += outcome.transactions;
                        if outcome.transactions < jobs.maxtrans.max(1) as usize {
                            break;
                        }
                    }
                    if captured == 0 && config.heartbeat_on_idle_cycle {
                        capture::heartbeat(&engine, &state);
                    }
                    next_due.insert(id, now + interval);
                    wait = wait.min(interval);
                } else {
                    wait = wait.min(due - now);
                }
            }
            wait
        };
        let (flag, cv) = &*signal;
        let mut woken = flag.lock();
        if !*woken {
            cv.wait_for(&mut woken, wait.max(Duration::from_millis(1)));
        }
        *woken = false;
    }
}
