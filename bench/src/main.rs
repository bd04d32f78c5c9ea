//! `stepper-bench`: runs N commit-report jobs through the real local stack (redis-server, the Upstash
//! REST emulator, a fake OpenAI-compatible provider) and prints what each delivered job cost:
//! Upstash REST requests (counted on the wire by a proxy), Redis commands (INFO commandstats, which
//! counts the commands inside scripts too), bytes held per finished job, and requests while idle.
//!
//! Usage: `cargo run --release -p stepper-bench -- [--jobs N] [--idle-seconds S]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use shared::config::{Config, Secret};
use shared::queue::local::{run_workers, LocalQueue, WorkerPolicy};
use shared::store::upstash::UpstashClient;
use testkit::fake::{FakeProvider, FakeReply, Wire};
use testkit::stack::{RedisServer, UpstashEmulator};
use tower::ServiceExt;

struct Options {
    jobs: usize,
    idle_seconds: u64,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        jobs: 100,
        idle_seconds: 60,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--jobs" => o.jobs = value.parse().context("--jobs")?,
            "--idle-seconds" => o.idle_seconds = value.parse().context("--idle-seconds")?,
            other => bail!("unknown flag {other} (use --jobs N, --idle-seconds S)"),
        }
    }
    Ok(o)
}

/// Forwards every request to the emulator and counts it: the REST requests Upstash would bill.
#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    requests: Arc<AtomicU64>,
}

async fn forward(State(proxy): State<Proxy>, request: Request<Body>) -> Response {
    proxy.requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024 * 1024).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut upstream = proxy
        .http
        .post(format!("{}{}", proxy.upstream, parts.uri.path()))
        .body(bytes);
    for name in [http::header::AUTHORIZATION, http::header::CONTENT_TYPE] {
        if let Some(value) = parts.headers.get(&name) {
            upstream = upstream.header(name, value);
        }
    }
    match upstream.send().await {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, r.bytes().await.unwrap_or_default()).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

async fn start_proxy(upstream: &str) -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let requests = Arc::new(AtomicU64::new(0));
    let proxy = Proxy {
        upstream: upstream.to_string(),
        http: reqwest::Client::new(),
        requests: requests.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, requests))
}

const BENCH_RATE_LIMIT: &str = "1000000/1h";
const BENCH_MAX_IN_FLIGHT: &str = "100000";

fn report_body(i: usize) -> Value {
    json!({
        "userId": "bench-user", "commitSha": format!("sha-{i:06}"), "repo": "acme/diary",
        "message": "Add token refresh to the auth client", "files": ["src/auth.ts", "src/client.ts"],
        "components": ["auth"], "diffSummary": "diff --git a/src/auth.ts b/src/auth.ts\n+export function refresh() {}\n",
        "template": "default"
    })
}

const REPORT: &str = r#"{"title":"Add token refresh to the auth client","summary":"The auth client now refreshes its access token before it expires, so long sessions keep working.","changes":["Added refresh() to src/auth.ts","Client retries once after a refresh"],"rationale":"Sessions were dropping after an hour when the token expired.","impact_and_tests":"Affects every authenticated call; covered by the client tests.","next_steps":["Add metrics for refresh failures"],"tags":"auth, client"}"#;

async fn call(app: &axum::Router, method: &str, uri: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))?;
    let response = app.clone().oneshot(request).await?;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024).await?;
    Ok((status, serde_json::from_slice(&bytes)?))
}

