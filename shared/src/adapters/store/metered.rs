//! A Store decorator that counts every store call by route (or step) and operation
//! (`stepper_store_requests_total`). One call is one request to the store: on Upstash one REST
//! request, whose Redis commands the client counts (`stepper_redis_commands_total`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::batch::BatchRecord;
use crate::domain::job::{Job, StepRef};
use crate::domain::quota::{ProviderEvent, ProviderState, Reserve};
use crate::ports::{
    Admission, BatchRead, Claim, Enlist, FinishOutcome, JobRead, Limits, Overview, OverviewBounds, RateLimit, Store,
    StoreError, Submitted, SweepRequest, Swept,
};

pub(crate) struct MeteredStore {
    inner: Arc<dyn Store>,
}

impl MeteredStore {
    pub(crate) fn new(inner: Arc<dyn Store>) -> Self {
        Self { inner }
    }
}

fn counted<T>(operation: &'static str, result: Result<T, StoreError>) -> Result<T, StoreError> {
    crate::ports::metrics::store_request(operation, result.is_ok());
    result
}

#[async_trait]
impl Store for MeteredStore {
    async fn create(&self, job: &Job, enlist: &Enlist, limits: Limits) -> Result<Admission<Submitted>, StoreError> {
        counted("create", self.inner.create(job, enlist, limits).await)
    }
    async fn claim(&self, step: &StepRef, lease: Duration, reserve: &Reserve) -> Result<Claim, StoreError> {
        counted("claim", self.inner.claim(step, lease, reserve).await)
    }
    async fn finish(
        &self,
        step: &StepRef,
        next: &Job,
        due_at_ms: Option<u64>,
        event: Option<&ProviderEvent>,
    ) -> Result<FinishOutcome, StoreError> {
        counted("finish", self.inner.finish(step, next, due_at_ms, event).await)
    }
    async fn sweep(&self, request: &SweepRequest<'_>) -> Result<Swept, StoreError> {
        counted("sweep", self.inner.sweep(request).await)
    }
    async fn read(
        &self,
        owner: &str,
        job_id: &str,
        grace: Duration,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Option<JobRead>>, StoreError> {
        // The metric's operation label stays "deliver": dashboards and alerts already select on it.
        counted("deliver", self.inner.read(owner, job_id, grace, rate).await)
    }
    async fn purge(&self, owner: &str, job_id: &str, rate: Option<RateLimit>) -> Result<Admission<bool>, StoreError> {
        counted("purge", self.inner.purge(owner, job_id, rate).await)
    }
    async fn provider_states(&self) -> Result<HashMap<String, ProviderState>, StoreError> {
        counted("provider_states", self.inner.provider_states().await)
    }
    async fn overview(
        &self,
        owner: &str,
        bounds: OverviewBounds,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Overview>, StoreError> {
        counted("overview", self.inner.overview(owner, bounds, rate).await)
    }
    async fn spent(&self, owner: &str, all_owners: bool) -> Result<crate::domain::budget::Spent, StoreError> {
        counted("spent", self.inner.spent(owner, all_owners).await)
    }
    async fn with_work_left(&self) -> Result<Vec<Job>, StoreError> {
        counted("with_work_left", self.inner.with_work_left().await)
    }
    async fn put_batch(&self, batch: &BatchRecord) -> Result<(), StoreError> {
        counted("put_batch", self.inner.put_batch(batch).await)
    }
    async fn read_batch(
        &self,
        owner: &str,
        batch_id: &str,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Option<BatchRead>>, StoreError> {
        counted("read_batch", self.inner.read_batch(owner, batch_id, rate).await)
    }
    async fn peek(&self, owner: &str, job_id: &str) -> Result<Option<Job>, StoreError> {
        counted("peek", self.inner.peek(owner, job_id).await)
    }
    async fn origin_down(&self, down: &crate::ports::OriginDown<'_>) -> Result<Option<u64>, StoreError> {
        counted("origin_down", self.inner.origin_down(down).await)
    }
    async fn origin_up(
        &self,
        origin: &str,
        owner: &str,
        now_ms: u64,
        due_at_ms: u64,
    ) -> Result<Vec<StepRef>, StoreError> {
        counted(
            "origin_up",
            self.inner.origin_up(origin, owner, now_ms, due_at_ms).await,
        )
    }
}
