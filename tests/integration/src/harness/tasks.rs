//! Task setup the end-to-end suites share: an environment over the sample database, a task
//! run until it streams, one table's phase, and the re-snapshot records on the target.

use std::time::Duration;

use anyhow::Context;
use dbsync_proto::v1 as pb;

use super::{describe_tables, wait_for, EnvOptions, TestEnv};

impl TestEnv {
    /// Starts an environment with `sample_rows` rows per ordinary sample table (`None`: no
    /// sample database) and the default options otherwise.
    pub async fn start_with_sample(sample_rows: Option<usize>) -> anyhow::Result<TestEnv> {
        TestEnv::start(EnvOptions {
            sample_rows,
            ..Default::default()
        })
        .await
    }

    /// Waits until every table of the task streams.
    pub async fn wait_streaming(
        &self,
        task: &str,
        timeout: Duration,
    ) -> anyhow::Result<pb::TaskStatus> {
        self.wait_phases(task, &[pb::TablePhase::Streaming], timeout)
            .await
    }

    /// Creates and starts a task and waits until every table streams; returns the task id.
    pub async fn run_until_streaming(
        &self,
        spec: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let task = self.run_task(spec).await?;
        self.wait_streaming(&task, timeout).await?;
        Ok(task)
    }

    /// The phase of the task's table with source name `table`; `Unspecified` when the task has
    /// no such table.
    pub async fn table_phase(&self, task: &str, table: &str) -> anyhow::Result<i32> {
        let status = self.status(task).await?;
        Ok(status
            .tables
            .iter()
            .find(|t| t.source.as_ref().is_some_and(|s| s.name == table))
            .map_or(pb::TablePhase::Unspecified as i32, |t| t.phase))
    }

    /// Waits until the task's table with source name `table` is in `phase`.
    pub async fn wait_table_phase(
        &self,
        task: &str,
        table: &str,
        phase: pb::TablePhase,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        wait_for(&format!("{table} to be {phase:?}"), timeout, || async {
            let status = self.status(task).await?;
            let there = status.tables.iter().any(|t| {
                t.phase == phase as i32 && t.source.as_ref().is_some_and(|s| s.name == table)
            });
            Ok(if there {
                Ok(())
            } else {
                Err(describe_tables(&status))
            })
        })
        .await
    }

    /// Number of re-snapshot records (`dbsync.resnapshots`) on the target; an error when the
    /// table is not there.
    pub async fn resnapshot_records(&self) -> anyhow::Result<i64> {
        let row = self
            .target()
            .await?
            .query_one("SELECT count(*) FROM dbsync.resnapshots", &[])
            .await
            .context("count dbsync.resnapshots")?;
        Ok(row.get(0))
    }
}
