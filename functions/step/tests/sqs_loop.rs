//! The serverless loop on the real local stack: moto SQS + the Upstash emulator + redis-server + a fake
//! provider. A driver receives from the queue and hands each batch to the step handler as Lambda would,
//! delivering every batch twice on purpose; the visibility timeout brings failed messages back.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use serde_json::{json, Value};
use shared::adapters::queue::sqs::{SqsConfig, SqsQueue};
use shared::domain::job::{record_id, Job, StepRef};
use shared::domain::message::Message;
use shared::domain::quota::{ProviderEvent, ProviderState, Reserve};
use shared::engine::Engine;
use shared::ports::{
    Admission, Claim, Enlist, JobRead, Limits, Queue, QueueError, RateLimit, Store, StoreError, Submitted,
    SweepRequest, Swept, SystemClock,
};
use shared::wiring::config::Config;
use testkit::fake::{FakeProvider, FakeReply, Wire};
use testkit::router::call;
use testkit::stack::{MotoServer, RedisServer, UpstashEmulator};

struct Stack {
    redis: RedisServer,
    _upstash: UpstashEmulator,
    _moto: MotoServer,
    provider: FakeProvider,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    service: Arc<shared::wiring::service::Service>,
    _dir: std::path::PathBuf,
    /// The highest ApproximateReceiveCount any delivered message had.
    max_receive_count: AtomicU32,
    /// Every message the functions sent to SQS, with its delay, in order.
    sent: Arc<Mutex<Vec<(Message, Duration)>>>,
}

/// The functions' SQS client, with a note of every message it sends (each still goes to moto).
struct Noted {
    inner: SqsQueue,
    sent: Arc<Mutex<Vec<(Message, Duration)>>>,
}

#[async_trait]
impl Queue for Noted {
    async fn send(&self, message: &Message, delay: Duration) -> Result<(), QueueError> {
        self.inner.send(message, delay).await?;
        self.sent.lock().unwrap().push((message.clone(), delay));
        Ok(())
    }
}

/// The SDK's HTTP client on rustls with ring, the workspace's one crypto provider.
fn ring_http_client() -> aws_sdk_sqs::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

async fn stack() -> Stack {
    stack_with(&[]).await
}

async fn stack_with(extra: &[(&'static str, &'static str)]) -> Stack {
    let redis = RedisServer::start().await.unwrap();
    let upstash = UpstashEmulator::start(&redis).await.unwrap();
    let moto = MotoServer::start().await.unwrap();
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    provider.set_default(FakeReply::openai_text("a generated answer"));
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&moto.endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .http_client(ring_http_client())
        .build();
    let sqs = aws_sdk_sqs::Client::from_conf(conf);
    let queue_url = sqs
        .create_queue()
        .queue_name("steps")
        .attributes(QueueAttributeName::VisibilityTimeout, "2")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let dir = std::env::temp_dir().join(format!("stepper-sqs-{}-{}", std::process::id(), redis.port));
    let providers = testkit::fake::providers_file(&dir, &provider.base_url(), 1000, None).unwrap();
    let (url, token, path) = (
        upstash.url.clone(),
        upstash.token.clone(),
        providers.display().to_string(),
    );
    let config = Config::from_lookup(&|name| match name {
        "UPSTASH_REDIS_REST_URL" => Some(url.clone()),
        "UPSTASH_REDIS_REST_TOKEN" => Some(token.clone()),
        "STEPPER_CONFIG" => Some(path.clone()),
        other => extra.iter().find(|(k, _)| *k == other).map(|(_, v)| v.to_string()),
    })
    .unwrap();
    // The functions' own SQS client sends; the AWS SDK (above) receives and deletes, as Lambda's
    // event source would.
    let sqs_config = SqsConfig {
        endpoint: moto.endpoint.clone(),
        region: "us-east-1".into(),
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
        session_token: None,
    };
    let sent = Arc::new(Mutex::new(Vec::new()));
    let queue = Noted {
        inner: SqsQueue::new(sqs_config, queue_url.clone(), Arc::new(SystemClock)).unwrap(),
        sent: sent.clone(),
    };
    let service = Arc::new(shared::wiring::service::build(&config, Arc::new(queue)).unwrap());
    Stack {
        redis,
        _upstash: upstash,
        _moto: moto,
        provider,
        sqs,
        queue_url,
        service,
        _dir: dir,
        max_receive_count: AtomicU32::new(0),
        sent,
    }
}

