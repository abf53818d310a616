//! Terminal output of the CLI: tables of tasks, workers, precheck items, status, verification,
//! and the live `status --watch` view with one progress bar per table.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use dbsync_proto::v1 as pb;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pb::{PrecheckStatus, TablePhase, TaskState};

use crate::Client;

pub fn state_name(state: i32) -> &'static str {
    match TaskState::try_from(state).unwrap_or(TaskState::Unspecified) {
        TaskState::Unspecified => "unknown",
        TaskState::Created => "created",
        TaskState::Prechecked => "prechecked",
        TaskState::Running => "running",
        TaskState::Paused => "paused",
        TaskState::Stopped => "stopped",
        TaskState::Failed => "failed",
        TaskState::Completed => "completed",
    }
}

pub fn phase_name(phase: i32) -> &'static str {
    match TablePhase::try_from(phase).unwrap_or(TablePhase::Unspecified) {
        TablePhase::Unspecified => "-",
        TablePhase::Pending => "pending",
        TablePhase::Schema => "schema",
        TablePhase::Snapshot => "full sync",
        TablePhase::CatchingUp => "catching up",
        TablePhase::Streaming => "streaming",
        TablePhase::Done => "done",
        TablePhase::Failed => "failed",
        TablePhase::Resnapshot => "re-snapshot",
    }
}

fn source_name(t: &Option<pb::TableRef>) -> String {
    t.as_ref()
        .map(|r| format!("{}.{}.{}", r.database, r.schema, r.name))
        .unwrap_or_default()
}

pub fn duration(seconds: f64) -> String {
    if seconds <= 0.0 || !seconds.is_finite() {
        return "-".into();
    }
    let s = seconds.round() as u64;
    match s {
        0..=59 => format!("{seconds:.1}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

pub fn task_line(out: &mut impl Write, info: &pb::TaskInfo, verb: &str) -> std::io::Result<()> {
    let verb = if verb.is_empty() {
        String::new()
    } else {
        format!("{verb}: ")
    };
    writeln!(
        out,
        "{verb}task {} (id {}) is {}",
        info.name,
        info.task_id,
        state_name(info.state)
    )?;
    if !info.last_error.is_empty() {
        writeln!(out, "  last error: {}", info.last_error)?;
    }
    Ok(())
}

pub fn tasks(out: &mut impl Write, tasks: &[pb::TaskInfo]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<14} {:<28} {:<11} LAST ERROR",
        "ID", "NAME", "STATE"
    )?;
    for t in tasks {
        writeln!(
            out,
            "{:<14} {:<28} {:<11} {}",
            t.task_id,
            t.name,
            state_name(t.state),
            t.last_error
        )?;
    }
    Ok(())
}

pub fn workers(out: &mut impl Write, workers: &[pb::WorkerInfo]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<22} {:<8} {:<6} {:<28} GROUPS",
        "WORKER", "KIND", "ALIVE", "ADDRESS"
    )?;
    for w in workers {
        writeln!(
            out,
            "{:<22} {:<8} {:<6} {:<28} {}",
            w.worker_id,
            w.kind,
            if w.alive { "yes" } else { "no" },
            w.address,
            w.assignments.join(",")
        )?;
    }
    Ok(())
}

pub fn precheck(out: &mut impl Write, report: &pb::PrecheckReport) -> std::io::Result<()> {
    let (mut pass, mut warn, mut fail) = (0, 0, 0);
    for i in &report.items {
        let mark = match PrecheckStatus::try_from(i.status).unwrap_or(PrecheckStatus::Unspecified) {
            PrecheckStatus::Pass => {
                pass += 1;
                "PASS"
            }
            PrecheckStatus::Warn => {
                warn += 1;
                if i.acknowledged {
                    "ACK "
                } else {
                    "WARN"
                }
            }
            PrecheckStatus::Fail => {
                fail += 1;
                "FAIL"
            }
            PrecheckStatus::Unspecified => "?   ",
        };
        writeln!(out, "{mark} {:<36} {:<28} {}", i.id, i.object, i.title)?;
        if !i.detail.is_empty() && i.status != PrecheckStatus::Pass as i32 {
            writeln!(out, "     {}", i.detail)?;
        }
        if !i.fix.is_empty() && i.status != PrecheckStatus::Pass as i32 {
            writeln!(out, "     fix: {}", i.fix)?;
        }
    }
    writeln!(out, "{fail} failed, {warn} warnings, {pass} passed")?;
    if warn > 0 {
        writeln!(
            out,
            "acknowledge a warning with: dbsync task precheck <task> --ack <id>"
        )?;
    }
    Ok(())
}

