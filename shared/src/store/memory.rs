//! The in-memory store: the embedded default of `stepper-local` and the fast unit tests.
//! Same semantics as the Upstash store (the store contract suite runs against both).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::StoreError;
use crate::alert::{self, AlertBook};
use crate::job::{Job, JobState, StepRef};
use crate::ports::{
    Admission, AttemptCount, Claim, Clock, Created, Delivered, Enlist, FinishOutcome, Limits, Overview, OverviewBounds,
    RateLimit, RateWindow, Store, Submitted, SweepRequest, Swept, DAY_MS,
};
use crate::quota::{ProviderEvent, ProviderState};

#[derive(Default)]
struct Inner {
    jobs: HashMap<(String, String), Job>,
    /// Step leases, one per job: (owner, job id) → (gen, seq, held until in epoch ms).
    leases: HashMap<(String, String), (String, u64, u64)>,
    /// The due-index: (owner, job id) → when its next step is due (epoch ms).
    due: HashMap<(String, String), u64>,
    /// The live sweeper: its token, the round its next message carries, and when it lapses.
    sweeper: Option<(String, u64, u64)>,
    providers: HashMap<String, ProviderState>,
    /// Which incidents are raised and the flap windows (`st:alerts` on Upstash).
    alerts: AlertBook,
    /// Requests per (owner, rate window id) → (count, window end in epoch ms).
    rates: HashMap<(String, u64), (u64, u64)>,
    /// Per UTC day: provider attempts by (provider, outcome), and jobs finished by (owner, 's' | 'f')
    /// (`st:a:<day>` on Upstash). Kept through the next day.
    days: HashMap<u64, Day>,
}

#[derive(Default)]
struct Day {
    attempts: BTreeMap<(String, String), u64>,
    finished: HashMap<(String, char), u64>,
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