impl Stack {
    /// Submits through the submit function's routes.
    async fn submit(&self) -> String {
        self.submit_to(
            "/v1/generate",
            json!({"prompt": "Say something", "responseMode": "text"}),
        )
        .await
    }

    async fn submit_to(&self, path: &str, body: Value) -> String {
        let submit = shared::api::submit_routes(self.service.clone());
        let (status, body) = call(&submit, "POST", path, None, Some(body)).await;
        assert_eq!(status, 202);
        body["jobId"].as_str().unwrap().to_string()
    }

    async fn status(&self, id: &str) -> Value {
        let poll = shared::api::poll_routes(self.service.clone());
        call(&poll, "GET", &format!("/v1/jobs/{id}"), None, None).await.1
    }

    /// Receives one batch and hands it to the handler twice, as a duplicate delivery would; deletes
    /// what the first run did not report as failed (Lambda's partial batch response).
    async fn drive_once(&self, engine: &Engine) -> usize {
        let received = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .unwrap();
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            return 0;
        }
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                let count = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .cloned()
                    .unwrap_or_else(|| "1".into());
                self.max_receive_count
                    .fetch_max(count.parse().unwrap_or(1), Ordering::SeqCst);
                json!({
                    "messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body,
                    "attributes": {"ApproximateReceiveCount": count}, "messageAttributes": {},
                    "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:steps", "awsRegion": "us-east-1"
                })
            })
            .collect();
        let event: SqsEvent = serde_json::from_value(json!({"Records": records})).unwrap();
        let first = step::handle_batch(engine, event.clone()).await;
        step::handle_batch(engine, event).await;
        let failed: Vec<String> = first
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        for m in &messages {
            if !failed.contains(m.message_id.as_ref().unwrap()) {
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle.clone().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
        messages.len()
    }

    async fn drive_until_finished(&self, engine: &Engine, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status(id).await;
            if status["status"] == "completed" || status["status"] == "failed" {
                return status;
            }
            assert!(Instant::now() < deadline, "job did not finish: {status}");
            self.drive_once(engine).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_delivered_twice_still_gives_one_result_and_one_provider_call() {
    let s = stack().await;
    let id = s.submit().await;
    let done = s.drive_until_finished(&s.service.engine, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["data"]["result"], "a generated answer");
    assert_eq!(done["data"]["providersAttempted"].as_array().unwrap().len(), 1);
    assert_eq!(s.provider.hits(), 1, "the duplicate delivery made no provider call");
}

/// Fails the first state write after a provider call, as if the function died right there.
struct DiesBeforeTheWrite {
    inner: Arc<dyn Store>,
    died: AtomicBool,
}

#[async_trait]
impl Store for DiesBeforeTheWrite {
    async fn create(&self, job: &Job, enlist: &Enlist, limits: Limits) -> Result<Admission<Submitted>, StoreError> {
        self.inner.create(job, enlist, limits).await
    }
    async fn claim(&self, step: &StepRef, lease: Duration, reserve: &Reserve) -> Result<Claim, StoreError> {
        self.inner.claim(step, lease, reserve).await
    }
    async fn finish(
        &self,
        step: &StepRef,
        next: &Job,
        due: Option<u64>,
        event: Option<&ProviderEvent>,
    ) -> Result<shared::ports::FinishOutcome, StoreError> {
        if !self.died.swap(true, Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "the function was killed before its state write".into(),
            ));
        }
        self.inner.finish(step, next, due, event).await
    }
    async fn read(
        &self,
        owner: &str,
        id: &str,
        grace: Duration,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Option<JobRead>>, StoreError> {
        self.inner.read(owner, id, grace, rate).await
    }
    async fn purge(&self, owner: &str, id: &str, rate: Option<RateLimit>) -> Result<Admission<bool>, StoreError> {
        self.inner.purge(owner, id, rate).await
    }
    async fn provider_states(&self) -> Result<std::collections::HashMap<String, ProviderState>, StoreError> {
        self.inner.provider_states().await
    }
    async fn overview(
        &self,
        owner: &str,
        bounds: shared::ports::OverviewBounds,
        rate: Option<RateLimit>,
    ) -> Result<Admission<shared::ports::Overview>, StoreError> {
        self.inner.overview(owner, bounds, rate).await
    }
    async fn spent(&self, owner: &str, all_owners: bool) -> Result<shared::domain::budget::Spent, StoreError> {
        self.inner.spent(owner, all_owners).await
    }
    async fn with_work_left(&self) -> Result<Vec<Job>, StoreError> {
        self.inner.with_work_left().await
    }
    async fn sweep(&self, request: &SweepRequest<'_>) -> Result<Swept, StoreError> {
        self.inner.sweep(request).await
    }
    async fn put_batch(&self, batch: &shared::domain::batch::BatchRecord) -> Result<(), StoreError> {
        self.inner.put_batch(batch).await
    }
    async fn read_batch(
        &self,
        owner: &str,
        batch_id: &str,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Option<shared::ports::BatchRead>>, StoreError> {
        self.inner.read_batch(owner, batch_id, rate).await
    }
    async fn peek(&self, owner: &str, id: &str) -> Result<Option<Job>, StoreError> {
        self.inner.peek(owner, id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_killed_between_the_call_and_the_write_completes_after_redelivery() {
    let s = stack().await;
    let engine = s.service.engine.clone();
    let inner = engine.store().clone();
    let engine = engine.with_store(Arc::new(DiesBeforeTheWrite {
        inner,
        died: AtomicBool::new(false),
    }));
    let id = s.submit().await;
    let done = s.drive_until_finished(&engine, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        s.provider.hits(),
        2,
        "the lost attempt is made again once, after the lease lapses"
    );
    assert_eq!(
        done["data"]["providersAttempted"].as_array().unwrap().len(),
        1,
        "only the written attempt is recorded"
    );
}

impl Stack {
    /// The job's current step, read from the store.
    async fn step_of(&self, id: &str) -> StepRef {
        match self
            .service
            .engine
            .store()
            .read("public", id, Duration::from_secs(60), None)
            .await
        {
            Ok(Admission::Admitted { value: Some(d), .. }) => d.job.step_ref(),
            other => panic!("no job {id}: {other:?}"),
        }
    }

    /// Receives what is visible now and deletes it unrun: the messages are lost.
    async fn lose_visible_messages(&self) -> Vec<Message> {
        let received = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        let mut lost = Vec::new();
        for m in received.messages.unwrap_or_default() {
            lost.push(serde_json::from_str(m.body.as_deref().unwrap()).unwrap());
            self.sqs
                .delete_message()
                .queue_url(&self.queue_url)
                .receipt_handle(m.receipt_handle.unwrap())
                .send()
                .await
                .unwrap();
        }
        lost
    }
}

/// A step whose lease another worker holds is not a failure. The message is answered at
/// once and a new one comes back when the lease ends, so SQS's receive count (and the redrive
/// policy's budget) is never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_comes_back_at_the_leases_end_without_using_the_receive_budget() {
    let s = stack().await;
    let id = s.submit().await;
    let step = s.step_of(&id).await;
    // Another worker holds the step for 3 s (it died mid-call, say).
    assert!(matches!(
        s.service
            .engine
            .store()
            .claim(&step, Duration::from_secs(3), &Reserve::default())
            .await
            .unwrap(),
        Claim::Acquired { .. }
    ));
    let started = Instant::now();
    let done = s.drive_until_finished(&s.service.engine, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(
        started.elapsed() >= Duration::from_millis(2_900),
        "the step ran only once the lease had ended ({:?})",
        started.elapsed()
    );
    assert_eq!(s.provider.hits(), 1);
    let receive_count = s.max_receive_count.load(Ordering::SeqCst);
    assert_eq!(receive_count, 1, "no message was ever received twice");
    println!(
        "sqs busy: finished {:?} after a 3 s lease, max ApproximateReceiveCount {receive_count}",
        started.elapsed()
    );
}

/// A step message lost in the queue (or never sent) is found by the sweep and the job
/// runs to completion. The sweep is itself a message on the step queue, armed by the submit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_step_message_is_recovered_by_the_sweep() {
    let s = stack_with(&[("SWEEP_GRACE_SECONDS", "1")]).await;
    let id = s.submit().await;
    let lost = s.lose_visible_messages().await;
    assert!(
        lost.iter().any(|m| matches!(m, Message::Step { .. })),
        "the first step message was lost: {lost:?}"
    );
    assert!(
        !lost.iter().any(|m| matches!(m, Message::Sweep { .. })),
        "the sweep waits its grace"
    );
    let started = Instant::now();
    let done = s.drive_until_finished(&s.service.engine, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(s.provider.hits(), 1);
    println!("sqs sweep: a lost step message recovered in {:?}", started.elapsed());
    // Nothing is left in the index: the sweeper chain ends by itself (no idle invocations).
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.drive_once(&s.service.engine).await > 0 || Instant::now() < deadline.min(started + Duration::from_secs(4)) {
        assert!(
            Instant::now() < deadline,
            "the sweeper kept itself alive with an empty index"
        );
    }
    let visible = s
        .sqs
        .get_queue_attributes()
        .queue_url(&s.queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attrs = visible.attributes.unwrap_or_default();
    let pending: u64 = [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesDelayed,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
    ]
    .iter()
    .map(|a| attrs.get(a).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
    .sum();
    assert_eq!(pending, 0, "no message left on the queue once no job exists: {attrs:?}");
}

#[tokio::test]
async fn the_sample_sqs_and_redrive_events_are_handled() {
    let config = Config::from_lookup(&|_| None).unwrap();
    let (queue, _deliveries) = shared::adapters::queue::local::LocalQueue::new();
    let engine = shared::wiring::service::build(&config, Arc::new(queue)).unwrap().engine;
    let read = |name: &str| -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(format!("{}/../../events/{name}.json", env!("CARGO_MANIFEST_DIR"))).unwrap(),
        )
        .unwrap()
    };
    // The sample names a job that does not exist: dropped, nothing to retry.
    assert_eq!(
        step::handle(&engine, read("step-sqs")).await.unwrap(),
        json!({"batchItemFailures": []})
    );
    assert_eq!(
        step::handle(&engine, read("step-redrive")).await.unwrap(),
        json!({"redriven": 0})
    );
}

impl Stack {
    /// The job's score in the due-index (`st:due`), or `None` when it has left the index.
    async fn due_score(&self, id: &str) -> Option<u64> {
        let score = self
            .redis
            .command(&["ZSCORE", "st:due", &format!("st:j:public:{}", record_id(id))])
            .await
            .unwrap();
        (!score.is_empty()).then(|| score.parse::<f64>().unwrap() as u64)
    }

    /// The step messages sent for this job so far, with their delays.
    fn steps_sent(&self, id: &str) -> Vec<Duration> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(m, delay)| match m {
                // A sweep names the job by its record (the due-index member), a step by its whole id.
                Message::Step { step, .. } if record_id(&step.job_id) == record_id(id) => Some(*delay),
                _ => None,
            })
            .collect()
    }

    /// How many sweeps the handler has been given (sweep messages sent, each received once or more).
    fn sweeps_sent(&self) -> usize {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| matches!(m, Message::Sweep { .. }))
            .count()
    }

    /// Drives the queue until the provider has been called `hits` times.
    async fn drive_until_hits(&self, hits: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.provider.hits() < hits {
            assert!(Instant::now() < deadline, "the provider was not called {hits} times");
            self.drive_once(&self.service.engine).await;
        }
    }
}

/// The park path end to end on SQS: a wait longer than `PARK_AFTER_SECONDS` sends no step message;
/// the job stays in the due-index, scored at its next attempt; the sweeper chain (on SQS itself)
/// re-queues it when it is due and it finishes. SQS's own limit is 15 minutes of delay; with
/// `PARK_AFTER_SECONDS=1` a 4-s Retry-After takes the same path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_past_park_after_is_parked_swept_back_onto_sqs_and_finishes() {
    let s = stack_with(&[("PARK_AFTER_SECONDS", "1"), ("SWEEP_GRACE_SECONDS", "1")]).await;
    s.provider.push(FakeReply::openai_rate_limited(4));
    let id = s.submit().await;
    s.drive_until_hits(1).await;
    let limited_at = Instant::now();
    let sent_before = s.steps_sent(&id).len();
    assert_eq!(
        sent_before,
        1,
        "only the submit's first step was queued: {:?}",
        s.steps_sent(&id)
    );

    let waiting = s.status(&id).await;
    assert_eq!(
        (&waiting["status"], &waiting["rawStatus"]),
        (&json!("queued"), &json!("delayed")),
        "{waiting}"
    );
    let next_attempt = match s
        .service
        .engine
        .store()
        .read("public", &id, Duration::from_secs(60), None)
        .await
    {
        Ok(Admission::Admitted { value: Some(d), .. }) => d.job.next_attempt_at_ms.expect("a wait"),
        other => panic!("no job {id}: {other:?}"),
    };
    let now_ms = s.redis.time_ms().await.unwrap();
    assert!(next_attempt >= now_ms + 3_000, "the wait is the 4-s Retry-After");
    let due = s.due_score(&id).await.expect("the parked job is in the due-index");
    assert_eq!(
        due, next_attempt,
        "parked: due exactly at its next attempt (a queued step would be due a grace later)"
    );

    let done = s.drive_until_finished(&s.service.engine, &id).await;
    let waited = limited_at.elapsed();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["data"]["result"], "a generated answer");
    assert_eq!(s.provider.hits(), 2, "one rate-limited call, one answered call");
    assert!(
        waited >= Duration::from_millis(3_000),
        "the answered call came after the wait ({waited:?})"
    );
    let steps = s.steps_sent(&id);
    assert!(
        steps[sent_before..].iter().all(|d| d.is_zero()) && steps.len() > sent_before,
        "after the 429 the job's step came only from the sweep (no delayed step message): {steps:?}"
    );
    assert!(s.sweeps_sent() >= 2, "the sweeper chain carried the job");
    assert_eq!(s.due_score(&id).await, None, "a finished job leaves the due-index");
    println!(
        "sqs park: parked {:.1} s past the 429 ({} step messages for the job, {} sweeps), then completed",
        waited.as_secs_f64(),
        steps.len(),
        s.sweeps_sent()
    );
}

