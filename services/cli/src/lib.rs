//! The `dbsync` command. It talks only gRPC to the coordinator (the same API grpcurl and other
//! clients use) and holds no business logic; `dbsync up` runs capture, apply and the
//! coordinator in one process for a single machine.

pub mod render;
pub mod up;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dbsync_coordinator::ClientToken;
use dbsync_core::Secret;
use dbsync_proto::v1 as pb;
use dbsync_proto::v1::coordinator_service_client::CoordinatorServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(
    name = "dbsync",
    version,
    about = "Sync SQL Server into PostgreSQL: schema, full and incremental sync"
)]
pub struct Cli {
    /// Coordinator gRPC URL.
    #[arg(
        long,
        global = true,
        env = "DBSYNC_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub coordinator: String,
    /// Bearer token for a coordinator that requires one.
    #[arg(long, global = true, env = "DBSYNC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, check, run and inspect tasks.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Compare source and target of a task; exits with 1 when they differ.
    Verify {
        task: String,
        /// full | sampled | incremental
        #[arg(long, default_value = "full")]
        mode: String,
        #[arg(long, default_value_t = 10.0)]
        sample_percent: f64,
        /// Re-copy differing rows from the source.
        #[arg(long)]
        repair: bool,
        /// Only these tables (db.schema.table); default all.
        #[arg(long = "table")]
        tables: Vec<String>,
        /// Print the report as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List registered capture and apply workers.
    Workers,
    /// Run coordinator, capture and apply in this process (one machine, nothing else needed).
    Up(up::UpArgs),
}

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// Create a task from a YAML or JSON file (see deploy/task.example.yaml).
    Create {
        #[arg(short = 'f', long = "file")]
        file: std::path::PathBuf,
    },
    /// List tasks.
    List,
    /// Show a task's definition (secrets shown as ***).
    Get {
        task: String,
    },
    /// Run the prechecks; exits with 1 when an item fails.
    Precheck {
        task: String,
        /// Acknowledge a warning by id (repeatable).
        #[arg(long = "ack")]
        acknowledge: Vec<String>,
    },
    Start {
        task: String,
    },
    Pause {
        task: String,
    },
    Resume {
        task: String,
    },
    Stop {
        task: String,
    },
    /// Phase, progress, lag and errors per table.
    Status {
        task: String,
        /// Follow live with progress bars until the task ends (Ctrl-C to leave).
        #[arg(long)]
        watch: bool,
    },
    /// Change a task: add or remove tables, throttles, alerts. Unset flags keep their value.
    Modify {
        task: String,
        /// Table to add (db.schema.table; schema.table with one database). Repeatable.
        #[arg(long = "add-table")]
        add_tables: Vec<String>,
        #[arg(long = "remove-table")]
        remove_tables: Vec<String>,
        /// Full sync: source queries per second (0 = unlimited).
        #[arg(long)]
        full_queries_per_second: Option<f64>,
        #[arg(long)]
        full_rows_per_second: Option<f64>,
        #[arg(long)]
        full_mb_per_second: Option<f64>,
        #[arg(long)]
        incremental_rows_per_second: Option<f64>,
        #[arg(long)]
        incremental_mb_per_second: Option<f64>,
        /// Alert webhook URL (http://...), or `none` to remove it.
        #[arg(long)]
        webhook: Option<String>,
        /// Lag alert threshold in seconds; 0 turns the lag alert off.
        #[arg(long)]
        lag_alert_seconds: Option<u64>,
    },
    /// Delete a task (stops it first).
    Delete {
        task: String,
        /// Also remove what dbsync installed on the source (capture instances, hybrid objects).
        #[arg(long)]
        cleanup_source: bool,
    },
}

pub type Client = CoordinatorServiceClient<InterceptedService<Channel, ClientToken>>;

