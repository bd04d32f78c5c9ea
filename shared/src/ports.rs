//! The ports: small traits the engine and the HTTP routes talk through. Adapters live beside them
//! (`store::memory`, `store::upstash`, `queue::local`, `queue::sqs`, `providers::*`).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use crate::job::{Job, StepRef};
use crate::llm::CompletionRequest;
use crate::providers::CallReport;
use crate::queue::Message;
use crate::quota::{ProviderEvent, ProviderState};
use crate::store::StoreError;

/// Milliseconds since the Unix epoch. A port so tests and the pure engine never read the wall clock.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// One provider: one call, classified. Knows its wire format and nothing about jobs.
#[async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> &str;
    async fn call(&self, request: &CompletionRequest) -> CallReport;
}

/// What `Store::create` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// The job was written.
    New,
    /// A live job with the same id exists (in flight or finished and not yet purged).
    Existing(Box<Job>),
}

/// What `Store::claim` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The step's lease is ours: here is the job and every provider's shared state.
    Acquired {
        job: Job,
        providers: HashMap<String, ProviderState>,
    },
    /// Another worker holds this step's lease right now.
    Busy,
    /// The job moved past this step (or is another incarnation): the message is stale.
    Stale(Job),
    /// No such job (purged or expired).
    Missing,
}

/// A job as the poller sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    pub job: Job,
    /// A step holds the job's lease: the job is being worked on right now.
    pub running: bool,
}

/// Job state. Every method is one atomic state change (one request on Upstash).
#[async_trait]
pub trait Store: Send + Sync {
    /// Writes `job` unless a live job with its id exists; a finally failed job is replaced.
    async fn create(&self, job: &Job) -> Result<Created, StoreError>;
    /// Takes the lease of one step (fenced by gen and seq) and reads the shared provider states.
    async fn claim(&self, step: &StepRef, lease: Duration) -> Result<Claim, StoreError>;
    /// Writes the job's next state if it is still at `step`, and applies the provider event.
    /// Returns false when the job moved on meanwhile (nothing was written).
    async fn finish(&self, step: &StepRef, next: &Job, event: Option<&ProviderEvent>) -> Result<bool, StoreError>;
    /// Reads a job for its owner; the first read of a finished job shortens its life to `grace`.
    async fn deliver(&self, owner: &str, job_id: &str, grace: Duration) -> Result<Option<Delivered>, StoreError>;
    /// Deletes an owner's job at once. Returns whether it existed.
    async fn purge(&self, owner: &str, job_id: &str) -> Result<bool, StoreError>;
    /// Every provider's shared state (for `GET /v1/providers`).
    async fn provider_states(&self) -> Result<HashMap<String, ProviderState>, StoreError>;
    /// Jobs with work left (unfinished, or owing deliveries), for re-driving after a restart or a lost message.
    async fn with_work_left(&self) -> Result<Vec<Job>, StoreError>;
}

/// Delayed messages: the next step of a job, later deliveries.
#[async_trait]
pub trait Queue: Send + Sync {
    async fn send(&self, message: &Message, delay: Duration) -> Result<(), crate::queue::QueueError>;
}
