//! Three providers of three wire formats whose quotas run out at different times, behind the real HTTP
//! routes and step engine, on a clock the test drives: every job completes, no provider is called while the
//! shared state says it is exhausted (each call is checked against the state read just before its step),
//! and the jobs that had to wait wake exactly at the providers' reset times. Run on the in-memory store and
//! on the Upstash store over the real local stack.
//!
//! - gemini (native wire): 3 requests per Pacific day, unknown to our configuration; learned from its 429.
//! - groq (OpenAI wire): 2 requests per UTC day, learned from the rate-limit headers of its successes.
//! - cohere (v2 wire): 4 requests per UTC day, known from configuration (`rpd`).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use http::StatusCode;
use serde_json::{json, Value};
use shared::adapters::providers::spec::{ProviderSpec, Wire as SpecWire};
use shared::domain::message::Message;
use shared::domain::quota::{Availability, LastOutcome, ProviderLimits, ResetClock};
use shared::domain::secret::Secret;
use shared::engine::settings::Settings;
use shared::engine::{Engine, StepOutcome};
use shared::ports::{Clock, SystemClock};
use shared::wiring::config::UpstashConfig;
use testkit::fake::{FakeProvider, FakeReply, Wire};

use common::{scenario_config, upstash_emulator, ManualClock, SimQueue};

/// Thirty days: how far ahead of this process redis-server runs in the tests of an engine clock behind the store's.
const MONTH_MS: i64 = 30 * 86_400_000;

/// A provider's real quota as the fake enforces it: `limit` calls per quota day of `clock`.
struct Quota {
    limit: u64,
    reset: ResetClock,
    used: Mutex<(u64, u64)>,
    /// Calls that arrived over the quota.
    over: AtomicU64,
}

impl Quota {
    fn new(limit: u64, reset: ResetClock) -> Arc<Self> {
        Arc::new(Self {
            limit,
            reset,
            used: Mutex::new((0, 0)),
            over: AtomicU64::new(0),
        })
    }

    /// Counts a call; the calls left after it, or `None` when the quota was already used up.
    fn take(&self, now: u64) -> Option<u64> {
        let mut used = self.used.lock().unwrap();
        let day = self.reset.day(now);
        if used.0 != day {
            *used = (day, 0);
        }
        if used.1 >= self.limit {
            self.over.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        used.1 += 1;
        Some(self.limit - used.1)
    }
}

struct Scenario {
    clock: Arc<ManualClock>,
    queue: Arc<SimQueue>,
    router: Router,
    engine: Engine,
    fakes: Vec<FakeProvider>,
    quotas: Vec<Arc<Quota>>,
    limits: Vec<ProviderLimits>,
    wakes: Vec<u64>,
}

/// The scenario's instants, anchored to the clock that enforces the store's expiries (Redis's `TIME`
/// on Upstash, the machine's clock on the memory store), never to a calendar date: the test means the
/// same on any day. The scenario starts 20 minutes before a UTC midnight at least 40 minutes ahead of
/// that clock, so the manual clock never runs behind the store's (a job written "already expired"
/// would be refused by the store's clock check).
struct Instants {
    t0: u64,
    utc_midnight: u64,
    /// The first midnight in Los Angeles after it: 07:00 or 08:00 UTC, whichever daylight time says.
    pacific_midnight: u64,
}

impl Instants {
    fn after(store_now_ms: u64) -> Self {
        let utc_midnight = ResetClock::UtcMidnight.next_reset(store_now_ms + 3_600_000);
        Self {
            t0: utc_midnight - 20 * 60_000,
            utc_midnight,
            pacific_midnight: ResetClock::PacificMidnight.next_reset(utc_midnight),
        }
    }
}

async fn scenario(upstash: Option<UpstashConfig>, at: &Instants) -> Scenario {
    let clock = Arc::new(ManualClock(AtomicU64::new(at.t0)));
    let gemini = FakeProvider::start(Wire::Gemini).await.unwrap();
    let groq = FakeProvider::start(Wire::OpenAi).await.unwrap();
    let cohere = FakeProvider::start(Wire::Cohere).await.unwrap();
    let quotas = vec![
        Quota::new(3, ResetClock::PacificMidnight),
        Quota::new(2, ResetClock::UtcMidnight),
        Quota::new(4, ResetClock::UtcMidnight),
    ];

    let (q, c) = (quotas[0].clone(), clock.clone());
    gemini.set_responder(move |_| match q.take(c.now_ms()) {
        Some(_) => FakeReply::gemini_text("a gemini report"),
        None => FakeReply::gemini_daily_quota(),
    });
    let (q, c) = (quotas[1].clone(), clock.clone());
    groq.set_responder(move |_| {
        let now = c.now_ms();
        let to_reset = format!(
            "{:.3}s",
            (ResetClock::UtcMidnight.next_reset(now) - now) as f64 / 1000.0
        );
        match q.take(now) {
            Some(left) => FakeReply::openai_text("a groq report")
                .with_header("x-ratelimit-limit-requests", "2")
                .with_header("x-ratelimit-remaining-requests", &left.to_string())
                .with_header("x-ratelimit-reset-requests", &to_reset),
            None => FakeReply::openai_rate_limited(1),
        }
    });
    let (q, c) = (quotas[2].clone(), clock.clone());
    cohere.set_responder(move |_| match q.take(c.now_ms()) {
        Some(_) => FakeReply::cohere_text("a cohere report"),
        None => FakeReply::cohere_trial_minute(),
    });

    let limits = vec![
        ProviderLimits {
            reset: ResetClock::PacificMidnight,
            ..Default::default()
        },
        ProviderLimits::default(),
        ProviderLimits {
            rpd: Some(4),
            ..Default::default()
        },
    ];
    let wires = [
        SpecWire::Gemini,
        SpecWire::OpenAi {
            headers: Default::default(),
        },
        SpecWire::Cohere,
    ];
    let providers = ["gemini", "groq", "cohere"]
        .iter()
        .zip(wires)
        .zip([&gemini, &groq, &cohere])
        .zip(&limits)
        .map(|(((name, wire), fake), limits)| ProviderSpec {
            name: name.to_string(),
            wire,
            base_url: fake.base_url(),
            model: "fake-model".into(),
            api_key: Some(Secret::new("k")),
            timeout_ms: 2_000,
            limits: *limits,
            small_context: false,
        })
        .collect();
    let config = scenario_config(Settings::default(), providers, upstash);
    let queue = Arc::new(SimQueue::new(clock.clone()));
    let service = Arc::new(shared::wiring::service::build_with_clock(&config, queue.clone(), clock.clone()).unwrap());
    let engine = service.engine.clone();
    Scenario {
        clock,
        queue,
        router: shared::api::routes::router(service),
        engine,
        fakes: vec![gemini, groq, cohere],
        quotas,
        limits,
        wakes: Vec::new(),
    }
}

impl Scenario {
    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        testkit::router::call(&self.router, method, uri, Some("secret-key"), body).await
    }

