//! Fair shares of a scarce provider, behind the real HTTP routes and step engine, on a clock the test
//! drives: tenant A puts 2,000 jobs in at once on a provider limited to 6 requests a minute, then twenty
//! other tenants each submit one job, one a minute at varying offsets. Each of those jobs is called
//! within 2 provider calls of its submit (the calls made for anyone from its submit to its own, its own
//! included), because a job that finds the minute used up books its tenant's turn (`quota::book`): A's
//! backlog is booked at the provider's pace, another tenant's first job at the next minute. The backlog
//! wakes at that pace too: the steps run per minute stay near the provider's 6, not A's 2,000. Run on the
//! in-memory store and on the Upstash store over the real local stack. Prints its figures.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use http::StatusCode;
use serde_json::{json, Value};
use shared::adapters::providers::spec::{ProviderSpec, Wire as SpecWire};
use shared::domain::message::Message;
use shared::domain::quota::ProviderLimits;
use shared::domain::secret::Secret;
use shared::engine::settings::Settings;
use shared::engine::Engine;
use shared::ports::{Clock, SystemClock};
use shared::wiring::config::UpstashConfig;
use testkit::fake::{FakeProvider, FakeReply, Wire};

use common::{scenario_config, upstash_emulator, ManualClock, SimQueue};

const BACKLOG: usize = 2_000;
const RPM: u64 = 6;
const OTHERS: usize = 20;

struct Scenario {
    clock: Arc<ManualClock>,
    queue: Arc<SimQueue>,
    router: Router,
    engine: Engine,
    /// Every provider call: the job's prompt, in call order.
    calls: Arc<Mutex<Vec<String>>>,
    /// When each call was made (simulated clock), in call order.
    times: Arc<Mutex<Vec<u64>>>,
    /// Steps run, per simulated minute.
    steps_per_minute: std::collections::BTreeMap<u64, usize>,
}

async fn scenario(upstash: Option<UpstashConfig>, t0: u64) -> Scenario {
    let clock = Arc::new(ManualClock(AtomicU64::new(t0)));
    let fake = FakeProvider::start(Wire::OpenAi).await.unwrap();
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let times: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (seen, at, now) = (calls.clone(), times.clone(), clock.clone());
    fake.set_responder(move |request| {
        let prompt = request.body["messages"][0]["content"]
            .as_str()
            .unwrap_or("")
            .to_string();
        seen.lock().unwrap().push(prompt);
        at.lock().unwrap().push(now.now_ms());
        FakeReply::openai_text("done")
    });
    let provider = ProviderSpec {
        name: "alpha".into(),
        wire: SpecWire::OpenAi {
            headers: Default::default(),
        },
        base_url: fake.base_url(),
        model: "fake-model".into(),
        api_key: Some(Secret::new("k")),
        timeout_ms: 2_000,
        limits: ProviderLimits {
            rpm: Some(RPM),
            ..Default::default()
        },
        small_context: false,
    };
    // The fake answers for as long as the scenario lives.
    std::mem::forget(fake);
    // No per-owner limits: the backlog is submitted at once.
    let settings = Settings {
        limits: shared::engine::settings::OwnerLimits {
            rate: shared::engine::settings::PerOwner {
                default: None,
                overrides: Default::default(),
            },
            in_flight: shared::engine::settings::PerOwner {
                default: None,
                overrides: Default::default(),
            },
        },
        ..Settings::default()
    };
    let config = scenario_config(settings, vec![provider], upstash);
    let queue = Arc::new(SimQueue::new(clock.clone()));
    let service = Arc::new(shared::wiring::service::build_with_clock(&config, queue.clone(), clock.clone()).unwrap());
    Scenario {
        clock,
        queue,
        router: shared::api::routes::router(service.clone()),
        engine: service.engine.clone(),
        calls,
        times,
        steps_per_minute: Default::default(),
    }
}

impl Scenario {
    async fn submit(&self, tenant: &str, prompt: &str) -> String {
        self.submit_at(tenant, prompt, "normal").await
    }