pub fn status(out: &mut impl Write, s: &pb::TaskStatus) -> std::io::Result<()> {
    if let Some(t) = &s.task {
        task_line(out, t, "")?;
    }
    let percent = if s.rows_total > 0 {
        100.0 * s.rows_done as f64 / s.rows_total as f64
    } else {
        0.0
    };
    writeln!(
        out,
        "rows {}/{} ({percent:.1}%)  eta {}  lag {}",
        s.rows_done,
        s.rows_total,
        duration(s.eta_seconds),
        duration(s.lag_seconds)
    )?;
    writeln!(
        out,
        "{:<36} {:<32} {:<12} {:>12} {:>6} {:>10} {:>8} {:<16} ERROR",
        "SOURCE", "TARGET", "PHASE", "ROWS", "%", "CHANGES", "LAG", "WORKER"
    )?;
    for t in &s.tables {
        let pct = if t.rows_total > 0 {
            format!("{:.0}", 100.0 * t.rows_done as f64 / t.rows_total as f64)
        } else {
            "-".into()
        };
        writeln!(
            out,
            "{:<36} {:<32} {:<12} {:>12} {:>6} {:>10} {:>8} {:<16} {}",
            source_name(&t.source),
            t.target,
            phase_name(t.phase),
            t.rows_done,
            pct,
            t.changes_applied,
            duration(t.lag_seconds),
            t.worker_id,
            t.last_error
        )?;
    }
    for a in &s.alerts {
        writeln!(out, "alert: {a}")?;
    }
    Ok(())
}

pub fn verify(out: &mut impl Write, r: &pb::VerifyReport) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<36} {:<32} {:>12} {:>12} RESULT",
        "SOURCE", "TARGET", "SOURCE ROWS", "TARGET ROWS"
    )?;
    for t in &r.tables {
        writeln!(
            out,
            "{:<36} {:<32} {:>12} {:>12} {}",
            source_name(&t.source),
            t.target,
            t.source_rows,
            t.target_rows,
            if t.equal { "equal" } else { "DIFFERENT" }
        )?;
        for d in &t.differences {
            writeln!(out, "    {} {} {}", d.kind, d.key, d.columns.join(","))?;
        }
        if t.repaired > 0 {
            writeln!(out, "    repaired {} rows", t.repaired)?;
        }
    }
    writeln!(
        out,
        "{} in {:.1}s",
        if r.equal {
            "source and target are equal"
        } else {
            "source and target DIFFER"
        },
        r.seconds
    )
}

/// One progress bar per table while a verification runs (on stderr, so stdout keeps only the
/// report): rows verified of the source's estimate, with the phase, chunks and mismatches.
pub struct VerifyBars {
    multi: MultiProgress,
    style: ProgressStyle,
    bars: HashMap<u32, ProgressBar>,
}

impl Default for VerifyBars {
    fn default() -> Self {
        Self::new()
    }
}

impl VerifyBars {
    pub fn new() -> VerifyBars {
        VerifyBars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4)),
            style: ProgressStyle::with_template(
                "{prefix:<40} [{bar:30}] {pos:>10}/{len:<10} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
            bars: Default::default(),
        }
    }

    pub fn update(&mut self, p: &pb::VerifyTableProgress) {
        let bar = self.bars.entry(p.table_index).or_insert_with(|| {
            let b = self.multi.add(ProgressBar::new(p.rows_total.max(1)));
            b.set_style(self.style.clone());
            b.set_prefix(format!(
                "{} ({}/{})",
                p.table,
                p.table_index + 1,
                p.tables_total
            ));
            b
        });
        bar.set_length(p.rows_total.max(p.rows_verified).max(1));
        bar.set_position(p.rows_verified);
        let mut msg = format!("{}  chunks {}/{}", p.phase, p.chunks_done, p.chunks_total);
        if p.mismatches > 0 {
            msg.push_str(&format!("  mismatches {}", p.mismatches));
        }
        if p.phase == "done" {
            bar.set_length(p.rows_verified.max(1));
            bar.finish_with_message(msg);
        } else {
            bar.set_message(msg);
        }
    }

    /// Leaves the bars on screen as they are (the report follows on stdout).
    pub fn finish(&self) {
        for b in self.bars.values() {
            b.abandon();
        }
    }
}

