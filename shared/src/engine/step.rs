//! One step of one job: claim → decide → call → finish → enqueue. Only ports, no I/O of its own.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::decide::{decide, Candidate, Decision, GiveUp};
use super::settings::Settings;
use crate::domain::error_class::ErrorClass;
use crate::domain::job::{Attempt, Job, JobResult, JobState, StepRef};
use crate::domain::llm::CompletionRequest;
use crate::domain::message::{Hint, Message};
use crate::domain::outcome::{CallReport, Failure};
use crate::domain::quota::{ProviderEvent, ProviderLimits, ProviderState, Reservable, Reservation, Reserve, MINUTE_MS};
use crate::ports::outbound::Outbound;
use crate::ports::{Claim, Clock, Provider, Queue, QueueError, Store, StoreError};

/// A configured provider: its adapter plus what the engine needs to know about it.
#[derive(Clone)]
pub struct ProviderSlot {
    pub name: String,
    pub limits: ProviderLimits,
    /// Gets the job's compact prompt (smaller evidence budget).
    pub small_context: bool,
    pub timeout_ms: u64,
    pub provider: Arc<dyn Provider>,
}

/// Runs steps. Built once per process (or Lambda container) and shared.
///
/// Its ports and settings are private to the engine: callers ask it to do things (run a step, queue a
/// job's next step, estimate an end) rather than reach into its parts, so the engine alone decides how
/// a step uses the store and the queue. The read accessors serve the use cases (`app/mod.rs`) and tests.
#[derive(Clone)]
pub struct Engine {
    pub(super) store: Arc<dyn Store>,
    pub(super) queue: Arc<dyn Queue>,
    pub(super) clock: Arc<dyn Clock>,
    /// Webhooks, callbacks and alerts: every signed, guarded POST.
    pub(super) outbound: Arc<dyn Outbound>,
    pub(super) providers: Arc<Vec<ProviderSlot>>,
    pub(super) settings: Arc<Settings>,
}

/// What a step did; every variant means the message is done with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// The message arrived before its `not_before`: sent on again.
    Rescheduled,
    /// The message was stale, duplicate, or its job is gone.
    Dropped(&'static str),
    /// The job moved on; its next step is queued with this delay.
    Progressed { delay_ms: u64 },
    /// The job ended in this state.
    Finished(JobState),
    /// Another worker holds the step's lease: the message comes back when the lease ends (a new
    /// message, so it never uses up the queue's receive budget).
    Busy { retry_in_ms: u64 },
    /// A sweep re-queued this many due steps; `left` jobs remain in the due-index.
    Swept { requeued: usize, left: u64 },
}

/// How long into a step its job's first delivery may still be sent in it (`delivers_inline`): the step
/// function's time (75 s, template.yaml: one provider attempt with its retry, 2 × 30 s) less a delivery
/// attempt (10 s, the outbound adapter's timeout) and the store writes around it. Past it, the delivery
/// is a step of its own.
const INLINE_WITHIN_MS: u64 = 45_000;

