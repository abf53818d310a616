//! Helpers for the operational tests: a coordinator served in-process through its public
//! `serve` entry point, and external tools (grpcurl, schema validators) run as the user would.

use std::path::PathBuf;
use std::process::Command;

use dbsync_coordinator::{CancellationToken, CoordinatorConfig};

/// A coordinator served by `dbsync_coordinator::serve` on 127.0.0.1:0 with a SQLite store in
/// a temporary directory; stopped (and awaited) by [`Coordinator::stop`].
pub struct Coordinator {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    pub shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Coordinator {
    /// Starts a coordinator; `token` makes its API require `authorization: Bearer <token>`.
    pub async fn start(token: Option<&str>) -> Coordinator {
        Self::start_with(token, |_| {}).await
    }

    /// Starts a coordinator after `adjust` has changed its configuration.
    pub async fn start_with(
        token: Option<&str>,
        adjust: impl FnOnce(&mut CoordinatorConfig),
    ) -> Coordinator {
        let dir = tempfile::tempdir().expect("temporary directory");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address").to_string();
        let mut config = CoordinatorConfig {
            store: dir.path().join("coordinator.db").display().to_string(),
            auth_token: token.map(dbsync_core::Secret::new),
            tick_ms: 100,
            ..Default::default()
        };
        adjust(&mut config);
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(dbsync_coordinator::serve(
            config,
            listener,
            shutdown.clone(),
        ));
        Coordinator {
            addr,
            shutdown,
            handle,
            _dir: dir,
        }
    }

    /// Cancels the shutdown token and waits for a clean stop.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle
            .await
            .expect("coordinator task")
            .expect("coordinator stopped cleanly");
    }
}

/// Path of a file in the repository, from this crate's directory.
pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

/// Panics with the fix when an external tool the tests need is not on PATH.
pub fn require_tool(tool: &str, version_arg: &str) {
    if Command::new(tool).arg(version_arg).output().is_err() {
        panic!("{tool} is not installed: run `make deps` (scripts/install-deps.sh installs it; CI runs it)");
    }
}

/// Runs a command off the async runtime; returns (success, stdout + stderr).
pub async fn run_tool(program: &str, args: Vec<String>) -> (bool, String) {
    let program = program.to_string();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(&program)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    })
    .await
    .expect("tool runner")
}
