//! Delivery steps: once a job has finished, its remaining steps send its webhook and callbacks, one
//! attempt per step message, fenced and leased like provider steps. The deliveries were recorded in the
//! same state write that finished the job, so a crash in between loses none of them.

use std::collections::HashMap;

use rand::Rng;
use tracing::{info, warn};

use super::step::{Engine, StepError, StepOutcome};
use crate::domain::alert::{Alert, Incident};
use crate::domain::job::{Job, JobState, StepRef};
use crate::domain::message::Message;
use crate::domain::origins::{self, OriginState};
use crate::domain::targets::{self, DeliveryState, DeliveryStatus};
use crate::ports::OriginDown;

/// When delivery `index` of `job` may go before its schedule (`origins::fast_due`), by its origin's
/// shared state.
fn early(job: &Job, origins: &HashMap<String, OriginState>, index: usize, s: &DeliveryState) -> Option<u64> {
    if origins.is_empty() {
        return None;
    }
    let origin = origins::origin_of(&s.target.url)?;
    origins::fast_due(s, origins.get(&origin), &origins::holder_of(&job.id, index))
}

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

    /// Runs the next due delivery of a finished job. `origins`: the failing delivery origins' shared
    /// state, read by the claim (the receiver-recovery fast path, `domain/origins.rs`): a delivery whose
    /// origin answered again since it failed goes at once, the origin's probe holder at its probe's time.
    pub(super) async fn delivery_step(
        &self,
        step: &StepRef,
        job: Job,
        origins: &HashMap<String, OriginState>,
    ) -> Result<StepOutcome, StepError> {
        let now = self.clock.now_ms();
        let Some((index, due_at)) = targets::next_due_with(&job.deliveries, |i, s| early(&job, origins, i, s)) else {
            return Ok(StepOutcome::Dropped("nothing left to deliver"));
        };
        if due_at > now {
            return self.come_back_when_due(step, job, due_at, now).await;
        }
        let kind = job.deliveries[index].target.kind;
        let origin = origins::origin_of(&job.deliveries[index].target.url);
        let known = origin.as_ref().and_then(|o| origins.get(o));
        let holder = origins::holder_of(&job.id, index);
        // Before its schedule's time: its origin's probe, or its one attempt after the origin recovered.
        let ahead = job.deliveries[index].next_at_ms.is_some_and(|at| at > now);
        let probing = ahead && known.is_some_and(|o| o.is_down() && o.holder == holder);
        let report = self.outbound.deliver(&job, index, now).await;
        let after = self.clock.now_ms();
        let mut next = job.clone();
        next.seq += 1;
        let jitter: f64 = rand::thread_rng().gen();
        if ahead {
            targets::record_early(&mut next.deliveries, index, &report, after, jitter);
        } else {
            targets::record(&mut next.deliveries, index, &report, after, jitter);
        }
        let probe_at = match (&origin, report.marks_origin_down()) {
            (Some(origin), true) => self.origin_down(&next, index, origin, probing, after).await,
            _ => None,
        };
        // This delivery goes early only as the probe the store just handed it (the claim's view of
        // its origin is older than this attempt).
        let due = targets::next_due_with(&next.deliveries, |i, s| {
            if i == index {
                probe_at
            } else {
                early(&next, origins, i, s)
            }
        });
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
        if let (Some(origin), true) = (&origin, report.delivered && known.is_some_and(OriginState::is_down)) {
            self.origin_up(&next, origin, after).await;
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

    /// A delivery step that came before its delivery is due (a re-drive, a sweep, a probe it no longer
    /// holds, a wake-up for a delivery that no longer waits on its origin): sent on to when it is due.
    /// When the due-index would bring it back sooner than that (its score was moved for a step that came
    /// early), the record is written once with the right time first, so no sweep sends it again and
    /// again until then.
    async fn come_back_when_due(
        &self,
        step: &StepRef,
        job: Job,
        due_at: u64,
        now: u64,
    ) -> Result<StepOutcome, StepError> {
        let mut next = Job {
            next_attempt_at_ms: Some(due_at),
            ..job
        };
        if due_at > now + self.settings.sweep_grace_ms {
            next.seq += 1;
            let score = self.due_for(&next);
            if !self.store.finish(step, &next, score, None).await?.written {
                return Ok(StepOutcome::Dropped("job moved on during the delivery"));
            }
        }
        self.enqueue_next(&next).await?;
        Ok(StepOutcome::Rescheduled)
    }

    /// Tells the store a delivery failed because its origin is down (the fast path's bookkeeping):
    /// answers the origin's probe's time when this delivery holds the probe. A store error only costs
    /// the delivery its fast path (it keeps its schedule), never the step.
    async fn origin_down(&self, next: &Job, index: usize, origin: &str, probed: bool, now: u64) -> Option<u64> {
        let delivery = &next.deliveries[index];
        let down = OriginDown {
            origin,
            owner: &next.owner,
            job_id: &next.id,
            holder: &origins::holder_of(&next.id, index),
            waits_until_ms: (delivery.status == DeliveryStatus::Pending)
                .then_some(delivery.next_at_ms)
                .flatten(),
            probed,
            now_ms: now,
        };
        match self.store.origin_down(&down).await {
            Ok(probe_at) => {
                if let Some(at) = probe_at {
                    info!(job_id = %next.id, target = index, origin, probe_in_ms = at.saturating_sub(now), "holds its origin's probe");
                }
                probe_at
            }
            Err(e) => {
                warn!(job_id = %next.id, target = index, origin, error = %e, "origin not marked down: the delivery keeps its schedule");
                None
            }
        }
    }

    /// A delivery to a down origin succeeded: the origin is marked up and every job waiting on it is
    /// due now; their steps are sent at once (the sweep sends any whose message is lost: the store
    /// moved them in the due-index too).
    async fn origin_up(&self, next: &Job, origin: &str, now: u64) {
        let woken = match self
            .store
            .origin_up(origin, &next.owner, now, now + self.settings.sweep_grace_ms)
            .await
        {
            Ok(woken) => woken,
            Err(e) => {
                warn!(job_id = %next.id, origin, error = %e, "origin not marked up: its deliveries wait for the next probe");
                return;
            }
        };
        let mut sent = 0;
        for step in woken
            .into_iter()
            .filter(|s| s.job_id != next.id || s.owner != next.owner)
        {
            // A delivery step calls no provider: nothing to reserve.
            let message = Message::Step {
                step,
                not_before_ms: None,
                hint: Default::default(),
            };
            match self.queue.send(&message, std::time::Duration::ZERO).await {
                Ok(()) => sent += 1,
                Err(e) => {
                    warn!(job_id = %next.id, origin, error = %e, "a woken delivery's step was not sent: the sweep sends it")
                }
            }
        }
        info!(job_id = %next.id, origin, woken = sent, "origin answered again: its waiting deliveries are due now");
    }
}
