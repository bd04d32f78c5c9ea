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
    let outbound = shared::wiring::service::outbound(&settings);
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
