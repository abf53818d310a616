//! Every service settings file that deploy/ ships (deploy/config/*.toml for compose, the
//! dbsync-services ConfigMap for Kubernetes) parses with the real command line of its service,
//! and flags still override it.

use std::path::PathBuf;

use dbsync_apply::cli::ApplyArgs;
use dbsync_coordinator::CoordinatorArgs;

#[derive(clap::Parser)]
struct CaptureArgs {
    #[command(flatten)]
    config: dbsync_capture::CaptureConfig,
}

fn repo_path(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// (service, file name, content) of every shipped settings file.
fn shipped() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for service in ["coordinator", "capture", "apply"] {
        let name = format!("{service}.toml");
        let text = std::fs::read_to_string(repo_path("deploy/config").join(&name)).unwrap();
        out.push((service.to_string(), format!("deploy/config/{name}"), text));
    }
    let text = std::fs::read_to_string(repo_path("deploy/k8s/20-config.yaml")).unwrap();
    for part in text.split("\n---\n") {
        let doc: serde_yaml::Value = serde_yaml::from_str(part).unwrap();
        if doc["metadata"]["name"].as_str() != Some("dbsync-services") {
            continue;
        }
        for (key, value) in doc["data"].as_mapping().unwrap() {
            let key = key.as_str().unwrap();
            out.push((
                key.trim_end_matches(".toml").to_string(),
                format!("dbsync-services/{key}"),
                value.as_str().unwrap().to_string(),
            ));
        }
    }
    assert_eq!(
        out.len(),
        6,
        "three files for compose, three in the ConfigMap"
    );
    out
}

#[test]
fn shipped_settings_files_parse_with_each_service_s_command_line() {
    let dir = tempfile::tempdir().unwrap();
    for (service, origin, text) in shipped() {
        let path = dir.path().join(format!("{service}.toml"));
        std::fs::write(&path, &text).unwrap();
        let config = format!("--config={}", path.display());
        match service.as_str() {
            "coordinator" => {
                let a: CoordinatorArgs =
                    dbsync_config::try_parse_from(["dbsync-coordinator", &config])
                        .unwrap_or_else(|e| panic!("{origin}: {e}"));
                assert_eq!(a.config.listen.port(), 50051, "{origin}");
                assert!(a.config.metrics_listen.is_some(), "{origin}");
                let over: CoordinatorArgs = dbsync_config::try_parse_from([
                    "dbsync-coordinator",
                    &config,
                    "--lease-seconds=40",
                ])
                .unwrap();
                assert_eq!(over.config.lease_seconds, 40, "a flag beats {origin}");
            }
            "capture" => {
                let a: CaptureArgs = dbsync_config::try_parse_from(["dbsync-capture", &config])
                    .unwrap_or_else(|e| panic!("{origin}: {e}"));
                assert!(a.config.coordinator.is_some(), "{origin}");
                assert!(a.config.advertise_address.is_some(), "{origin}");
                assert_eq!(a.config.listen.port(), 50061, "{origin}");
            }
            "apply" => {
                let a: ApplyArgs = dbsync_config::try_parse_from(["dbsync-apply", &config])
                    .unwrap_or_else(|e| panic!("{origin}: {e}"));
                assert_eq!(a.listen.port(), 7302, "{origin}");
                assert!(a.metrics_listen.is_some(), "{origin}");
                let c = a.into_config();
                assert!(c.coordinator.contains("coordinator"), "{origin}");
            }
            other => panic!("unexpected settings file for {other} in {origin}"),
        }
    }
}

/// deploy/k8s-ha (used instead of the base's coordinator StatefulSet) passes the same strict
/// Kubernetes schema validation as deploy/k8s.
#[test]
fn highly_available_coordinator_manifest_matches_the_kubernetes_schemas() {
    dbsync_ops_tests::require_tool("kubernetes-validate", "--version");
    let file = repo_path("deploy/k8s-ha/coordinator-ha.yaml")
        .display()
        .to_string();
    let out = std::process::Command::new("kubernetes-validate")
        .args(["--strict", "--no-warn", &file])
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{file} does not validate:\n{text}");
    assert!(text.contains(&format!("{file} passed")), "{text}");
}
