//! The due-index's sweeper. Every job with work left is in the store's due-index, scored
//! by when its next step is due; the scripts the routes and steps already run keep it current (no
//! extra request). One sweeper re-queues what is due: a parked wait whose time has come, a step
//! whose message was lost or never sent, a lease that lapsed (a step that died, a claim that landed
//! after its caller gave up). Fencing drops the duplicates this may send.
//!
//! The sweeper is a chain of `Message::Sweep` on the step queue (SQS on AWS, the in-process queue in
//! `stepper-local`): each sweep sends itself on to the next due time while the index holds jobs, and
//! ends when it is empty, so an idle store costs no request and no invocation. A create that finds no
//! live sweeper arms one (in the same script) and the submit route starts it.

use std::time::Duration;

use tracing::{info, warn};

use super::step::{Engine, StepError, StepOutcome};
use crate::domain::job::{new_gen, Job};
use crate::domain::message::{Message, MAX_DELAY};
use crate::ports::{Enlist, SweepRequest, Swept};

/// Most steps one sweep re-queues; more due ones are swept again at once.
pub(crate) const SWEEP_LIMIT: usize = 200;

/// When a job's next step is due in the index, or `None` when nothing is left to do. A step that a
/// queued message will carry is due at its start plus `grace` (the sweeper only steps in when the
/// message is late); a wait longer than `park_after_ms` is parked: no message, due exactly then.
pub(crate) fn due_at(job: &Job, now_ms: u64, grace_ms: u64, park_after_ms: u64) -> Option<u64> {
    if !job.has_work_left() {
        return None;
    }
    let at = job.next_attempt_at_ms.unwrap_or(now_ms).max(now_ms);
    if at - now_ms > park_after_ms {
        Some(at)
    } else {
        Some(at + grace_ms)
    }
}

impl Engine {
    /// The job's next due-index score.
    pub(crate) fn due_for(&self, job: &Job) -> Option<u64> {
        due_at(
            job,
            self.clock.now_ms(),
            self.settings.sweep_grace_ms,
            self.settings.park_after_ms,
        )
    }

    /// Whether the job's next step waits long enough to be parked instead of queued.
    pub(super) fn parks(&self, delay_ms: u64) -> bool {
        delay_ms > self.settings.park_after_ms
    }

    /// How a new job enters the due-index, with a fresh sweeper token in case none is alive.
    pub fn enlist(&self) -> Enlist {
        Enlist {
            due_at_ms: self.clock.now_ms() + self.settings.sweep_grace_ms,
            sweeper_token: new_gen(),
            // Short until the first sweep renews it: an arm whose message was never sent lapses soon.
            sweeper_life: Duration::from_millis(self.settings.sweep_grace_ms * 2),
        }
    }

    /// Starts the sweeper chain a create armed: its first sweep comes after one grace period.
    pub(crate) async fn start_sweeper(&self, token: String) -> Result<(), StepError> {
        let delay = Duration::from_millis(self.settings.sweep_grace_ms);
        self.queue.send(&Message::Sweep { token, round: 1 }, delay).await?;
        Ok(())
    }

    /// After a create whose answer was lost (an error or a timeout: the store may have written the
    /// job, and armed a sweeper whose first message nobody sent), sends a sweep that takes the
    /// sweeper over one grace later (round 0). Sweeping an empty index just stops, so a needless
    /// rescue costs one message and one command. Best effort: the queue may be down too.
    pub(crate) async fn rescue_sweeper(&self) {
        let message = Message::Sweep {
            token: new_gen(),
            round: 0,
        };
        let delay = Duration::from_millis(self.settings.sweep_grace_ms);
        if let Err(e) = self.queue.send(&message, delay).await {
            warn!(error = %e, "could not send a rescue sweep after a failed create");
        }
    }

    /// Takes the sweeper over and sweeps now (a process start on a persistent store, the manual
    /// redrive): whatever chain was alive before stops at its next sweep.
    pub async fn take_over_sweeper(&self) -> Result<StepOutcome, StepError> {
        self.sweep(&new_gen(), 0, true).await
    }

