//! The serverless loop on the real local stack: moto SQS + the Upstash emulator + redis-server + a fake
//! provider. A driver receives from the queue and hands each batch to the step handler as Lambda would,
//! delivering every batch twice on purpose; the visibility timeout brings failed messages back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use axum::body::Body;
use serde_json::{json, Value};
use shared::config::Config;
use shared::engine::Engine;
use shared::job::{Job, StepRef};
use shared::ports::{
    Admission, Claim, Delivered, Enlist, Limits, RateLimit, Store, Submitted, SweepRequest, Swept, SystemClock,
};
use shared::queue::sqs::SqsQueue;
use shared::quota::{ProviderEvent, ProviderState};
use shared::store::StoreError;
use testkit::fake::{FakeProvider, FakeReply, Wire};
use testkit::stack::{MotoServer, RedisServer, UpstashEmulator};
use tower::ServiceExt;

struct Stack {
    _redis: RedisServer,
    _upstash: UpstashEmulator,
    _moto: MotoServer,
    provider: FakeProvider,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    service: Arc<shared::service::Service>,
    _dir: std::path::PathBuf,
}

async fn stack() -> Stack {
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
    std::fs::create_dir_all(&dir).unwrap();
    let providers = dir.join("providers.toml");
    std::fs::write(
        &providers,
        format!(
            "[[providers]]\nname = \"fake\"\nkind = \"openai\"\nbase_url = \"{}\"\nmodel = \"m\"\ntimeout_ms = 1000\n",
            provider.base_url()
        ),
    )
    .unwrap();
    let (url, token, path) = (
        upstash.url.clone(),
        upstash.token.clone(),
        providers.display().to_string(),
    );
    let config = Config::from_lookup(&|name| match name {
        "UPSTASH_REDIS_REST_URL" => Some(url.clone()),
        "UPSTASH_REDIS_REST_TOKEN" => Some(token.clone()),
        "STEPPER_CONFIG" => Some(path.clone()),
        _ => None,
    })
    .unwrap();
    let queue = SqsQueue::new(sqs.clone(), queue_url.clone(), Arc::new(SystemClock));
    let service = Arc::new(shared::service::build(&config, Arc::new(queue)).unwrap());
    Stack {
        _redis: redis,
        _upstash: upstash,
        _moto: moto,
        provider,
        sqs,
        queue_url,
        service,
        _dir: dir,
    }
}

impl Stack {
    /// Submits through the submit function's routes.
    async fn submit(&self) -> String {
        let request = http::Request::post("/v1/generate")
            .header("content-type", "application/json")
            .body(Body::from(
                json!({"prompt": "Say something", "responseMode": "text"}).to_string(),
            ))
            .unwrap();
        let response = shared::api::submit_routes(self.service.clone())
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let body: Value =
            serde_json::from_slice(&axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap()).unwrap();
        body["jobId"].as_str().unwrap().to_string()
    }

    async fn status(&self, id: &str) -> Value {
        let request = http::Request::get(format!("/v1/jobs/{id}"))
            .body(Body::empty())
            .unwrap();
        let response = shared::api::poll_routes(self.service.clone())
            .oneshot(request)
            .await
            .unwrap();
        serde_json::from_slice(&axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap()).unwrap()
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
    async fn claim(&self, step: &StepRef, lease: Duration) -> Result<Claim, StoreError> {
        self.inner.claim(step, lease).await
    }
    async fn finish(
        &self,
        step: &StepRef,
        next: &Job,
        due: Option<u64>,
        event: Option<&ProviderEvent>,
    ) -> Result<bool, StoreError> {
        if !self.died.swap(true, Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "the function was killed before its state write".into(),
            ));
        }
        self.inner.finish(step, next, due, event).await
    }
    async fn deliver(
        &self,
        owner: &str,
        id: &str,
        grace: Duration,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Option<Delivered>>, StoreError> {
        self.inner.deliver(owner, id, grace, rate).await
    }
    async fn purge(&self, owner: &str, id: &str, rate: Option<RateLimit>) -> Result<Admission<bool>, StoreError> {
        self.inner.purge(owner, id, rate).await
    }
    async fn provider_states(&self) -> Result<std::collections::HashMap<String, ProviderState>, StoreError> {
        self.inner.provider_states().await
    }
    async fn with_work_left(&self) -> Result<Vec<Job>, StoreError> {
        self.inner.with_work_left().await
    }
    async fn sweep(&self, request: &SweepRequest<'_>) -> Result<Swept, StoreError> {
        self.inner.sweep(request).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_killed_between_the_call_and_the_write_completes_after_redelivery() {
    let s = stack().await;
    let mut engine = s.service.engine.clone();
    engine.store = Arc::new(DiesBeforeTheWrite {
        inner: engine.store.clone(),
        died: AtomicBool::new(false),
    });
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

#[tokio::test]
async fn the_sample_sqs_and_redrive_events_are_handled() {
    let config = Config::from_lookup(&|_| None).unwrap();
    let (queue, _deliveries) = shared::queue::local::LocalQueue::new();
    let engine = shared::service::build(&config, Arc::new(queue)).unwrap().engine;
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
