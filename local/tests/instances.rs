//! Several stepper-local instances on one store (the Upstash REST emulator over redis-server), load
//! balanced by the test: every job finishes exactly once (one webhook per job, counted at the receiver;
//! one provider call per job, counted at the fake, but for the calls the killed instance had under way,
//! which are made again once, after their lease), one instance killed with -9 mid-run has its jobs
//! finished by the others (no restart, no new submit) within its lease plus one sweep interval, and a
//! provider's per-minute quota is shared by the instances. Prints its figures.
//!
//! `cargo test -p stepper-local --test instances -- --nocapture`

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{openai_provider, Local, ALICE};
use serde_json::json;
use testkit::fake::{FakeProvider, FakeReply, Wire};
use testkit::receiver::NodeReceiver;
use testkit::stack::{RedisServer, UpstashEmulator};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const JOBS: usize = 90;
const PROVIDER_DELAY: Duration = Duration::from_millis(1500);
/// The provider's timeout in `openai_provider` (3 s): a step's lease is twice it plus 2 s.
const LEASE: Duration = Duration::from_secs(8);
const SWEEP_INTERVAL_S: u64 = 2;

struct Stack {
    _redis: RedisServer,
    _upstash: UpstashEmulator,
    env: Vec<(String, String)>,
}

async fn stack(extra: &[(&str, String)]) -> Stack {
    let redis = RedisServer::start().await.expect("redis-server");
    let upstash = UpstashEmulator::start(&redis).await.expect("upstash emulator");
    let mut env = vec![
        ("UPSTASH_REDIS_REST_URL".to_string(), upstash.url.clone()),
        ("UPSTASH_REDIS_REST_TOKEN".to_string(), upstash.token.clone()),
        ("STEPPER_RATE_LIMIT".to_string(), "off".to_string()),
        ("STEPPER_MAX_IN_FLIGHT".to_string(), "1000".to_string()),
        ("SWEEP_GRACE_SECONDS".to_string(), "1".to_string()),
        ("SWEEP_INTERVAL_SECONDS".to_string(), SWEEP_INTERVAL_S.to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    Stack {
        _redis: redis,
        _upstash: upstash,
        env,
    }
}

impl Stack {
    async fn instances(&self, config: &str, n: usize) -> Vec<Local> {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(Local::start(config, &env).await);
        }
        out
    }
}

/// The prompt of job `i`, found again in the provider's request body.
fn prompt(i: usize) -> String {
    format!("multi-instance job <{i:03}>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_killed_every_job_done_exactly_once() {
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    // Each call's job and when it arrived.
    let calls: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::default();
    let seen = calls.clone();
    provider.set_responder(move |request| {
        let body = request.body.to_string();
        if let Some(i) = (0..JOBS).find(|i| body.contains(&prompt(*i))) {
            seen.lock().unwrap().push((i, Instant::now()));
        }
        FakeReply::openai_text(r#"{"answer": "done"}"#).with_delay(PROVIDER_DELAY)
    });
    let hook = NodeReceiver::start(SECRET, &[200], 0).await.expect("node receiver");
    let stack = stack(&[
        ("STEPPER_WEBHOOK_SECRETS", format!("alice={SECRET}")),
        ("CALLBACK_ALLOWED_ORIGINS", format!("http://127.0.0.1:{}", hook.port)),
    ])
    .await;
    let mut locals = stack
        .instances(&openai_provider("alpha", &provider.base_url()), 3)
        .await;

    // The load balancer: job i goes to instance i % 3, all at once.
    let started = Instant::now();
    let submits = (0..JOBS).map(|i| {
        let local = &locals[i % 3];
        let body = json!({"prompt": prompt(i), "callbackUrl": hook.url(&format!("/hook/{i}"))});
        async move { (i, local.post("/v1/generate", ALICE, body).await) }
    });
    let mut status_urls = vec![String::new(); JOBS];
    for (i, (code, queued)) in futures::future::join_all(submits).await {
        assert_eq!(code, 202, "job {i}: {queued}");
        status_urls[i] = queued["statusUrl"].as_str().unwrap().to_string();
    }
    println!(
        "instances: {JOBS} jobs submitted over 3 instances in {} ms",
        started.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(started.elapsed())).await;
    let calls_at_kill = provider.hits();
    locals[0].kill();
    let killed = Instant::now();
    println!(
        "instances: instance 0 killed (-9) at {} ms, {calls_at_kill} provider calls by then",
        started.elapsed().as_millis()
    );

    // Every job done, read through the survivors.
    let survivors = &locals[1..];
    let mut last_done = Duration::ZERO;
    let deadline = killed + Duration::from_secs(60);
    for (i, url) in status_urls.iter().enumerate() {
        loop {
            let (code, body) = survivors[i % 2].get(url, ALICE).await;
            assert_eq!(code, 200, "{body}");
            if body["status"] == "completed" {
                break;
            }
            assert_ne!(body["status"], "failed", "job {i}: {body}");
            assert!(
                Instant::now() < deadline,
                "job {i} not done 60 s after the kill: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        last_done = killed.elapsed();
    }
    println!(
        "instances: all {JOBS} done {} ms after the kill (lease {} s, sweep interval {SWEEP_INTERVAL_S} s, provider {} ms a call)",
        last_done.as_millis(),
        LEASE.as_secs(),
        PROVIDER_DELAY.as_millis()
    );

    // At the provider: one call per job, but for the calls the killed instance had under way (it died
    // before reading their answers: only another call can finish those jobs), each called once more,
    // by a survivor, only after its lease lapsed.
    let calls = calls.lock().unwrap().clone();
    let mut per_job: Vec<Vec<Instant>> = vec![Vec::new(); JOBS];
    for (i, at) in &calls {
        per_job[*i].push(*at);
    }
    let mut again = Vec::new();
    for (i, ats) in per_job.iter().enumerate() {
        match ats.as_slice() {
            [_] => {}
            [first, second] => {
                assert_eq!(i % 3, 0, "job {i} (not the killed instance's) was called twice");
                assert!(
                    *first < killed && *first + PROVIDER_DELAY > killed,
                    "job {i}: its first call was not under way at the kill"
                );
                assert!(
                    *second >= *first + LEASE - Duration::from_millis(500),
                    "job {i}: called again {:?} after the first call, before the lease lapsed",
                    *second - *first
                );
                again.push(i);
            }
            other => panic!("job {i} called {} times", other.len()),
        }
    }
    println!(
        "instances: provider calls {} for {JOBS} jobs: {} called again after the kill (under way in the killed instance: {again:?})",
        calls.len(),
        again.len()
    );
    assert_eq!(calls.len(), JOBS + again.len());

    // Exactly once at the receiver: one delivery per job (a moment more for a late duplicate).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = hook.deliveries().await.unwrap();
        if got.len() >= JOBS || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let got = hook.deliveries().await.unwrap();
    let mut per_job = vec![0usize; JOBS];
    for d in &got {
        assert!(d.standard_ok, "a delivery that does not verify: {d:?}");
        let i: usize = d.path.trim_start_matches("/hook/").parse().expect("hook path");
        per_job[i] += 1;
    }
    println!("instances: webhooks {} for {JOBS} jobs", got.len());
    let wrong: Vec<(usize, usize)> = (0..JOBS)
        .filter(|i| per_job[*i] != 1)
        .map(|i| (i, per_job[i]))
        .collect();
    assert!(wrong.is_empty(), "jobs not delivered exactly once: {wrong:?}");

    // The dead instance's jobs were re-driven within its lease plus one sweep interval, plus the time to
    // run them (a provider call each) on a loaded machine.
    let bound = LEASE + Duration::from_secs(SWEEP_INTERVAL_S) + PROVIDER_DELAY + Duration::from_secs(4);
    assert!(
        last_done <= bound,
        "all done {last_done:?} after the kill; bound {bound:?}"
    );
}

/// A provider limited to 30 requests a minute, three instances together: the quota lives in the shared
/// store and each claim reserves its request there, so the three share it: at most 30 calls in any
/// minute (not 30 each: 90). Short form: 45 jobs, watched for at most 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_rpm_provider_quota_is_shared_by_three_instances() {
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    let calls: Arc<Mutex<Vec<u64>>> = Arc::default();
    let seen = calls.clone();
    provider.set_responder(move |_| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        seen.lock().unwrap().push(now);
        FakeReply::openai_text(r#"{"answer": "within quota"}"#)
    });
    let stack = stack(&[]).await;
    let config = format!(
        "{}\nrpm = 30\n",
        openai_provider("alpha", &provider.base_url()).trim_end()
    );
    let locals = stack.instances(&config, 3).await;
    let submits = (0..45).map(|i| {
        let local = &locals[i % 3];
        async move { local.post("/v1/generate", ALICE, json!({"prompt": prompt(i)})).await }
    });
    for (code, body) in futures::future::join_all(submits).await {
        assert_eq!(code, 202, "{body}");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while calls.lock().unwrap().len() < 30 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A moment more: any call past the quota would land now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = calls.lock().unwrap().clone();
    let mut per_minute = std::collections::BTreeMap::<u64, usize>::new();
    for at in &calls {
        *per_minute.entry(at / 60_000).or_default() += 1;
    }
    println!(
        "instances: 30-rpm provider: {} calls in total, per minute {:?}",
        calls.len(),
        per_minute.values().collect::<Vec<_>>()
    );
    assert!(!calls.is_empty(), "the provider was called");
    // Each claim reserves its request in the same atomic change that reads the quota (claim.lua), so
    // claims that race for the minute's last request cannot all take it.
    for (minute, n) in per_minute {
        assert!(n <= 30, "{n} calls in minute {minute}: over the shared 30-rpm quota");
    }
}
