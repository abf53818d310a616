//! One initdb per machine (per PostgreSQL version and configuration), copied for every cluster.
//! initdb takes a second or more; copying the ~40 MB template takes a few milliseconds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::process::{self, RunAs};
use crate::{PgTestError, SUPERUSER};

/// Bump when the template contents below change, so stale templates are not reused.
const TEMPLATE_REVISION: u32 = 1;
const READY_MARKER: &str = "dbsync-pgtest-template-ready";

/// Settings for speed (durability is pointless in a throwaway cluster) and for many clients.
const SERVER_SETTINGS: &str = "
# dbsync-pgtest settings
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
max_connections = 200
max_locks_per_transaction = 256
wal_level = minimal
max_wal_senders = 0
max_wal_size = 1GB
checkpoint_timeout = 30min
listen_addresses = '127.0.0.1'
log_min_messages = warning
log_line_prefix = '%m [%p] '
";

/// Loopback connections trust every role except members of this group role, which must log in
/// with a SCRAM password (see `PgCluster::create_password_role`).
pub const PASSWORD_GROUP: &str = "pgtest_password_users";

fn hba_rules() -> String {
    format!(
        "local all all trust\n\
         host all +{PASSWORD_GROUP} 127.0.0.1/32 scram-sha-256\n\
         host all +{PASSWORD_GROUP} ::1/128 scram-sha-256\n\
         host all all 127.0.0.1/32 trust\n\
         host all all ::1/128 trust\n"
    )
}

/// The template data directory, created on first use.
pub fn template_dir(run_as: RunAs) -> Result<&'static Path, PgTestError> {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| build_template(run_as).map_err(|e| e.to_string()))
        .as_deref()
        .map_err(|e| PgTestError::Template(e.clone()))
}

fn build_template(run_as: RunAs) -> Result<PathBuf, PgTestError> {
    let bin = process::bin_dir()?;
    let version = std::fs::read_link(bin)
        .unwrap_or_else(|_| bin.to_path_buf())
        .display()
        .to_string()
        .replace(['/', ' '], "_");
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let cache_root = std::env::temp_dir().join("dbsync-pgtest-templates");
    std::fs::create_dir_all(&cache_root).map_err(|e| io_error("create template cache dir", e))?;
    let final_dir = cache_root.join(format!("r{TEMPLATE_REVISION}-u{euid}{version}"));
    if final_dir.join(READY_MARKER).exists() {
        return Ok(final_dir);
    }

    // Build in a private directory and rename it into place, so concurrent test processes never
    // see a half-built template.
    let staging = tempfile::Builder::new()
        .prefix("staging-")
        .tempdir_in(&cache_root)
        .map_err(|e| io_error("create template staging dir", e))?;
    run_as.chown(staging.path())?;
    let data = staging.path().join("data");
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        ])
        .args(["--no-sync", "--no-instructions"])
        .current_dir(staging.path());
    run_as.configure(&mut initdb);
    process::run(initdb, "initdb")?;

    append(&data.join("postgresql.conf"), SERVER_SETTINGS)?;
    std::fs::write(data.join("pg_hba.conf"), hba_rules())
        .map_err(|e| io_error("write pg_hba.conf", e))?;
    run_as.chown(&data.join("pg_hba.conf"))?;
    std::fs::write(data.join(READY_MARKER), b"")
        .map_err(|e| io_error("write template marker", e))?;

    let staged = staging.keep();
    match std::fs::rename(staged.join("data"), &final_dir) {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&staged);
            Ok(final_dir)
        }
        // Another process won the race; its template is just as good.
        Err(_) if final_dir.join(READY_MARKER).exists() => {
            let _ = std::fs::remove_dir_all(&staged);
            Ok(final_dir)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staged);
            Err(io_error("move template into place", e))
        }
    }
}

fn append(path: &Path, text: &str) -> Result<(), PgTestError> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| io_error("open postgresql.conf", e))?;
    file.write_all(text.as_bytes())
        .map_err(|e| io_error("append postgresql.conf", e))
}

/// Copies the template data directory to `dest` (which must not exist), keeping owners and
/// modes (postgres insists on 0700 and on owning its data directory).
pub fn copy_template(template: &Path, dest: &Path) -> Result<(), PgTestError> {
    let mut cp = Command::new("cp");
    cp.arg("-a").arg(template).arg(dest);
    process::run(cp, "copy the template data directory").map(|_| ())
}

fn io_error(what: &str, source: std::io::Error) -> PgTestError {
    PgTestError::Io {
        what: what.to_string(),
        source,
    }
}
