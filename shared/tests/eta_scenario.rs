//! How honest is the ETA? Three providers with known limits behind the real HTTP routes and
//! step engine, on a clock the test drives; 200 jobs submitted at once. Every job's FIRST estimate (the
//! `etaAt` of its 202) is compared with the moment it actually completed (`finishedAt` of its poll):
//! each must be within ±20 % of the job's time in the system, or ±5 s. The error distribution is
//! printed. Run on the in-memory store and on the Upstash store over the real local stack.
//!
//! - a: 12 requests a minute, ≈ 1 s a call; b: 8 a minute, ≈ 2 s; c: 6 a minute and 20 a UTC day,
//!   ≈ 3 s. Each call's duration varies by ±20 % (deterministic jitter) and moves the manual clock.
//! - One worker (the simulated queue runs one step at a time: `STEP_CONCURRENCY` = 1).
//! - A warm-up wave first teaches the shared state each provider's latency (and spends 6 of c's 20
//!   daily calls); the burst starts 8 minutes before a UTC midnight, so c runs out of its day during
//!   the burst and comes back at the reset.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use http::StatusCode;
use serde_json::{json, Value};
use shared::adapters::providers::spec::{ProviderSpec, Wire as SpecWire};
use shared::domain::quota::{ProviderLimits, ResetClock};
use shared::domain::secret::Secret;
use shared::engine::settings::{OwnerLimits, PerOwner, Settings};
use shared::engine::Engine;
use shared::ports::{Clock, Queue, SystemClock};
use shared::wiring::config::UpstashConfig;
use testkit::fake::{FakeProvider, FakeReply, Wire};

use common::{scenario_config, upstash_emulator, ManualClock, SimQueue};

const MINUTE: u64 = 60_000;
const JOBS: usize = 200;
/// The cooldown the backlog scenario's provider asks for: long enough to park the jobs waiting on it.
const COOLDOWN_S: u64 = 360;

/// One provider as the fake plays it: its limits (enforced, and configured: the ETA knows them) and
/// its typical call duration.
struct Plan {
    name: &'static str,
    limits: ProviderLimits,
    latency_ms: u64,
}

fn plans() -> [Plan; 3] {
    [
        Plan {
            name: "a",
            limits: ProviderLimits {
                rpm: Some(12),
                ..Default::default()
            },
            latency_ms: 1_000,
        },
        Plan {
            name: "b",
            limits: ProviderLimits {
                rpm: Some(8),
                ..Default::default()
            },
            latency_ms: 2_000,
        },
        Plan {
            name: "c",
            limits: ProviderLimits {
                rpm: Some(6),
                rpd: Some(20),
                reset: ResetClock::UtcMidnight,
                ..Default::default()
            },
            latency_ms: 3_000,
        },
    ]
}

/// Calls counted per minute and per day, as the provider itself counts them; `over` counts calls that
/// came in over a limit (none may: the limits are known).
#[derive(Default)]
struct Counter {
    minute: (u64, u64),
    day: (u64, u64),
    over: u64,
}

struct Scenario {
    clock: Arc<ManualClock>,
    queue: Arc<SimQueue>,
    router: Router,
    engine: Engine,
    counters: Vec<Arc<Mutex<Counter>>>,
}