    /// One sweep: re-queues the due steps, then sends the sweep on to the next due time (at most
    /// SQS's longest delay, at least one grace period apart) while the index holds jobs.
    pub async fn sweep(&self, token: &str, round: u64, take_over: bool) -> Result<StepOutcome, StepError> {
        let now = self.clock.now_ms();
        let grace = self.settings.sweep_grace_ms;
        let swept = self
            .store
            .sweep(&SweepRequest {
                token,
                round,
                take_over,
                now_ms: now,
                limit: SWEEP_LIMIT,
                requeue_at_ms: now + grace,
                token_life: MAX_DELAY + Duration::from_millis(grace * 2),
            })
            .await?;
        let Swept::Due {
            steps,
            left,
            next_due_ms,
            next_round,
            stranded,
        } = swept
        else {
            return Ok(StepOutcome::Dropped("another sweeper is alive"));
        };
        // The sweep counted them anyway: the gauge costs no command.
        crate::ports::metrics::queue_size(left);
        for step in &steps {
            let message = Message::Step {
                step: step.clone(),
                not_before_ms: None,
                hint: Default::default(),
            };
            self.queue.send(&message, Duration::ZERO).await?;
        }
        if !steps.is_empty() {
            info!(requeued = steps.len(), stranded, left, "sweep re-queued due steps");
        }
        if stranded > 0 {
            // The sweeper is one chain across instances: this sweep, and no other, found them.
            self.raise(vec![crate::domain::alert::Alert {
                incident: crate::domain::alert::Incident::JobsStranded { count: stranded },
                suppressed: 0,
                at_ms: now,
            }])
            .await;
        }
        if left > 0 {
            let delay_ms = if steps.len() >= SWEEP_LIMIT {
                0
            } else {
                next_due_ms
                    .unwrap_or(now)
                    .saturating_sub(now)
                    .clamp(grace, MAX_DELAY.as_millis() as u64)
            };
            let again = Message::Sweep {
                token: token.to_string(),
                round: next_round,
            };
            if let Err(e) = self.queue.send(&again, Duration::from_millis(delay_ms)).await {
                // This round is spent, so a retry of this message would stop: the chain ends here, its
                // key lapses, and the next submit (or the manual redrive) starts a new one.
                warn!(error = %e, "could not send the next sweep: the sweeper stops until the next submit");
                return Ok(StepOutcome::Dropped("the next sweep could not be sent"));
            }
        }
        Ok(StepOutcome::Swept {
            requeued: steps.len(),
            left,
        })
    }

    /// Handles one queued message (both queues call this).
    pub async fn handle(&self, message: &Message, receive_count: u32) -> Result<StepOutcome, StepError> {
        match message {
            Message::Step {
                step,
                not_before_ms,
                hint,
            } => {
                crate::ports::metrics::in_route("step", self.run_step(step, *not_before_ms, hint, receive_count)).await
            }
            // A sweep message received again came back because its sweep failed on our side (a
            // store timeout), and that sweep may have landed and spent its round: it takes the
            // sweeper over rather than stop, so the chain survives. Were it a queue's duplicate
            // instead, the two chains carry the same next round and the later one stops.
            // Round 0 is a rescue (`rescue_sweeper`): it takes the sweeper over too.
            Message::Sweep { token, round } => {
                let take_over = receive_count > 1 || *round == 0;
                crate::ports::metrics::in_route("sweep", self.sweep(token, *round, take_over)).await
            }
            Message::Alert { alert, sink, attempt } => {
                Ok(crate::ports::metrics::in_route("alert", self.send_alert(alert, *sink, *attempt)).await)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn waiting_until(at: u64) -> Job {
        serde_json::from_value(serde_json::json!({
            "id": "0123456789abcdef0123456789abcdef", "owner": "o", "gen": "g", "seq": 2,
            "state": "waiting_for_retry", "created_at_ms": 0, "deadline_ms": 1u64 << 50,
            "next_attempt_at_ms": at, "expires_at_ms": 1u64 << 50,
            "spec": {"kind": "generic", "messages": [], "format": {"mode": "text"}, "max_tokens": 10}
        }))
        .unwrap()
    }

    proptest! {
        /// A due score is never in the past; a parked wait is due exactly at its time, a queued one
        /// a grace after it; a finished job leaves the index.
        #[test]
        fn due_scores(now in 0u64..1 << 40, wait in 0u64..1 << 30, grace in 1u64..100_000, park in 1u64..1_000_000) {
            let mut job = waiting_until(now + wait);
            let due = due_at(&job, now, grace, park).unwrap();
            prop_assert!(due >= now);
            if wait > park { prop_assert_eq!(due, now + wait) } else { prop_assert_eq!(due, now + wait + grace) }
            job.state = crate::domain::job::JobState::Succeeded;
            prop_assert_eq!(due_at(&job, now, grace, park), None);
        }
    }
}
