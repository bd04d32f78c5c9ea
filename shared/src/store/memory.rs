//! The in-memory store: the embedded default of `stepper-local` and the fast unit tests.
//! Same semantics as the Upstash store (the store contract suite runs against both).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::StoreError;
use crate::job::{Job, JobState, StepRef};
use crate::ports::{Admission, Claim, Clock, Created, Delivered, Limits, RateLimit, RateWindow, Store};
use crate::quota::{ProviderEvent, ProviderState};

#[derive(Default)]
struct Inner {
    jobs: HashMap<(String, String), Job>,
    /// Step leases: (owner, job id, gen, seq) → held until (epoch ms).
    leases: HashMap<(String, String, String, u64), u64>,
    providers: HashMap<String, ProviderState>,
    /// Requests per (owner, rate window id) → (count, window end in epoch ms).
    rates: HashMap<(String, u64), (u64, u64)>,
    /// When the maps are next swept of what expired (epoch ms).
    next_sweep_ms: u64,
}

/// How often the maps are swept of expired entries. Between sweeps every read treats an expired
/// entry as absent, so the sweep only bounds memory; sweeping on every call made each request cost
/// a pass over every job and lease held (the profile's largest item at a few thousand jobs).
const SWEEP_EVERY_MS: u64 = 1_000;

fn live_job<'a>(jobs: &'a HashMap<(String, String), Job>, key: &(String, String), now: u64) -> Option<&'a Job> {
    jobs.get(key).filter(|job| job.expires_at_ms > now)
}

fn lease_held(
    leases: &HashMap<(String, String, String, u64), u64>,
    key: &(String, String, String, u64),
    now: u64,
) -> bool {
    leases.get(key).is_some_and(|until| *until > now)
}

impl Inner {
    /// Counts one request in its owner's current window. `Err` when it is over the limit.
    fn count(&mut self, owner: &str, rate: Option<RateLimit>, now: u64) -> Result<Option<RateWindow>, RateWindow> {
        let Some(limit) = rate else { return Ok(None) };
        let (id, ends) = limit.window(now);
        let (count, _) = self.rates.entry((owner.to_string(), id)).or_insert((0, ends));
        *count += 1;
        limit.check(*count, now).map(Some)
    }
}

pub struct MemoryStore {
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
}

impl MemoryStore {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            clock,
        }
    }

    /// Locks the state; once every `SWEEP_EVERY_MS`, drops whatever expired first (records keep
    /// their own expiry instant, and every read checks it).
    fn live(&self) -> MutexGuard<'_, Inner> {
        let now = self.clock.now_ms();
        // A poisoned lock only means another request panicked mid-update; the maps stay usable.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // A clock moved back (a test's manual clock) sweeps again at once.
        if now >= inner.next_sweep_ms || inner.next_sweep_ms > now + SWEEP_EVERY_MS {
            inner.jobs.retain(|_, job| job.expires_at_ms > now);
            inner.leases.retain(|_, until| *until > now);
            inner.rates.retain(|_, (_, ends)| *ends > now);
            inner.next_sweep_ms = now + SWEEP_EVERY_MS;
        }
        inner
    }
}

/// The same refusal as the Upstash scripts' clock check: a record written already expired would vanish
/// as it is written. Here one clock judges both, so only an engine bug can trip it.
fn expiry_ahead(job: &Job, now: u64) -> Result<(), StoreError> {
    if job.expires_at_ms <= now {
        return Err(StoreError::ExpiryInPast(format!(
            "job expires at {} ms, the store clock reads {now} ms",
            job.expires_at_ms
        )));
    }
    Ok(())
}

fn lease_key(step: &StepRef) -> (String, String, String, u64) {
    (step.owner.clone(), step.job_id.clone(), step.gen.clone(), step.seq)
}

