//! The step engine over the in-memory store and an in-process queue, with providers scripted at the
//! port (no HTTP here: the wire formats have their own tests against the fake servers).

use shared::domain::quota::Reserve;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shared::adapters::store::memory::MemoryStore;
use shared::domain::error_class::ErrorClass;
use shared::domain::job::{job_id, new_gen, Job, JobSpec, JobState, StepRef};
use shared::domain::llm::{ChatMessage, CompletionRequest, FinishReason, Usage};
use shared::domain::message::Message;
use shared::domain::outcome::{Answer, CallReport, Failure, RateSignals, RetryHint};
use shared::engine::settings::Settings;
use shared::engine::{Engine, ProviderSlot, StepError, StepOutcome};
use shared::ports::outbound::{AlertSent, Outbound};
use shared::ports::{Admission, Clock, Created, Limits, Provider, Queue, QueueError, Store, Submitted};

struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl ManualClock {
    fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

/// Records sent messages; can be told to fail.
#[derive(Default)]
struct RecordingQueue {
    sent: Mutex<Vec<(Message, Duration)>>,
    broken: AtomicBool,
}

#[async_trait]
impl Queue for RecordingQueue {
    async fn send(&self, message: &Message, delay: Duration) -> Result<(), QueueError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(QueueError::Unavailable("broken on purpose".into()));
        }
        self.sent.lock().unwrap().push((message.clone(), delay));
        Ok(())
    }
}

impl RecordingQueue {
    fn take(&self) -> Vec<(Message, Duration)> {
        std::mem::take(&mut self.sent.lock().unwrap())
    }
}

/// A provider answering from a script, counting its calls.
struct Scripted {
    name: String,
    replies: Mutex<VecDeque<Result<Answer, Failure>>>,
    calls: AtomicU64,
}

#[async_trait]
impl Provider for Scripted {
    fn name(&self) -> &str {
        &self.name
    }
    async fn call(&self, _request: &CompletionRequest) -> CallReport {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let result = self
            .replies
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Ok(text("default")));
        let http_status = Some(match &result {
            Ok(_) => 200,
            Err(f) if f.class == ErrorClass::RateLimited => 429,
            Err(_) => 503,
        });
        CallReport {
            result,
            http_status,
            duration_ms: 12,
            rate: RateSignals::default(),
        }
    }
}

fn text(s: &str) -> Answer {
    Answer {
        text: s.to_string(),
        finish: FinishReason::Stop,
        usage: Usage::default(),
    }
}

fn limited(seconds: u64) -> Failure {
    Failure::new(ErrorClass::RateLimited, "429 slow down")
        .with_retry(Some(RetryHint::After(Duration::from_secs(seconds))))
}

struct World {
    clock: Arc<ManualClock>,
    store: Arc<MemoryStore>,
    queue: Arc<RecordingQueue>,
    providers: Vec<Arc<Scripted>>,
    engine: Engine,
}

const T0: u64 = 1_764_000_000_000;

fn world(names: &[&str]) -> World {
    world_telling(names, shared::wiring::service::outbound(&Settings::default()))
}

/// A world whose webhooks and callbacks go through `outbound`.
fn world_telling(names: &[&str], outbound: Arc<dyn Outbound>) -> World {
    let clock = Arc::new(ManualClock(AtomicU64::new(T0)));
    let store = Arc::new(MemoryStore::new(clock.clone()));
    let queue = Arc::new(RecordingQueue::default());
    let providers: Vec<Arc<Scripted>> = names
        .iter()
        .map(|n| {
            Arc::new(Scripted {
                name: n.to_string(),
                replies: Mutex::new(VecDeque::new()),
                calls: AtomicU64::new(0),
            })
        })
        .collect();
    let slots = providers
        .iter()
        .map(|p| ProviderSlot {
            name: p.name.clone(),
            limits: Default::default(),
            small_context: false,
            timeout_ms: 1_000,
            provider: p.clone(),
        })
        .collect();
    let settings = Settings::default();
    let engine = Engine::new(store.clone(), queue.clone(), clock.clone(), outbound, slots, settings);
    World {
        clock,
        store,
        queue,
        providers,
        engine,
    }
}

