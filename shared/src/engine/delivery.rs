//! Delivery steps: once a job has finished, its remaining steps send its webhook and callbacks, one
//! attempt per step message, fenced and leased like provider steps. The deliveries were recorded in the
//! same state write that finished the job, so a crash in between loses none of them.

use std::time::Duration;

use rand::Rng;
use tracing::{info, warn};

use super::step::{Engine, StepError, StepOutcome};
use crate::adapters::outbound::send::{self, Finished};
use crate::domain::alert::{Alert, Incident};
use crate::domain::job::{Job, JobState, StepRef};
use crate::domain::targets::{self, DeliveryStatus};

/// How long a job with `purgeOnDelivery` is kept after its last delivery was acknowledged: long enough
/// that no skew between the engine's clock and the store's makes the expiry look past.
const PURGE_AFTER_DELIVERY_MS: u64 = 10_000;

/// How long one delivery attempt may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

impl Engine {
    /// When a finished job's record may expire, seen at `now`: its TTL after the last delivery it still
    /// owes could happen (the rest of every round, jitter included), or its TTL from now once it owes
    /// none (so a dead letter can still be read and redelivered).
    pub(crate) fn delivery_expiry(&self, job: &Job, now: u64) -> u64 {
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
        let target = &job.deliveries[index].target;
        let result = job.result.as_ref();
        let finished = Finished {
            job_id: &job.id,
            completed: job.state == JobState::Succeeded,
            result: result.map(|r| &*r.output),
            error: job.error.as_deref(),
            provider: result.map(|r| r.used_provider.as_str()),
            generation_time_ms: result.map_or(0, |r| r.total_ms),
            fallback: result.is_some_and(|r| r.fallback),
            context: &job.spec.context,
        };
        let body = send::body(target.kind, &finished, now);
        // Stable across retries and redeliveries of one target, so receivers can drop duplicates by id.
        let msg_id = send::message_id(&job.id, &job.gen, index);
        let secrets = self.settings.webhook_secrets.get(&job.owner);
        let report = send::attempt(
            target,
            &body,
            &msg_id,
            secrets,
            self.settings.webhook_legacy_bearer,
            &self.settings.url_guard,
            now,
            DELIVERY_TIMEOUT,
            &self.settings.scrubber,
        )
        .await;
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
        crate::ports::metrics::webhook_attempt(target.kind, status);
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
