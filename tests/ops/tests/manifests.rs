//! The deployment files pass schema validators from the package registries (installed by
//! scripts/install-deps.sh, schemas bundled, nothing fetched at test time):
//! - every resource the kustomization names, against the Kubernetes OpenAPI schemas
//!   (PyPI `kubernetes-validate`, strict: unknown fields are errors);
//! - deploy/compose.yaml against the Compose specification (PyPI `check-jsonschema`, its
//!   bundled `vendor.compose-spec` schema).
//!
//! Each validator is also shown a broken file, so a validator that accepts anything fails the test.

use dbsync_ops_tests::{repo_path, require_tool, run_tool};

fn kubernetes_validate(files: Vec<String>) -> (bool, String) {
    let mut args = vec!["--strict".to_string(), "--no-warn".to_string()];
    args.extend(files);
    let out = std::process::Command::new("kubernetes-validate")
        .args(&args)
        .output()
        .expect("run kubernetes-validate");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn kubernetes_manifests_match_the_kubernetes_schemas() {
    require_tool("kubernetes-validate", "--version");
    let dir = repo_path("deploy/k8s");
    let kustomization: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
            .unwrap();
    let resources: Vec<String> = kustomization["resources"]
        .as_sequence()
        .expect("kustomization.yaml lists resources")
        .iter()
        .map(|r| dir.join(r.as_str().unwrap()).display().to_string())
        .collect();
    assert!(resources.len() >= 5, "{resources:?}");
    let (ok, out) = kubernetes_validate(resources.clone());
    assert!(
        ok,
        "deploy/k8s does not match the Kubernetes schemas:\n{out}"
    );
    for file in &resources {
        assert!(
            out.contains(&format!("{file} passed")),
            "{file} was not validated:\n{out}"
        );
    }

    let broken = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        broken.path(),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: two\n  selector: {matchLabels: {app: x}}\n  template:\n    metadata: {labels: {app: x}}\n    spec: {containers: [{name: x, image: x, imagePullPolicy: Always, portz: []}]}\n",
    )
    .unwrap();
    let (ok, out) = kubernetes_validate(vec![broken.path().display().to_string()]);
    assert!(
        !ok && out.contains("replicas"),
        "a wrong type must fail validation:\n{out}"
    );
}

#[tokio::test]
async fn compose_file_matches_the_compose_specification() {
    require_tool("check-jsonschema", "--version");
    let check = |file: String| {
        run_tool(
            "check-jsonschema",
            vec![
                "--builtin-schema".into(),
                "vendor.compose-spec".into(),
                file,
            ],
        )
    };
    let (ok, out) = check(repo_path("deploy/compose.yaml").display().to_string()).await;
    assert!(
        ok && out.contains("ok -- validation done"),
        "deploy/compose.yaml does not match the Compose specification:\n{out}"
    );

    let broken = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(broken.path(), "services:\n  coordinator:\n    image: dbsync\n    ports: {bad: map}\n    restartt: always\n").unwrap();
    let (ok, out) = check(broken.path().display().to_string()).await;
    assert!(
        !ok && out.contains("restartt"),
        "an unknown service key must fail validation:\n{out}"
    );
}
