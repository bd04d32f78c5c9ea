//! The container image, as far as this sandbox can run one: `scripts/image.sh` builds it with buildah
//! FROM scratch from the binary this test command already built (no second compile), the test mounts it
//! (`buildah mount`) and runs its entrypoint under `chroot` as the image's user, with the image's
//! environment, against the Upstash emulator on the host; drives one job through it, stops it with
//! SIGTERM. (`podman run` is refused here: its runtime cannot set the rlimits in this sandbox.) Prints
//! the image's size and the time from start to `/health` 200.
//!
//! Needs buildah (scripts/install-tools.sh installs it) and root (chroot, buildah's storage).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{openai_provider, Api, ALICE};
use serde_json::{json, Value};
use testkit::fake::{FakeProvider, FakeReply, Wire};
use testkit::stack::{free_port, RedisServer, UpstashEmulator};

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/install-tools.sh installs buildah)"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes the working container and the image, whatever the test's outcome.
struct Cleanup {
    container: Option<String>,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(c) = &self.container {
            let _ = Command::new("buildah").args(["umount", c]).output();
            let _ = Command::new("buildah").args(["rm", c]).output();
        }
        let _ = Command::new("buildah").args(["rmi", "-f", &self.image]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_serves_a_job_from_its_own_filesystem() {
    let binary = env!("CARGO_BIN_EXE_stepper-local");
    let image = format!("localhost/stepper-local:test-{}", std::process::id());
    let mut cleanup = Cleanup {
        container: None,
        image: image.clone(),
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/image.sh");
    let built = run("bash", &[script, binary, &image]);
    let last = built.lines().last().unwrap_or_default().to_string();
    println!("image: {last}");
    let bytes: u64 = last
        .split_whitespace()
        .nth(2)
        .and_then(|b| b.parse().ok())
        .expect("size");

    // The image's own configuration: entrypoint, user, environment.
    let inspect: Value = serde_json::from_str(&run("buildah", &["inspect", "--type", "image", &image])).unwrap();
    let config = &inspect["OCIv1"]["config"];
    assert_eq!(config["User"], "10001:10001", "non-root");
    let entrypoint: Vec<String> = serde_json::from_value(config["Entrypoint"].clone()).unwrap();
    let image_env: Vec<String> = serde_json::from_value(config["Env"].clone()).unwrap();
    assert!(
        image_env.iter().any(|e| e == "STEPPER_LISTEN=0.0.0.0:3005"),
        "{image_env:?}"
    );

    let container = run("buildah", &["from", &image]);
    cleanup.container = Some(container.clone());
    let root = std::path::PathBuf::from(run("buildah", &["mount", &container]));
    assert!(root.join("etc/ssl/certs/ca-certificates.crt").is_file(), "CA bundle");

    let redis = RedisServer::start().await.expect("redis-server");
    let upstash = UpstashEmulator::start(&redis).await.expect("upstash emulator");
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    provider.set_default(FakeReply::openai_text(r#"{"answer": "from the image"}"#));
    // The providers file lives in the container's filesystem (its root is all the server sees).
    std::fs::write(
        root.join("stepper.toml"),
        openai_provider("alpha", &provider.base_url()),
    )
    .unwrap();

    // The image's environment, plus what an operator sets; the host's network (chroot shares it).
    let port = free_port().expect("free port");
    // chroot as found on the host's PATH (the child's environment is the image's, which has none).
    let chroot = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| std::path::Path::new(dir).join("chroot"))
        .find(|p| p.is_file())
        .expect("chroot (coreutils) on PATH");
    let mut cmd = tokio::process::Command::new(chroot);
    cmd.arg("--userspec=10001:10001")
        .arg(&root)
        .args(&entrypoint)
        .env_clear();
    for entry in &image_env {
        if let Some((k, v)) = entry.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.env("PORT", port.to_string())
        .env("STEPPER_API_KEYS", format!("alice={ALICE}"))
        .env("UPSTASH_REDIS_REST_URL", &upstash.url)
        .env("UPSTASH_REDIS_REST_TOKEN", &upstash.token)
        .env("STEPPER_CONFIG", "/stepper.toml")
        .env("FAKE_KEY", "sk-test")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd.spawn().expect("chroot");
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    let to_health = loop {
        if let Ok(r) = api.http.get(format!("{}/health", api.base)).send().await {
            if r.status() == 200 {
                break started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no /health 200 within 20 s"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the entrypoint exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!(
        "image: {bytes} bytes; /health 200 {} ms after start",
        to_health.as_millis()
    );

    let (code, queued) = api
        .post("/v1/generate", ALICE, json!({"prompt": "a job through the image"}))
        .await;
    assert_eq!(code, 202, "{queued}");
    let status_url = queued["statusUrl"].as_str().expect("queued");
    let done = api.wait_finished(status_url, ALICE, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["data"]["result"]["answer"], "from the image", "{done}");

    // Stopped as a platform stops it.
    let pid = child.id().expect("running").to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(25), child.wait())
        .await
        .expect("stopped within the grace")
        .unwrap();
    assert!(status.success(), "{status}");
}
