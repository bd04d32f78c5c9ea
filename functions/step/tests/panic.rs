//! A panic while one SQS record is handled fails that record only: the batch response names it, and
//! the other records of the same batch keep their outcome (here: a job that completes).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use serde_json::json;
use shared::adapters::queue::local::LocalQueue;
use shared::domain::job::{Job, StepRef};
use shared::domain::message::Message;
use shared::domain::quota::{ProviderState, Reserve};
use shared::ports::{
    Admission, Claim, Enlist, FinishOutcome, JobRead, Limits, RateLimit, Store, StoreError, Submitted, SweepRequest,
    Swept,
};
use testkit::fake::{FakeProvider, FakeReply, Wire};
use testkit::router::call;

const DOOMED: &str = "0000000000000000000000000000dead";

/// The real store, except that claiming a step of the job [`DOOMED`] panics.
struct PanicsOnOneJob(Arc<dyn Store>);

#[async_trait]
impl Store for PanicsOnOneJob {
    async fn create(&self, job: &Job, enlist: &Enlist, limits: Limits) -> Result<Admission<Submitted>, StoreError> {
        self.0.create(job, enlist, limits).await
    }
    async fn claim(&self, step: &StepRef, lease: Duration, reserve: &Reserve) -> Result<Claim, StoreError> {
        if step.job_id == DOOMED {
            panic!("a bug met while claiming {}", step.job_id);
        }
        self.0.claim(step, lease, reserve).await
    }
    async fn finish(
        &self,
        step: &StepRef,
        next: &Job,
        due: Option<u64>,
        event: Option<&shared::domain::quota::ProviderEvent>,
    ) -> Result<FinishOutcome, StoreError> {
        self.0.finish(step, next, due, event).await
    }
    async fn read(
        &self,
        owner: &str,
        id: &str,
        grace: Duration,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Option<JobRead>>, StoreError> {
        self.0.read(owner, id, grace, rate).await
    }
    async fn purge(&self, owner: &str, id: &str, rate: Option<RateLimit>) -> Result<Admission<bool>, StoreError> {
        self.0.purge(owner, id, rate).await
    }
    async fn provider_states(&self) -> Result<std::collections::HashMap<String, ProviderState>, StoreError> {
        self.0.provider_states().await
    }
    async fn overview(
        &self,
        owner: &str,
        bounds: shared::ports::OverviewBounds,
        rate: Option<RateLimit>,
    ) -> Result<Admission<shared::ports::Overview>, StoreError> {
        self.0.overview(owner, bounds, rate).await
    }
    async fn spent(&self, owner: &str, all_owners: bool) -> Result<shared::domain::budget::Spent, StoreError> {
        self.0.spent(owner, all_owners).await
    }
    async fn with_work_left(&self) -> Result<Vec<Job>, StoreError> {
        self.0.with_work_left().await
    }
    async fn sweep(&self, request: &SweepRequest<'_>) -> Result<Swept, StoreError> {
        self.0.sweep(request).await
    }
    async fn put_batch(&self, batch: &shared::domain::batch::BatchRecord) -> Result<(), StoreError> {
        self.0.put_batch(batch).await
    }
    async fn read_batch(
        &self,
        owner: &str,
        batch_id: &str,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Option<shared::ports::BatchRead>>, StoreError> {
        self.0.read_batch(owner, batch_id, rate).await
    }
    async fn peek(&self, owner: &str, id: &str) -> Result<Option<Job>, StoreError> {
        self.0.peek(owner, id).await
    }
}

fn record(message_id: &str, message: &Message) -> SqsMessage {
    let body = serde_json::to_string(message).unwrap();
    serde_json::from_value(testkit::sqs::record(message_id, body)).unwrap()
}

#[tokio::test]
async fn a_panicking_record_fails_alone() {
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    provider.set_default(FakeReply::openai_text("a generated answer"));
    let dir = std::env::temp_dir().join(format!("stepper-panic-{}", std::process::id()));
    let config = testkit::fake::config_calling(&provider, &dir);
    let (queue, mut deliveries) = LocalQueue::new();
    let mut service = shared::wiring::service::build(&config, Arc::new(queue)).unwrap();
    let store = Arc::new(PanicsOnOneJob(service.engine.store().clone()));
    service.engine = service.engine.clone().with_store(store);
    let service = Arc::new(service);

    let submit = shared::api::submit_routes(service.clone());
    let body = json!({"prompt": "Say something", "responseMode": "text"});
    let (status, body) = call(&submit, "POST", "/v1/generate", None, Some(body)).await;
    assert_eq!(status, 202);
    let id = body["jobId"].as_str().unwrap().to_string();
    // The job's first step (the sweeper's first message, armed by the same submit, comes a grace later).
    let (first, step) = loop {
        let message = tokio::time::timeout(Duration::from_secs(5), deliveries.recv())
            .await
            .unwrap()
            .unwrap()
            .message;
        if let Message::Step { step, .. } = &message {
            let step = step.clone();
            break (message, step);
        }
    };
    let doomed = Message::Step {
        step: StepRef {
            job_id: DOOMED.to_string(),
            ..step.clone()
        },
        not_before_ms: None,
        hint: Default::default(),
    };
    let mut event = SqsEvent::default();
    event.records = vec![record("doomed", &doomed), record("healthy", &first)];
    let response = step::handle_batch(&service.engine, event).await;
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(
        failed,
        vec!["doomed".to_string()],
        "only the panicking record comes back"
    );

    let poll = shared::api::poll_routes(service.clone());
    let (_, job) = call(&poll, "GET", &format!("/v1/jobs/{id}"), None, None).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["data"]["result"], "a generated answer");
    assert_eq!(provider.hits(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
