//! The deployment files stay valid: every Kubernetes manifest has the fields the API server
//! requires and consistent selectors, services target named container ports, secrets and
//! config maps referenced exist, the coordinator's flags parse, and the compose file and the
//! kustomization name files and services that exist.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_yaml::Value;

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn docs(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("missing string at {path:?} in {v:?}"))
}

/// The coordinator accepts exactly these flags, reading its `--config` file from `settings`
/// (file name -> content, as mounted).
fn coordinator_flags_parse(args: &[String], settings: &[(String, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = args
        .iter()
        .map(|a| match a.strip_prefix("--config=") {
            Some(path) => {
                let name = path.rsplit('/').next().unwrap();
                let (_, content) = settings
                    .iter()
                    .find(|(n, _)| n == name)
                    .unwrap_or_else(|| panic!("no settings file {name} for {path}"));
                let local = dir.path().join(name);
                std::fs::write(&local, content).unwrap();
                format!("--config={}", local.display())
            }
            None => a.clone(),
        })
        .collect();
    let parsed: dbsync_coordinator::CoordinatorArgs = dbsync_config::try_parse_from(&args)
        .unwrap_or_else(|e| panic!("coordinator flags {args:?} do not parse: {e}"));
    assert_eq!(parsed.config.listen.port(), 50051);
    assert_eq!(
        parsed.config.metrics_listen.map(|a| a.port()),
        Some(9090),
        "metrics on"
    );
}

/// `key = "value"` of a service settings file.
fn setting(toml_text: &str, key: &str) -> String {
    let v: toml::Value = toml::from_str(toml_text).unwrap();
    v[key].as_str().unwrap_or_default().to_string()
}

#[test]
fn kubernetes_manifests_are_well_formed_and_consistent() {
    let dir = deploy().join("k8s");
    let kustomization = docs(&dir.join("kustomization.yaml")).remove(0);
    let mut all = Vec::new();
    for r in kustomization["resources"].as_sequence().unwrap() {
        let file = dir.join(r.as_str().unwrap());
        assert!(
            file.exists(),
            "kustomization names a missing file {}",
            file.display()
        );
        all.extend(docs(&file));
    }
    let mut secrets = BTreeSet::new();
    let mut configmaps = BTreeSet::new();
    let mut kinds = Vec::new();
    for d in &all {
        let kind = s(d, &["kind"]);
        assert!(!s(d, &["apiVersion"]).is_empty());
        assert!(!s(d, &["metadata", "name"]).is_empty());
        if kind != "Namespace" {
            assert_eq!(
                s(d, &["metadata", "namespace"]),
                "dbsync",
                "{kind} {}",
                s(d, &["metadata", "name"])
            );
        }
        match kind {
            "Secret" => {
                secrets.insert(s(d, &["metadata", "name"]).to_string());
            }
            "ConfigMap" => {
                configmaps.insert(s(d, &["metadata", "name"]).to_string());
            }
            _ => {}
        }
        kinds.push(kind.to_string());
    }
    for k in [
        "Namespace",
        "Secret",
        "ConfigMap",
        "StatefulSet",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k}");
    }
    let settings: Vec<(String, String)> = all
        .iter()
        .filter(|d| {
            s(d, &["kind"]) == "ConfigMap" && s(d, &["metadata", "name"]) == "dbsync-services"
        })
        .flat_map(|d| d["data"].as_mapping().unwrap().iter())
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_string(),
                v.as_str().unwrap().to_string(),
            )
        })
        .collect();
    for service in ["capture", "apply"] {
        let (_, text) = settings
            .iter()
            .find(|(n, _)| *n == format!("{service}.toml"))
            .unwrap_or_else(|| panic!("dbsync-services has no {service}.toml"));
        assert_eq!(
            setting(text, "coordinator"),
            "http://dbsync-coordinator.dbsync.svc:50051",
            "{service} points at the coordinator's Service"
        );
    }
    let workloads: Vec<&Value> = all
        .iter()
        .filter(|d| matches!(s(d, &["kind"]), "Deployment" | "StatefulSet"))
        .collect();
    assert_eq!(workloads.len(), 3, "coordinator, capture, apply");
    for w in &workloads {
        let name = s(w, &["metadata", "name"]);
        assert_eq!(
            w["spec"]["selector"]["matchLabels"], w["spec"]["template"]["metadata"]["labels"],
            "{name}: selector must match the pod labels"
        );
        let containers = w["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .unwrap();
        for c in containers {
            let args: Vec<String> = c["args"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            assert!(
                ["dbsync-coordinator", "dbsync-capture", "dbsync-apply"]
                    .contains(&args[0].as_str()),
                "{name}: {args:?}"
            );
            assert!(
                args.iter()
                    .any(|a| a.starts_with("--config=/etc/dbsync-settings/")),
                "{name} reads its settings file: {args:?}"
            );
            if args[0] == "dbsync-coordinator" {
                coordinator_flags_parse(&args, &settings);
            }
            for env in c["env"].as_sequence().into_iter().flatten() {
                if let Some(secret) = env["valueFrom"]["secretKeyRef"]["name"].as_str() {
                    assert!(
                        secrets.contains(secret),
                        "{name} uses unknown secret {secret}"
                    );
                }
            }
            let ports: BTreeSet<&str> = c["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            // A Service selecting this workload must target ports it names.
            for svc in all.iter().filter(|d| s(d, &["kind"]) == "Service") {
                if svc["spec"]["selector"] == w["spec"]["selector"]["matchLabels"] {
                    for p in svc["spec"]["ports"].as_sequence().unwrap() {
                        let target = p["targetPort"].as_str().unwrap();
                        assert!(
                            ports.contains(target),
                            "service {} targets unknown port {target}",
                            s(svc, &["metadata", "name"])
                        );
                    }
                }
            }
        }
        for v in w["spec"]["template"]["spec"]["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            if let Some(secret) = v["secret"]["secretName"].as_str() {
                assert!(
                    secrets.contains(secret),
                    "{name} mounts unknown secret {secret}"
                );
            }
            if let Some(cm) = v["configMap"]["name"].as_str() {
                assert!(
                    configmaps.contains(cm),
                    "{name} mounts unknown config map {cm}"
                );
            }
        }
    }
    let coordinator = workloads
        .iter()
        .find(|w| s(w, &["kind"]) == "StatefulSet")
        .unwrap();
    assert!(
        coordinator["spec"]["volumeClaimTemplates"]
            .as_sequence()
            .is_some_and(|v| !v.is_empty()),
        "the store needs a PVC"
    );
    // The task in the ConfigMap is a valid task definition.
    let cm = all.iter().find(|d| s(d, &["kind"]) == "ConfigMap").unwrap();
    dbsync_coordinator::TaskSpec::parse(s(cm, &["data", "task.yaml"])).unwrap();
}

#[test]
fn compose_file_is_consistent() {
    let compose = docs(&deploy().join("compose.yaml")).remove(0);
    let services = compose["services"].as_mapping().unwrap();
    for name in ["coordinator", "capture", "apply"] {
        assert!(services.contains_key(name), "service {name}");
    }
    let command: Vec<String> = compose["services"]["coordinator"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(command[0], "dbsync-coordinator");
    let config_dir = deploy().join("config");
    let settings: Vec<(String, String)> = ["coordinator.toml", "capture.toml", "apply.toml"]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                std::fs::read_to_string(config_dir.join(n)).unwrap(),
            )
        })
        .collect();
    coordinator_flags_parse(&command, &settings);
    let declared: BTreeSet<String> = compose["secrets"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    for s in compose["services"]["coordinator"]["secrets"]
        .as_sequence()
        .unwrap()
    {
        assert!(declared.contains(s.as_str().unwrap()));
    }
    assert!(compose["volumes"]
        .as_mapping()
        .unwrap()
        .contains_key("coordinator-state"));
    for name in ["capture", "apply"] {
        let cmd = compose["services"][name]["command"].as_sequence().unwrap();
        let file = format!("{name}.toml");
        assert!(
            cmd.iter()
                .any(|a| a.as_str() == Some(&format!("--config=/etc/dbsync/{file}"))),
            "{name} reads its settings file"
        );
        let mounts = compose["services"][name]["volumes"].as_sequence().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m.as_str() == Some(&format!("./config/{file}:/etc/dbsync/{file}:ro"))),
            "{name} mounts deploy/config/{file}"
        );
        let (_, text) = settings.iter().find(|(n, _)| *n == file).unwrap();
        assert_eq!(
            setting(text, "coordinator"),
            "http://coordinator:50051",
            "{name} points at the coordinator"
        );
    }
}

