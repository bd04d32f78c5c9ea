//! `stepper-bench soak`: a steady rate of jobs for a long time on the Upstash stack (redis-server, the
//! Upstash REST emulator, an instant fake provider), against `stepper-local` or, separately, the four
//! functions under the local serverless loop (`scripts/serverless-local.sh`: `cargo lambda watch`,
//! moto's SQS, the SQS → step driver). Every job is submitted, polled until it ends, then purged, so
//! the store stays bounded and whatever grows is the process's own. Each window prints the server's
//! RSS, the Redis commands executed per finished job (scripts' inner commands included), and the
//! stuck and lost jobs so far; the end prints the spread of both over the run and fails when a job
//! was stuck, lost or answered with a 5xx.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use testkit::fake::FakeReply;
use testkit::instant::InstantProvider;
use testkit::stack::{RedisServer, UpstashEmulator};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::capacity::{stepper_env, temp_dir};
use crate::client::Conn;
use crate::process::{self, Server};
use crate::resp::Resp;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Local,
    Serverless,
}

pub(crate) struct Options {
    pub target: Target,
    pub minutes: f64,
    /// Jobs submitted per second, evenly spaced.
    pub rate: f64,
    pub sample_seconds: u64,
    /// A job not finished this long after its submit counts as stuck.
    pub stuck_seconds: u64,
    pub server: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            target: Target::Local,
            minutes: 60.0,
            rate: 5.0,
            sample_seconds: 60,
            stuck_seconds: 120,
            server: None,
        }
    }
}

#[derive(Default)]
struct Counters {
    submitted: AtomicU64,
    finished: AtomicU64,
    failed: AtomicU64,
    stuck: AtomicU64,
    lost: AtomicU64,
    server_errors: AtomicU64,
    refused: AtomicU64,
}

/// What is being soaked: where its API answers, its Redis, and the processes whose RSS counts.
struct Subject {
    api: SocketAddr,
    redis_port: u16,
    /// Kept alive for the run (dropping them stops the servers).
    _guards: Vec<Box<dyn std::any::Any + Send>>,
    /// (name, pid) of every process whose memory is the subject's: found again at each sample (the
    /// serverless loop starts a function's process on its first invocation).
    processes: Box<dyn Fn() -> Vec<(String, u32)> + Send + Sync>,
}