pub async fn connect(url: &str, token: Option<&str>) -> anyhow::Result<Client> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .with_context(|| format!("'{url}' is not a valid coordinator URL"))?
        .connect_timeout(std::time::Duration::from_secs(10));
    let channel = dbsync_telemetry::connect(endpoint).await.with_context(|| {
        format!("cannot reach the coordinator at {url} (set --coordinator or DBSYNC_COORDINATOR)")
    })?;
    Ok(CoordinatorServiceClient::with_interceptor(
        channel,
        ClientToken(token.map(Secret::new)),
    ))
}

/// Turns a gRPC status into a one-line error for the terminal.
fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", status.message(), status.code())
}

/// Runs a verification through `VerifyTaskStream`, handing every progress event to
/// `on_progress`, and returns the report (the stream's last event). A coordinator without the
/// streaming rpc is asked with `VerifyTask` (no progress then).
pub async fn follow_verify(
    client: &mut Client,
    request: pb::VerifyTaskRequest,
    mut on_progress: impl FnMut(&pb::VerifyTableProgress),
) -> anyhow::Result<pb::VerifyReport> {
    let mut stream = match client.verify_task_stream(request.clone()).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            return Ok(client
                .verify_task(request)
                .await
                .map_err(status_error)?
                .into_inner());
        }
        Err(status) => return Err(status_error(status)),
    };
    while let Some(event) = stream.message().await.map_err(status_error)? {
        match event.event {
            Some(pb::verify_event::Event::Progress(p)) => on_progress(&p),
            Some(pb::verify_event::Event::Report(report)) => return Ok(report),
            None => {}
        }
    }
    anyhow::bail!("the coordinator ended the verification without a report")
}

fn task_ref(task: &str) -> pb::TaskRef {
    pb::TaskRef {
        task_id: task.to_string(),
    }
}

/// Runs a parsed command line; the exit code says whether the outcome was clean.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    run_with_output(cli, &mut std::io::stdout()).await
}

