//! The Kubernetes manifests under deploy/kubernetes/ pass a strict schema check (`kubernetes-validate`
//! from PyPI, with the schemas it ships), and the check does catch a broken one. The manifests' probes
//! point at the routes stepper-local serves.

use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::stack::tools_dir;

fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

fn validate(files: &[PathBuf]) -> (bool, String) {
    let validator = tools_dir().join("venv/bin/kubernetes-validate");
    assert!(
        validator.exists(),
        "{} is missing: run scripts/install-tools.sh",
        validator.display()
    );
    let out = Command::new(validator)
        .arg("--strict")
        .args(files)
        .output()
        .expect("kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_kubernetes_manifests_are_valid() {
    let files = [
        repo("deploy/kubernetes/deployment.yaml"),
        repo("deploy/kubernetes/service.yaml"),
    ];
    let (ok, text) = validate(&files);
    assert!(ok, "{text}");
    assert_eq!(text.matches("passed").count(), 2, "{text}");

    let deployment = std::fs::read_to_string(&files[0]).unwrap();
    for needle in [
        "path: /health",
        "path: /ready",
        "containerPort: 3005",
        "runAsUser: 10001",
    ] {
        assert!(deployment.contains(needle), "deployment.yaml lacks {needle}");
    }

    // The check is real: a misspelt field is refused.
    let dir = std::env::temp_dir().join(format!("stepper-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("deployment.yaml");
    std::fs::write(&broken, deployment.replace("containerPort:", "containerPorts:")).unwrap();
    let (ok, text) = validate(&[broken]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!ok, "a broken manifest passed: {text}");
}
