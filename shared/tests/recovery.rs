//! Recovery (the due-index and its sweeper) at the engine's level, on the real local stack (redis-server +
//! the Upstash REST emulator) and on the embedded store: nothing stuck, nothing lost, and what waiting costs.
//!
//! - Busy on the in-process queue returns at the lease's end and never counts as a failure.
//! - 1,000 jobs parked 16 h for a quota reset, on a manual clock: the Upstash commands the wait costs
//!   (printed), against the old hop-every-15-minutes design's ≈ 64 hops × 5 per job.
//! - A submit whose answer never came back (the store wrote the job, the route answered 503): the job
//!   is due in the index and the sweeper runs it; it never lingers in the in-flight count.

mod common;

use shared::domain::quota::Reserve;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use http::StatusCode;
use serde_json::{json, Value};
use shared::adapters::queue::local::LocalQueue;
use shared::domain::message::Message;
use shared::engine::StepOutcome;
use shared::ports::{Admission, Claim, Clock, SystemClock};
use shared::wiring::config::Config;
use shared::wiring::workers::{run_workers, WorkerPolicy};
use testkit::fake::{FakeProvider, FakeReply, Wire};
use testkit::stack::{RedisServer, UpstashEmulator};

use common::{ManualClock, SimQueue};

fn providers_file(fake: &FakeProvider) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "stepper-recovery-{}-{}",
        std::process::id(),
        shared::domain::job::new_gen()
    ));
    testkit::fake::providers_file(&dir, &fake.base_url(), 1000, None).unwrap()
}

/// A service over the memory store calling `fake`, on a clock and a queue the test moves by hand.
struct Simulated {
    clock: Arc<ManualClock>,
    queue: Arc<SimQueue>,
    engine: shared::engine::Engine,
    router: Router,
}

fn simulated(fake: &FakeProvider) -> Simulated {
    let providers = providers_file(fake);
    let clock = Arc::new(ManualClock(AtomicU64::new(SystemClock.now_ms())));
    let queue = Arc::new(SimQueue::new(clock.clone()));
    let config = config(&providers, None, &[]);
    let service = Arc::new(shared::wiring::service::build_with_clock(&config, queue.clone(), clock.clone()).unwrap());
    Simulated {
        clock,
        queue,
        engine: service.engine.clone(),
        router: shared::api::router(service),
    }
}

fn config(providers: &std::path::Path, upstash: Option<&UpstashEmulator>, extra: &[(&str, &str)]) -> Config {
    let path = providers.display().to_string();
    let (url, token) = upstash.map_or((None, None), |u| (Some(u.url.clone()), Some(u.token.clone())));
    Config::from_lookup(&|name| match name {
        "STEPPER_CONFIG" => Some(path.clone()),
        "UPSTASH_REDIS_REST_URL" => url.clone(),
        "UPSTASH_REDIS_REST_TOKEN" => token.clone(),
        "STEPPER_RATE_LIMIT" | "STEPPER_MAX_IN_FLIGHT" => Some("off".into()),
        other => extra.iter().find(|(k, _)| *k == other).map(|(_, v)| v.to_string()),
    })
    .unwrap()
}

async fn call(router: &Router, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    testkit::router::call(router, method, uri, None, body).await
}