impl World {
    fn script(&self, provider: usize, replies: Vec<Result<Answer, Failure>>) {
        self.providers[provider].replies.lock().unwrap().extend(replies);
    }
    fn calls(&self, provider: usize) -> u64 {
        self.providers[provider].calls.load(Ordering::SeqCst)
    }
    async fn submit(&self, fallback: Option<serde_json::Value>) -> StepRef {
        let now = self.clock.now_ms();
        let job = Job {
            id: job_id("o", &new_gen()),
            gen: new_gen(),
            spec: JobSpec {
                messages: vec![ChatMessage::user("hello")],
                max_tokens: 50,
                fallback: fallback.map(std::sync::Arc::new),
                ..shared::testing::spec()
            },
            created_at_ms: now,
            deadline_ms: now + 60_000,
            expires_at_ms: now + 120_000,
            ..shared::testing::job()
        };
        assert!(matches!(
            self.store
                .create(&job, &self.engine.enlist(), Limits::default())
                .await
                .unwrap(),
            Admission::Admitted {
                value: Submitted {
                    created: Created::New,
                    ..
                },
                rate: None
            }
        ));
        job.step_ref()
    }
    async fn job(&self, step: &StepRef) -> Job {
        match self
            .store
            .read(&step.owner, &step.job_id, Duration::from_secs(600), None)
            .await
            .unwrap()
        {
            Admission::Admitted {
                value: Some(delivered), ..
            } => delivered.job,
            other => panic!("expected the job, got {other:?}"),
        }
    }
    async fn step(&self, step: &StepRef) -> Result<StepOutcome, StepError> {
        self.engine.run_step(step, None, &Default::default(), 1).await
    }
}

/// What the queue holds after one step message: `step`, not before `not_before_ms`, after `delay`.
fn sent(step: StepRef, not_before_ms: Option<u64>, delay: Duration) -> Vec<(Message, Duration)> {
    vec![(
        Message::Step {
            step,
            not_before_ms,
            hint: Default::default(),
        },
        delay,
    )]
}

fn next_of(step: &StepRef) -> StepRef {
    StepRef {
        seq: step.seq + 1,
        ..step.clone()
    }
}

#[tokio::test]
async fn success_on_the_first_provider_finishes_the_job() {
    let w = world(&["a", "b"]);
    w.script(0, vec![Ok(text("hi there"))]);
    let s = w.submit(None).await;
    assert_eq!(w.step(&s).await.unwrap(), StepOutcome::Finished(JobState::Succeeded));
    let job = w.job(&s).await;
    let result = job.result.unwrap();
    assert_eq!(
        (
            serde_json::Value::clone(&result.output),
            result.used_provider.as_str(),
            result.fallback
        ),
        (serde_json::json!("hi there"), "a", false)
    );
    assert_eq!(job.attempts.len(), 1);
    assert!(w.queue.take().is_empty(), "a finished job queues nothing");
    assert_eq!(w.store.provider_states().await.unwrap()["a"].minute_requests, 1);
}

#[tokio::test]
async fn a_rate_limit_fails_over_at_once_and_cools_the_provider_for_everyone() {
    let w = world(&["a", "b"]);
    w.script(0, vec![Err(limited(30))]);
    let s = w.submit(None).await;
    assert_eq!(w.step(&s).await.unwrap(), StepOutcome::Progressed { delay_ms: 0 });
    assert_eq!(w.queue.take(), sent(next_of(&s), None, Duration::ZERO));
    assert_eq!(
        w.store.provider_states().await.unwrap()["a"].cooldown_until_ms,
        T0 + 30_000
    );
    assert_eq!(
        w.step(&next_of(&s)).await.unwrap(),
        StepOutcome::Finished(JobState::Succeeded)
    );
    assert_eq!(w.job(&s).await.result.unwrap().used_provider, "b");

    // Another job goes straight to b while a cools down.
    let other = w.submit(None).await;
    w.step(&other).await.unwrap();
    assert_eq!((w.calls(0), w.calls(1)), (1, 2));
}

