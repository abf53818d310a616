//! Runs each benchmark of `dbsync-bench` with tiny sizes so the binary keeps working.

use std::process::Command;

fn bench(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_dbsync-bench"))
        .args(args)
        .args([
            "--in-process",
            "--rows",
            "3000",
            "--rate",
            "500",
            "--seconds",
            "2",
        ])
        .output()
        .expect("run dbsync-bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "dbsync-bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn full_sync_bench_runs_and_prints_its_ceiling() {
    let out = bench(&["full"]);
    assert!(
        out.contains("rows/s") && out.contains("ceiling") && out.contains("(d) verify"),
        "{out}"
    );
}

#[test]
fn standin_bench_runs() {
    let out = bench(&["standin"]);
    assert!(
        out.contains("SELECT 3000 rows") && out.contains("changes/s"),
        "{out}"
    );
}

#[test]
fn incremental_bench_runs_and_prints_lag() {
    let out = bench(&["incremental"]);
    assert!(out.contains("changes/s") && out.contains("p99"), "{out}");
}
