//! A submit: the job of a parsed request created in the store (or the identical one met), the
//! sweeper armed when none is alive, the first step queued — and the create undone when that step
//! could not be queued, so no job is left that nothing will ever step.

use std::time::Duration;

use super::step::{Engine, StepError};
use crate::domain::job::{job_id, new_gen, public_id, Job, JobState};
use crate::domain::presets::{FieldError, Submission, WebhookRetry};
use crate::ports::metrics::{self, Submitted as Met};
use crate::ports::{Admission, Created, Limits, Standing};

/// A submit the store admitted: the job it asked for, and the job that stands for it now.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// The job built from the request (created, unless an identical one was met).
    pub(crate) job: Job,
    /// `New`: `job` was created and its first step queued; `Existing`: the identical job met.
    pub(crate) created: Created,
    /// What the ETA of the job that stands needs (empty when the job met is finished).
    pub(crate) standing: Standing,
}

impl Engine {
    /// Checks a request's delivery targets against what this deployment admits for `owner` (safe
    /// addresses, a secret to sign its webhook with) and gives its webhook the configured retries.
    pub(crate) fn check_targets(&self, owner: &str, submission: &mut Submission) -> Result<(), FieldError> {
        let settings = &self.settings;
        let webhook = WebhookRetry {
            max_attempts: settings.webhook_max_attempts,
            backoff_ms: settings.webhook_backoff_ms,
            schedule_ms: settings.webhook_schedule_ms.clone(),
        };
        submission.check_targets(&webhook, |kind, url| self.outbound.admits(owner, kind, url))
    }

    /// The deadline of a job submitted now with `deadline_seconds` (the configured default when `None`).
    pub(crate) fn deadline_ms(&self, deadline_seconds: Option<u64>) -> u64 {
        deadline_seconds.map_or(self.settings.default_deadline_ms, |s| s * 1000)
    }

    /// Submits `owner`'s job: creates it (counted against the owner's limits) or meets the identical
    /// one, starts the sweeper the create armed, queues the first step of a new job (undoing the create
    /// when it cannot be queued) or again the current step of an unfinished job met. An identical
    /// finished job is replaced by a new one when the request bypasses results (`cacheControl`).
    pub(crate) async fn submit(&self, owner: String, submission: Submission) -> Result<Admission<Accepted>, StepError> {
        let Submission {
            identity,
            spec,
            deadline_seconds,
            cache,
        } = submission;
        let now = self.clock.now_ms();
        let deadline_ms = now + self.deadline_ms(deadline_seconds);
        let gen = new_gen();
        let job = Job {
            id: public_id(&job_id(&owner, &identity), &gen),
            owner,
            gen,
            seq: 1,
            state: JobState::Queued,
            spec,
            created_at_ms: now,
            deadline_ms,
            next_attempt_at_ms: None,
            attempts: Vec::new(),
            result: None,
            error: None,
            finished_at_ms: None,
            expires_at_ms: deadline_ms + self.settings.unfinished_margin_ms,
            deliveries: Vec::new(),
        };
        let limits = self.settings.limits.for_owner(&job.owner);
        // The create puts the job in the due-index in the same command: whatever happens next (a queue
        // error, a timeout of the answer, a crash), a job that exists is due and the sweeper runs it.
        let created = match self.store.create(&job, &self.enlist(), limits).await {
            Ok(created) => created,
            Err(e) => {
                // The store may have written the job (and armed a sweeper) without our hearing it: a
                // sweep that takes the sweeper over makes sure a job that exists runs.
                self.rescue_sweeper().await;
                return Err(e.into());
            }
        };
        let (mut submitted, rate) = match created {
            Admission::Admitted { value, rate } => (value, rate),
            Admission::RateLimited(window) => return Ok(Admission::RateLimited(window)),
            Admission::TooManyInFlight { limit, rate } => return Ok(Admission::TooManyInFlight { limit, rate }),
        };
        if let Created::Existing(existing) = &submitted.created {
            if existing.state.is_finished() && cache.bypasses_results() {
                // `no-cache` / `refresh`: the finished identical job may not answer; a new job takes
                // its place (purged uncounted, created again without counting the request twice).
                // Costs a purge and a create only when such a job is met.
                // The met job's own id: the new job's names another incarnation.
                self.store.purge(&job.owner, &existing.id, None).await?;
                let again = Limits {
                    rate: None,
                    in_flight: limits.in_flight,
                };
                submitted = match self.store.create(&job, &self.enlist(), again).await? {
                    Admission::Admitted { value, .. } => value,
                    Admission::RateLimited(window) => return Ok(Admission::RateLimited(window)),
                    Admission::TooManyInFlight { limit, rate } => {
                        return Ok(Admission::TooManyInFlight { limit, rate })
                    }
                };
            }
        }
        if let Some(token) = submitted.arm_sweeper.take() {
            // Should this send fail, the armed token lapses after two grace periods and the next
            // submit arms a sweeper again.
            if let Err(e) = self.start_sweeper(token).await {
                tracing::warn!(job_id = %job.id, error = %e, "could not start the sweeper");
            }
        }
        match &submitted.created {
            Created::New => {
                let first = self.step_message(&job);
                if let Err(e) = self.queue.send(&first, Duration::ZERO).await {
                    // Leave no job that nothing will ever step: undo the create (uncounted: it is ours,
                    // not the caller's), tell the caller to retry. Should the undo fail too, the job is
                    // due in the index and the sweeper runs it.
                    if let Err(undo) = self.store.purge(&job.owner, &job.id, None).await {
                        tracing::error!(job_id = %job.id, error = %undo, "could not undo a job whose first step was not queued");
                    }
                    return Err(e.into());
                }
                tracing::info!(job_id = %job.id, owner = %job.owner, "job submitted");
                metrics::submitted(&job.spec, &job.owner, Met::New);
            }
            Created::Existing(existing) if existing.state.is_finished() => {
                metrics::submitted(&job.spec, &job.owner, Met::Finished);
            }
            Created::Existing(existing) => {
                metrics::submitted(&job.spec, &job.owner, Met::InFlight);
                // An identical re-submit of an unfinished job (perhaps one whose first submit answered
                // 503 after the store had written it): queue its current step again. A step in flight
                // answers Busy and the duplicate comes back at its lease's end, then drops as stale; a
                // parked job stays parked.
                if let Err(e) = self.enqueue_next(existing).await {
                    tracing::warn!(job_id = %existing.id, error = %e, "could not re-queue a re-submitted job");
                }
            }
        }
        Ok(Admission::Admitted {
            value: Accepted {
                job,
                created: submitted.created,
                standing: submitted.standing,
            },
            rate,
        })
    }
}
