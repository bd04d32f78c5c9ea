//! The local serverless loop of `scripts/serverless-local.sh`, end to end: redis-server + the Upstash
//! emulator + moto SQS, the four functions under `cargo lambda watch`, and the SQS -> step driver. A
//! job submitted on the watch port's `/v1/generate` (as behind API Gateway) goes to SQS, the driver
//! hands it to `step`, the fake provider on loopback answers, `statusUrl` shows it completed, and a
//! purge removes it.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::fake::{FakeProvider, FakeReply, Wire};

/// The script's process group, stopped (SIGTERM: its trap stops every component) when dropped.
struct Loop(Child);

impl Drop for Loop {
    fn drop(&mut self) {
        // `--`: else kill(1) reads "-<pgid>" as a signal.
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// Polls `url` until `done` holds, for at most `within` (the first call to a function compiles it).
async fn until(
    http: &reqwest::Client,
    url: &str,
    within: Duration,
    done: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(response) = http.get(url).header("x-api-key", "dev-key").send().await {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if done(status, &body) {
                return (status, body);
            }
            assert!(
                Instant::now() < deadline,
                "{url}: still {status} {body} after {within:?}"
            );
        } else {
            assert!(Instant::now() < deadline, "{url}: no answer after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_goes_through_watch_sqs_and_step_then_is_purged() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    provider.set_default(FakeReply::openai_text("an answer through the serverless loop"));
    let port = testkit::stack::free_port().unwrap();
    // Cargo's per-test scratch directory: nothing else cleans it behind the running loop's back.
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("watch-loop-{}-{port}", std::process::id()));
    let providers = testkit::fake::providers_file(&dir, &provider.base_url(), 2000, None).unwrap();
    // The checked-in example, plus the fake provider's configuration.
    let example = std::fs::read_to_string(root.join("scripts/serverless-local.env")).unwrap();
    let env_file = dir.join("functions.env");
    std::fs::write(
        &env_file,
        format!("{example}\nSTEPPER_CONFIG={}\n", providers.display()),
    )
    .unwrap();

    let log = std::fs::File::create(dir.join("serverless-local.log")).unwrap();
    let child = Command::new("bash")
        .arg(root.join("scripts/serverless-local.sh"))
        .env("WATCH_PORT", port.to_string())
        .env("SERVERLESS_ENV_FILE", &env_file)
        .env("STEP_VISIBILITY", "5")
        .env("WATCH_ARGS", "--ignore-changes")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("bash runs scripts/serverless-local.sh");
    let _loop = Loop(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();

    eprintln!(
        "watch_loop: scripts/serverless-local.sh on port {port}, log in {}",
        dir.display()
    );
    // Up: /health through the watch router (poll compiles on first use).
    until(
        &http,
        &format!("{base}/health"),
        Duration::from_secs(900),
        |status, _| status == 200 || status == 503,
    )
    .await;

    eprintln!("watch_loop: /health answered; submitting");
    let submitted = http
        .post(format!("{base}/v1/generate"))
        .header("x-api-key", "dev-key")
        .json(&json!({"prompt": "Say something", "responseMode": "text"}))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status().as_u16(), 202);
    let submitted: Value = submitted.json().await.unwrap();
    let id = submitted["jobId"].as_str().unwrap().to_string();
    let status_url = submitted["statusUrl"].as_str().unwrap().to_string();
    let status_url = if status_url.starts_with("http") {
        status_url
    } else {
        format!("{base}{status_url}")
    };

    eprintln!("watch_loop: job {id} queued; waiting for the step driver");
    // The driver receives the step from SQS and invokes `step` (compiled on first use).
    let (_, done) = until(&http, &status_url, Duration::from_secs(900), |status, body| {
        status == 200 && (body["status"] == "completed" || body["status"] == "failed")
    })
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["data"]["result"], "an answer through the serverless loop");
    assert_eq!(provider.hits(), 1);

    eprintln!("watch_loop: completed; purging");
    let purged = http
        .delete(format!("{base}/v1/jobs/{id}"))
        .header("x-api-key", "dev-key")
        .send()
        .await
        .unwrap();
    assert_eq!(
        purged.status().as_u16(),
        200,
        "{}",
        purged.text().await.unwrap_or_default()
    );
    let gone = http
        .get(&status_url)
        .header("x-api-key", "dev-key")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status().as_u16(), 404, "the purged job is gone");
    let _ = std::fs::remove_dir_all(&dir);
}