    async fn submit_at(&self, tenant: &str, prompt: &str, priority: &str) -> String {
        let body = json!({"prompt": prompt, "tenantId": tenant, "responseMode": "text", "priority": priority});
        let (status, answer): (StatusCode, Value) =
            testkit::router::call(&self.router, "POST", "/v1/generate", Some("secret-key"), Some(body)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        answer["jobId"].as_str().unwrap().to_string()
    }

    /// Runs every message due by `limit` in due order, moving the clock to each due time.
    async fn run_until(&mut self, limit: u64) {
        while let Some((due, message)) = self.queue.pop_due_by(limit) {
            if due > self.clock.now_ms() {
                self.clock.0.store(due, Ordering::SeqCst);
            }
            if matches!(message, Message::Step { .. }) {
                *self.steps_per_minute.entry(due / 60_000).or_default() += 1;
            }
            self.engine.handle(&message, 1).await.unwrap();
        }
        self.clock.0.store(limit.max(self.clock.now_ms()), Ordering::SeqCst);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

async fn a_backlog_never_starves_another_tenants_job(mut s: Scenario, t0: u64, store: &str) {
    for i in 0..BACKLOG {
        s.submit("tenant-a", &format!("a-{i}")).await;
    }
    // A's backlog settles: its jobs' turns booked at the provider's pace.
    s.run_until(t0 + 3 * 60_000).await;
    let mut waits = Vec::new();
    for k in 0..OTHERS {
        // One a minute, at a different second of it each time.
        let at = t0 + (3 + k as u64) * 60_000 + (k as u64 * 7_919) % 60_000;
        s.run_until(at).await;
        let before = s.calls().len();
        let prompt = format!("b{k}-only-job");
        s.submit(&format!("tenant-b{k}"), &prompt).await;
        let mut limit = at;
        let position = loop {
            let calls = s.calls();
            if let Some(p) = calls[before..].iter().position(|c| *c == prompt) {
                break p + 1;
            }
            limit += 1_000;
            assert!(limit < at + 10 * 60_000, "{prompt} not called within 10 minutes");
            s.run_until(limit).await;
        };
        waits.push((position, limit - at));
    }
    let calls = s.calls();
    let a_calls = calls.iter().filter(|c| c.starts_with("a-")).count();
    let minutes = s.steps_per_minute.len().max(1);
    let steady: Vec<usize> = s.steps_per_minute.values().skip(1).copied().collect();
    let mut positions: Vec<usize> = waits.iter().map(|(p, _)| *p).collect();
    positions.sort();
    let mut seconds: Vec<u64> = waits.iter().map(|(_, ms)| ms.div_ceil(1000)).collect();
    seconds.sort();
    println!(
        "fair share ({store}): {BACKLOG} jobs of tenant A, then {OTHERS} tenants with one job each on a {RPM}-rpm \
         provider: each called within {:?} calls of its submit (worst {}), within {:?} s (worst {} s); \
         {} calls in {} simulated minutes ({a_calls} for A); steps run per minute after the first: max {}",
        positions,
        positions.last().unwrap(),
        seconds,
        seconds.last().unwrap(),
        calls.len(),
        minutes,
        steady.iter().max().unwrap_or(&0),
    );
    assert!(
        positions.iter().all(|p| *p <= 2),
        "another tenant's job waited more than 2 calls: {positions:?}"
    );
    // Never past the provider's quota in any minute.
    // The backlog wakes at the provider's pace: a few steps a minute beyond its calls, not 2,000.
    assert!(
        steady.iter().all(|n| *n <= 4 * RPM as usize),
        "steps per minute {:?}",
        s.steps_per_minute
    );
}

/// Tenant A's backlog of 40 jobs (`backlog`: normal, or low) and tenant B's of 20 normal ones on the
/// 6-rpm provider, then one more job of A's: of a higher priority (`high`; `normal` after low ones), or of
/// the backlog's in the control run. The high job is called at A's next turn, before every
/// one of A's jobs still waiting (the normal one behind most of them); B's calls are made no later than
/// in the control run (its share unchanged); never over the provider's pace. Returns the calls' order and times.
async fn a_high_job_goes_first_within_its_tenant(
    mut s: Scenario,
    t0: u64,
    backlog: &str,
    priority: &str,
) -> (Vec<String>, Vec<u64>) {
    for i in 0..40 {
        s.submit_at("tenant-a", &format!("a-{i}"), backlog).await;
    }
    for i in 0..20 {
        s.submit("tenant-b", &format!("b-{i}")).await;
    }
    s.run_until(t0 + 90_000).await;
    let before = s.calls().len();
    let submitted = s.clock.now_ms();
    s.submit_at("tenant-a", "a-last", priority).await;
    s.run_until(t0 + 30 * 60_000).await;
    let calls = s.calls();
    assert_eq!(calls.len(), 61, "every job called once");
    let times = s.times.lock().unwrap().clone();
    let a_after: Vec<&String> = calls[before..].iter().filter(|c| c.starts_with("a-")).collect();
    let place = a_after.iter().position(|c| *c == "a-last").unwrap() + 1;
    println!(
        "priority {priority} after a backlog of {backlog}: A's last job is call {place} of A's {} after its submit, {} s after it",
        a_after.len(),
        (times[calls.iter().position(|c| c == "a-last").unwrap()] - submitted) / 1000
    );
    if priority != backlog {
        assert_eq!(place, 1, "the {priority} job is A's next call: {a_after:?}");
    } else {
        // Behind A's backlog (not in submit order: a turn bumped in the minute B joined is booked again).
        assert!(
            place > a_after.len() / 2,
            "the normal job waits behind A's backlog: {a_after:?}"
        );
    }
    for pair in times.windows(2) {
        assert!(pair[1] >= pair[0], "calls in order");
    }
    let mut per_minute: std::collections::BTreeMap<u64, u64> = Default::default();
    for t in &times {
        *per_minute.entry(t / 60_000).or_default() += 1;
    }
    assert!(
        per_minute.values().all(|n| *n <= RPM),
        "never over the provider's rpm: {per_minute:?}"
    );
    (calls, times)
}

/// The instants of B's calls in a run, from `t0`, in order.
fn b_calls(run: &(Vec<String>, Vec<u64>), t0: u64) -> Vec<u64> {
    run.0
        .iter()
        .zip(&run.1)
        .filter(|(c, _)| c.starts_with("b-"))
        .map(|(_, t)| t - t0)
        .collect()
}

/// B's share is not touched by A's high job: as many calls, the k-th never later than in the control
/// run. (Not always at the same instants: which of two claims due at one instant finds the minute used
/// up may differ, and B's 20 calls were 0 or 30 s sooner in the runs seen.)
fn b_share_unchanged(high: &[u64], control: &[u64]) {
    assert_eq!(high.len(), control.len());
    let sooner: Vec<i64> = high.iter().zip(control).map(|(h, c)| *c as i64 - *h as i64).collect();
    println!("B's calls with A's higher-priority job, sooner than without it by (ms): {sooner:?}");
    assert!(sooner.iter().all(|d| *d >= 0), "B's share shrank: {sooner:?}");
}

/// (backlog, last job's priority): a high job after normal ones, a normal one after low ones, each with
/// its control run (the last job of the backlog's priority).
const PRIORITY_RUNS: [(&str, &str); 4] = [
    ("normal", "normal"),
    ("normal", "high"),
    ("low", "low"),
    ("low", "normal"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_job_goes_first_within_its_tenant_on_the_memory_store() {
    let t0 = (SystemClock.now_ms() / 60_000 + 1) * 60_000;
    let mut runs = Vec::new();
    for (backlog, priority) in PRIORITY_RUNS {
        runs.push(a_high_job_goes_first_within_its_tenant(scenario(None, t0).await, t0, backlog, priority).await);
    }
    b_share_unchanged(&b_calls(&runs[1], t0), &b_calls(&runs[0], t0));
    b_share_unchanged(&b_calls(&runs[3], t0), &b_calls(&runs[2], t0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_job_goes_first_within_its_tenant_on_the_upstash_store() {
    let mut runs = Vec::new();
    for (backlog, priority) in PRIORITY_RUNS {
        let redis = testkit::stack::RedisServer::start().await.expect("redis-server");
        let (_upstash, config) = upstash_emulator(&redis).await;
        let t0 = (redis.time_ms().await.expect("redis TIME") / 60_000 + 1) * 60_000;
        // Every run on its own minute grid: B's instants compare from t0.
        let run =
            a_high_job_goes_first_within_its_tenant(scenario(Some(config), t0).await, t0, backlog, priority).await;
        runs.push(b_calls(&run, t0));
    }
    b_share_unchanged(&runs[1], &runs[0]);
    b_share_unchanged(&runs[3], &runs[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_memory_store() {
    let t0 = (SystemClock.now_ms() / 60_000 + 1) * 60_000;
    a_backlog_never_starves_another_tenants_job(scenario(None, t0).await, t0, "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_upstash_store_over_the_real_stack() {
    let redis = testkit::stack::RedisServer::start().await.expect("redis-server");
    let (_upstash, config) = upstash_emulator(&redis).await;
    // On Redis's clock: the store checks expiries against it.
    let t0 = (redis.time_ms().await.expect("redis TIME") / 60_000 + 1) * 60_000;
    a_backlog_never_starves_another_tenants_job(scenario(Some(config), t0).await, t0, "upstash").await;
}
