//! Metric names the coordinator exports (Prometheus style, base units).

/// Gauge: tasks per state (label `state`).
pub const TASKS: &str = "dbsync_coordinator_tasks";
/// Gauge: rows copied by full sync per table (labels `task`, `table`).
pub const TABLE_ROWS: &str = "dbsync_coordinator_table_rows";
/// Gauge: bytes copied per table.
pub const TABLE_BYTES: &str = "dbsync_coordinator_table_bytes";
/// Gauge: changes applied per table by incremental sync.
pub const TABLE_CHANGES: &str = "dbsync_coordinator_table_changes_applied";
/// Gauge: lag per table in seconds (source commit time of the last applied change to now).
pub const TABLE_LAG: &str = "dbsync_coordinator_table_lag_seconds";
/// Gauge: the largest table lag of a task.
pub const TASK_LAG: &str = "dbsync_coordinator_task_lag_seconds";
/// Counter: errors reported by workers (labels `task`, `table`, `class`).
pub const ERRORS: &str = "dbsync_coordinator_errors_total";
/// Counter: alerts raised (labels `task`, `kind`).
pub const ALERTS: &str = "dbsync_coordinator_alerts_total";
/// Gauge: live workers per kind.
pub const WORKERS: &str = "dbsync_coordinator_workers";
