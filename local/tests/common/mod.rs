//! Runs the real `stepper-local` binary on a free port and talks to it over HTTP.

#![allow(dead_code)] // each test binary uses a different part of this harness

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const ALICE: &str = "alice-key";
pub const BOB: &str = "bob-key";

pub struct Local {
    pub base: String,
    pub http: reqwest::Client,
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
            base,
            http: reqwest::Client::new(),
            logs,
            child,
            _dir: dir,
        }
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON answer {status}: {text}")),
        )
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