/// Parks a job with a wait that ends before its deadline, then lets nothing run until the deadline
/// has passed (the step function down, its messages waiting on the queue). Once it is back, the
/// sweeper chain armed by the submit has lapsed (its first message came long after its key's life):
/// the operator's redrive (`{"action":"redrive"}`) queues the job whose wait is over and takes the
/// sweeper over, and the step ends it as a job past its deadline, without another provider call.
async fn parked_past_the_deadline(path: &str, body: Value) -> (Stack, String, Value) {
    let s = stack_with(&[
        ("PARK_AFTER_SECONDS", "1"),
        ("SWEEP_GRACE_SECONDS", "1"),
        ("JOB_DEADLINE_SECONDS", "5"),
    ])
    .await;
    s.provider.push(FakeReply::openai_rate_limited(2));
    let id = s.submit_to(path, body).await;
    s.drive_until_hits(1).await;
    assert_eq!(s.steps_sent(&id).len(), 1, "the 2-s wait was parked, not queued");
    assert!(s.due_score(&id).await.is_some(), "the parked job is in the due-index");
    // Nothing runs until the deadline (5 s after the submit) has passed.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let redrive = step::handle(&s.service.engine, json!({"action": "redrive"}))
        .await
        .unwrap();
    assert_eq!(
        redrive["redriven"], 1,
        "the parked job, whose wait is over, is queued again"
    );
    let done = s.drive_until_finished(&s.service.engine, &id).await;
    assert_eq!(s.provider.hits(), 1, "no provider call past the deadline");
    assert_eq!(s.due_score(&id).await, None, "a finished job leaves the due-index");
    (s, id, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_job_parked_past_its_deadline_fails_deadline_exceeded() {
    let (_s, _id, done) = parked_past_the_deadline(
        "/v1/generate",
        json!({"prompt": "Say something", "responseMode": "text"}),
    )
    .await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["error"].as_str().unwrap().starts_with("deadline_exceeded"),
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_parked_past_its_deadline_falls_back() {
    let report = json!({
        "userId": "user-1", "commitSha": "sha-parked", "repo": "acme/diary",
        "message": "Add token refresh to the auth client", "files": ["src/auth.ts"],
        "components": ["auth"], "diffSummary": "+export function refresh() {}\n", "template": "default"
    });
    let (_s, _id, done) = parked_past_the_deadline("/v1/reports", report).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["data"]["fallback"], true, "{done}");
    assert_eq!(done["data"]["usedProvider"], "fallback", "{done}");
}

/// The receiver-recovery fast path on the Lambda path (no long-lived process: each step re-enqueues
/// itself on SQS, every batch handed to the handler twice): five jobs' webhooks fail while the receiver
/// is down for 12 s (past the schedule's 0 and 5 s attempts: the next would be 5 min later). The
/// origin's probe, itself a delayed SQS message, succeeds once the receiver answers, and the steps it
/// wakes arrive on SQS at once: every webhook arrives exactly once within 15 s of the receiver's return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqs_a_returning_receiver_gets_every_webhook_within_seconds() {
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let port = testkit::stack::free_port().unwrap();
    // The stack's settings are 'static pairs; a test's one leak.
    let origin: &'static str = Box::leak(format!("http://127.0.0.1:{port}").into_boxed_str());
    let secrets: &'static str = Box::leak(format!("public={SECRET}").into_boxed_str());
    let s = stack_with(&[
        ("STEPPER_WEBHOOK_SECRETS", secrets),
        ("CALLBACK_ALLOWED_ORIGINS", origin),
    ])
    .await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let body =
            json!({"prompt": format!("job {n}"), "responseMode": "text", "callbackUrl": format!("{origin}/hook/{n}")});
        ids.push(s.submit_to("/v1/generate", body).await);
    }
    let down_since = Instant::now();
    while down_since.elapsed() < Duration::from_secs(12) {
        s.drive_once(&s.service.engine).await;
    }
    let hook = testkit::receiver::NodeReceiver::start(SECRET, &[200], port)
        .await
        .unwrap();
    let up_at = Instant::now();
    let mut last = None;
    while up_at.elapsed() < Duration::from_secs(40) {
        s.drive_once(&s.service.engine).await;
        if last.is_none() && hook.deliveries().await.unwrap().len() >= 5 {
            last = Some(up_at.elapsed());
        }
        if last.is_some_and(|at| up_at.elapsed() > at + Duration::from_secs(3)) {
            break;
        }
    }
    let got = hook.deliveries().await.unwrap();
    let mut webhook_ids: Vec<&str> = got.iter().filter_map(|w| w.webhook_id.as_deref()).collect();
    webhook_ids.sort();
    webhook_ids.dedup();
    assert_eq!((got.len(), webhook_ids.len()), (5, 5), "each webhook once: {got:?}");
    for id in &ids {
        let status = s.status(id).await;
        assert_eq!(status["deliveries"][0]["status"], "delivered", "{status}");
    }
    let last = last.expect("all five arrived");
    println!(
        "sqs fast path: receiver down {} ms, 5 webhooks delivered once each, the last {} ms after it came back",
        up_at.duration_since(down_since).as_millis(),
        last.as_millis()
    );
    assert!(
        last <= Duration::from_secs(15),
        "within 15 s, not at the 5-minute attempt: {last:?}"
    );
}