    async fn submit(&self, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            let body = json!({"prompt": format!("write report {i} of {n} at {}", self.clock.now_ms()), "responseMode": "text"});
            let (status, answer) = self.call("POST", "/v1/generate", Some(body)).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
            ids.push(answer["jobId"].as_str().unwrap().to_string());
        }
        ids
    }

    /// The job's status word, and the whole answer (for the message when it is not what was expected).
    async fn status(&self, id: &str) -> (String, StatusCode, Value) {
        let (code, answer) = self.call("GET", &format!("/v1/jobs/{id}"), None).await;
        (answer["status"].as_str().unwrap_or("?").to_string(), code, answer)
    }

    /// Runs every message due by `limit`, one step at a time, moving the clock to each due time. Before each
    /// step the shared provider states are read; a provider called during the step must have been available.
    async fn run_until(&mut self, limit: u64) {
        while let Some((due, message)) = self.queue.pop_due_by(limit) {
            let now = self.clock.now_ms();
            if due > now {
                self.clock.0.store(due, Ordering::SeqCst);
            }
            let step = match message {
                // Long waits are parked in the due-index: the sweeper wakes them (a wake is a sweep
                // that re-queued steps).
                Message::Sweep { token, round } => {
                    let outcome = self.engine.sweep(&token, round, false).await.unwrap();
                    if matches!(outcome, StepOutcome::Swept { requeued, .. } if requeued > 0) {
                        self.wakes.push(self.clock.now_ms());
                    }
                    continue;
                }
                Message::Step {
                    step,
                    not_before_ms,
                    hint,
                } => {
                    if due > now {
                        self.wakes.push(due);
                    }
                    (step, not_before_ms, hint)
                }
                // No alert sink is configured here: none is ever queued.
                Message::Alert { .. } => continue,
            };
            let now = self.clock.now_ms();
            let states = self.engine.store().provider_states().await.unwrap();
            let hits: Vec<usize> = self.fakes.iter().map(FakeProvider::hits).collect();
            let (step, not_before_ms, hint) = step;
            self.engine.run_step(&step, not_before_ms, &hint, 1).await.unwrap();
            for (i, fake) in self.fakes.iter().enumerate() {
                if fake.hits() > hits[i] {
                    let name = ["gemini", "groq", "cohere"][i];
                    let state = states.get(name).cloned().unwrap_or_default();
                    match state.available_at(&self.limits[i], now) {
                        Availability::At(at) => {
                            assert!(at <= now, "{name} was called at {now} while exhausted until {at}")
                        }
                        Availability::Disabled(why) => panic!("{name} was called while disabled: {why}"),
                    }
                }
            }
        }
    }
}