/// The service on `plans`; when `trip` is set, the first provider answers its trip-th call (1-based)
/// with a 429 that asks for `COOLDOWN_S` seconds.
async fn scenario(
    upstash: Option<UpstashConfig>,
    t0: u64,
    plans: Vec<Plan>,
    trip: Option<u64>,
) -> (Scenario, Vec<FakeProvider>) {
    let clock = Arc::new(ManualClock(AtomicU64::new(t0)));
    let seed = Arc::new(AtomicU64::new(0x2545_f491));
    let mut fakes = Vec::new();
    let mut counters = Vec::new();
    let mut providers = Vec::new();
    let calls = Arc::new(AtomicU64::new(0));
    for (index, plan) in plans.into_iter().enumerate() {
        let fake = FakeProvider::start(Wire::OpenAi).await.unwrap();
        let (calls, trip) = (calls.clone(), trip.filter(|_| index == 0));
        let counter = Arc::new(Mutex::new(Counter::default()));
        let (c, n, s, limits, latency) = (
            clock.clone(),
            counter.clone(),
            seed.clone(),
            plan.limits,
            plan.latency_ms,
        );
        fake.set_responder(move |_| {
            if trip == Some(calls.fetch_add(1, Ordering::SeqCst) + 1) {
                return FakeReply::openai_rate_limited(COOLDOWN_S);
            }
            // The call takes its time on the manual clock: ±20 % around the provider's latency.
            let r = s.fetch_add(0x9e37_79b9, Ordering::SeqCst).wrapping_mul(0x2545_f491) >> 7;
            let took = latency * 80 / 100 + r % (latency * 40 / 100 + 1);
            let start = c.now_ms();
            c.0.fetch_add(took, Ordering::SeqCst);
            let mut n = n.lock().unwrap();
            let (minute, day) = (start / MINUTE, limits.reset.day(start));
            if n.minute.0 != minute {
                n.minute = (minute, 0);
            }
            if n.day.0 != day {
                n.day = (day, 0);
            }
            let over = limits.rpm.is_some_and(|l| n.minute.1 >= l) || limits.rpd.is_some_and(|l| n.day.1 >= l);
            if over {
                n.over += 1;
                return FakeReply::openai_rate_limited(1);
            }
            n.minute.1 += 1;
            n.day.1 += 1;
            FakeReply::openai_text("done")
        });
        providers.push(ProviderSpec {
            name: plan.name.to_string(),
            wire: SpecWire::OpenAi {
                headers: Default::default(),
            },
            base_url: fake.base_url(),
            model: "fake-model".into(),
            api_key: Some(Secret::new("k")),
            timeout_ms: 10_000,
            limits: plan.limits,
            small_context: false,
        });
        fakes.push(fake);
        counters.push(counter);
    }
    let settings = Settings {
        limits: OwnerLimits {
            rate: PerOwner {
                default: None,
                overrides: HashMap::new(),
            },
            in_flight: PerOwner {
                default: None,
                overrides: HashMap::new(),
            },
        },
        step_concurrency: 1,
        ..Settings::default()
    };
    let config = scenario_config(settings, providers, upstash);
    let queue = Arc::new(SimQueue::new(clock.clone()));
    let service = Arc::new(shared::wiring::service::build_with_clock(&config, queue.clone(), clock.clone()).unwrap());
    let engine = service.engine.clone();
    let s = Scenario {
        clock,
        queue,
        router: shared::api::routes::router(service),
        engine,
        counters,
    };
    (s, fakes)
}

fn ms(timestamp: &Value) -> u64 {
    let text = timestamp
        .as_str()
        .unwrap_or_else(|| panic!("not a timestamp: {timestamp}"));
    chrono::DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis() as u64
}

/// A job as the caller saw it: when it was submitted, its first estimate, when it completed.
struct Seen {
    id: String,
    submitted: u64,
    eta: u64,
    eta_seconds: u64,
}

/// A completed job against its first estimate: when it finished, how long it took, and the estimate's
/// error (ms; positive: the ETA was late).
struct Outcome {
    done: u64,
    took: u64,
    error: f64,
}

impl Outcome {
    /// Off by more than ±20 % of the job's time, or ±5 s.
    fn missed(&self) -> bool {
        self.error.abs() > (0.2 * self.took as f64).max(5_000.0)
    }
}

