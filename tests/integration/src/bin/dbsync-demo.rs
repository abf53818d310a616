//! `make demo`: the SQL Server stand-in with its sample database, an ephemeral PostgreSQL and
//! the three dbsync services, one task doing schema + full + incremental sync while a workload
//! changes the source, then a row-by-row verification and a summary.

use std::time::{Duration, Instant};

use clap::Parser;
use dbsync_proto::v1 as pb;
use dbsync_sqlserver_sim::sample::SAMPLE_DATABASE;
use dbsync_sqlserver_sim::workload::{run_workload, WorkloadConfig};
use dbsync_testkit::harness::{describe_tables, measure_lag, CdcTiming, KEYLESS_SAMPLE_TABLES};
use dbsync_testkit::{EnvOptions, TestEnv};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "dbsync demo: SQL Server stand-in → PostgreSQL with live changes")]
struct Args {
    /// Rows per ordinary table of the sample database.
    #[arg(long, default_value_t = 5000)]
    rows: usize,
    /// Seconds of live changes on the source.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Source transactions per second during the live phase.
    #[arg(long, default_value_t = 100.0)]
    tps: f64,
    /// Apply services.
    #[arg(long, default_value_t = 2)]
    appliers: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("\ndemo failed: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let started = Instant::now();
    println!("dbsync demo");
    println!("===========");
    step(&format!("starting the SQL Server stand-in with sample database '{SAMPLE_DATABASE}' ({} rows per table), PostgreSQL, coordinator, capture and {} appliers", args.rows, args.appliers));
    let env = TestEnv::start(EnvOptions {
        sample_rows: Some(args.rows),
        appliers: args.appliers,
        cdc: CdcTiming::Job(Duration::from_millis(100)),
        ..Default::default()
    })
    .await?;
    println!("    SQL Server stand-in  {}", env.standin.addr);
    println!(
        "    PostgreSQL           {}:{} database {}",
        env.pg.host(),
        env.pg.port(),
        env.target_db
    );
    println!("    coordinator          {}", env.coordinator.url());
    println!("    capture              {}", env.capture.url());
    for a in &env.appliers {
        println!("    {:<20} {}", a.name, a.url());
    }

    step("creating and starting a task: schema + full + incremental (cdc-polling)");
    let task = env
        .run_task(&env.sample_task_with("demo", true, true, KEYLESS_SAMPLE_TABLES, "", ""))
        .await?;

    step(&format!(
        "running the workload on the source for {} s at {} transactions/s while the task runs",
        args.seconds, args.tps
    ));
    let workload_stop = CancellationToken::new();
    let workload = tokio::spawn(run_workload(
        env.standin.addr,
        WorkloadConfig {
            seed: 7,
            database: SAMPLE_DATABASE.into(),
            user: env.standin.user.clone(),
            password: env.standin.password.clone(),
            workers: 2,
            transactions_per_second: Some(args.tps),
            max_transactions: None,
            duration: Some(Duration::from_secs(args.seconds)),
            large_transaction_every: 100,
            large_transaction_rows: 500,
            rollback_percent: 5,
            ddl_every: 0,
            ..Default::default()
        },
        workload_stop.clone(),
    ));
    let lag_stop = CancellationToken::new();
    let lag = {
        let stop = lag_stop.clone();
        let env = &env;
        let task = task.clone();
        async move {
            measure_lag(
                env,
                &task,
                SAMPLE_DATABASE,
                Duration::from_millis(50),
                Duration::from_secs(30),
                stop,
            )
            .await
        }
    };
    let progress = async {
        let mut last_line = String::new();
        while !workload.is_finished() {
            if let Ok(status) = env.status(&task).await {
                let info = status.task.clone().unwrap_or_default();
                if info.state == pb::TaskState::Failed as i32 {
                    workload_stop.cancel();
                    lag_stop.cancel();
                    anyhow::bail!(
                        "the task failed: {}\n{}",
                        info.last_error,
                        describe_tables(&status)
                    );
                }
                let line = phase_line(&status);
                if line != last_line {
                    println!("    [{:>5.1}s] {line}", started.elapsed().as_secs_f64());
                    last_line = line;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let stats = workload.await??;
        lag_stop.cancel();
        anyhow::Ok(stats)
    };
    let (stats, lag) = tokio::join!(progress, lag);
    let stats = stats?;
    println!(
        "    workload: {} transactions committed ({} rolled back), {} row changes: {} inserts, {} updates ({} key changes, {} LOB-only), {} deletes",
        stats.committed, stats.rolled_back, stats.row_changes(), stats.inserts, stats.updates, stats.key_updates, stats.lob_updates, stats.deletes
    );

    step("waiting until the target has caught up");
    if let Err(e) = env
        .wait_caught_up(&task, SAMPLE_DATABASE, Duration::from_secs(120))
        .await
    {
        let status = env.status(&task).await?;
        if status
            .task
            .as_ref()
            .is_some_and(|t| t.state == pb::TaskState::Failed as i32)
        {
            anyhow::bail!("{e:#}\n{}", describe_tables(&status));
        }
        println!("    not caught up by LSN within 120 s ({e}); comparing anyway");
    }

    step("verifying: every table, source vs target, row by row");
    let mappings = env.task_mappings(&task).await?;
    let comparison = env.wait_equal(&mappings, Duration::from_secs(60)).await;
    let comparison = match comparison {
        Ok(c) => c,
        Err(_) => env.compare(&mappings).await?,
    };
    let status = env.status(&task).await?;
    let verify_api = verify_with_api(&env, &task).await;

    println!();
    println!("Summary");
    println!("-------");
    println!(
        "{:<32} {:>10} {:>10} {:>10} {:>9}  rows equal",
        "table", "source", "target", "changes", "phase"
    );
    for t in &comparison.tables {
        let st = status.tables.iter().find(|s| {
            s.source
                .as_ref()
                .is_some_and(|r| format!("{}.{}.{}", r.database, r.schema, r.name) == t.table)
        });
        let changes = st.map(|s| s.changes_applied).unwrap_or(0);
        let phase = st.map(|s| phase_name(s.phase)).unwrap_or("?");
        println!(
            "{:<32} {:>10} {:>10} {:>10} {:>9}  {}",
            t.table.trim_start_matches(&format!("{SAMPLE_DATABASE}.")),
            t.source_rows,
            t.target_rows,
            changes,
            phase,
            if t.equal() {
                "yes".to_string()
            } else {
                format!("NO ({} missing, {} extra)", t.missing_count, t.extra_count)
            }
        );
    }
    let applied: u64 = status.tables.iter().map(|t| t.changes_applied).sum();
    println!();
    println!("rows compared       {}", comparison.source_rows());
    println!(
        "changes applied     {applied} (source: {} row changes committed)",
        stats.row_changes()
    );
    println!("end-to-end lag      {}", lag.summary());
    println!("verify API          {verify_api}");
    println!(
        "elapsed             {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let equal = comparison.equal();
    println!();
    if equal {
        println!(
            "RESULT: target equals source ({} tables, {} rows)",
            comparison.tables.len(),
            comparison.source_rows()
        );
    } else {
        println!("RESULT: DIFFERENCES FOUND\n{}", comparison.report());
        println!("{}", describe_tables(&status));
    }
    workload_stop.cancel();
    Ok(equal)
}

async fn verify_with_api(env: &TestEnv, task: &str) -> String {
    let mut client = match env.client().await {
        Ok(c) => c,
        Err(e) => return format!("unavailable: {e}"),
    };
    let request = pb::VerifyTaskRequest {
        task_id: task.into(),
        mode: "full".into(),
        ..Default::default()
    };
    match client.verify_task(request).await {
        Ok(r) => {
            let r = r.into_inner();
            let rows: u64 = r.tables.iter().map(|t| t.rows_compared).sum();
            format!(
                "{} ({} tables, {rows} rows compared in {:.1} s)",
                if r.equal { "equal" } else { "DIFFERENT" },
                r.tables.len(),
                r.seconds
            )
        }
        Err(s) => format!("not available: {}", s.message()),
    }
}

fn step(text: &str) {
    println!("\n==> {text}");
}

fn phase_line(status: &pb::TaskStatus) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for t in &status.tables {
        let name = phase_name(t.phase);
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
    }
    let phases: Vec<String> = counts.iter().map(|(n, c)| format!("{c} {n}")).collect();
    let changes: u64 = status.tables.iter().map(|t| t.changes_applied).sum();
    format!(
        "tables: {} | rows {}/{} | changes applied {} | lag {:.2} s",
        phases.join(", "),
        status.rows_done,
        status.rows_total,
        changes,
        status.lag_seconds
    )
}

fn phase_name(phase: i32) -> &'static str {
    match pb::TablePhase::try_from(phase).unwrap_or(pb::TablePhase::Unspecified) {
        pb::TablePhase::Pending => "pending",
        pb::TablePhase::Schema => "schema",
        pb::TablePhase::Snapshot => "snapshot",
        pb::TablePhase::CatchingUp => "catching-up",
        pb::TablePhase::Streaming => "streaming",
        pb::TablePhase::Done => "done",
        pb::TablePhase::Failed => "failed",
        pb::TablePhase::Resnapshot => "resnapshot",
        pb::TablePhase::Unspecified => "?",
    }
}
