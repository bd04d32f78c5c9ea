//! Runs the real `stepper-local` binary on a free port and talks to it over HTTP.

#![allow(dead_code)] // each test binary uses a different part of this harness

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

pub const ALICE: &str = "alice-key";
pub const BOB: &str = "bob-key";

/// An answer of the API: its status, headers and JSON body.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A stepper's HTTP API at `base` (`http://host:port`).
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

/// A running `stepper-local`: its API (`local.base`, `local.post(…)`, … through `Deref`) and its process.
pub struct Local {
    pub api: Api,
    /// Every line the process wrote to stderr (its log), in order.
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    child: Child,
    _dir: TempDir,
}

/// A temporary folder removed on drop (keeps the config file of one test).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("stepper-test-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}

/// One `[[providers]]` entry of an OpenAI-compatible fake.
pub fn openai_provider(name: &str, base_url: &str) -> String {
    format!(
        "[[providers]]\nname = \"{name}\"\nkind = \"openai\"\nbase_url = \"{base_url}\"\nmodel = \"fake-model\"\n\
         api_key_env = \"FAKE_KEY\"\ntimeout_ms = 3000\n\n"
    )
}

impl Api {
    pub fn new(base: String) -> Self {
        Self {
            base,
            http: reqwest::Client::new(),
        }
    }