impl Scenario {
    /// Polls `job`, which must have completed, and compares its first ETA with when it did.
    async fn outcome(&self, job: &Seen) -> Outcome {
        let answer = self.poll(&job.id).await;
        assert_eq!(answer["status"], "completed", "{answer}");
        let done = ms(&answer["finishedAt"]);
        Outcome {
            done,
            took: done - job.submitted,
            error: job.eta as f64 - done as f64,
        }
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        testkit::router::call(&self.router, method, uri, Some("secret-key"), body).await
    }

    async fn submit(&self, n: usize, wave: &str) -> Vec<Seen> {
        let mut seen = Vec::new();
        for i in 0..n {
            let body = json!({"prompt": format!("{wave} job {i}"), "responseMode": "text"});
            let (status, answer) = self.call("POST", "/v1/generate", Some(body)).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
            let submitted = self.clock.now_ms();
            let eta = ms(&answer["etaAt"]);
            let eta_seconds = answer["etaSeconds"].as_u64().unwrap();
            assert_eq!(
                eta_seconds,
                eta.saturating_sub(submitted).div_ceil(1000),
                "etaSeconds and etaAt agree: {answer}"
            );
            seen.push(Seen {
                id: answer["jobId"].as_str().unwrap().to_string(),
                submitted,
                eta,
                eta_seconds,
            });
        }
        seen
    }

    /// Runs every queued message in due order, moving the clock to each due time, until `limit`.
    async fn run_until(&self, limit: u64) {
        loop {
            let Some((due, message)) = self.queue.pop_due() else {
                return;
            };
            if due > limit {
                self.queue
                    .send(&message, Duration::from_millis(due - self.clock.now_ms()))
                    .await
                    .unwrap();
                return;
            }
            if due > self.clock.now_ms() {
                self.clock.0.store(due, Ordering::SeqCst);
            }
            self.engine.handle(&message, 1).await.unwrap();
        }
    }

