//! The in-memory store: the embedded default of `stepper-local` and the fast unit tests.
//! Same semantics as the Upstash store (the store contract suite runs against both).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::StoreError;
use crate::alert::{self, AlertBook};
use crate::budget::{self, Bucket, Buckets, Charge, Spent};
use crate::job::{Job, JobState, StepRef};
use crate::ports::{
    Admission, Claim, Clock, Created, Delivered, Enlist, FinishOutcome, Limits, RateLimit, RateWindow, Store,
    Submitted, SweepRequest, Swept,
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
    /// The budget's buckets, named as on Upstash (`st:b:h:<yyyymmddhh>`, `st:b:m:<yyyymm>`) → (expiry in
    /// epoch ms, field → count), with budget.lua's fields.
    budget: HashMap<String, (u64, HashMap<String, u64>)>,
}

impl Inner {
    /// What budget.lua counts for one call: one store command (as if it were one Upstash script) and
    /// what `charge` implies on AWS, for the deployment and for `owner` (`""`: the deployment's call).
    fn spend(&mut self, charge: Charge, owner: &str, now: u64) {
        let aws = charge.aws();
        self.add_to_budget(
            owner,
            now,
            &[('s', 1), ('l', aws.lambda_invocations), ('q', aws.sqs_requests)],
        );
    }

    fn add_to_budget(&mut self, owner: &str, now: u64, counts: &[(char, u64)]) {
        let buckets = Buckets::at(now);
        for (key, expires_s) in [
            (buckets.hour_key, buckets.hour_expires_s),
            (buckets.month_key, buckets.month_expires_s),
        ] {
            let (expires_ms, fields) = self.budget.entry(key).or_default();
            *expires_ms = expires_s * 1000;
            for &(letter, n) in counts.iter().filter(|(_, n)| *n > 0) {
                *fields.entry(letter.to_string()).or_default() += n;
                if !owner.is_empty() {
                    *fields.entry(format!("{letter}:{owner}")).or_default() += n;
                }
            }
        }
    }

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
        inner.budget.retain(|_, (expires, _)| *expires > now);
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
        inner.spend(Charge::Create, &job.owner, now);
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
        inner.add_to_budget(&job.owner, now, &[('j', 1)]);
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
        inner.spend(Charge::Claim, &step.owner, now);
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
        let now = self.clock.now_ms();
        expiry_ahead(next, now)?;
        let mut inner = self.live();
        inner.spend(Charge::Finish, &step.owner, now);
        let key = (step.owner.clone(), step.job_id.clone());
        match inner.jobs.get(&key) {
            Some(job) if job.gen == step.gen && job.seq == step.seq => {}
            _ => return Ok(FinishOutcome::default()),
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
        inner.spend(Charge::Deliver, owner, now);
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
        inner.spend(Charge::Purge, owner, now);
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
        inner.spend(Charge::Sweep, "", now);
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

    async fn provider_states(&self) -> Result<HashMap<String, ProviderState>, StoreError> {
        let mut inner = self.live();
        inner.spend(Charge::ProviderStates, "", self.clock.now_ms());
        Ok(inner.providers.clone())
    }

    async fn spent(&self, owner: &str, all_owners: bool) -> Result<Spent, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.live();
        inner.spend(Charge::BudgetRead, owner, now);
        // What spent.lua answers: every field, or only the owner's.
        let read = |key: &str| {
            let mut bucket = Bucket::default();
            if let Some((_, fields)) = inner.budget.get(key) {
                for (field, n) in fields {
                    let owned = field.get(1..).and_then(|f| f.strip_prefix(':')) == Some(owner);
                    if all_owners || owned {
                        bucket.fold(field, *n);
                    }
                }
            }
            bucket
        };
        Ok(Spent {
            hours: budget::day_hours(now)
                .into_iter()
                .map(|(start, key)| (start, read(&key)))
                .collect(),
            month: read(&budget::month_key(now)),
        })
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