async fn quotas_run_out_and_every_job_completes(mut s: Scenario, at: &Instants) {
    let (utc, pacific) = (at.utc_midnight, at.pacific_midnight);
    // Wave 1 at 23:40 UTC: 3 + 2 + 4 = 9 calls are left today; 3 jobs must wait for the UTC midnight.
    let first = s.submit(12).await;
    s.run_until(utc - 1).await;
    let waiting = still_waiting(&s, &first).await;
    assert_eq!(waiting.len(), 3, "three jobs wait for the reset, none failed");
    s.run_until(utc).await;
    assert_eq!(s.wakes, [utc], "the waiting jobs woke at the UTC midnight, not before");
    assert!(still_waiting(&s, &waiting).await.is_empty());

    // Wave 2 at 00:00 UTC: groq and cohere have 3 calls left, gemini waits for midnight in Los Angeles.
    let second = s.submit(5).await;
    s.run_until(pacific - 1).await;
    let waiting = still_waiting(&s, &second).await;
    assert_eq!(waiting.len(), 2, "two jobs wait for Gemini's reset");
    s.run_until(u64::MAX).await;
    assert_eq!(
        s.wakes,
        [utc, pacific],
        "the last jobs woke when Gemini's Pacific day began"
    );
    assert!(still_waiting(&s, &waiting).await.is_empty());

    // Gemini's quota was unknown to us: one call learned it. The others were never called over quota.
    let over: Vec<u64> = s.quotas.iter().map(|q| q.over.load(Ordering::SeqCst)).collect();
    assert_eq!(over, [1, 0, 0], "calls made over quota (gemini, groq, cohere)");
    let hits: Vec<usize> = s.fakes.iter().map(FakeProvider::hits).collect();
    assert_eq!(
        hits,
        [3 + 1 + 2, 2 + 2, 4 + 4],
        "calls per provider (gemini, groq, cohere)"
    );
}

/// The jobs still waiting; every other one must have completed. A finished job is read once only: its
/// first delivery shortens its life to the grace period, as the caller saves it.
async fn still_waiting(s: &Scenario, ids: &[String]) -> Vec<String> {
    let mut waiting = Vec::new();
    for id in ids {
        match s.status(id).await {
            (word, ..) if word == "completed" => {}
            (word, _, answer) if word == "queued" && answer["rawStatus"] == "delayed" => waiting.push(id.clone()),
            (word, code, answer) => panic!("job {id} is {word}: {code} {answer}; wakes {:?}", s.wakes),
        }
    }
    waiting
}

/// The per-minute token budget counts what the provider reported the call used (every fake answers
/// 120 input + 80 output tokens), not the estimate from the prompt's length and `max_tokens`.
async fn the_token_budget_counts_what_the_provider_reported(mut s: Scenario, at: &Instants) {
    s.submit(1).await;
    s.run_until(at.t0 + 1_000).await;
    let states = s.engine.store().provider_states().await.unwrap();
    let served: Vec<_> = states
        .iter()
        .filter(|(_, state)| state.last_class == Some(LastOutcome::Ok))
        .collect();
    assert_eq!(served.len(), 1, "one provider served the job: {states:?}");
    let (name, state) = served[0];
    assert_eq!(
        (state.minute_requests, state.minute_tokens),
        (1, 200),
        "{name}: {state:?}"
    );
}

#[tokio::test]
async fn on_the_memory_store() {
    let at = Instants::after(SystemClock.now_ms());
    quotas_run_out_and_every_job_completes(scenario(None, &at).await, &at).await;
}

#[tokio::test]
async fn reported_tokens_on_the_memory_store() {
    let at = Instants::after(SystemClock.now_ms());
    the_token_budget_counts_what_the_provider_reported(scenario(None, &at).await, &at).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_tokens_on_the_upstash_store() {
    let redis = testkit::stack::RedisServer::start().await.expect("redis-server");
    let (_upstash, config, at) = upstash_over(&redis).await;
    the_token_budget_counts_what_the_provider_reported(scenario(Some(config), &at).await, &at).await;
}

/// The Upstash emulator over `redis`, its configuration, and the scenario's instants on Redis's clock
/// (the emulator stops when the first value is dropped).
async fn upstash_over(
    redis: &testkit::stack::RedisServer,
) -> (testkit::stack::UpstashEmulator, UpstashConfig, Instants) {
    let (upstash, config) = upstash_emulator(redis).await;
    let at = Instants::after(redis.time_ms().await.expect("redis TIME"));
    (upstash, config, at)
}

async fn on_upstash(redis: testkit::stack::RedisServer) {
    let (_upstash, config, at) = upstash_over(&redis).await;
    quotas_run_out_and_every_job_completes(scenario(Some(config), &at).await, &at).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_upstash_store_over_the_real_stack() {
    on_upstash(testkit::stack::RedisServer::start().await.expect("redis-server")).await;
}

/// The guard against an engine clock behind the store's: the same scenario with Redis's clock a month ahead of the
/// machine's (libfaketime on redis-server), as if the test ran 30 days later. A scenario anchored to a
/// fixed date, or to any clock but the store's, fails here: the store refuses its writes as already
/// expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_upstash_store_with_redis_a_month_ahead() {
    let redis = testkit::stack::RedisServer::start_shifted(MONTH_MS)
        .await
        .expect("redis-server under libfaketime");
    let machine = SystemClock.now_ms();
    let store = redis.time_ms().await.unwrap();
    assert!(
        store > machine + (MONTH_MS as u64) - 86_400_000,
        "redis-server's clock is not a month ahead: {store} vs {machine}"
    );
    on_upstash(redis).await;
}
