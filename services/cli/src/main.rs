//! `dbsync`: the command-line client of the coordinator, and `dbsync up`.
use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = dbsync_cli::Cli::parse();
    match dbsync_cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
