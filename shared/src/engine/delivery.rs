//! Delivery steps: once a job has finished, its remaining steps send its webhook and callbacks, one
//! attempt per step message, fenced and leased like provider steps. The deliveries were recorded in the
//! same state write that finished the job, so a crash in between loses none of them.

use rand::Rng;
use tracing::{info, warn};

use super::step::{Engine, StepError, StepOutcome};
use crate::domain::alert::{Alert, Incident};
use crate::domain::job::{Job, JobState, StepRef};
use crate::domain::targets::{self, DeliveryStatus};

/// How long a job with `purgeOnDelivery` is kept after its last delivery was acknowledged: long enough
/// that no skew between the engine's clock and the store's makes the expiry look past.
const PURGE_AFTER_DELIVERY_MS: u64 = 10_000;

/// Why a redelivery found nothing to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NothingToRedeliver {
    /// The job has not finished: its deliveries have not started.
    Unfinished,
    /// The job was submitted without targets.
    NoTargets,
    /// Every delivery was delivered.
    AllDelivered,
}

/// What a redelivery came to.
#[derive(Debug)]
pub(crate) enum Redelivered {
    Nothing(NothingToRedeliver),
    /// The job moved on (a delivery attempt ended) since `job` was read: nothing was written.
    Changed,
    /// `due` deliveries made due now; `job` as written, its step queued.
    Made {
        job: Job,
        due: usize,
    },
}

impl Engine {
    /// Makes the finished `job`'s dead (and failed, waiting) deliveries due now, each with its own
    /// `webhook-id` and a fresh timestamp: the write fenced on the step `job` was read at, then the
    /// step message.
    pub(crate) async fn redeliver(&self, job: Job) -> Result<Redelivered, StepError> {
        if !job.state.is_finished() {
            return Ok(Redelivered::Nothing(NothingToRedeliver::Unfinished));
        }
        let now = self.clock.now_ms();
        let mut next = job.clone();
        next.seq += 1;
        let due = targets::redeliver(&mut next.deliveries, now);
        if due == 0 {
            return Ok(Redelivered::Nothing(if job.deliveries.is_empty() {
                NothingToRedeliver::NoTargets
            } else {
                NothingToRedeliver::AllDelivered
            }));
        }
        next.next_attempt_at_ms = Some(now);
        next.expires_at_ms = self.delivery_expiry(&next, now);
        let due_at = self.due_for(&next);
        if !self.store.finish(&job.step_ref(), &next, due_at, None).await?.written {
            return Ok(Redelivered::Changed);
        }
        // Written first: were the message lost, the deliveries are pending in the record, and the next
        // redelivery request (or a re-drive) queues them again.
        self.enqueue_next(&next).await?;
        info!(job_id = %job.id, owner = %job.owner, deliveries = due, "deliveries redelivered");
        Ok(Redelivered::Made { job: next, due })
    }

    /// When a finished job's record may expire, seen at `now`: its TTL after the last delivery it still
    /// owes could happen (the rest of every round, jitter included), or its TTL from now once it owes
    /// none (so a dead letter can still be read and redelivered).
    pub(super) fn delivery_expiry(&self, job: &Job, now: u64) -> u64 {
        let ttl = match job.state {
            JobState::Succeeded => self.settings.result_ttl_ms,
            _ => self.settings.failure_ttl_ms,
        };
        targets::owed_until(&job.deliveries, now).unwrap_or(now) + ttl
    }

    /// Runs the next due delivery of a finished job.
    pub(super) async fn delivery_step(&self, step: &StepRef, job: Job) -> Result<StepOutcome, StepError> {
        let now = self.clock.now_ms();
        let Some((index, due_at)) = targets::next_due(&job.deliveries) else {
            return Ok(StepOutcome::Dropped("nothing left to deliver"));
        };
        if due_at > now {
            // Early (a re-drive): come back when it is due.
            self.enqueue_next(&Job {
                next_attempt_at_ms: Some(due_at),
                ..job
            })
            .await?;
            return Ok(StepOutcome::Rescheduled);
        }
        let kind = job.deliveries[index].target.kind;
        let report = self.outbound.deliver(&job, index, now).await;
        let after = self.clock.now_ms();
        let mut next = job.clone();
        next.seq += 1;
        let jitter: f64 = rand::thread_rng().gen();
        let due = targets::record(&mut next.deliveries, index, &report, after, jitter);
        next.next_attempt_at_ms = due.map(|(_, at)| at);
        next.expires_at_ms = self.delivery_expiry(&next, after);
        if next.spec.purge_on_delivery && !next.owes_deliveries() && !next.dead_lettered() {
            // Every delivery acknowledged, and the caller takes results by webhook only: this last
            // write is the record's last; it goes a few seconds later (a margin for the clocks).
            next.expires_at_ms = after + PURGE_AFTER_DELIVERY_MS;
        }
        let status = next.deliveries[index].status;
        crate::ports::metrics::webhook_attempt(kind, status);
        if status == DeliveryStatus::Dead {
            warn!(job_id = %job.id, target = index, error = ?report.error, "delivery dead-lettered");
        } else {
            info!(job_id = %job.id, target = index, delivered = report.delivered, status = ?report.status, "delivery attempt");
        }
        let due_at = self.due_for(&next);
        if !self.store.finish(step, &next, due_at, None).await?.written {
            return Ok(StepOutcome::Dropped("job moved on during the delivery"));
        }
        if status == DeliveryStatus::Dead {
            // The fenced write above dead-lettered it: one instance alerts.
            self.raise(vec![Alert {
                incident: Incident::DeliveryDeadLettered {
                    job_id: job.id.clone(),
                    target: index,
                    error: next.deliveries[index].last_error.clone().unwrap_or_default(),
                },
                suppressed: 0,
                at_ms: after,
            }])
            .await;
        }
        match due {
            Some(_) => Ok(StepOutcome::Progressed {
                delay_ms: self.enqueue_next(&next).await?,
            }),
            None => Ok(StepOutcome::Finished(next.state)),
        }
    }
}