    /// One request: `key` as `x-api-key`, `body` as JSON; the status, the headers and the JSON answer.
    pub async fn answer(&self, method: reqwest::Method, path: &str, key: Option<&str>, body: Option<Value>) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON answer {status}: {text}"));
        Answer { status, headers, body }
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let answer = self.answer(method, path, key, body).await;
        (answer.status, answer.body)
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, Some(key), Some(body)).await
    }

    pub async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, Some(key), None).await
    }

    pub async fn delete(&self, path: &str, key: &str) -> (u16, Value) {
        self.request(reqwest::Method::DELETE, path, Some(key), None).await
    }

    /// Polls a status URL until the job is completed or failed.
    pub async fn wait_finished(&self, status_url: &str, key: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (code, body) = self.get(status_url, key).await;
            assert_eq!(code, 200, "poll {status_url}: {body}");
            if body["status"] == "completed" || body["status"] == "failed" {
                return body;
            }
            assert!(Instant::now() < deadline, "job not finished in time: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl std::ops::Deref for Local {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Local {
    /// Starts `stepper-local` with this providers file and extra environment.
    pub async fn start(providers_toml: &str, env: &[(&str, &str)]) -> Local {
        Self::start_under(&[], providers_toml, env).await
    }

    /// [`Local::start`] under a wrapper command (`["prlimit", "--nofile=1024:1024"]`).
    pub async fn start_under(wrapper: &[&str], providers_toml: &str, env: &[(&str, &str)]) -> Local {
        let dir = TempDir::new();
        let config = dir.0.join("stepper.toml");
        std::fs::write(&config, providers_toml).expect("write config");
        let binary = env!("CARGO_BIN_EXE_stepper-local");
        let mut cmd = match wrapper {
            [] => Command::new(binary),
            [program, args @ ..] => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(binary);
                cmd
            }
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", "0")
            .env("STEPPER_CONFIG", &config)
            .env("FAKE_KEY", "sk-test")
            .env("STEPPER_API_KEYS", format!("alice={ALICE},bob={BOB}"))
            .env("LOG_FORMAT", "text")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // The machine's clock, when the test command runs with it moved (libfaketime, docs/testing.md): the server
        // must see the same date as the receivers and stores the test starts.
        for k in ["LD_PRELOAD", "FAKETIME", "FAKETIME_DONT_FAKE_MONOTONIC"] {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn stepper-local");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        // The log lines (tracing writes to stdout), kept for the tests that read them.
        let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let kept = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                kept.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let base = loop {
            let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
                .await
                .expect("stepper-local did not start in time")
                .expect("read stderr")
                .expect("stepper-local exited before listening");
            if let Some(addr) = line.strip_prefix("stepper-local listening on ") {
                break addr.trim().to_string();
            }
            logs.lock().unwrap().push(line);
        };
        // Keep draining stderr so the child never blocks on a full pipe, keeping the lines.
        let kept = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                kept.lock().unwrap().push(line);
            }
        });
        Local {
            api: Api::new(base),
            logs,
            child,
            _dir: dir,
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// Sends SIGTERM (what a platform sends to stop an instance).
    pub fn terminate(&self) {
        let pid = self.child.id().expect("the process is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits for the process to exit, at most `within` (None: still running).
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

/// A valid commit-report body; `sha` makes it unique.
pub fn report(sha: &str) -> Value {
    json!({
        "userId": "user-1",
        "commitSha": sha,
        "repo": "acme/diary",
        "message": "Add token refresh to the auth client",
        "files": ["src/auth.ts", "src/client.ts"],
        "components": ["auth"],
        "diffSummary": "diff --git a/src/auth.ts b/src/auth.ts\n+export function refresh() {}\n",
        "template": "default"
    })
}

/// A report the preset's schema accepts.
pub fn good_report_json() -> String {
    json!({
        "title": "Add token refresh to the auth client",
        "summary": "The auth client now refreshes its access token before it expires, so long sessions keep working.",
        "changes": ["Added refresh() to src/auth.ts", "Client retries once after a refresh"],
        "rationale": "Sessions were dropping after an hour when the token expired.",
        "impact_and_tests": "Affects every authenticated call; covered by the client tests.",
        "next_steps": ["Add metrics for refresh failures"],
        "tags": "auth, client"
    })
    .to_string()
}

/// The `p` quantile (0 to 1) of durations sorted in ascending order (zero when there are none).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A test that opens more than 1,100 descriptors: raises this process's soft limit to its hard one.
pub fn raise_own_limit() {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let hard = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_string))
        .unwrap_or_default();
    if !hard.is_empty() {
        let _ = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={hard}:{hard}"))
            .status();
    }
}

/// `/health` asked on a fresh connection every 100 ms (as a load balancer's check would) until
/// `until`: the answered requests' latencies, sorted, and why the others failed.
pub async fn health_checks(base: &str, timeout: Duration, until: Instant) -> (Vec<Duration>, Vec<String>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(timeout)
        .build()
        .unwrap();
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    while Instant::now() < until {
        let t = Instant::now();
        match client.get(format!("{base}/health")).send().await {
            Ok(r) if r.status() == 200 => latencies.push(t.elapsed()),
            Ok(r) => failures.push(format!("status {}", r.status())),
            Err(e) => failures.push(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    latencies.sort();
    (latencies, failures)
}

/// A tool under `.tools/`, or `None` (a skip, said on stderr) when it is not installed and this is not
/// CI; under `CI=true` a missing tool fails.
pub fn tool(relative: &str) -> Option<PathBuf> {
    let path = testkit::stack::tools_dir().join(relative);
    if path.exists() {
        return Some(path);
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "{} is missing: run scripts/install-tools.sh",
        path.display()
    );
    eprintln!(
        "SKIPPED: {} is not installed (scripts/install-tools.sh installs it)",
        path.display()
    );
    None
}

/// Runs `program` in `cwd` with `env` added, to its end within `within`.
pub async fn run(
    program: &std::path::Path,
    args: &[&str],
    cwd: &std::path::Path,
    env: &[(&str, String)],
    within: Duration,
) -> std::process::Output {
    let mut command = Command::new(program);
    command.args(args).current_dir(cwd).kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    tokio::time::timeout(within, command.output())
        .await
        .unwrap_or_else(|_| panic!("{} did not finish in {within:?}", program.display()))
        .unwrap_or_else(|e| panic!("{}: {e} (is it installed?)", program.display()))
}

/// What a process wrote, stdout then stderr.
pub fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// How a hostile connection holds its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Sends a request head one byte every 400 ms, never finishing it.
    SlowHeaders,
    /// Sends a whole head announcing 10,000 bytes of body, then one byte every 400 ms.
    SlowBody,
    /// Connects and sends nothing.
    Idle,
}

/// Opens one hostile connection and returns how long after connecting the server closed it (None: it
/// was still open when the test gave up).
pub async fn hostile(addr: String, kind: Kind, give_up: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(&addr).await.ok()?;
    let trickle: Vec<u8> = match kind {
        Kind::SlowHeaders => format!("GET /health HTTP/1.1\r\nhost: {addr}\r\nx-slow: ").into_bytes(),
        Kind::SlowBody => {
            let head = format!(
                "POST /v1/generate HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 10000\r\n\r\n{{\"prompt\": \""
            );
            stream.write_all(head.as_bytes()).await.ok()?;
            vec![b'a'; 10_000]
        }
        Kind::Idle => Vec::new(),
    };
    let mut next = 0;
    let mut buf = [0u8; 1024];
    loop {
        if started.elapsed() > give_up {
            return None;
        }
        match tokio::time::timeout(Duration::from_millis(400), stream.read(&mut buf)).await {
            // The server closed (or reset) the connection; an answer before that is read and ignored.
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => {}
        }
        if next < trickle.len() {
            if stream.write_all(&trickle[next..next + 1]).await.is_err() {
                return Some(started.elapsed());
            }
            next += 1;
        }
    }
}