async fn submit(router: &Router, i: usize) -> String {
    let body = json!({"prompt": format!("job {i}"), "responseMode": "text"});
    let (status, answer) = call(router, "POST", "/v1/generate", Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    answer["jobId"].as_str().unwrap().to_string()
}

/// Billed Upstash commands since the last reset: each script call once (commands inside a script
/// are not billed), plus every command sent on its own.
async fn billed(redis: &RedisServer) -> u64 {
    let stats = redis.command_stats().await.unwrap();
    let scripts: u64 = ["evalsha", "eval"].iter().filter_map(|c| stats.get(*c)).sum();
    // Inside scripts only; never sent on their own by the store on these paths.
    let inner = [
        "get",
        "set",
        "zadd",
        "zrem",
        "zcard",
        "zrangebyscore",
        "zcount",
        "zrank",
        "zrange",
        "pexpire",
        "pexpireat",
        "pttl",
        "hgetall",
        "hget",
        "hset",
        "del",
        "incr",
        "time",
        "getdel",
        "zremrangebyscore",
        "exists",
    ];
    let alone: u64 = stats
        .iter()
        .filter(|(c, _)| !inner.contains(&c.as_str()) && !["evalsha", "eval", "config", "info"].contains(&c.as_str()))
        .map(|(_, n)| n)
        .sum();
    scripts + alone
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_on_the_local_queue_returns_at_the_leases_end() {
    let fake = FakeProvider::start(Wire::OpenAi).await.unwrap();
    fake.set_default(FakeReply::openai_text("done"));
    let providers = providers_file(&fake);
    let (queue, deliveries) = LocalQueue::new();
    let service =
        Arc::new(shared::wiring::service::build(&config(&providers, None, &[]), Arc::new(queue.clone())).unwrap());
    let engine = service.engine.clone();
    let router = shared::api::router(service);
    // Take the first step's lease before any worker runs, as a worker that died mid-call would.
    let id = submit(&router, 0).await;
    let job = match engine
        .store()
        .read("public", &id, Duration::from_secs(60), None)
        .await
        .unwrap()
    {
        Admission::Admitted { value: Some(d), .. } => d.job,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        engine
            .store()
            .claim(&job.step_ref(), Duration::from_millis(1_500), &Reserve::default())
            .await
            .unwrap(),
        Claim::Acquired { .. }
    ));
    let started = Instant::now();
    // One delivery allowed per message: a Busy counted as a failure would give the message up.
    let policy = WorkerPolicy {
        max_receive_count: 1,
        ..WorkerPolicy::default()
    };
    let workers = tokio::spawn(run_workers(deliveries, queue, engine.clone(), policy));
    let status = loop {
        let (_, status) = call(&router, "GET", &format!("/v1/jobs/{id}"), None).await;
        if status["status"] == "completed" || started.elapsed() > Duration::from_secs(10) {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    workers.abort();
    assert_eq!(status["status"], "completed", "{status}");
    assert!(
        started.elapsed() >= Duration::from_millis(1_400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fake.hits(), 1);
    println!(
        "local busy: completed {:?} after a 1.5 s lease, with one delivery allowed per message",
        started.elapsed()
    );
}

/// Runs the simulated queue until `limit`, moving the clock to each message's due time; counts sweeps.
async fn run_until(queue: &SimQueue, clock: &ManualClock, engine: &shared::engine::Engine, limit: u64) -> (u64, u64) {
    let (mut sweeps, mut steps) = (0, 0);
    while let Some((due, message)) = queue.pop_due_by(limit) {
        if due > clock.now_ms() {
            clock.0.store(due, Ordering::SeqCst);
        }
        match &message {
            Message::Sweep { .. } => sweeps += 1,
            Message::Step { .. } => steps += 1,
            // No alert sink is configured here: none is ever queued.
            Message::Alert { .. } => {}
        }
        engine.handle(&message, 1).await.unwrap();
    }
    (sweeps, steps)
}

/// Like `run_until`, but every message due at the same instant runs at once, concurrently, as a
/// pool of workers (or Lambda containers) would run them: the herd is real.
async fn run_concurrently_until(queue: &SimQueue, clock: &ManualClock, engine: &shared::engine::Engine, limit: u64) {
    while let Some((due, first)) = queue.pop_due_by(limit) {
        if due > clock.now_ms() {
            clock.0.store(due, Ordering::SeqCst);
        }
        let mut batch = vec![first];
        while let Some((_, message)) = queue.pop_due_by(clock.now_ms()) {
            batch.push(message);
        }
        let runs = batch.iter().map(|m| engine.handle(m, 1));
        for result in futures::future::join_all(runs).await {
            result.unwrap();
        }
    }
}

/// 1,000 jobs waiting 16 h for a quota reset. Parked in the due-index, they cost
/// the sweeps of one chain (about one per 15 minutes, whatever the number of jobs), not a hop each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_jobs_parked_sixteen_hours_cost_a_few_sweeps() {
    const JOBS: usize = 1_000;
    const WAIT_S: u64 = 16 * 3600;
    let redis = RedisServer::start().await.unwrap();
    let upstash = UpstashEmulator::start(&redis).await.unwrap();
    let fake = FakeProvider::start(Wire::OpenAi).await.unwrap();
    fake.set_default(FakeReply::openai_rate_limited(WAIT_S));
    let providers = providers_file(&fake);
    let clock = Arc::new(ManualClock(AtomicU64::new(redis.time_ms().await.unwrap())));
    let queue = Arc::new(SimQueue::new(clock.clone()));
    let service = Arc::new(
        shared::wiring::service::build_with_clock(
            &config(&providers, Some(&upstash), &[]),
            queue.clone(),
            clock.clone(),
        )
        .unwrap(),
    );
    let engine = service.engine.clone();
    let router = shared::api::router(service);
    let t0 = clock.now_ms();
    let mut ids = Vec::new();
    for i in 0..JOBS {
        ids.push(submit(&router, i).await);
    }
    // The first steps: one call learns the 16 h cooldown, every job parks until it ends.
    let (_, first_steps) = run_until(&queue, &clock, &engine, t0 + 1_000).await;
    assert_eq!(first_steps as usize, JOBS);
    assert_eq!(
        fake.hits(),
        1,
        "one call learned the cooldown; the rest waited without calling"
    );
    let parked_messages = queue
        .pending
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, m)| matches!(m, Message::Step { .. }))
        .count();
    assert_eq!(parked_messages, 0, "parked jobs have no message in the queue");

    redis.reset_stats().await.unwrap();
    let wake = t0 + WAIT_S * 1000;
    let (sweeps, steps) = run_until(&queue, &clock, &engine, wake - 1).await;
    let wait_cost = billed(&redis).await;
    assert_eq!(steps, 0, "no step ran during the wait");
    assert!(
        wait_cost <= JOBS as u64,
        "the wait cost {wait_cost} Upstash commands (budget: {JOBS})"
    );

    // The reset: the provider answers again, and the sweeper wakes every job.
    fake.set_default(FakeReply::openai_text("after the reset"));
    redis.reset_stats().await.unwrap();
    let (wake_sweeps, wake_steps) = run_until(&queue, &clock, &engine, wake + 600_000).await;
    let wake_cost = billed(&redis).await;
    let mut completed = 0;
    for id in &ids {
        let (_, status) = call(&router, "GET", &format!("/v1/jobs/{id}"), None).await;
        completed += usize::from(status["status"] == "completed");
    }
    assert_eq!(completed, JOBS, "every parked job completed after the reset");
    println!(
        "parked wait: {JOBS} jobs × {} h: {sweeps} sweeps, {wait_cost} billed Upstash commands for the whole wait \
         ({:.3} per job; hopping every 15 min would be ≈ {} hops × 5 = {} commands); the wake: {wake_sweeps} sweeps, \
         {wake_steps} steps, {wake_cost} commands",
        WAIT_S / 3600,
        wait_cost as f64 / JOBS as f64,
        WAIT_S / 900,
        JOBS as u64 * (WAIT_S / 900) * 5,
    );
}

/// The store wrote the job but its answer was lost (a timeout, a crash): the route
/// answered 503 and queued nothing. The job is due in the index, so the sweeper runs it; an
/// identical re-submit re-queues it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_submit_answer_was_lost_still_runs() {
    let fake = FakeProvider::start(Wire::OpenAi).await.unwrap();
    fake.set_default(FakeReply::openai_text("ran anyway"));
    let s = simulated(&fake);

    // Two submits whose first step message is lost as if the route had died right after the store's write.
    let (lost, resubmitted) = (submit(&s.router, 1).await, submit(&s.router, 2).await);
    s.queue
        .pending
        .lock()
        .unwrap()
        .retain(|(_, _, m)| matches!(m, Message::Sweep { .. }));
    // The caller of the second retries (the same request): its job is re-queued at once.
    assert_eq!(submit(&s.router, 2).await, resubmitted);
    let now = s.clock.now_ms();
    let (_, steps) = run_until(&s.queue, &s.clock, &s.engine, now).await;
    assert_eq!(steps, 1, "the re-submit queued the job's step");
    let (_, status) = call(&s.router, "GET", &format!("/v1/jobs/{resubmitted}"), None).await;
    assert_eq!(status["status"], "completed", "{status}");
    // Nobody re-submits the first: the sweeper finds it due one grace later and runs it.
    let (_, status) = call(&s.router, "GET", &format!("/v1/jobs/{lost}"), None).await;
    assert_eq!(status["rawStatus"], "waiting", "{status}");
    let (sweeps, _) = run_until(&s.queue, &s.clock, &s.engine, now + 120_000).await;
    let (_, status) = call(&s.router, "GET", &format!("/v1/jobs/{lost}"), None).await;
    assert_eq!(status["status"], "completed", "{status}");
    assert!(sweeps >= 1);
    // The index is empty again: the chain ended, nothing is left to run or to count.
    assert!(
        s.queue.pending.lock().unwrap().is_empty(),
        "the sweeper stopped with the index empty"
    );
    assert_eq!(
        s.engine
            .handle(
                &Message::Sweep {
                    token: "any".into(),
                    round: 1
                },
                1
            )
            .await
            .unwrap(),
        StepOutcome::Swept { requeued: 0, left: 0 },
        "a stray sweep message finds no chain: it takes the chain over, finds the index empty and ends it"
    );
    assert!(s.queue.pending.lock().unwrap().is_empty(), "and sends nothing on");
}