#[tokio::test]
async fn when_everyone_is_limited_the_job_waits_for_the_earliest() {
    let w = world(&["a", "b"]);
    w.script(0, vec![Err(limited(20))]);
    w.script(1, vec![Err(limited(5))]);
    let s = w.submit(None).await;
    w.step(&s).await.unwrap();
    w.queue.take();
    assert_eq!(
        w.step(&next_of(&s)).await.unwrap(),
        StepOutcome::Progressed { delay_ms: 5_000 }
    );
    let job = w.job(&s).await;
    assert_eq!(
        (job.state, job.next_attempt_at_ms),
        (JobState::WaitingForRetry, Some(T0 + 5_000))
    );
    let third = next_of(&next_of(&s));
    assert_eq!(w.queue.take(), sent(third.clone(), None, Duration::from_secs(5)));
    w.clock.advance(5_000);
    assert_eq!(
        w.step(&third).await.unwrap(),
        StepOutcome::Finished(JobState::Succeeded)
    );
    assert_eq!(w.job(&s).await.result.unwrap().used_provider, "b");
    assert_eq!((w.calls(0), w.calls(1)), (1, 2));
}

#[tokio::test]
async fn an_early_message_is_sent_on_without_touching_the_store() {
    let w = world(&["a"]);
    let s = w.submit(None).await;
    let outcome = w
        .engine
        .run_step(&s, Some(T0 + 2_000_000), &Default::default(), 1)
        .await
        .unwrap();
    assert_eq!(outcome, StepOutcome::Rescheduled);
    assert_eq!(
        w.queue.take(),
        sent(s.clone(), Some(T0 + 2_000_000), Duration::from_secs(2_000))
    );
    assert_eq!(w.calls(0), 0);
    assert_eq!(w.job(&s).await.seq, 1);
}

#[tokio::test]
async fn duplicates_never_call_a_provider_twice() {
    let w = world(&["a"]);
    w.script(0, vec![Err(Failure::new(ErrorClass::Overloaded, "503"))]);
    let s = w.submit(None).await;
    w.step(&s).await.unwrap();
    assert_eq!(w.step(&s).await.unwrap(), StepOutcome::Dropped("stale step message"));
    assert_eq!(w.calls(0), 1);
}

#[tokio::test]
async fn a_held_lease_makes_the_message_come_back_later() {
    let w = world(&["a"]);
    let s = w.submit(None).await;
    assert!(matches!(
        w.store
            .claim(&s, Duration::from_secs(60), &Reserve::default())
            .await
            .unwrap(),
        shared::ports::Claim::Acquired { .. }
    ));
    w.queue.take();
    // Not a failure: the same step comes back, as a new message, when the lease ends.
    let outcome = w.step(&s).await.unwrap();
    assert_eq!(outcome, StepOutcome::Busy { retry_in_ms: 60_050 });
    let sent = w.queue.take();
    assert_eq!(
        sent,
        vec![(
            Message::Step {
                step: s.clone(),
                not_before_ms: None,
                hint: Default::default(),
            },
            Duration::from_millis(60_050)
        )]
    );
    assert_eq!(w.calls(0), 0);
    w.clock.advance(30_000);
    assert_eq!(w.step(&s).await.unwrap(), StepOutcome::Busy { retry_in_ms: 30_050 });
}

#[tokio::test]
async fn a_lost_next_message_is_sent_again_by_the_redelivery() {
    let w = world(&["a", "b"]);
    w.script(0, vec![Err(limited(30))]);
    let s = w.submit(None).await;
    w.queue.broken.store(true, Ordering::SeqCst);
    assert!(
        matches!(w.step(&s).await, Err(StepError::Queue(_))),
        "the state was written but the send failed"
    );
    w.queue.broken.store(false, Ordering::SeqCst);
    // The same message comes back (receive count 2): the job is one step further, so re-send its next.
    assert_eq!(
        w.engine.run_step(&s, None, &Default::default(), 2).await.unwrap(),
        StepOutcome::Progressed { delay_ms: 0 }
    );
    assert_eq!(w.queue.take(), sent(next_of(&s), None, Duration::ZERO));
    assert_eq!(w.calls(0), 1, "no second provider call");
}

