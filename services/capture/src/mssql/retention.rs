//! Retention headroom: how long until the CDC cleanup job removes the change data a stream
//! still needs. Gauge `dbsync_capture_retention_headroom_seconds{task,table}` = commit time of
//! the stream's position + the cleanup job's retention − now; a warning when it falls below
//! a tenth of the retention, before the stream overruns it (and a table needs a re-snapshot).
//! A timer task per stream ([`spawn_timer`]) refreshes it on its own pooled connection, so it
//! stays current while the stream is busy (a long window, a throttle wait, a slow applier).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dbsync_core::Lsn;
use tiberius::ColumnData;

use crate::error::Result;
use crate::mssql::client::{SourcePool, SqlClient};
use crate::mssql::inspect::{self, get_ticks, query_rows};

/// The gauge is refreshed this often per stream (two cheap queries).
pub const UPDATE_EVERY: Duration = Duration::from_secs(5);
/// `msdb.dbo.cdc_jobs` is read at most this often per stream.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// Ticks (100 ns) per second.
const TICKS_PER_SECOND: i64 = 10_000_000;

/// Seconds until change data committed at `position_time` is past `retention`, at `now`
/// (all three in the same clock; times in ticks). Negative once the cleanup job may have
/// removed it.
pub fn retention_headroom(position_ticks: i64, retention: Duration, now_ticks: i64) -> f64 {
    // Differences first, in integers: tick counts are too large for f64 to keep 100 ns.
    let retention_ticks = i64::try_from(retention.as_nanos() / 100).unwrap_or(i64::MAX);
    let left = position_ticks
        .saturating_sub(now_ticks)
        .saturating_add(retention_ticks);
    left as f64 / TICKS_PER_SECOND as f64
}

/// The commit time of `lsn` and the server's time, both server-local.
/// <https://learn.microsoft.com/sql/relational-databases/system-functions/sys-fn-cdc-map-lsn-to-time-transact-sql>
pub const POSITION_TIME_QUERY: &str =
    "SELECT sys.fn_cdc_map_lsn_to_time(@P1) AS commit_time, SYSDATETIME() AS now_local";

/// `(commit time of lsn, now)` in server-local ticks; None when the LSN has no mapped time.
pub async fn position_time(client: &mut SqlClient, lsn: Lsn) -> Result<Option<(i64, i64)>> {
    let l = ColumnData::Binary(Some(lsn.as_bytes().to_vec().into()));
    let rows = query_rows(
        client,
        "mapping the stream position to its commit time",
        POSITION_TIME_QUERY,
        &[&l],
    )
    .await?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    Ok(
        match (get_ticks(r, "commit_time")?, get_ticks(r, "now_local")?) {
            (Some(at), Some(now)) => Some((at, now)),
            _ => None,
        },
    )
}

/// The cleanup job's retention of the connection's database; None without a cleanup job.
pub async fn cleanup_retention(client: &mut SqlClient) -> Result<Option<Duration>> {
    let jobs = inspect::cdc_jobs(client).await?;
    Ok(jobs
        .retention_minutes
        .filter(|m| *m > 0)
        .map(|m| Duration::from_secs(m as u64 * 60)))
}

/// Per-stream state of the headroom gauge.
pub struct RetentionHeadroom {
    task: String,
    tables: Vec<String>,
    retention: Option<Duration>,
    retention_read: Option<Instant>,
    warned: bool,
}

impl RetentionHeadroom {
    pub fn new(task: String, tables: Vec<String>) -> Self {
        RetentionHeadroom {
            task,
            tables,
            retention: None,
            retention_read: None,
            warned: false,
        }
    }

    /// Refreshes the gauge for the stream at `lsn`. Errors only cost the metric: they are
    /// logged at debug level and the stream goes on. Returns false after an error.
    pub async fn update(&mut self, client: &mut SqlClient, lsn: Lsn) -> bool {
        let now = Instant::now();
        if self
            .retention_read
            .is_none_or(|at| now.duration_since(at) >= RETENTION_EVERY)
        {
            match cleanup_retention(client).await {
                Ok(r) => {
                    self.retention = r;
                    self.retention_read = Some(now);
                }
                Err(e) => {
                    tracing::debug!(task = %self.task, error = %e, "reading the CDC cleanup retention");
                    return false;
                }
            }
        }
        let Some(retention) = self.retention else {
            return true;
        };
        let (at, server_now) = match position_time(client, lsn).await {
            Ok(Some(t)) => t,
            Ok(None) => return true,
            Err(e) => {
                tracing::debug!(task = %self.task, error = %e, "mapping the stream position to a time");
                return false;
            }
        };
        let headroom = retention_headroom(at, retention, server_now);
        for table in &self.tables {
            metrics::gauge!("dbsync_capture_retention_headroom_seconds", "task" => self.task.clone(), "table" => table.clone())
                .set(headroom);
        }
        let low = headroom < retention.as_secs_f64() / 10.0;
        if low && !self.warned {
            tracing::warn!(task = %self.task, tables = ?self.tables, position = %lsn, headroom_seconds = headroom as i64,
                retention_minutes = retention.as_secs() / 60,
                "the stream is close to the CDC cleanup retention: once it is overrun the tables need a re-snapshot; \
                 let the stream catch up or raise the retention with sys.sp_cdc_change_job");
        }
        self.warned = low;
        true
    }
}

/// Refreshes the gauge every [`UPDATE_EVERY`] for the position the stream publishes (zero:
/// none yet), on a pooled connection of its own. Ends when the stream drops its sender.
pub fn spawn_timer(
    pool: Arc<SourcePool>,
    mut headroom: RetentionHeadroom,
    position: tokio::sync::watch::Receiver<Lsn>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPDATE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if position.has_changed().is_err() {
                return;
            }
            let lsn = *position.borrow();
            if lsn == Lsn::ZERO {
                continue;
            }
            match pool.get().await {
                Ok(mut conn) => {
                    if headroom.update(conn.client(), lsn).await {
                        conn.mark_clean();
                    }
                }
                Err(e) => {
                    tracing::debug!(task = %headroom.task, error = %e, "connecting for the retention headroom")
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_is_position_time_plus_retention_minus_now() {
        let hour = 3600 * TICKS_PER_SECOND;
        let position = 1_000 * hour;
        let retention = Duration::from_secs(3 * 3600);
        assert_eq!(
            retention_headroom(position, retention, position),
            3.0 * 3600.0
        );
        assert_eq!(
            retention_headroom(position, retention, position + hour),
            2.0 * 3600.0
        );
        assert_eq!(
            retention_headroom(position, retention, position + 4 * hour),
            -3600.0
        );
    }
}
