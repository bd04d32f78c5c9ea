//! A Store decorator that notices when the store stays unreachable: after `after` of nothing but
//! `Unavailable` answers it alerts `store_unreachable` once, and `store_reachable` at the first answer
//! after that. The first `QuotaExhausted` answer (the store's plan has no requests left) alerts
//! `store_quota_exhausted` at once, again only after the store has answered in between. Per instance: an outage cannot be deduplicated through the store that is down, so
//! each instance that sees it reports it once (see the README).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tracing::warn;

use crate::domain::alert::{Alert, Incident};
use crate::domain::job::{Job, StepRef};
use crate::domain::message::Message;
use crate::domain::quota::{ProviderEvent, ProviderState, Reserve};
use crate::ports::{
    Admission, Claim, Clock, Enlist, FinishOutcome, JobRead, Limits, Overview, OverviewBounds, Queue, RateLimit, Store,
    StoreError, Submitted, SweepRequest, Swept,
};

#[derive(Default)]
struct Outage {
    /// The first `Unavailable` answer of the current run of them.
    since_ms: Option<u64>,
    alerted: bool,
    /// `store_quota_exhausted` was told and no answer came since.
    quota_told: bool,
}

pub(crate) struct WatchedStore {
    inner: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    clock: Arc<dyn Clock>,
    sinks: usize,
    after_ms: u64,
    outage: Mutex<Outage>,
}

impl WatchedStore {
    pub(crate) fn new(
        inner: Arc<dyn Store>,
        queue: Arc<dyn Queue>,
        clock: Arc<dyn Clock>,
        sinks: usize,
        after: Duration,
    ) -> Self {
        Self {
            inner,
            queue,
            clock,
            sinks,
            after_ms: after.as_millis() as u64,
            outage: Mutex::new(Outage::default()),
        }
    }

    /// Folds one answer in; returns the incident it completes, if any. Pure bookkeeping.
    fn fold(&self, unavailable: bool) -> Option<Incident> {
        let now = self.clock.now_ms();
        let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        match (unavailable, outage.since_ms) {
            (true, None) => {
                outage.since_ms = Some(now);
                None
            }
            (true, Some(since)) if !outage.alerted && now.saturating_sub(since) >= self.after_ms => {
                outage.alerted = true;
                Some(Incident::StoreUnreachable { since_ms: since })
            }
            (true, Some(_)) => None,
            (false, Some(since)) => {
                let told = outage.alerted;
                outage.since_ms = None;
                outage.alerted = false;
                told.then(|| Incident::StoreReachable {
                    down_ms: now.saturating_sub(since),
                })
            }
            (false, None) => None,
        }
    }

    /// Folds one answer in for the quota: the incident when this is the first refusal since an answer.
    fn fold_quota<T>(&self, result: &Result<T, StoreError>) -> Option<Incident> {
        let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Err(StoreError::QuotaExhausted(_)) if !outage.quota_told => {
                outage.quota_told = true;
                Some(Incident::StoreQuotaExhausted)
            }
            Ok(_) => {
                outage.quota_told = false;
                None
            }
            Err(_) => None,
        }
    }

    async fn observe<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        let unavailable = matches!(result, Err(StoreError::Unavailable(_)));
        let quota = self.fold_quota(&result);
        for incident in self.fold(unavailable).into_iter().chain(quota) {
            let kind = incident.kind();
            warn!(kind, "incident");
            let alert = Alert {
                incident,
                suppressed: 0,
                at_ms: self.clock.now_ms(),
            };
            for sink in 0..self.sinks {
                let message = Message::Alert {
                    alert: alert.clone(),
                    sink,
                    attempt: 1,
                };
                if let Err(e) = self.queue.send(&message, Duration::ZERO).await {
                    warn!(kind, sink, error = %e, "could not queue an alert");
                }
            }
        }
        result
    }
}

#[async_trait]
impl Store for WatchedStore {
    async fn create(&self, job: &Job, enlist: &Enlist, limits: Limits) -> Result<Admission<Submitted>, StoreError> {
        self.observe(self.inner.create(job, enlist, limits).await).await
    }
    async fn claim(&self, step: &StepRef, lease: Duration, reserve: &Reserve) -> Result<Claim, StoreError> {
        self.observe(self.inner.claim(step, lease, reserve).await).await
    }
    async fn finish(
        &self,
        step: &StepRef,
        next: &Job,
        due_at_ms: Option<u64>,
        event: Option<&ProviderEvent>,
    ) -> Result<FinishOutcome, StoreError> {
        self.observe(self.inner.finish(step, next, due_at_ms, event).await)
            .await
    }
    async fn sweep(&self, request: &SweepRequest<'_>) -> Result<Swept, StoreError> {
        self.observe(self.inner.sweep(request).await).await
    }
    async fn read(
        &self,
        owner: &str,
        job_id: &str,
        grace: Duration,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Option<JobRead>>, StoreError> {
        self.observe(self.inner.read(owner, job_id, grace, rate).await).await
    }
    async fn purge(&self, owner: &str, job_id: &str, rate: Option<RateLimit>) -> Result<Admission<bool>, StoreError> {
        self.observe(self.inner.purge(owner, job_id, rate).await).await
    }
    async fn overview(
        &self,
        owner: &str,
        bounds: OverviewBounds,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Overview>, StoreError> {
        self.observe(self.inner.overview(owner, bounds, rate).await).await
    }
    async fn provider_states(&self) -> Result<HashMap<String, ProviderState>, StoreError> {
        self.observe(self.inner.provider_states().await).await
    }
    async fn spent(&self, owner: &str, all_owners: bool) -> Result<crate::domain::budget::Spent, StoreError> {
        self.observe(self.inner.spent(owner, all_owners).await).await
    }
    async fn with_work_left(&self) -> Result<Vec<Job>, StoreError> {
        self.observe(self.inner.with_work_left().await).await
    }
    async fn put_batch(&self, batch: &crate::domain::batch::BatchRecord) -> Result<(), StoreError> {
        self.observe(self.inner.put_batch(batch).await).await
    }
    async fn read_batch(
        &self,
        owner: &str,
        batch_id: &str,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Option<crate::ports::BatchRead>>, StoreError> {
        self.observe(self.inner.read_batch(owner, batch_id, rate).await).await
    }
    async fn peek(&self, owner: &str, job_id: &str) -> Result<Option<Job>, StoreError> {
        self.observe(self.inner.peek(owner, job_id).await).await
    }
    async fn origin_down(&self, down: &crate::ports::OriginDown<'_>) -> Result<Option<u64>, StoreError> {
        self.observe(self.inner.origin_down(down).await).await
    }
    async fn origin_up(
        &self,
        origin: &str,
        owner: &str,
        now_ms: u64,
        due_at_ms: u64,
    ) -> Result<Vec<StepRef>, StoreError> {
        self.observe(self.inner.origin_up(origin, owner, now_ms, due_at_ms).await)
            .await
    }
}