/// The verification report as one JSON document (for scripts and CI pipelines).
pub fn verify_json(r: &pb::VerifyReport) -> serde_json::Value {
    let tables: Vec<serde_json::Value> = r
        .tables
        .iter()
        .map(|t| {
            serde_json::json!({
                "source": source_name(&t.source),
                "target": t.target,
                "source_rows": t.source_rows,
                "target_rows": t.target_rows,
                "rows_compared": t.rows_compared,
                "equal": t.equal,
                "repaired": t.repaired,
                "differences": t.differences.iter().map(|d| serde_json::json!({
                    "kind": d.kind,
                    "key": d.key,
                    "columns": d.columns,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({ "equal": r.equal, "seconds": r.seconds, "tables": tables })
}

/// Follows `WatchTaskStatus` with a bar per table until the task leaves running/paused.
pub async fn watch(client: &mut Client, task: &str) -> anyhow::Result<ExitCode> {
    let mut stream = client
        .watch_task_status(pb::TaskRef {
            task_id: task.to_string(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{} ({:?})", s.message(), s.code()))?
        .into_inner();
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4));
    let header = multi.add(ProgressBar::new_spinner());
    header.enable_steady_tick(Duration::from_millis(250));
    let style = ProgressStyle::with_template("{prefix:<40} [{bar:30}] {pos:>10}/{len:<10} {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    let mut last_state = TaskState::Unspecified as i32;
    loop {
        let next = tokio::select! {
            m = stream.message() => m,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(status) = next.map_err(|s| anyhow::anyhow!("{} ({:?})", s.message(), s.code()))?
        else {
            break;
        };
        let info = status.task.clone().unwrap_or_default();
        last_state = info.state;
        header.set_message(format!(
            "task {} {}  rows {}/{}  eta {}  lag {}",
            info.name,
            state_name(info.state),
            status.rows_done,
            status.rows_total,
            duration(status.eta_seconds),
            duration(status.lag_seconds)
        ));
        for t in &status.tables {
            let name = source_name(&t.source);
            let bar = bars.entry(name.clone()).or_insert_with(|| {
                let b = multi.add(ProgressBar::new(t.rows_total.max(1)));
                b.set_style(style.clone());
                b.set_prefix(name.clone());
                b
            });
            bar.set_length(t.rows_total.max(t.rows_done).max(1));
            bar.set_position(t.rows_done);
            let mut msg = phase_name(t.phase).to_string();
            if t.changes_applied > 0 || t.lag_seconds > 0.0 {
                msg.push_str(&format!(
                    "  {} changes  lag {}",
                    t.changes_applied,
                    duration(t.lag_seconds)
                ));
            }
            if !t.last_error.is_empty() {
                msg.push_str(&format!("  error: {}", t.last_error));
            }
            bar.set_message(msg);
        }
        if !matches!(
            TaskState::try_from(info.state),
            Ok(TaskState::Running | TaskState::Paused)
        ) {
            break;
        }
    }
    for b in bars.values() {
        b.abandon();
    }
    header.abandon();
    Ok(if last_state == TaskState::Failed as i32 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(0.0), "-");
        assert_eq!(duration(2.25), "2.2s");
        assert_eq!(duration(75.0), "1m15s");
        assert_eq!(duration(7300.0), "2h01m");
    }

    #[test]
    fn precheck_output_shows_fixes_for_problems_only() {
        let report = pb::PrecheckReport {
            items: vec![
                pb::PrecheckItem {
                    id: "a.ok".into(),
                    status: PrecheckStatus::Pass as i32,
                    fix: "nothing".into(),
                    ..Default::default()
                },
                pb::PrecheckItem {
                    id: "b.bad".into(),
                    status: PrecheckStatus::Fail as i32,
                    fix: "do this".into(),
                    ..Default::default()
                },
            ],
        };
        let mut out = Vec::new();
        precheck(&mut out, &report).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("FAIL b.bad") && text.contains("fix: do this"));
        assert!(!text.contains("fix: nothing"));
        assert!(text.contains("1 failed, 0 warnings, 1 passed"));
    }

    #[test]
    fn verify_report_renders_as_json() {
        let report = pb::VerifyReport {
            equal: false,
            seconds: 1.5,
            tables: vec![pb::TableVerification {
                target: "sales.orders".into(),
                source_rows: 3,
                target_rows: 2,
                differences: vec![pb::RowDifference {
                    kind: "missing".into(),
                    key: "id=7".into(),
                    columns: vec![],
                }],
                ..Default::default()
            }],
        };
        let json = verify_json(&report);
        assert_eq!(json["equal"], false);
        assert_eq!(json["tables"][0]["target"], "sales.orders");
        assert_eq!(json["tables"][0]["differences"][0]["kind"], "missing");
        assert_eq!(json["tables"][0]["source_rows"], 3);
    }
}