pub(crate) async fn run(o: Options) -> anyhow::Result<()> {
    let dir = temp_dir("soak")?;
    let provider = InstantProvider::start(FakeReply::openai_text("a soak answer")).await?;
    let subject = match o.target {
        Target::Local => local(&o, &dir, &provider).await?,
        Target::Serverless => serverless(&dir, &provider).await?,
    };
    let name = match o.target {
        Target::Local => "stepper-local",
        Target::Serverless => "the four functions (serverless loop)",
    };
    let total = (o.minutes * 60.0 * o.rate).round() as u64;
    eprintln!(
        "stepper-bench soak: {name} on the Upstash stack, {} jobs/s for {} min ({total} jobs), a line every {} s",
        o.rate, o.minutes, o.sample_seconds
    );
    // A first job loads the scripts (NOSCRIPT → EVAL) and, on the serverless loop, starts (and
    // builds) each function: the run measures what follows.
    let counters = Arc::new(Counters::default());
    one_job(
        subject.api,
        "soak-warm".into(),
        Duration::from_secs(600),
        &Counters::default(),
    )
    .await;
    let mut resp = Resp::connect(subject.redis_port).await?;
    let mut last_commands = resp.command_calls().await?;
    let started = Instant::now();
    let stuck_after = Duration::from_secs(o.stuck_seconds);
    let interval = Duration::from_secs_f64(1.0 / o.rate);
    // Set once the last job is submitted: windows after it hold the tail, not the steady rate.
    let all_submitted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let counters = counters.clone();
        let api = subject.api;
        let all_submitted = all_submitted.clone();
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for i in 0..total {
                tick.tick().await;
                let counters = counters.clone();
                tasks.spawn(async move { one_job(api, format!("soak-{i}"), stuck_after, &counters).await });
                while tasks.try_join_next().is_some() {}
            }
            all_submitted.store(true, Ordering::Relaxed);
            while tasks.join_next().await.is_some() {}
        })
    };
    println!("  min   jobs done  in flight  RSS MB (per process)                 cmds/job  stuck  lost  5xx");
    let mut rss_samples: Vec<u64> = Vec::new();
    let mut per_job: Vec<f64> = Vec::new();
    let mut last_finished = 0u64;
    let mut next = started + Duration::from_secs(o.sample_seconds);
    loop {
        let steady = !all_submitted.load(Ordering::Relaxed);
        // The last window ends when the last job does.
        while Instant::now() < next && !load.is_finished() {
            tokio::time::sleep(Duration::from_millis(250).min(next.saturating_duration_since(Instant::now()))).await;
        }
        next += Duration::from_secs(o.sample_seconds);
        let done = load.is_finished();
        let processes = (subject.processes)();
        let mut rss = 0u64;
        let mut parts = Vec::new();
        for (name, pid) in &processes {
            if let Ok(u) = process::usage(*pid) {
                rss += u.rss_bytes;
                parts.push(format!("{name} {:.1}", u.rss_bytes as f64 / 1e6));
            }
        }
        let commands = resp.command_calls().await?;
        let finished = counters.finished.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed);
        let window_jobs = finished - last_finished;
        let cmds = (commands - last_commands) as f64 / window_jobs.max(1) as f64;
        // The benchmark's own INFO is not counted by command_calls.
        last_commands = commands;
        last_finished = finished;
        let in_flight = counters
            .submitted
            .load(Ordering::Relaxed)
            .saturating_sub(finished + counters.stuck.load(Ordering::Relaxed) + counters.lost.load(Ordering::Relaxed));
        println!(
            "{:5.1}  {:9}  {:9}  {:7.1} ({:<28})  {:8.1}  {:5}  {:4}  {:3}",
            started.elapsed().as_secs_f64() / 60.0,
            finished,
            in_flight,
            rss as f64 / 1e6,
            parts.join(", "),
            cmds,
            counters.stuck.load(Ordering::Relaxed),
            counters.lost.load(Ordering::Relaxed),
            counters.server_errors.load(Ordering::Relaxed),
        );
        if window_jobs > 0 && steady && !all_submitted.load(Ordering::Relaxed) {
            rss_samples.push(rss);
            per_job.push(cmds);
        }
        if done {
            break;
        }
    }
    load.await?;
    let spread = |v: &[f64]| -> (f64, f64, f64) {
        let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = v.iter().cloned().fold(0.0, f64::max);
        (min, max, if min > 0.0 { (max - min) / min * 100.0 } else { 0.0 })
    };
    // The first window holds the process's warm-up (allocator pools, connection pools filling): the
    // spread is taken from the second window on, when there is one; windows that end after the last
    // submit (the tail, fewer jobs than the rate) are not counted either.
    if rss_samples.is_empty() {
        bail!("no whole window at the steady rate: run longer than --sample-seconds");
    }
    let skip = usize::from(rss_samples.len() > 2);
    let rss_mb: Vec<f64> = rss_samples[skip..].iter().map(|b| *b as f64 / 1e6).collect();
    let (rmin, rmax, rspread) = spread(&rss_mb);
    let (cmin, cmax, cspread) = spread(&per_job[skip..]);
    let c = &counters;
    let (stuck, lost, errors) = (
        c.stuck.load(Ordering::Relaxed),
        c.lost.load(Ordering::Relaxed),
        c.server_errors.load(Ordering::Relaxed),
    );
    println!(
        "soak {name}: {} jobs submitted in {:.1} min, {} completed, {} failed, {} refused (429/503), {stuck} stuck (> {} s), {lost} lost, {errors} 5xx",
        c.submitted.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64() / 60.0,
        c.finished.load(Ordering::Relaxed),
        c.failed.load(Ordering::Relaxed),
        c.refused.load(Ordering::Relaxed),
        o.stuck_seconds,
    );
    println!(
        "soak {name}: RSS {rmin:.1}–{rmax:.1} MB over the windows after the first (spread {rspread:.1} %, {}), Redis commands per job {cmin:.1}–{cmax:.1} (spread {cspread:.1} %)",
        if rspread <= 10.0 { "flat within 10 %" } else { "NOT flat within 10 %" }
    );
    if stuck + lost + errors > 0 {
        bail!("{stuck} stuck, {lost} lost, {errors} answers with a 5xx");
    }
    Ok(())
}

