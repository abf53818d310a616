//! Per-table progress: what the applier reports to the coordinator (phase, rows, bytes,
//! chunks, changes, applied LSN and source time for lag, errors with their class).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use dbsync_core::ErrorClass;
use dbsync_proto::v1::{TablePhase, TableProgress, TableRef};

/// Where progress goes: the coordinator reporter in the service, a [`ProgressBoard`] in tests.
pub trait ProgressSink: Send + Sync + 'static {
    /// The latest state of one table (a full snapshot, not a delta).
    fn table(&self, progress: TableProgress);
    /// A failure of the whole assignment.
    fn task_error(&self, message: String, class: ErrorClass);
}

impl<T: ProgressSink + ?Sized> ProgressSink for Arc<T> {
    fn table(&self, progress: TableProgress) {
        (**self).table(progress)
    }
    fn task_error(&self, message: String, class: ErrorClass) {
        (**self).task_error(message, class)
    }
}

/// The latest progress of each table, keyed by `database.schema.table`.
#[derive(Default)]
pub struct ProgressBoard {
    tables: Mutex<BTreeMap<String, TableProgress>>,
    task_error: Mutex<Option<(String, ErrorClass)>>,
    changed: tokio::sync::Notify,
}

impl ProgressBoard {
    pub fn snapshot(&self) -> Vec<TableProgress> {
        self.tables
            .lock()
            .expect("progress lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn get(&self, source_table: &str) -> Option<TableProgress> {
        self.tables
            .lock()
            .expect("progress lock")
            .get(source_table)
            .cloned()
    }

    pub fn task_error(&self) -> Option<(String, ErrorClass)> {
        self.task_error.lock().expect("progress lock").clone()
    }

    /// The assignment works again: no failure to report any more.
    pub fn clear_task_error(&self) {
        *self.task_error.lock().expect("progress lock") = None;
        self.changed.notify_waiters();
    }

    /// Waits for the next update.
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

impl ProgressSink for ProgressBoard {
    fn table(&self, progress: TableProgress) {
        let key = progress
            .source
            .as_ref()
            .map(crate::plan::source_name)
            .unwrap_or_default();
        self.tables
            .lock()
            .expect("progress lock")
            .insert(key, progress);
        self.changed.notify_waiters();
    }

    fn task_error(&self, message: String, class: ErrorClass) {
        *self.task_error.lock().expect("progress lock") = Some((message, class));
        self.changed.notify_waiters();
    }
}

/// Progress of one table inside an assignment; every update is published at once.
pub struct TableTracker {
    state: Mutex<TableProgress>,
    sink: Arc<dyn ProgressSink>,
}

impl TableTracker {
    pub fn new(source: TableRef, sink: Arc<dyn ProgressSink>) -> TableTracker {
        TableTracker {
            state: Mutex::new(TableProgress {
                source: Some(source),
                phase: TablePhase::Pending as i32,
                ..Default::default()
            }),
            sink,
        }
    }

    /// Changes the state with `f` and publishes it.
    pub fn update(&self, f: impl FnOnce(&mut TableProgress)) {
        let snapshot = {
            let mut s = self.state.lock().expect("progress lock");
            f(&mut s);
            s.clone()
        };
        self.sink.table(snapshot);
    }

    pub fn phase(&self, phase: TablePhase) {
        self.update(|p| {
            p.phase = phase as i32;
            if phase != TablePhase::Failed {
                p.error.clear();
            }
        });
    }

    pub fn current(&self) -> TableProgress {
        self.state.lock().expect("progress lock").clone()
    }
}

/// `connection` | `transient` | `definite`, as `TableProgress.error_class` expects.
pub fn class_name(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Connection => "connection",
        ErrorClass::Transient => "transient",
        ErrorClass::Definite => "definite",
    }
}