    /// Locks the state and drops whatever expired (records keep their own expiry instant).
    fn live(&self) -> MutexGuard<'_, Inner> {
        let now = self.clock.now_ms();
        // A poisoned lock only means another request panicked mid-update; the maps stay usable.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.jobs.retain(|_, job| job.expires_at_ms > now);
        inner.leases.retain(|_, (_, _, until)| *until > now);
        inner.rates.retain(|_, (_, ends)| *ends > now);
        let today = now / DAY_MS;
        inner.days.retain(|day, _| day + 1 >= today);
        if inner.sweeper.as_ref().is_some_and(|(_, _, until)| *until <= now) {
            inner.sweeper = None;
        }
        inner
    }

    /// Drops the due-index entries of jobs that are gone (the Upstash sweep does it on read).
    fn prune_due(inner: &mut Inner) {
        let Inner { due, jobs, .. } = inner;
        due.retain(|key, _| jobs.contains_key(key));
    }

    /// Arms the sweeper with `token` unless one is alive; true when armed.
    fn arm(inner: &mut Inner, enlist: &Enlist, now: u64) -> bool {
        if inner.sweeper.is_some() {
            return false;
        }
        let until = now + enlist.sweeper_life.as_millis() as u64;
        inner.sweeper = Some((enlist.sweeper_token.clone(), 1, until));
        true
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

fn job_key(step: &StepRef) -> (String, String) {
    (step.owner.clone(), step.job_id.clone())
}

#[async_trait]
impl Store for MemoryStore {
    async fn create(&self, job: &Job, enlist: &Enlist, limits: Limits) -> Result<Admission<Submitted>, StoreError> {
        let now = self.clock.now_ms();
        expiry_ahead(job, now)?;
        let mut inner = self.live();
        let rate = match inner.count(&job.owner, limits.rate, now) {
            Ok(rate) => rate,
            Err(window) => return Ok(Admission::RateLimited(window)),
        };
        let key = (job.owner.clone(), job.id.clone());
        if let Some(existing) = inner
            .jobs
            .get(&key)
            .filter(|existing| existing.state != JobState::Failed)
        {
            let created = Created::Existing(Box::new(existing.clone()));
            let arm_sweeper = Self::arm(&mut inner, enlist, now).then(|| enlist.sweeper_token.clone());
            return Ok(Admission::Admitted {
                value: Submitted { created, arm_sweeper },
                rate,
            });
        }
        if let Some(cap) = limits.in_flight {
            // Counted from the live jobs themselves, so a finished, purged or expired job never lingers.
            let in_flight = inner
                .jobs
                .values()
                .filter(|j| j.owner == job.owner && !j.state.is_finished())
                .count();
            if in_flight >= cap as usize {
                return Ok(Admission::TooManyInFlight { limit: cap, rate });
            }
        }
        inner.leases.remove(&key);
        inner.due.insert(key.clone(), enlist.due_at_ms);
        inner.jobs.insert(key, job.clone());
        let arm_sweeper = Self::arm(&mut inner, enlist, now).then(|| enlist.sweeper_token.clone());
        Ok(Admission::Admitted {
            value: Submitted {
                created: Created::New,
                arm_sweeper,
            },
            rate,
        })
    }

    async fn claim(&self, step: &StepRef, lease: Duration) -> Result<Claim, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.live();
        let key = job_key(step);
        let Some(job) = inner.jobs.get(&key).cloned() else {
            inner.due.remove(&key);
            return Ok(Claim::Missing);
        };
        if job.gen != step.gen || job.seq != step.seq {
            return Ok(Claim::Stale(job));
        }
        if let Some((gen, seq, until)) = inner.leases.get(&key) {
            if *gen == step.gen && *seq == step.seq {
                return Ok(Claim::Busy {
                    lease_left: Duration::from_millis(until - now),
                });
            }
        }
        let until = now + lease.as_millis() as u64;
        inner.leases.insert(key.clone(), (step.gen.clone(), step.seq, until));
        inner.due.insert(key, until);
        // The thundering herd: the same probe hand-out as claim.lua.
        let mut probes = Vec::new();
        for (name, state) in inner.providers.iter_mut() {
            if state.probe_open(now) {
                state.probe_until_ms = until;
                probes.push(name.clone());
            }
        }
        Ok(Claim::Acquired {
            job,
            providers: inner.providers.clone(),
            probes,
        })
    }

    async fn finish(
        &self,
        step: &StepRef,
        next: &Job,
        due_at_ms: Option<u64>,
        event: Option<&ProviderEvent>,
    ) -> Result<FinishOutcome, StoreError> {
        expiry_ahead(next, self.clock.now_ms())?;
        let mut inner = self.live();
        let key = (step.owner.clone(), step.job_id.clone());
        let was_finished = match inner.jobs.get(&key) {
            Some(job) if job.gen == step.gen && job.seq == step.seq => job.state.is_finished(),
            _ => return Ok(FinishOutcome::default()),
        };
        let day = inner.days.entry(self.clock.now_ms() / DAY_MS).or_default();
        if next.state.is_finished() && !was_finished {
            *day.finished.entry((step.owner.clone(), next.state.code())).or_default() += 1;
        }
        if let Some(event) = event {
            let outcome = event.class.map_or("ok", |c| c.as_str());
            *day.attempts
                .entry((event.provider.clone(), outcome.to_string()))
                .or_default() += 1;
        }
        inner.leases.remove(&key);
        match due_at_ms {
            Some(at) => inner.due.insert(key.clone(), at),
            None => inner.due.remove(&key),
        };
        inner.jobs.insert(key, next.clone());
        let mut alerts = Vec::new();
        if let Some(event) = event {
            // The same decisions as finish.lua, under the same lock as the state change.
            let state = inner.providers.entry(event.provider.clone()).or_default();
            let before = state.clone();
            state.apply(event);
            let after = state.clone();
            let inner = &mut *inner;
            for incident in alert::provider_incidents(&event.provider, &before, &after, event.now_ms) {
                alerts.extend(alert::gate(incident, &event.alerts, &mut inner.alerts, event.now_ms));
            }
            let succeeded = event.class.is_none();
            if let Some(incident) = alert::system_incident(
                &event.alerts,
                &inner.providers,
                &event.provider,
                succeeded,
                &mut inner.alerts,
                event.now_ms,
            ) {
                alerts.extend(alert::gate(incident, &event.alerts, &mut inner.alerts, event.now_ms));
            }
        }
        Ok(FinishOutcome { written: true, alerts })
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
        let Some(job) = inner.jobs.get_mut(&(owner.to_string(), job_id.to_string())) else {
            return admitted(None);
        };
        if job.state.is_finished() {
            if !job.owes_deliveries() {
                job.expires_at_ms = job.expires_at_ms.min(now + grace.as_millis() as u64);
            }
            return admitted(Some(Delivered {
                job: job.clone(),
                running: false,
            }));
        }
        let job = job.clone();
        let running = inner
            .leases
            .get(&(job.owner.clone(), job.id.clone()))
            .is_some_and(|(gen, seq, _)| *gen == job.gen && *seq == job.seq);
        admitted(Some(Delivered { job, running }))
    }

    async fn purge(&self, owner: &str, job_id: &str, rate: Option<RateLimit>) -> Result<Admission<bool>, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.live();
        let rate = match inner.count(owner, rate, now) {
            Ok(rate) => rate,
            Err(window) => return Ok(Admission::RateLimited(window)),
        };
        let key = (owner.to_string(), job_id.to_string());
        inner.leases.remove(&key);
        inner.due.remove(&key);
        let existed = inner.jobs.remove(&key).is_some();
        Ok(Admission::Admitted { value: existed, rate })
    }

    async fn sweep(&self, request: &SweepRequest<'_>) -> Result<Swept, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.live();
        let life = now + request.token_life.as_millis() as u64;
        let live = inner
            .sweeper
            .as_ref()
            .is_some_and(|(token, round, _)| token == request.token && *round == request.round);
        if !request.take_over && !live {
            return Ok(Swept::Stale);
        }
        Self::prune_due(&mut inner);
        let mut due: Vec<(u64, (String, String))> = inner
            .due
            .iter()
            .filter(|(_, at)| **at <= request.now_ms)
            .map(|(key, at)| (*at, key.clone()))
            .collect();
        due.sort();
        due.truncate(request.limit);
        let mut steps = Vec::with_capacity(due.len());
        let mut stranded = 0;
        for (_, key) in due {
            if let Some(job) = inner.jobs.get(&key) {
                steps.push(job.step_ref());
                if matches!(job.state, JobState::Queued | JobState::Running) {
                    stranded += 1;
                }
            }
            inner.due.insert(key, request.requeue_at_ms);
        }
        let left = inner.due.len() as u64;
        let next_due_ms = inner.due.values().min().copied();
        let next_round = request.round + 1;
        inner.sweeper = (left > 0).then(|| (request.token.to_string(), next_round, life));
        Ok(Swept::Due {
            steps,
            left,
            next_due_ms,
            next_round,
            stranded,
        })
    }

    async fn overview(
        &self,
        owner: &str,
        bounds: OverviewBounds,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Overview>, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.live();
        let rate = match inner.count(owner, rate, now) {
            Ok(rate) => rate,
            Err(window) => return Ok(Admission::RateLimited(window)),
        };
        let mut overview = Overview::default();
        // Oldest first, ties by id: the order of the Upstash index (score = created at, then member).
        let mut unfinished: Vec<&Job> = inner
            .jobs
            .values()
            .filter(|j| j.owner == owner && !j.state.is_finished())
            .collect();
        unfinished.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        overview.unfinished = unfinished.len() as u64;
        for job in unfinished.into_iter().take(bounds.scan.max(1)) {
            let running = inner
                .leases
                .get(&(job.owner.clone(), job.id.clone()))
                .is_some_and(|(gen, seq, _)| *gen == job.gen && *seq == job.seq);
            overview.counted += 1;
            match (running, job.state) {
                (true, _) => overview.active += 1,
                (false, JobState::WaitingForRetry) => overview.delayed += 1,
                (false, _) => overview.waiting += 1,
            }
            if overview.oldest.len() < bounds.oldest {
                overview.oldest.push(Delivered {
                    job: job.clone(),
                    running,
                });
            }
        }
        // Soonest to expire first, ties by id (the Upstash index's score is the record's expiry).
        let mut dead: Vec<&Job> = inner
            .jobs
            .values()
            .filter(|j| j.owner == owner && j.dead_lettered())
            .collect();
        dead.sort_by(|a, b| (a.expires_at_ms, &a.id).cmp(&(b.expires_at_ms, &b.id)));
        overview.dead_lettered = dead.len() as u64;
        overview.dead_letters = dead.into_iter().take(bounds.dead).cloned().collect();
        if let Some(day) = inner.days.get(&(now / DAY_MS)) {
            let finished = |code: char| day.finished.get(&(owner.to_string(), code)).copied().unwrap_or(0);
            overview.completed_today = finished('s');
            overview.failed_today = finished('f');
            overview.attempts_today = day
                .attempts
                .iter()
                .map(|((provider, outcome), count)| AttemptCount {
                    provider: provider.clone(),
                    outcome: outcome.clone(),
                    count: *count,
                })
                .collect();
        }
        Ok(Admission::Admitted { value: overview, rate })
    }

    async fn provider_states(&self) -> Result<HashMap<String, ProviderState>, StoreError> {
        Ok(self.live().providers.clone())
    }

    async fn with_work_left(&self) -> Result<Vec<Job>, StoreError> {
        Ok(self
            .live()
            .jobs
            .values()
            .filter(|j| j.has_work_left())
            .cloned()
            .collect())
    }
}