#[test]
fn highly_available_coordinator_manifest_is_consistent() {
    let docs = docs(&deploy().join("k8s-ha/coordinator-ha.yaml"));
    let secret = docs.iter().find(|d| s(d, &["kind"]) == "Secret").unwrap();
    let store_url = s(secret, &["stringData", "url"]);
    assert!(
        dbsync_coordinator::pg_store::is_postgres_url(store_url),
        "{store_url}"
    );
    let deployment = docs
        .iter()
        .find(|d| s(d, &["kind"]) == "Deployment")
        .unwrap();
    assert_eq!(s(deployment, &["metadata", "namespace"]), "dbsync");
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );
    // It replaces the StatefulSet behind the same Service.
    let base = docs_of_kustomization();
    let service = base
        .iter()
        .find(|d| {
            s(d, &["kind"]) == "Service" && s(d, &["metadata", "name"]) == "dbsync-coordinator"
        })
        .unwrap();
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        s(c, &["readinessProbe", "grpc", "service"]),
        "dbsync.v1.CoordinatorService",
        "only the leader is ready"
    );
    let env = c["env"].as_sequence().unwrap();
    let store = env
        .iter()
        .find(|e| e["name"].as_str() == Some("DBSYNC_COORDINATOR_STORE"))
        .expect("the store URL comes from the environment");
    assert_eq!(
        s(store, &["valueFrom", "secretKeyRef", "name"]),
        "dbsync-coordinator-store"
    );
    // The settings file it mounts exists in the base ConfigMap and parses with the flags.
    let settings: Vec<(String, String)> = base
        .iter()
        .filter(|d| {
            s(d, &["kind"]) == "ConfigMap" && s(d, &["metadata", "name"]) == "dbsync-services"
        })
        .flat_map(|d| d["data"].as_mapping().unwrap().iter())
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_string(),
                v.as_str().unwrap().to_string(),
            )
        })
        .collect();
    let args: Vec<String> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    coordinator_flags_parse(&args, &settings);
}

/// Every document of the resources deploy/k8s/kustomization.yaml names.
fn docs_of_kustomization() -> Vec<Value> {
    let dir = deploy().join("k8s");
    let kustomization = docs(&dir.join("kustomization.yaml")).remove(0);
    kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|r| docs(&dir.join(r.as_str().unwrap())))
        .collect()
}
