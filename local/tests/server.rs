//! stepper-local as a production server: where it listens and what it refuses off loopback, and how it
//! stops on SIGTERM (in-flight requests and steps finish, new connections are refused, the exit is clean
//! and the jobs it could not finish stay in the store for the other instances).

mod common;

use std::time::{Duration, Instant};

use common::{openai_provider, Local, ALICE};
use serde_json::json;
use testkit::fake::{FakeProvider, FakeReply, Wire};
use testkit::stack::{RedisServer, UpstashEmulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs the binary to its end with this environment; returns its exit code and stderr.
fn run_to_exit(env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_stepper-local"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LOG_FORMAT", "text");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run stepper-local");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The line saying why `stepper-local` refused to start with `env` (exit status 2).
fn refusal(env: &[(&str, &str)]) -> String {
    let (code, _, stderr) = run_to_exit(env);
    assert_eq!(code, Some(2), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("refusing"))
        .expect("one refusal line");
    line.to_string()
}

#[test]
fn off_loopback_it_refuses_to_start_open_or_on_the_memory_store() {
    let line = refusal(&[("STEPPER_LISTEN", "0.0.0.0:0")]);
    assert!(line.contains("STEPPER_API_KEYS"), "{line}");
    assert!(line.contains("0.0.0.0"), "{line}");

    let line = refusal(&[("STEPPER_LISTEN", "0.0.0.0:0"), ("STEPPER_API_KEYS", "alice=k1")]);
    assert!(line.contains("STEPPER_ALLOW_MEMORY_STORE"), "{line}");
    assert!(line.contains("UPSTASH_REDIS_REST_URL"), "{line}");

    // A bad address is a configuration error, exit 2 too, naming the variable.
    let (code, _, stderr) = run_to_exit(&[("STEPPER_LISTEN", "localhost:3005")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("STEPPER_LISTEN: not an address"), "{stderr}");
}

#[tokio::test]
async fn it_listens_where_asked_with_keys_and_the_memory_store_allowed() {
    let local = Local::start(
        "",
        &[
            ("STEPPER_LISTEN", "0.0.0.0:3005"),
            ("STEPPER_ALLOW_MEMORY_STORE", "true"),
        ],
    )
    .await;
    // The harness's PORT=0 replaces the port (as a platform's PORT would), keeping the host.
    assert!(local.base.starts_with("http://0.0.0.0:"), "{}", local.base);
    assert!(!local.base.ends_with(":3005"), "{}", local.base);
    let port = local.base.rsplit(':').next().unwrap();
    // Reached on loopback (0.0.0.0 is every address of the machine).
    let answer = reqwest::get(format!("http://127.0.0.1:{port}/ready")).await.unwrap();
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

/// A request whose body is half sent when SIGTERM arrives is answered; a step under way finishes (the
/// provider is called once, the job completes); new connections are refused; the process exits 0
/// well within SHUTDOWN_GRACE_SECONDS. A second instance on the same store then sees the job done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_and_steps_then_exits() {
    let redis = RedisServer::start().await.expect("redis-server");
    let upstash = UpstashEmulator::start(&redis).await.expect("upstash emulator");
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    provider.set_default(FakeReply::openai_text(r#"{"answer": "drained"}"#).with_delay(Duration::from_millis(1500)));
    let env = [
        ("UPSTASH_REDIS_REST_URL", upstash.url.as_str()),
        ("UPSTASH_REDIS_REST_TOKEN", upstash.token.as_str()),
        ("SWEEP_GRACE_SECONDS", "1"),
        ("SHUTDOWN_GRACE_SECONDS", "10"),
    ];
    let config = openai_provider("alpha", &provider.base_url());
    let mut local = Local::start(&config, &env).await;
    let addr = local.base.trim_start_matches("http://").to_string();

    let (code, queued) = local.post("/v1/generate", ALICE, json!({"prompt": "drain me"})).await;
    assert_eq!(code, 202, "{queued}");
    let status_url = queued["statusUrl"].as_str().unwrap().to_string();
    // The step is under way once the provider has the call.
    let deadline = Instant::now() + Duration::from_secs(10);
    while provider.hits() == 0 {
        assert!(Instant::now() < deadline, "the step never called the provider");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A request in flight: its head and half its body sent.
    let body = json!({"prompt": "submitted while draining"}).to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut in_flight = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/generate HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {ALICE}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{first}",
        body.len()
    );
    in_flight.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = Instant::now();
    local.terminate();
    // New connections are refused once the listener is closed.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match tokio::net::TcpStream::connect(&addr).await {
            Err(_) => break,
            Ok(_) => {
                assert!(Instant::now() < deadline, "still accepting connections after SIGTERM");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // The request in flight is answered.
    in_flight.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), in_flight.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 202"), "the in-flight request: {answer}");

    let status = local
        .wait_exit(Duration::from_secs(12))
        .await
        .expect("exited within the grace");
    let took = signalled.elapsed();
    println!("drain: exited {status} {} ms after SIGTERM", took.as_millis());
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(10), "took the whole grace: {took:?}");

    // The step under way finished before the exit: the job is done, the provider called for it once.
    let other = Local::start(&config, &env).await;
    let done = other.wait_finished(&status_url, ALICE, Duration::from_secs(15)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let calls_for_first = provider
        .requests()
        .iter()
        .filter(|r| r.body.to_string().contains("drain me"))
        .count();
    assert_eq!(calls_for_first, 1, "the step under way ran once");
}