/// [`run`] writing what it prints on stdout to `out` (progress bars stay on stderr).
pub async fn run_with_output(
    cli: Cli,
    out: &mut (impl std::io::Write + Send),
) -> anyhow::Result<ExitCode> {
    if let Command::Up(args) = cli.command {
        return up::run(args, cli.token).await.map(|_| ExitCode::SUCCESS);
    }
    let mut client = connect(&cli.coordinator, cli.token.as_deref()).await?;
    match cli.command {
        Command::Up(_) => unreachable!("handled above"),
        Command::Workers => {
            let workers = client
                .list_workers(pb::ListWorkersRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            render::workers(out, &workers.workers)?;
        }
        Command::Verify {
            task,
            mode,
            sample_percent,
            repair,
            tables,
            json,
        } => {
            let request = pb::VerifyTaskRequest {
                task_id: task,
                mode,
                sample_percent,
                repair,
                tables,
            };
            // With --json the output is the document alone: no bars.
            let report = if json {
                follow_verify(&mut client, request, |_| {}).await?
            } else {
                let mut bars = render::VerifyBars::new();
                let report = follow_verify(&mut client, request, |p| bars.update(p)).await;
                bars.finish();
                report?
            };
            if json {
                std::io::Write::write_all(
                    out,
                    format!("{:#}\n", render::verify_json(&report)).as_bytes(),
                )?;
            } else {
                render::verify(out, &report)?;
            }
            if !report.equal {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Task(command) => return task_command(&mut client, command, out).await,
    }
    Ok(ExitCode::SUCCESS)
}

async fn task_command(
    client: &mut Client,
    command: TaskCommand,
    out: &mut (impl std::io::Write + Send),
) -> anyhow::Result<ExitCode> {
    match command {
        TaskCommand::Create { file } => {
            let spec = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let info = client
                .create_task(pb::CreateTaskRequest { spec })
                .await
                .map_err(status_error)?
                .into_inner();
            render::task_line(out, &info, "created")?;
        }
        TaskCommand::List => {
            let tasks = client
                .list_tasks(pb::ListTasksRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            render::tasks(out, &tasks.tasks)?;
        }
        TaskCommand::Get { task } => {
            let info = client
                .get_task(task_ref(&task))
                .await
                .map_err(status_error)?
                .into_inner();
            render::task_line(out, &info, "")?;
            writeln!(out, "{}", info.spec_redacted)?;
        }
        TaskCommand::Precheck { task, acknowledge } => {
            let report = client
                .precheck_task(pb::PrecheckTaskRequest {
                    task_id: task,
                    acknowledge,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            render::precheck(out, &report)?;
            if report
                .items
                .iter()
                .any(|i| i.status == pb::PrecheckStatus::Fail as i32)
            {
                return Ok(ExitCode::from(1));
            }
        }
        TaskCommand::Start { task } => {
            let info = client
                .start_task(task_ref(&task))
                .await
                .map_err(status_error)?
                .into_inner();
            render::task_line(out, &info, "started")?;
        }
        TaskCommand::Pause { task } => {
            let info = client
                .pause_task(task_ref(&task))
                .await
                .map_err(status_error)?
                .into_inner();
            render::task_line(out, &info, "paused")?;
        }
        TaskCommand::Resume { task } => {
            let info = client
                .resume_task(task_ref(&task))
                .await
                .map_err(status_error)?
                .into_inner();
            render::task_line(out, &info, "resumed")?;
        }
        TaskCommand::Stop { task } => {
            let info = client
                .stop_task(task_ref(&task))
                .await
                .map_err(status_error)?
                .into_inner();
            render::task_line(out, &info, "stopped")?;
        }
        TaskCommand::Status { task, watch } => {
            if watch {
                return render::watch(client, &task).await;
            }
            let status = client
                .get_task_status(task_ref(&task))
                .await
                .map_err(status_error)?
                .into_inner();
            render::status(out, &status)?;
            if status
                .task
                .is_some_and(|t| t.state == pb::TaskState::Failed as i32)
            {
                return Ok(ExitCode::from(1));
            }
        }
        TaskCommand::Modify {
            task,
            add_tables,
            remove_tables,
            full_queries_per_second,
            full_rows_per_second,
            full_mb_per_second,
            incremental_rows_per_second,
            incremental_mb_per_second,
            webhook,
            lag_alert_seconds,
        } => {
            // Throttles are replaced as a whole: start from the current values.
            let info = client
                .get_task(task_ref(&task))
                .await
                .map_err(status_error)?
                .into_inner();
            let current: dbsync_coordinator::TaskSpec =
                serde_yaml::from_str(&info.spec_redacted)
                    .context("cannot read the task's current definition")?;
            let full = [
                full_queries_per_second,
                full_rows_per_second,
                full_mb_per_second,
            ]
            .iter()
            .any(Option::is_some)
            .then(|| pb::Throttle {
                queries_per_second: full_queries_per_second
                    .unwrap_or(current.throttle.full.queries_per_second),
                rows_per_second: full_rows_per_second
                    .unwrap_or(current.throttle.full.rows_per_second),
                megabytes_per_second: full_mb_per_second
                    .unwrap_or(current.throttle.full.mb_per_second),
            });
            let incremental = [incremental_rows_per_second, incremental_mb_per_second]
                .iter()
                .any(Option::is_some)
                .then(|| pb::Throttle {
                    queries_per_second: 0.0,
                    rows_per_second: incremental_rows_per_second
                        .unwrap_or(current.throttle.incremental.rows_per_second),
                    megabytes_per_second: incremental_mb_per_second
                        .unwrap_or(current.throttle.incremental.mb_per_second),
                });
            let info = client
                .modify_task(pb::ModifyTaskRequest {
                    task_id: info.task_id,
                    add_tables,
                    remove_tables,
                    full_throttle: full,
                    incremental_throttle: incremental,
                    alert_webhook: webhook.unwrap_or_default(),
                    lag_alert_seconds,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            render::task_line(out, &info, "modified")?;
        }
        TaskCommand::Delete {
            task,
            cleanup_source,
        } => {
            client
                .delete_task(pb::DeleteTaskRequest {
                    task_id: task.clone(),
                    cleanup_source,
                })
                .await
                .map_err(status_error)?;
            writeln!(out, "task {task} deleted")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