/// The message must be retried (it stays on the queue).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        queue: Arc<dyn Queue>,
        clock: Arc<dyn Clock>,
        outbound: Arc<dyn Outbound>,
        providers: Vec<ProviderSlot>,
        settings: Settings,
    ) -> Self {
        Self {
            store,
            queue,
            clock,
            outbound,
            providers: Arc::new(providers),
            settings: Arc::new(settings),
        }
    }

    /// The same engine over another store (tests wrap the store to inject faults).
    pub fn with_store(self, store: Arc<dyn Store>) -> Self {
        Self { store, ..self }
    }

    /// The job store (the use cases' reads and writes, and tests that inspect it).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(crate) fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    pub fn queue(&self) -> &dyn Queue {
        self.queue.as_ref()
    }

    /// The configured providers, in order of preference.
    pub fn providers(&self) -> &[ProviderSlot] {
        &self.providers
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The lease a step takes: long enough for the slowest provider call (the OpenAI adapter may
    /// retry once without json_schema), short enough that a crashed step is re-run soon.
    fn lease(&self) -> Duration {
        let slowest = self.providers.iter().map(|p| p.timeout_ms).max().unwrap_or(0);
        Duration::from_millis(slowest * 2 + 2_000)
    }

    /// Handles one step message. `receive_count` is how often it was received (1 = first).
    /// `hint`: what its step message says about the job (`Message::Step`), for the claim's reservation.
    pub async fn run_step(
        &self,
        step: &StepRef,
        not_before_ms: Option<u64>,
        hint: &Hint,
        receive_count: u32,
    ) -> Result<StepOutcome, StepError> {
        let now = self.clock.now_ms();
        if let Some(at) = not_before_ms.filter(|at| *at > now) {
            let message = Message::Step {
                step: step.clone(),
                not_before_ms: Some(at),
                hint: hint.clone(),
            };
            self.queue.send(&message, Duration::from_millis(at - now)).await?;
            return Ok(StepOutcome::Rescheduled);
        }
        let reserve = self.reserve(step, hint, now);
        let (job, states, reservation, origins) = match self.store.claim(step, self.lease(), &reserve).await? {
            Claim::Acquired {
                job,
                mut providers,
                probes,
                reservation,
                origins,
            } => {
                match &reservation {
                    // The decision asks whether a request is left for this call: the reservation holds it.
                    Reservation::Reserved(name) => {
                        let day = reserve.providers.iter().find(|r| &r.name == name).map_or(0, |r| r.day);
                        if let Some(state) = providers.get_mut(name) {
                            state.unreserve(now / MINUTE_MS, day);
                        }
                    }
                    // Out of this minute's requests: for this job, the provider is available at its turn.
                    Reservation::Booked { provider, at_ms } => {
                        if let Some(state) = providers.get_mut(provider) {
                            state.cooldown_until_ms = state.cooldown_until_ms.max(*at_ms);
                        }
                    }
                    // Its turn went to a job of its tenant ahead of it in the line: that job's step goes now
                    // (its claim finds the request granted), and this one waits for that job's turn.
                    Reservation::Handed { provider, at_ms, to } => {
                        if let Some(state) = providers.get_mut(provider) {
                            state.cooldown_until_ms = state.cooldown_until_ms.max(*at_ms);
                        }
                        let woken = Message::Step {
                            step: to.clone(),
                            not_before_ms: None,
                            hint: Hint::default(),
                        };
                        if let Err(e) = self.queue.send(&woken, Duration::ZERO).await {
                            // Its grant lapses unused; it keeps the turn it booked.
                            warn!(job_id = %to.job_id, error = %e, "could not wake the job a turn was handed to");
                        }
                    }
                    Reservation::None => {}
                }
                crate::domain::quota::hold_back_for_probes(&mut providers, &probes, now, self.clock.now_ms());
                (job, providers, reservation, origins)
            }
            Claim::Busy { lease_left } => return self.come_back(step, hint, lease_left).await,
            Claim::Missing => return Ok(StepOutcome::Dropped("job is gone")),
            Claim::Stale(job) => return self.resend_lost_next(step, &job, receive_count).await,
        };
        if job.state.is_finished() {
            // A finished job's remaining steps are its deliveries.
            return self.delivery_step(step, job, &origins).await;
        }
        let reserved = match &reservation {
            Reservation::Reserved(name) => Some(name.as_str()),
            _ => None,
        };
        let next = self.advance(job, &states, reserved).await;
        let (next_job, event) = next;
        let due = self.due_for(&next_job);
        let finished = self.store.finish(step, &next_job, due, event.as_ref()).await?;
        if !finished.written {
            return Ok(StepOutcome::Dropped("job moved on during the step"));
        }
        // This write made the incidents' state change: this instance, and no other, alerts them.
        self.raise(finished.alerts).await;
        if next_job.state == JobState::WaitingForRetry {
            self.record_wait(&states, event.as_ref(), &next_job);
        }
        if next_job.state.is_finished() {
            crate::ports::metrics::job_finished(&next_job, self.clock.now_ms());
            info!(job_id = %next_job.id, state = ?next_job.state, deliveries = next_job.deliveries.len(), "job finished");
            if next_job.has_work_left() {
                if self.delivers_inline(&next_job, now) {
                    // Its first delivery, due at once, goes in this step: no claim, no queue message
                    // for it. The finish above recorded the deliveries owed, so a crash from here on
                    // loses none: the step message comes back as stale and sends the delivery step
                    // (`resend_lost_next`), or the sweeper does.
                    match self
                        .delivery_step(&next_job.step_ref(), next_job.clone(), &origins)
                        .await
                    {
                        Ok(_) => return Ok(StepOutcome::Finished(next_job.state)),
                        Err(error) => {
                            warn!(job_id = %next_job.id, %error, "the delivery in the finishing step failed; its step is queued");
                        }
                    }
                }
                self.enqueue_next(&next_job).await?;
            }
            return Ok(StepOutcome::Finished(next_job.state));
        }
        let delay_ms = self.enqueue_next(&next_job).await?;
        Ok(StepOutcome::Progressed { delay_ms })
    }

    /// Whether the job that `finished` in a step that started at `started_ms` sends its first delivery
    /// in that same step: the delivery is due now, and the step is young enough that a delivery attempt
    /// still ends well inside the step's time (`INLINE_WITHIN_MS`).
    fn delivers_inline(&self, finished: &Job, started_ms: u64) -> bool {
        let now = self.clock.now_ms();
        now.saturating_sub(started_ms) < INLINE_WITHIN_MS
            && crate::domain::targets::next_due(&finished.deliveries).is_some_and(|(_, at)| at <= now)
    }

    /// A message received again whose step was written but whose next message may never have been sent
    /// (the send failed after the state write): send it again. Duplicates are harmless (fencing).
    async fn resend_lost_next(&self, step: &StepRef, job: &Job, receive_count: u32) -> Result<StepOutcome, StepError> {
        let is_successor = job.gen == step.gen && job.seq == step.seq + 1;
        if receive_count > 1 && is_successor && job.has_work_left() {
            let delay_ms = self.enqueue_next(job).await?;
            warn!(job_id = %job.id, seq = job.seq, delay_ms, "re-sent a possibly lost step message");
            return Ok(StepOutcome::Progressed { delay_ms });
        }
        Ok(StepOutcome::Dropped("stale step message"))
    }

    /// A Busy claim: the same step comes back when the lease ends, as a new message.
    async fn come_back(&self, step: &StepRef, hint: &Hint, lease_left: Duration) -> Result<StepOutcome, StepError> {
        // A little past the end, so the lease has surely lapsed when the message returns.
        let delay = lease_left + Duration::from_millis(50);
        let message = Message::Step {
            step: step.clone(),
            not_before_ms: None,
            hint: hint.clone(),
        };
        self.queue.send(&message, delay).await?;
        Ok(StepOutcome::Busy {
            retry_in_ms: delay.as_millis() as u64,
        })
    }

    /// Queues the job's next step after its wait, or parks it (nothing queued: the due-index holds
    /// it and the sweeper wakes it) when the wait is long. Returns the wait.
    pub(crate) async fn enqueue_next(&self, job: &Job) -> Result<u64, QueueError> {
        let now = self.clock.now_ms();
        let delay_ms = job.next_attempt_at_ms.map_or(0, |at| at.saturating_sub(now));
        if self.parks(delay_ms) {
            info!(job_id = %job.id, delay_ms, "parked in the due-index until its next attempt");
            return Ok(delay_ms);
        }
        self.queue
            .send(&self.step_message(job), Duration::from_millis(delay_ms))
            .await?;
        Ok(delay_ms)
    }

    /// The message of the job's next step, naming its providers in the order its decision will rank
    /// them and its tenant when one of them has a shared request limit, for the claim's reservation.
    pub(crate) fn step_message(&self, job: &Job) -> Message {
        let chain = self.chain(job);
        // A finished job's steps are its deliveries: no provider to reserve.
        let limited = chain.iter().any(|p| p.limits.shared_requests());
        let hint = if limited && !job.state.is_finished() {
            let names: Vec<&str> = chain.iter().map(|p| p.name.as_str()).collect();
            Hint {
                providers: super::decide::ranking(job, &names, &self.settings.policy)
                    .into_iter()
                    .map(|i| chain[i].name.clone())
                    .collect(),
                tenant: Some(job.tenant()),
            }
        } else {
            Hint::default()
        };
        Message::Step {
            step: job.step_ref(),
            not_before_ms: None,
            hint,
        }
    }

    /// What the claim may reserve: the providers the message named (in configuration order when it named
    /// none: a sweep's re-drive), with their limits and today's quota day, for the job's tenant (the
    /// owner when the message did not say); nothing when none has a shared request limit (the claim then
    /// decodes nothing).
    fn reserve(&self, step: &StepRef, hint: &Hint, now_ms: u64) -> Reserve {
        let slots: Vec<&ProviderSlot> = if hint.providers.is_empty() {
            self.providers.iter().collect()
        } else {
            hint.providers
                .iter()
                .filter_map(|name| self.providers.iter().find(|p| &p.name == name))
                .collect()
        };
        if !slots.iter().any(|p| p.limits.shared_requests()) {
            return Reserve::default();
        }
        Reserve {
            providers: slots
                .into_iter()
                .map(|p| Reservable {
                    name: p.name.clone(),
                    limits: p.limits,
                    day: p.limits.reset.day(now_ms),
                })
                .collect(),
            tenant: hint.tenant.clone().unwrap_or_else(|| step.owner.clone()),
        }
    }

    /// The job's provider chain: the configured providers, re-ordered and filtered by the request's
    /// own preferences when it gave some (`domain::contract::ProviderPrefs`).
    fn chain<'a>(&'a self, job: &Job) -> Vec<&'a ProviderSlot> {
        match &job.spec.providers {
            None => self.providers.iter().collect(),
            Some(prefs) => prefs
                .chain(self.providers.iter().map(|p| p.name.as_str()))
                .into_iter()
                .map(|i| &self.providers[i])
                .collect(),
        }
    }

    fn candidates<'a>(
        chain: &[&'a ProviderSlot],
        states: &'a std::collections::HashMap<String, ProviderState>,
    ) -> Vec<Candidate<'a>> {
        static FRESH: std::sync::OnceLock<ProviderState> = std::sync::OnceLock::new();
        let fresh = FRESH.get_or_init(ProviderState::default);
        chain
            .iter()
            .map(|&slot| Candidate {
                name: &slot.name,
                limits: slot.limits,
                state: states.get(&slot.name).unwrap_or(fresh),
            })
            .collect()
    }

    /// When an unfinished job is expected to end (epoch ms), from what the route's store call read
    /// (engine/eta.rs); `None` for a finished job, or when no provider can serve it.
    pub(crate) fn eta(&self, job: &Job, standing: &crate::ports::Standing, running: bool) -> Option<u64> {
        if job.state.is_finished() {
            return None;
        }
        let later = standing.due_ms.map_or_else(Vec::new, |due| {
            crate::ports::HORIZONS_MS
                .iter()
                .zip(&standing.later)
                .map(|(h, n)| (due.saturating_add(*h), *n))
                .collect()
        });
        let position = super::eta::Position {
            ahead: standing.ahead,
            running,
            later,
            slack_ms: self.settings.sweep_grace_ms,
        };
        super::eta::estimate(
            job,
            &Self::candidates(&self.chain(job), &standing.providers),
            &position,
            self.clock.now_ms(),
            &self.settings.policy,
            self.settings.step_concurrency,
        )
    }

    /// Decides, makes at most one provider call, and computes the job's next state.
    /// `reserved`: the provider whose request the claim reserved (a call to it is counted already).
    async fn advance(
        &self,
        mut job: Job,
        states: &std::collections::HashMap<String, ProviderState>,
        reserved: Option<&str>,
    ) -> (Job, Option<ProviderEvent>) {
        let now = self.clock.now_ms();
        job.seq += 1;
        let chain = self.chain(&job);
        let index = match decide(&job, &Self::candidates(&chain, states), now, &self.settings.policy) {
            Decision::Call(index) => index,
            Decision::Wait { until_ms } => return (self.wait(job, until_ms), None),
            Decision::GiveUp(reason) => return (self.give_up(job, &reason, now), None),
        };
        let slot = chain[index];
        let request = CompletionRequest {
            messages: match (&job.spec.compact_messages, slot.small_context) {
                (Some(compact), true) => compact.clone(),
                _ => job.spec.messages.clone(),
            },
            format: job.spec.format.clone(),
            max_tokens: job.spec.max_tokens,
            temperature: job.spec.temperature,
        };
        let report = slot.provider.call(&request).await;
        let after = self.clock.now_ms();
        let accepted = match &report.result {
            Ok(answer) => crate::domain::accept::accept(&answer.text, answer.finish, &job.spec)
                .map_err(|e| Failure::new(ErrorClass::InvalidOutput, e.to_string())),
            Err(failure) => Err(failure.clone()),
        };
        let mut event = self.provider_event(slot, &request, &report, accepted.as_ref().err(), after);
        // Timed on the engine's clock, like every decision (the ETA's pace).
        event.latency_ms = after.saturating_sub(now);
        event.reserved = reserved == Some(slot.name.as_str());
        job.attempts
            .push(attempt(&job, slot, &report, accepted.as_ref().err(), after));
        info!(
            job_id = %job.id, provider = %slot.name, class = accepted.as_ref().err().map_or("ok", |f| f.class.as_str()),
            http_status = report.http_status, duration_ms = report.duration_ms, "provider attempt"
        );
        crate::ports::metrics::provider_attempt(
            &job.spec,
            &slot.name,
            accepted.as_ref().err().map(|f| f.class),
            report.duration_ms,
        );
        let next = match accepted {
            Ok(output) => {
                let provider_ms = job.attempts.iter().map(|a| a.duration_ms).sum();
                job.result = Some(JobResult {
                    output: Arc::new(output),
                    used_provider: slot.name.clone(),
                    fallback: false,
                    total_ms: after.saturating_sub(job.created_at_ms),
                    provider_ms,
                });
                self.finished(job, JobState::Succeeded, after)
            }
            Err(_) => {
                // Decide the follow-up with what this attempt taught us about the provider.
                let mut learned = states.clone();
                learned.entry(slot.name.clone()).or_default().apply(&event);
                match decide(&job, &Self::candidates(&chain, &learned), after, &self.settings.policy) {
                    Decision::Call(_) => {
                        job.state = JobState::Queued;
                        job.next_attempt_at_ms = None;
                        job.expires_at_ms = job.deadline_ms + self.settings.unfinished_margin_ms;
                        job
                    }
                    Decision::Wait { until_ms } => self.wait(job, until_ms),
                    Decision::GiveUp(reason) => self.give_up(job, &reason, after),
                }
            }
        };
        (next, Some(event))
    }

    /// Counts a wait the step wrote, named by the provider the job waits for (as the decision saw
    /// the providers: this step's outcome applied).
    fn record_wait(
        &self,
        states: &std::collections::HashMap<String, ProviderState>,
        event: Option<&ProviderEvent>,
        job: &Job,
    ) {
        let Some(until_ms) = job.next_attempt_at_ms else {
            return;
        };
        let now = self.clock.now_ms();
        let mut learned = states.clone();
        if let Some(event) = event {
            learned.entry(event.provider.clone()).or_default().apply(event);
        }
        let chain = self.chain(job);
        let candidates = Self::candidates(&chain, &learned);
        let reason = crate::ports::metrics::wait_reason(candidates.iter().map(|c| (c.state, &c.limits)), now, until_ms);
        crate::ports::metrics::waited(reason, Duration::from_millis(until_ms.saturating_sub(now)));
    }

    fn wait(&self, mut job: Job, until_ms: u64) -> Job {
        job.state = JobState::WaitingForRetry;
        job.next_attempt_at_ms = Some(until_ms);
        job.expires_at_ms = job.deadline_ms + self.settings.unfinished_margin_ms;
        job
    }

    /// Ends a job no provider could serve: with the preset's fallback when it has one, failed otherwise.
    fn give_up(&self, mut job: Job, reason: &GiveUp, now: u64) -> Job {
        if let Some(fallback) = job.spec.fallback.clone() {
            job.result = Some(JobResult {
                output: fallback,
                used_provider: "fallback".into(),
                fallback: true,
                total_ms: now.saturating_sub(job.created_at_ms),
                provider_ms: job.attempts.iter().map(|a| a.duration_ms).sum(),
            });
            return self.finished(job, JobState::Succeeded, now);
        }
        let last = job.attempts.last().map(|a| {
            format!(
                " (last attempt: {} {})",
                a.provider,
                a.message.as_deref().unwrap_or("failed")
            )
        });
        let why = match reason {
            GiveUp::NoProviders if !self.providers.is_empty() => {
                "every configured provider is excluded by the request's excludeProviders"
            }
            _ => reason.message(),
        };
        job.error = Some(format!("{why}{}", last.unwrap_or_default()));
        self.finished(job, JobState::Failed, now)
    }

    /// Ends the job; its deliveries are planned in this same write, so a crash cannot lose them.
    fn finished(&self, mut job: Job, state: JobState, now: u64) -> Job {
        job.state = state;
        job.next_attempt_at_ms = None;
        job.finished_at_ms = Some(now);
        job.deliveries = crate::domain::targets::plan(&job.spec.targets);
        // Kept until the deliveries could have ended, plus the TTL.
        job.expires_at_ms = self.delivery_expiry(&job, now);
        job
    }

    fn provider_event(
        &self,
        slot: &ProviderSlot,
        request: &CompletionRequest,
        report: &CallReport,
        failure: Option<&Failure>,
        now: u64,
    ) -> ProviderEvent {
        let mut event = ProviderEvent::new(&slot.name, &slot.limits, now, self.settings.backoff);
        event.count_tokens(request.estimated_tokens(), report.result.as_ref().ok().map(|a| a.usage));
        event.alerts = self.alert_rules();
        // An unusable answer (InvalidOutput) is counted but does not back the provider off: see `apply`.
        event.class = failure.map(|f| f.class);
        event.message = failure
            .map(|f| format!("{}: {}", f.class.as_str(), f.message))
            .unwrap_or_default();
        if let Some(f) = failure.filter(|f| matches!(f.class, ErrorClass::AuthInvalid | ErrorClass::Gone)) {
            tracing::error!(provider = %slot.name, class = f.class.as_str(), reason = %f.message,
                "provider disabled for every job until its configuration is fixed");
        }
        let hinted = failure.and_then(|f| f.retry).map(|r| r.resolve(now));
        let exhausted = report.rate.exhausted_until(now);
        event.cooldown_until_ms = hinted.max(exhausted).unwrap_or(0);
        event
    }
}

fn attempt(job: &Job, slot: &ProviderSlot, report: &CallReport, failure: Option<&Failure>, now: u64) -> Attempt {
    let retry_after_s = failure
        .and_then(|f| f.retry)
        .map(|r| r.resolve(now).saturating_sub(now).div_ceil(1000));
    Attempt {
        provider: slot.name.clone(),
        number: job.attempts.len() as u32 + 1,
        class: failure.map(|f| f.class),
        http_status: report.http_status,
        duration_ms: report.duration_ms,
        retry_after_s,
        message: failure.map(|f| f.message.clone()),
        at_ms: now,
    }
}

impl Engine {
    /// Queues the next step of every job with work left (parked ones stay parked) and takes the
    /// sweeper over. Run at start on a persistent store (a restarted `stepper-local`), or by hand
    /// (`{"action":"redrive"}`). Duplicates are harmless.
    pub async fn redrive_unfinished(&self) -> Result<usize, StepError> {
        let jobs = self.store.with_work_left().await?;
        for job in &jobs {
            self.enqueue_next(job).await?;
        }
        self.take_over_sweeper().await?;
        Ok(jobs.len())
    }
}