    /// The job's poll: its status word, and the whole answer.
    async fn poll(&self, id: &str) -> Value {
        let (code, answer) = self.call("GET", &format!("/v1/jobs/{id}"), None).await;
        assert_eq!(code, StatusCode::OK, "{answer}");
        answer
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn distribution(label: &str, mut values: Vec<f64>) -> String {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!(
        "{label:<34} min {:>8.2}  p50 {:>8.2}  p90 {:>8.2}  max {:>8.2}",
        values[0],
        percentile(&values, 50.0),
        percentile(&values, 90.0),
        values[values.len() - 1]
    )
}

async fn the_first_eta_is_within_twenty_percent(s: Scenario, store: &str, midnight: u64) {
    // Warm-up, ten minutes before midnight: one minute's worth of calls teaches every provider's latency.
    let warm = s.submit(26, "warm-up").await;
    s.run_until(midnight - 9 * MINUTE - 1).await;
    for w in &warm {
        assert_eq!(s.poll(&w.id).await["status"], "completed");
    }
    let states = s.engine.store().provider_states().await.unwrap();
    for plan in plans() {
        let learned = states.get(plan.name).map_or(0, |st| st.latency_ms);
        assert!(
            learned * 10 >= plan.latency_ms * 7 && learned * 10 <= plan.latency_ms * 13,
            "{}'s latency average {learned} ms, its calls take ≈ {} ms",
            plan.name,
            plan.latency_ms
        );
    }

    // The burst, 5 s into the minute 8 minutes before midnight.
    s.clock.0.store(midnight - 8 * MINUTE + 5_000, Ordering::SeqCst);
    let burst = s.submit(JOBS, "burst").await;
    assert!(
        burst.windows(2).all(|w| w[0].eta <= w[1].eta),
        "later in line is never sooner"
    );

    // Midway, the poll's estimate of the jobs still waiting: jobs due at the same instant are ranked in
    // the order they arrived in the index, the order their messages come back in.
    s.run_until(midnight - 4 * MINUTE + 20_000).await;
    let mut midway = Vec::new();
    for job in &burst {
        let answer = s.poll(&job.id).await;
        if answer["status"] != "completed" {
            let at = s.clock.now_ms();
            let eta = ms(&answer["etaAt"]);
            assert!(eta >= at, "{answer}");
            midway.push((job.id.clone(), at, eta));
        } else {
            assert!(
                answer.get("etaSeconds").is_none() && answer.get("etaAt").is_none(),
                "{answer}"
            );
        }
    }
    assert!(!midway.is_empty());

    s.run_until(u64::MAX).await;
    let mut errors_s = Vec::new();
    let mut errors_pct = Vec::new();
    let mut misses = Vec::new();
    let mut finished = HashMap::new();
    for (i, job) in burst.iter().enumerate() {
        let outcome = s.outcome(job).await;
        let (took, error) = (outcome.took, outcome.error);
        finished.insert(job.id.clone(), outcome.done);
        errors_s.push(error / 1000.0);
        errors_pct.push(100.0 * error / took as f64);
        if outcome.missed() {
            misses.push(format!(
                "job {i}: eta {} s (at {}), completed after {} s",
                job.eta_seconds,
                job.eta - job.submitted,
                took
            ));
        }
    }
    let mut midway_pct = Vec::new();
    let mut midway_misses = Vec::new();
    for (id, at, eta) in &midway {
        let took = finished[id] - at;
        let error = *eta as f64 - finished[id] as f64;
        midway_pct.push(100.0 * error / took as f64);
        if error.abs() > (0.2 * took as f64).max(5_000.0) {
            midway_misses.push(format!("{id}: eta in {} ms, completed in {took} ms", eta - at));
        }
    }
    let last = burst.iter().map(|j| finished[&j.id]).max().unwrap() - burst[0].submitted;
    println!(
        "ETA honesty on the {store} store: {JOBS} jobs at once, the last completed after {:.1} s\n{}\n{}\n{}",
        last as f64 / 1000.0,
        distribution("first ETA − completion (s)", errors_s),
        distribution("  as % of the job's time", errors_pct),
        distribution(&format!("midway poll ETA, % ({} jobs)", midway.len()), midway_pct),
    );
    let over: Vec<u64> = s.counters.iter().map(|c| c.lock().unwrap().over).collect();
    assert_eq!(over, [0, 0, 0], "no call came in over a known limit");
    assert!(
        misses.is_empty(),
        "{} first ETAs off by more than ±20 % / ±5 s:\n{}",
        misses.len(),
        misses.join("\n")
    );
    assert!(midway_misses.is_empty(), "midway: {}", midway_misses.join("\n"));
}

/// One provider, no limits, ≈ 2 s a call (its own name: the Upstash test reuses the store).
fn backlog_plan() -> Plan {
    Plan {
        name: "p",
        limits: ProviderLimits::default(),
        latency_ms: 2_000,
    }
}

/// 100 jobs parked until a provider's cooldown ends, then 5 more submitted: at the end of the
/// cooldown the backlog goes first, and the 5 first ETAs must say so (jobs due later in the index that
/// go first, counted by horizon).
async fn a_backlog_parked_for_a_cooldown_goes_first(s: Scenario, store: &str) {
    // One job teaches the latency; the next call answers 429 for COOLDOWN_S.
    let warm = s.submit(1, "cooldown warm-up").await;
    s.run_until(s.clock.now_ms()).await;
    assert_eq!(s.poll(&warm[0].id).await["status"], "completed");
    let backlog = s.submit(100, "cooldown backlog").await;
    s.run_until(s.clock.now_ms()).await;
    let parked = s.poll(&backlog[99].id).await;
    assert_eq!(parked["rawStatus"], "delayed", "{parked}");
    s.clock.0.fetch_add(10_000, Ordering::SeqCst);
    let late = s.submit(5, "cooldown late").await;
    s.run_until(u64::MAX).await;
    let mut errors = Vec::new();
    let mut misses = Vec::new();
    for job in &late {
        let outcome = s.outcome(job).await;
        let (took, error) = (outcome.took, outcome.error);
        errors.push(100.0 * error / took as f64);
        if outcome.missed() {
            misses.push(format!("eta in {} ms, completed in {took} ms", job.eta - job.submitted));
        }
    }
    println!(
        "ETA behind a parked backlog on the {store} store (100 jobs parked {COOLDOWN_S} s, 5 submitted after them):\n{}",
        distribution("first ETA − completion, %", errors)
    );
    assert!(misses.is_empty(), "{}", misses.join("\n"));
}

/// One provider of 6 requests a minute, ≈ 2 s a call (its own name: the Upstash test reuses the store).
fn turns_plan() -> Plan {
    Plan {
        name: "t",
        limits: ProviderLimits {
            rpm: Some(6),
            ..Default::default()
        },
        latency_ms: 2_000,
    }
}

/// The jobs of tenant A's backlog in the two-tenant case.
const TENANT_BACKLOG: usize = 60;

impl Scenario {
    /// Submits one job of `tenant` and runs its first step (its claim books its turn when the minute
    /// is used up); returns what the caller saw and the tenant's next turn on provider t before the
    /// submit (`None`: the tenant held no turn).
    async fn submit_for(&self, tenant: &str, prompt: &str) -> (Seen, Option<u64>) {
        let states = self.engine.store().provider_states().await.unwrap();
        let now = self.clock.now_ms();
        let turn = states.get("t").and_then(|st| {
            let own = serde_json::to_value(st).ok()?;
            own["q"]
                .as_object()?
                .iter()
                .find(|(t, _)| t.ends_with(&format!("/{tenant}")))
                .and_then(|(_, at)| at.as_u64())
                .filter(|at| *at > now)
        });
        let body = json!({"prompt": prompt, "tenantId": tenant, "responseMode": "text"});
        let (status, answer) = self.call("POST", "/v1/generate", Some(body)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        let submitted = self.clock.now_ms();
        let eta = ms(&answer["etaAt"]);
        let seen = Seen {
            id: answer["jobId"].as_str().unwrap().to_string(),
            submitted,
            eta,
            eta_seconds: answer["etaSeconds"].as_u64().unwrap(),
        };
        self.run_until(self.clock.now_ms()).await;
        (seen, turn)
    }
}

/// Two tenants on one 6-rpm provider: tenant A's backlog of 60 jobs books A's turns ten minutes ahead;
/// then, one at a time, B's first job, three more of A's, two more of B's. A's new jobs wait for A's
/// turn (past the backlog), however few jobs the due-index holds ahead of them; B's wait for B's turns
/// (the next minute, then a share apart). Each first ETA is never before the tenant's next turn as the
/// submit found it, and within ±20 % of the job's time in the system or ±5 s — but for B's third: its
/// turn falls in the minute B joined, which A's turns booked before B came already fill (B's first turn
/// took one of them), so it is bumped to B's next turn, which the ETA cannot see; it must not complete
/// before its ETA.
async fn two_tenants_wait_for_their_own_turns(s: Scenario, store: &str) {
    let warm = s.submit(1, "turns warm-up").await;
    s.run_until(s.clock.now_ms()).await;
    assert_eq!(s.poll(&warm[0].id).await["status"], "completed");
    for i in 0..TENANT_BACKLOG {
        let body = json!({"prompt": format!("a backlog {i}"), "tenantId": "a", "responseMode": "text"});
        let (status, answer) = s.call("POST", "/v1/generate", Some(body)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
    s.run_until(s.clock.now_ms()).await;
    let mut measured = Vec::new();
    for (tenant, prompt) in [
        ("b", "b first"),
        ("a", "a late 1"),
        ("a", "a late 2"),
        ("a", "a late 3"),
        ("b", "b second"),
        ("b", "b third"),
    ] {
        let (seen, turn) = s.submit_for(tenant, prompt).await;
        if let Some(turn) = turn {
            assert!(
                seen.eta >= turn,
                "{prompt}: ETA {} before its tenant's turn {turn}",
                seen.eta
            );
        }
        measured.push((prompt, seen, turn));
    }
    s.run_until(u64::MAX).await;
    let mut errors = Vec::new();
    let mut misses = Vec::new();
    let mut lines = Vec::new();
    for (prompt, job, turn) in &measured {
        let outcome = s.outcome(job).await;
        let (took, error) = (outcome.took, outcome.error);
        errors.push(100.0 * error / took as f64);
        lines.push(format!(
            "{prompt}: ETA in {:.1} s, completed in {:.1} s{}",
            (job.eta - job.submitted) as f64 / 1000.0,
            took as f64 / 1000.0,
            turn.map_or(String::new(), |t| format!(
                " (tenant's turn in {:.1} s)",
                (t - job.submitted) as f64 / 1000.0
            ))
        ));
        let bumped = *prompt == "b third";
        if (bumped && error > 5_000.0) || (!bumped && outcome.missed()) {
            misses.push(format!(
                "{prompt}: eta in {} ms, completed in {took} ms",
                job.eta - job.submitted
            ));
        }
    }
    println!(
        "ETA with two tenants on the {store} store ({TENANT_BACKLOG} jobs of A booked on a 6-rpm provider, then B's and A's one at a time):\n  {}\n{}",
        lines.join("\n  "),
        distribution("first ETA − completion, %", errors)
    );
    let over = s.counters[0].lock().unwrap().over;
    assert_eq!(over, 0, "no call came in over the provider's limit");
    assert!(misses.is_empty(), "{}", misses.join("\n"));
}

/// A UTC midnight at least an hour after the store's clock: the scenario never runs behind it.
fn midnight_after(store_now_ms: u64) -> u64 {
    ResetClock::UtcMidnight.next_reset(store_now_ms + 3_600_000)
}

#[tokio::test]
async fn on_the_memory_store() {
    let midnight = midnight_after(SystemClock.now_ms());
    let (s, _fakes) = scenario(None, midnight - 10 * MINUTE, plans().into(), None).await;
    the_first_eta_is_within_twenty_percent(s, "memory", midnight).await;
}

#[tokio::test]
async fn behind_a_backlog_on_the_memory_store() {
    let (s, _fakes) = scenario(None, SystemClock.now_ms() + 3_600_000, vec![backlog_plan()], Some(2)).await;
    a_backlog_parked_for_a_cooldown_goes_first(s, "memory").await;
}

#[tokio::test]
async fn two_tenants_on_the_memory_store() {
    let start = (SystemClock.now_ms() / MINUTE + 60) * MINUTE + 5_000;
    let (s, _fakes) = scenario(None, start, vec![turns_plan()], None).await;
    two_tenants_wait_for_their_own_turns(s, "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_upstash_store_over_the_real_stack() {
    let redis = testkit::stack::RedisServer::start().await.expect("redis-server");
    let (_upstash, config) = upstash_emulator(&redis).await;
    let midnight = midnight_after(redis.time_ms().await.expect("redis TIME"));
    let (s, _fakes) = scenario(Some(config.clone()), midnight - 10 * MINUTE, plans().into(), None).await;
    the_first_eta_is_within_twenty_percent(s, "Upstash", midnight).await;
    let start = redis.time_ms().await.expect("redis TIME") + 3_600_000;
    let (s, _fakes) = scenario(Some(config.clone()), start, vec![backlog_plan()], Some(2)).await;
    a_backlog_parked_for_a_cooldown_goes_first(s, "Upstash").await;
    let start = (redis.time_ms().await.expect("redis TIME") / MINUTE + 120) * MINUTE + 5_000;
    let (s, _fakes) = scenario(Some(config), start, vec![turns_plan()], None).await;
    two_tenants_wait_for_their_own_turns(s, "Upstash").await;
}