#[async_trait]
impl Store for MemoryStore {
    async fn create(&self, job: &Job, limits: Limits) -> Result<Admission<Created>, StoreError> {
        let now = self.clock.now_ms();
        expiry_ahead(job, now)?;
        let mut inner = self.live();
        let rate = match inner.count(&job.owner, limits.rate, now) {
            Ok(rate) => rate,
            Err(window) => return Ok(Admission::RateLimited(window)),
        };
        let key = (job.owner.clone(), job.id.clone());
        if let Some(existing) = live_job(&inner.jobs, &key, now).filter(|existing| existing.state != JobState::Failed) {
            return Ok(Admission::Admitted {
                value: Created::Existing(Box::new(existing.clone())),
                rate,
            });
        }
        if let Some(cap) = limits.in_flight {
            // Counted from the live jobs themselves, so a finished, purged or expired job never lingers.
            let in_flight = inner
                .jobs
                .values()
                .filter(|j| j.expires_at_ms > now && j.owner == job.owner && !j.state.is_finished())
                .count();
            if in_flight >= cap as usize {
                return Ok(Admission::TooManyInFlight { limit: cap, rate });
            }
        }
        inner.jobs.insert(key, job.clone());
        Ok(Admission::Admitted {
            value: Created::New,
            rate,
        })
    }

    async fn claim(&self, step: &StepRef, lease: Duration) -> Result<Claim, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.live();
        let Some(job) = live_job(&inner.jobs, &(step.owner.clone(), step.job_id.clone()), now).cloned() else {
            return Ok(Claim::Missing);
        };
        if job.gen != step.gen || job.seq != step.seq {
            return Ok(Claim::Stale(job));
        }
        let key = lease_key(step);
        if lease_held(&inner.leases, &key, now) {
            return Ok(Claim::Busy);
        }
        inner.leases.insert(key, now + lease.as_millis() as u64);
        Ok(Claim::Acquired {
            job,
            providers: inner.providers.clone(),
        })
    }

    async fn finish(&self, step: &StepRef, next: &Job, event: Option<&ProviderEvent>) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        expiry_ahead(next, now)?;
        let mut inner = self.live();
        let key = (step.owner.clone(), step.job_id.clone());
        match live_job(&inner.jobs, &key, now) {
            Some(job) if job.gen == step.gen && job.seq == step.seq => {}
            _ => return Ok(false),
        }
        inner.jobs.insert(key, next.clone());
        if let Some(event) = event {
            inner.providers.entry(event.provider.clone()).or_default().apply(event);
        }
        Ok(true)
    }

    async fn deliver(
        &self,
        owner: &str,
        job_id: &str,
        grace: Duration,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Option<Delivered>>, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.live();
        let rate = match inner.count(owner, rate, now) {
            Ok(rate) => rate,
            Err(window) => return Ok(Admission::RateLimited(window)),
        };
        let admitted = |value| Ok(Admission::Admitted { value, rate });
        let Some(job) = inner
            .jobs
            .get_mut(&(owner.to_string(), job_id.to_string()))
            .filter(|job| job.expires_at_ms > now)
        else {
            return admitted(None);
        };
        if job.state.is_finished() {
            job.expires_at_ms = job.expires_at_ms.min(now + grace.as_millis() as u64);
            return admitted(Some(Delivered {
                job: job.clone(),
                running: false,
            }));
        }
        let job = job.clone();
        let running = lease_held(&inner.leases, &lease_key(&job.step_ref()), now);
        admitted(Some(Delivered { job, running }))
    }

    async fn purge(&self, owner: &str, job_id: &str, rate: Option<RateLimit>) -> Result<Admission<bool>, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.live();
        let rate = match inner.count(owner, rate, now) {
            Ok(rate) => rate,
            Err(window) => return Ok(Admission::RateLimited(window)),
        };
        let existed = inner
            .jobs
            .remove(&(owner.to_string(), job_id.to_string()))
            .is_some_and(|job| job.expires_at_ms > now);
        Ok(Admission::Admitted { value: existed, rate })
    }

    async fn provider_states(&self) -> Result<HashMap<String, ProviderState>, StoreError> {
        Ok(self.live().providers.clone())
    }

    async fn with_work_left(&self) -> Result<Vec<Job>, StoreError> {
        let now = self.clock.now_ms();
        Ok(self
            .live()
            .jobs
            .values()
            .filter(|j| j.expires_at_ms > now && j.has_work_left())
            .cloned()
            .collect())
    }
}