#[tokio::test]
async fn every_provider_failing_for_good_uses_the_fallback_or_fails() {
    let w = world(&["a"]);
    w.script(0, vec![Err(Failure::new(ErrorClass::BadRequest, "400 too long")); 2]);
    let with_fallback = w.submit(Some(serde_json::json!({"title": "template"}))).await;
    assert_eq!(
        w.step(&with_fallback).await.unwrap(),
        StepOutcome::Finished(JobState::Succeeded)
    );
    let result = w.job(&with_fallback).await.result.unwrap();
    assert_eq!((result.used_provider.as_str(), result.fallback), ("fallback", true));

    let without = w.submit(None).await;
    assert_eq!(w.step(&without).await.unwrap(), StepOutcome::Finished(JobState::Failed));
    let job = w.job(&without).await;
    assert_eq!(
        job.error.as_deref(),
        Some("every provider failed for this job (last attempt: a 400 too long)")
    );
}

#[tokio::test]
async fn the_deadline_ends_a_waiting_job() {
    let w = world(&["a"]);
    w.script(0, vec![Err(limited(3_600))]);
    let s = w.submit(None).await;
    assert_eq!(w.step(&s).await.unwrap(), StepOutcome::Finished(JobState::Failed));
    assert!(w
        .job(&s)
        .await
        .error
        .unwrap()
        .starts_with("deadline_exceeded: the job's deadline passed"));
}

/// A receiver scripted at the Outbound port: down (no answer) until told up; every attempt recorded.
#[derive(Default)]
struct Receiver {
    up: AtomicBool,
    /// (job id, delivery index, answered) of every attempt, in order.
    attempts: Mutex<Vec<(String, usize, bool)>>,
}

#[async_trait]
impl Outbound for Receiver {
    fn admits(&self, _owner: &str, _kind: shared::domain::targets::TargetKind, _url: &str) -> Result<(), String> {
        Ok(())
    }
    async fn deliver(&self, job: &Job, index: usize, _now_ms: u64) -> shared::domain::targets::AttemptReport {
        let up = self.up.load(Ordering::SeqCst);
        self.attempts.lock().unwrap().push((job.id.clone(), index, up));
        if up {
            shared::testing::attempt_report(true, Some(200), None)
        } else {
            shared::testing::attempt_report(false, None, Some("connection refused"))
        }
    }
    fn sinks(&self) -> &[&'static str] {
        &[]
    }
    async fn alert(&self, _alert: &shared::domain::alert::Alert, _sink: usize, _now_ms: u64) -> AlertSent {
        AlertSent::Delivered
    }
}