/// While every provider is exhausted past the job's deadline, a report completes
/// with its template fallback (`fallback: true`) and a generic job fails with `deadline_exceeded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_outage_past_the_deadline_costs_the_caller_nothing() {
    let fake = FakeProvider::start(Wire::OpenAi).await.unwrap();
    fake.set_default(FakeReply::openai_rate_limited(16 * 3600));
    let s = simulated(&fake);
    let report = json!({
        "userId": "user-1", "commitSha": "abc123", "repo": "acme/diary",
        "message": "Add token refresh to the auth client", "files": ["src/auth.ts"], "components": ["auth"],
        "diffSummary": "diff --git a/src/auth.ts b/src/auth.ts\n+export function refresh() {}\n",
        "template": "default", "deadlineSeconds": 600
    });
    let (status, answer) = call(&s.router, "POST", "/v1/reports", Some(report)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let report_id = answer["jobId"].as_str().unwrap().to_string();
    let generic = json!({"prompt": "hi", "responseMode": "text", "deadlineSeconds": 600});
    let (status, answer) = call(&s.router, "POST", "/v1/generate", Some(generic)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let generic_id = answer["jobId"].as_str().unwrap().to_string();
    let now = s.clock.now_ms();
    run_until(&s.queue, &s.clock, &s.engine, now + 3_600_000).await;
    let (_, report) = call(&s.router, "GET", &format!("/v1/reports/{report_id}"), None).await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["data"]["fallback"], true, "{report}");
    let (_, generic) = call(&s.router, "GET", &format!("/v1/jobs/{generic_id}"), None).await;
    assert_eq!(generic["status"], "failed", "{generic}");
    assert!(
        generic["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("deadline_exceeded")),
        "{generic}"
    );
}

/// A 60 s storm of 429 (Retry-After 5) over 40 waiting jobs. When a cooldown
/// ends, one claim takes the provider's probe and calls; the others wait for its outcome. The
/// calls answered 429 stay within twice the minimum (one per cooldown window).
/// With `known`, the storm is known before the jobs arrive (a first job met the first 429): the 40
/// jobs are all waiting on the cooldown. Without, 40 fresh jobs hit the provider at once.
async fn storm(upstash: Option<&UpstashEmulator>, start_ms: u64, known: bool) -> (u64, u64, usize, u64) {
    const JOBS: usize = 40;
    const STORM_MS: u64 = 60_000;
    const RETRY_AFTER_S: u64 = 5;
    let fake = FakeProvider::start(Wire::OpenAi).await.unwrap();
    let providers = providers_file(&fake);
    let clock = Arc::new(ManualClock(AtomicU64::new(start_ms)));
    let limited = Arc::new(AtomicU64::new(0));
    let (c, l) = (clock.clone(), limited.clone());
    // Each answer takes 100 ms of real time, so the calls of one wake-up overlap.
    fake.set_responder(move |_| {
        if c.now_ms() < start_ms + STORM_MS {
            l.fetch_add(1, Ordering::SeqCst);
            FakeReply::openai_rate_limited(RETRY_AFTER_S).with_delay(Duration::from_millis(100))
        } else {
            FakeReply::openai_text("after the storm").with_delay(Duration::from_millis(100))
        }
    });
    let queue = Arc::new(SimQueue::new(clock.clone()));
    let service = Arc::new(
        shared::wiring::service::build_with_clock(&config(&providers, upstash, &[]), queue.clone(), clock.clone())
            .unwrap(),
    );
    let engine = service.engine.clone();
    let router = shared::api::router(service);
    let mut ids = Vec::new();
    if known {
        ids.push(submit(&router, 0).await);
        run_concurrently_until(&queue, &clock, &engine, start_ms).await;
    }
    for i in ids.len()..JOBS {
        ids.push(submit(&router, i).await);
    }
    run_concurrently_until(&queue, &clock, &engine, start_ms + 10 * STORM_MS).await;
    let mut completed = 0;
    let mut last_ms = 0;
    for id in &ids {
        let (_, status) = call(&router, "GET", &format!("/v1/jobs/{id}"), None).await;
        completed += usize::from(status["status"] == "completed");
        let finished = status["finishedAt"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        last_ms = last_ms.max(finished.map_or(u64::MAX, |t| t.timestamp_millis() as u64));
    }
    let windows = STORM_MS / (RETRY_AFTER_S * 1000);
    // How long the last job took to finish after the storm ended (sim time).
    let drain_ms = last_ms.saturating_sub(start_ms + STORM_MS);
    (limited.load(Ordering::SeqCst), windows, completed, drain_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_storm_is_probed_by_one_caller_per_cooldown() {
    let (limited, windows, completed, drain_ms) = storm(None, SystemClock.now_ms(), true).await;
    println!("storm (memory store): 40 waiting jobs, 60 s of 429 Retry-After 5, steps run concurrently: {limited} calls answered 429 for {windows} cooldown windows ({:.2}×), {completed} completed, the last {drain_ms} ms after the storm", limited as f64 / windows as f64);
    assert_eq!(completed, 40);
    assert!(
        limited <= 2 * windows,
        "{limited} calls in a storm of {windows} windows"
    );
    // Within a few of the provider's calls, not a probe's lease (4 s here when held for the lease).
    assert!(drain_ms <= 2_000, "the backlog drained {drain_ms} ms after the storm");

    let redis = RedisServer::start().await.unwrap();
    let upstash = UpstashEmulator::start(&redis).await.unwrap();
    let (limited, windows, completed, drain_ms) = storm(Some(&upstash), redis.time_ms().await.unwrap(), true).await;
    println!("storm (Upstash): 40 waiting jobs, 60 s of 429 Retry-After 5, steps run concurrently: {limited} calls answered 429 for {windows} cooldown windows ({:.2}×), {completed} completed, the last {drain_ms} ms after the storm", limited as f64 / windows as f64);
    assert_eq!(completed, 40);
    assert!(
        limited <= 2 * windows,
        "{limited} calls in a storm of {windows} windows"
    );
    // Within a few of the provider's calls, not a probe's lease (4 s here when held for the lease).
    assert!(drain_ms <= 2_000, "the backlog drained {drain_ms} ms after the storm");

    // For the record: 40 fresh jobs arriving together into a storm nobody knows of yet all call once
    // before the first 429 is learned; after that, one probe per window.
    let (limited, windows, completed, _) = storm(None, SystemClock.now_ms(), false).await;
    println!("storm (memory store): 40 fresh concurrent jobs into an unknown storm: {limited} calls answered 429 for {windows} windows (the first burst of 40 included), {completed} completed");
    assert_eq!(completed, 40);
    assert!(limited <= 40 + 2 * windows);
}