/// Cancel on the SQS path: a `DELETE /v1/jobs/{id}` (the purge function's route) while the job's provider
/// call is under way in the step function answers 200; the step's result is dropped (its write finds no
/// record), no further provider call starts for it (the duplicate delivery and any later message find
/// the job gone) and no webhook is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqs_a_job_cancelled_mid_call_is_dropped_without_a_webhook() {
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let hook = testkit::receiver::NodeReceiver::start(SECRET, &[200], 0).await.unwrap();
    // The stack's settings are 'static pairs; a test's one leak.
    let origin: &'static str = Box::leak(format!("http://127.0.0.1:{}", hook.port).into_boxed_str());
    let secrets: &'static str = Box::leak(format!("public={SECRET}").into_boxed_str());
    let s = stack_with(&[
        ("STEPPER_WEBHOOK_SECRETS", secrets),
        ("CALLBACK_ALLOWED_ORIGINS", origin),
    ])
    .await;
    s.provider
        .set_default(FakeReply::openai_text("too late").with_delay(Duration::from_millis(2_000)));
    let body = json!({"prompt": "cancel me", "responseMode": "text", "callbackUrl": format!("{origin}/hook")});
    let id = s.submit_to("/v1/generate", body).await;
    let cancel = async {
        let deadline = Instant::now() + Duration::from_secs(15);
        while s.provider.hits() == 0 {
            assert!(Instant::now() < deadline, "the step never called the provider");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let purge = shared::api::purge_routes(s.service.clone());
        call(&purge, "DELETE", &format!("/v1/jobs/{id}"), None, None).await
    };
    let (_, (status, purged)) = tokio::join!(s.drive_once(&s.service.engine), cancel);
    assert_eq!(
        (status.as_u16(), purged["success"].as_bool()),
        (200, Some(true)),
        "{purged}"
    );
    // Whatever is still queued (the duplicate, a retry) runs and finds nothing.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(4) {
        s.drive_once(&s.service.engine).await;
    }
    assert_eq!(s.provider.hits(), 1, "no further provider call for a cancelled job");
    assert!(
        hook.deliveries().await.unwrap().is_empty(),
        "no webhook for a cancelled job"
    );
    let poll = shared::api::poll_routes(s.service.clone());
    let (code, gone) = call(&poll, "GET", &format!("/v1/jobs/{id}"), None, None).await;
    assert_eq!(code.as_u16(), 404, "the result was dropped: {gone}");
}