/// Submits one job, polls it until it ends (about once a second), then purges it.
async fn one_job(api: SocketAddr, prompt: String, stuck_after: Duration, c: &Counters) {
    let mut conn = Conn::new(api);
    let body = json!({"prompt": prompt, "responseMode": "text"}).to_string();
    let submitted = Instant::now();
    let id = loop {
        match conn.send("POST", "/v1/generate", Some(body.as_bytes())).await {
            Ok(a) if a.status == 202 || a.status == 200 => {
                match serde_json::from_slice::<Value>(&a.body)
                    .ok()
                    .and_then(|v| v["jobId"].as_str().map(str::to_string))
                {
                    Some(id) => break id,
                    None => {
                        c.server_errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
            // Refused (rate, in-flight, the store briefly busy): the caller tries again later, as
            // the Retry-After says; not a failure of the service.
            Ok(a) if a.status == 429 || a.status == 503 => {
                c.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(a) if a.status >= 500 => {
                c.server_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ => {
                c.server_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        if submitted.elapsed() > stuck_after {
            c.stuck.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    c.submitted.fetch_add(1, Ordering::Relaxed);
    let path = format!("/v1/jobs/{id}");
    loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        match conn.send("GET", &path, None).await {
            Ok(a) if a.status == 200 => {
                let status = serde_json::from_slice::<Value>(&a.body).unwrap_or_default()["status"].clone();
                if status == "completed" || status == "failed" {
                    let counter = if status == "completed" { &c.finished } else { &c.failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            Ok(a) if a.status == 404 => {
                c.lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(a) if a.status >= 500 && a.status != 503 => {
                c.server_errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        if submitted.elapsed() > stuck_after {
            c.stuck.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    match conn.send("DELETE", &path, None).await {
        Ok(a) if a.status >= 500 => {
            c.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

async fn local(o: &Options, dir: &Path, provider: &InstantProvider) -> anyhow::Result<Subject> {
    let program = process::stepper_local(o.server.as_deref())?;
    let redis = RedisServer::start().await?;
    let emulator = UpstashEmulator::start(&redis).await?;
    let port = testkit::stack::free_port()?;
    let env = stepper_env(dir, provider, port, Some((&emulator.url, &emulator.token)))?;
    let server = Server::start("stepper-local", &program, &[], &env, port, dir).await?;
    let pid = server.pid;
    Ok(Subject {
        api: server.addr,
        redis_port: redis.port,
        _guards: vec![Box::new(server), Box::new(emulator), Box::new(redis)],
        processes: Box::new(move || vec![("stepper-local".to_string(), pid)]),
    })
}

/// The local serverless loop, started as `scripts/serverless-local.sh` starts it, with an
/// environment file that points the functions at the instant provider.
async fn serverless(dir: &Path, provider: &InstantProvider) -> anyhow::Result<Subject> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let port = testkit::stack::free_port()?;
    let mut env: HashMap<String, String> = stepper_env(dir, provider, port, None)?.into_iter().collect();
    env.remove("PORT");
    let mut file = String::new();
    for (k, v) in &env {
        file.push_str(&format!("{k}={v}\n"));
    }
    // The soak calls without a key, as it does stepper-local on loopback; a function serving the API
    // refuses to start open unless told it is meant.
    file.push_str("STEPPER_ALLOW_OPEN=true\n");
    file.push_str("AWS_ACCESS_KEY_ID=test\nAWS_SECRET_ACCESS_KEY=test\nAWS_REGION=us-east-1\nRUST_LOG=warn\n");
    let env_file = dir.join("functions.env");
    std::fs::write(&env_file, file)?;
    let log = dir.join("serverless-local.log");
    let mut child = tokio::process::Command::new("bash")
        .arg(root.join("scripts/serverless-local.sh"))
        .env("WATCH_PORT", port.to_string())
        .env("SERVERLESS_ENV_FILE", &env_file)
        // An edit in the worktree must not restart the functions mid-soak (their RSS starts over).
        .env("WATCH_ARGS", "--ignore-changes")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .process_group(0)
        .spawn()
        .context("scripts/serverless-local.sh")?;
    let script_pid = child.id().context("no pid")?;
    let stdout = child.stdout.take().context("no stdout")?;
    // From here on, whatever happens, the loop's whole process group is stopped with the soak.
    let group = ProcessGroup(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut redis_port = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .context("serverless-local.sh was not ready within 120 s")??
            .with_context(|| format!("serverless-local.sh stopped (its log: {})", log.display()))?;
        eprintln!("{line}");
        if let Some(rest) = line.strip_prefix("serverless-local: redis-server :") {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            redis_port = digits.parse().ok();
        }
        if line == "serverless-local: ready" {
            break;
        }
    }
    let redis_port = redis_port.context("serverless-local.sh did not say its redis-server port")?;
    // The rest of its output (the driver's lines) is drained so the script never blocks on a pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Subject {
        api: SocketAddr::from(([127, 0, 0, 1], port)),
        redis_port,
        _guards: vec![Box::new(group)],
        processes: Box::new(move || functions_under(script_pid)),
    })
}

/// Stops the whole serverless loop (the script's process group: redis-server, the emulator, moto,
/// `cargo lambda watch` and its functions, the driver) when the soak ends or fails.
struct ProcessGroup(tokio::process::Child);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let Some(pid) = self.0.id() else { return };
        let group = format!("-{pid}");
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &group])
            .status();
        for _ in 0..50 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
    }
}

/// The function processes (submit, poll, purge, step) among the descendants of `root`.
fn functions_under(root: u32) -> Vec<(String, u32)> {
    let mut parent_of = HashMap::new();
    let mut names = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let ppid = stat[close + 2..]
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0);
        parent_of.insert(pid, ppid);
        names.insert(pid, name);
    }
    let descends = |mut pid: u32| {
        for _ in 0..64 {
            match parent_of.get(&pid) {
                Some(&p) if p == root => return true,
                Some(&p) if p > 1 => pid = p,
                _ => return false,
            }
        }
        false
    };
    let mut found: Vec<(String, u32)> = names
        .iter()
        .filter(|(pid, name)| ["submit", "poll", "purge", "step"].contains(&name.as_str()) && descends(**pid))
        .map(|(pid, name)| (name.clone(), *pid))
        .collect();
    found.sort();
    found
}