/// Commands the jobs executed; the benchmark's own `INFO`/`CONFIG RESETSTAT` are not theirs.
fn total_calls(stats: &std::collections::HashMap<String, u64>) -> u64 {
    stats
        .iter()
        .filter(|(name, _)| !name.starts_with("info") && !name.starts_with("config"))
        .map(|(_, calls)| calls)
        .sum()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = options()?;
    let redis = RedisServer::start().await?;
    let upstash = UpstashEmulator::start(&redis).await?;
    let (proxy_url, requests) = start_proxy(&upstash.url).await?;
    let provider = FakeProvider::start(Wire::OpenAi).await?;
    provider.set_default(FakeReply::openai_text(REPORT));

    let dir = std::env::temp_dir().join(format!("stepper-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config_path = dir.join("providers.toml");
    std::fs::write(
        &config_path,
        format!(
            "[[providers]]\nname = \"fake\"\nkind = \"openai\"\nbase_url = \"{}\"\nmodel = \"m\"\napi_key_env = \"FAKE_KEY\"\ntimeout_ms = 5000\n",
            provider.base_url()
        ),
    )?;
    let env = |name: &str| match name {
        "UPSTASH_REDIS_REST_URL" => Some(proxy_url.clone()),
        "UPSTASH_REDIS_REST_TOKEN" => Some(upstash.token.clone()),
        "STEPPER_CONFIG" => Some(config_path.display().to_string()),
        "FAKE_KEY" => Some("sk-bench".to_string()),
        // Limits stay on, so their cost is measured, but high enough that no job is refused.
        "STEPPER_RATE_LIMIT" => Some(BENCH_RATE_LIMIT.to_string()),
        "STEPPER_MAX_IN_FLIGHT" => Some(BENCH_MAX_IN_FLIGHT.to_string()),
        _ => None,
    };
    let config = Config::from_lookup(&env)?;
    let (queue, deliveries) = LocalQueue::new();
    let service = Arc::new(shared::service::build(&config, Arc::new(queue.clone()))?);
    tokio::spawn(run_workers(
        deliveries,
        queue,
        service.engine.clone(),
        WorkerPolicy::default(),
    ));
    let app = shared::api::router(service.clone());
    eprintln!(
        "stepper-bench: stack up (redis {}, emulator {}); warming up",
        redis.url(),
        upstash.url
    );

    // Warm-up: the first use of each script loads it (NOSCRIPT → EVAL) and the provider state hash
    // gets its first expiry; neither recurs per job.
    let (_, warm) = call(&app, "POST", "/v1/reports", Some(report_body(usize::MAX))).await?;
    let warm_url = warm["statusUrl"]
        .as_str()
        .with_context(|| format!("warm-up submit answered {warm}"))?
        .to_string();
    let warm_deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, status) = call(&app, "GET", &warm_url, None).await?;
        if status["status"] == "completed" {
            break;
        }
        if Instant::now() > warm_deadline {
            bail!("the warm-up job did not complete: {status}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    call(&app, "DELETE", &warm_url.replace("/v1/reports/", "/v1/jobs/"), None).await?;

    eprintln!("stepper-bench: running {} jobs", o.jobs);
    redis.reset_stats().await?;
    requests.store(0, Ordering::SeqCst);
    let hits_before = provider.hits();
    let started = Instant::now();
    let mut ids = Vec::with_capacity(o.jobs);
    for i in 0..o.jobs {
        let (status, body) = call(&app, "POST", "/v1/reports", Some(report_body(i))).await?;
        if status != 202 {
            bail!("submit answered {status}: {body}");
        }
        ids.push(body["jobId"].as_str().context("jobId")?.to_string());
    }
    let submit_requests = requests.load(Ordering::SeqCst);
    // Wait for the steps without polling: the provider's hit count says when every job was called.
    while provider.hits() < hits_before + o.jobs {
        if started.elapsed() > Duration::from_secs(300) {
            bail!("jobs did not run within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let step_requests = requests.load(Ordering::SeqCst) - submit_requests;
    let elapsed = started.elapsed();

    // Bytes held per finished job, read straight from the emulator (not through the counting proxy);
    // the commands this costs are subtracted below.
    let stats_before_probe = total_calls(&redis.command_stats().await?);
    let probe = UpstashClient::new(&upstash.url, Secret::new(upstash.token.clone()), Duration::from_secs(5))?;
    let mut bytes = 0u64;
    for id in &ids {
        let key = format!("st:j:public:{id}");
        bytes += probe
            .command(vec![json!("MEMORY"), json!("USAGE"), json!(key)])
            .await?
            .as_u64()
            .unwrap_or(0);
    }
    let probe_commands = total_calls(&redis.command_stats().await?) - stats_before_probe;

    let mut extra_polls = 0u64;
    for id in &ids {
        loop {
            let (status, body) = call(&app, "GET", &format!("/v1/reports/{id}"), None).await?;
            if status == 200 && body["status"] == "completed" {
                break;
            }
            extra_polls += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let poll_requests = requests.load(Ordering::SeqCst) - submit_requests - step_requests;
    for id in &ids {
        let (status, _) = call(&app, "DELETE", &format!("/v1/jobs/{id}"), None).await?;
        if status != 200 {
            bail!("purge answered {status}");
        }
    }
    let total_requests = requests.load(Ordering::SeqCst);
    let purge_requests = total_requests - submit_requests - step_requests - poll_requests;
    let commands = total_calls(&redis.command_stats().await?) - probe_commands;
    let n = o.jobs as f64;
    let leftover = probe
        .command(vec![
            json!("SCAN"),
            json!("0"),
            json!("MATCH"),
            json!("st:j:*"),
            json!("COUNT"),
            json!(1_000_000),
        ])
        .await?;
    let leftover_jobs = leftover[1].as_array().map_or(0, Vec::len);
    let leases = probe
        .command(vec![
            json!("SCAN"),
            json!("0"),
            json!("MATCH"),
            json!("st:l:*"),
            json!("COUNT"),
            json!(1_000_000),
        ])
        .await?;
    let leases = leases[1].as_array().map_or(0, Vec::len);

    println!(
        "stepper-bench: {} jobs, each succeeding on its first provider attempt",
        o.jobs
    );
    println!(
        "  per-owner limits (counted on every route)  {BENCH_RATE_LIMIT} requests, {BENCH_MAX_IN_FLIGHT} jobs in flight"
    );
    println!(
        "  wall time, submit to all steps done      {:>9.1} ms ({:.0} jobs/s)",
        elapsed.as_secs_f64() * 1e3,
        n / elapsed.as_secs_f64()
    );
    println!(
        "  REST requests per delivered job          {:>9.2}  (submit+steps {:.2}, poll {:.2}, purge {:.2})",
        total_requests as f64 / n,
        (submit_requests + step_requests) as f64 / n,
        poll_requests as f64 / n,
        purge_requests as f64 / n
    );
    println!("  polls that found a job unfinished        {extra_polls:>9}");
    println!(
        "  Redis commands per job (scripts incl.)   {:>9.2}",
        commands as f64 / n
    );
    println!("  bytes held per finished job              {:>9.0}", bytes as f64 / n);
    println!("  job records left after purge             {leftover_jobs:>9}");
    println!("  step leases left (expire by themselves)  {leases:>9}");

    requests.store(0, Ordering::SeqCst);
    redis.reset_stats().await?;
    tokio::time::sleep(Duration::from_secs(o.idle_seconds)).await;
    println!(
        "  REST requests during {} s of idleness    {:>9}  (Redis commands: {})",
        o.idle_seconds,
        requests.load(Ordering::SeqCst),
        total_calls(&redis.command_stats().await?)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