/// The receiver-recovery fast path through the engine on the memory store: three finished jobs owe a
/// webhook to one origin that does not answer. One delivery holds the origin's probe and tries every
/// 5 s without using up its schedule; the others wait out theirs (5 min). The probe's first success
/// marks the origin up and sends the others' steps at once: each is delivered once, on its next step.
#[tokio::test]
async fn a_probe_s_success_wakes_every_delivery_waiting_on_its_origin() {
    let receiver = Arc::new(Receiver::default());
    let w = world_telling(&["a"], receiver.clone());
    let mut steps = Vec::new();
    for n in 0..3 {
        let s = w.submit(None).await;
        let mut job = w.job(&s).await;
        job.spec.targets = vec![shared::domain::targets::Target::webhook(format!(
            "http://hooks.test:8080/h/{n}"
        ))];
        // The submit route plans targets from the request; here they are written into the record.
        assert!(w
            .store
            .finish(
                &s,
                &Job {
                    seq: s.seq,
                    ..job.clone()
                },
                Some(T0),
                None
            )
            .await
            .is_ok());
        steps.push(s);
    }
    let current = |job: Job| job.step_ref();
    // Each job's provider step finishes it and makes its first delivery attempt, which fails (nobody
    // answers).
    for s in &steps {
        let step = current(w.job(s).await);
        assert_eq!(w.step(&step).await.unwrap(), StepOutcome::Finished(JobState::Succeeded));
        let job = w.job(s).await;
        assert_eq!(job.deliveries[0].attempts, 1, "{:?}", job.deliveries);
    }
    w.queue.take();
    let holder = w.job(&steps[0]).await;
    let at = holder.next_attempt_at_ms.unwrap();
    assert!(
        (T0 + 4_500..=T0 + 5_000).contains(&at),
        "the first failure holds the probe: 5 s, or its schedule's 5 s ±10 % if sooner: {at}"
    );
    for s in &steps[1..] {
        let job = w.job(s).await;
        let at = job.next_attempt_at_ms.unwrap();
        assert!((T0 + 4_500..=T0 + 5_500).contains(&at), "its schedule: 5 s ±10 %, {at}");
    }
    // The schedule's second attempt fails for all: the others now wait 5 minutes.
    w.clock.advance(6_000);
    for s in &steps {
        let step = current(w.job(s).await);
        assert!(matches!(w.step(&step).await.unwrap(), StepOutcome::Progressed { .. }));
    }
    for s in &steps[1..] {
        let at = w.job(s).await.next_attempt_at_ms.unwrap();
        assert!(at >= T0 + 6_000 + 270_000, "the next scheduled attempt is minutes away");
    }
    assert_eq!(
        w.job(&steps[0]).await.next_attempt_at_ms,
        Some(T0 + 11_000),
        "the probe: 5 s on"
    );
    // Two probes fail: counted, the schedule untouched.
    for _ in 0..2 {
        w.clock.advance(5_000);
        let step = current(w.job(&steps[0]).await);
        assert!(matches!(w.step(&step).await.unwrap(), StepOutcome::Progressed { .. }));
    }
    let probing = w.job(&steps[0]).await;
    assert_eq!(
        (probing.deliveries[0].attempts, probing.deliveries[0].round_attempts),
        (4, 2)
    );
    w.queue.take();
    // The receiver answers again: the next probe succeeds and wakes the two others at once.
    receiver.up.store(true, Ordering::SeqCst);
    w.clock.advance(5_000);
    let step = current(w.job(&steps[0]).await);
    assert_eq!(w.step(&step).await.unwrap(), StepOutcome::Finished(JobState::Succeeded));
    let woken: Vec<StepRef> = w
        .queue
        .take()
        .into_iter()
        .map(|(m, delay)| match m {
            Message::Step { step, .. } if delay == Duration::ZERO => step,
            other => panic!("expected a woken step now, got {other:?} after {delay:?}"),
        })
        .collect();
    let mut expected = vec![current(w.job(&steps[1]).await), current(w.job(&steps[2]).await)];
    expected.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    let mut woken_sorted = woken.clone();
    woken_sorted.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    assert_eq!(woken_sorted, expected);
    for step in &woken {
        assert_eq!(w.step(step).await.unwrap(), StepOutcome::Finished(JobState::Succeeded));
        // A duplicate of the same message is dropped: exactly once.
        assert!(matches!(w.step(step).await.unwrap(), StepOutcome::Dropped(_)));
    }
    let answered: Vec<String> = receiver
        .attempts
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, up)| *up)
        .map(|(id, _, _)| id.clone())
        .collect();
    let mut ids: Vec<String> = steps.iter().map(|s| s.job_id.clone()).collect();
    let mut got = answered.clone();
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "each webhook delivered exactly once");
    for s in &steps {
        let job = w.job(s).await;
        assert_eq!(
            job.deliveries[0].status,
            shared::domain::targets::DeliveryStatus::Delivered
        );
    }
    assert!(
        w.store
            .origin_up("http://hooks.test:8080", "o", w.clock.now_ms(), 0)
            .await
            .unwrap()
            .is_empty(),
        "the origin is up: nothing waits on it"
    );
}
