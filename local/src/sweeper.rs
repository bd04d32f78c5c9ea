//! Every instance recovers the others' work. The due-index's sweeper is one chain of messages, and in
//! `stepper-local` those messages live in one process's in-process queue: when that process dies, the
//! chain dies with it, and the key that says a chain is alive keeps the others from arming a new one
//! until it lapses. So each instance on a shared store takes the sweeper over on a timer
//! (`SWEEP_INTERVAL_SECONDS`) while the store has work: a dead instance's jobs (queued in its memory,
//! or leased by its steps) are swept by a survivor within their lease plus one interval. Taking over a
//! live chain is harmless: that chain stops at its next message and this one goes on.
//!
//! What it costs: one sweep script per instance per interval while the due-index holds jobs. After a
//! sweep that found the index empty, the instance backs off (doubling, up to [`IDLE_CEILING`]) until it
//! serves a request that may have made work (anything but `/health`, `/ready` and `/metrics`): an idle
//! store costs each instance one sweep per [`IDLE_CEILING`], not one per interval.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shared::engine::{Engine, StepOutcome};
use tokio::time::Instant;
use tracing::{debug, warn};

/// The longest wait between two sweeps of an instance that found the index empty and served nothing
/// since: the sweeper's own message delay limit (15 min).
pub(crate) const IDLE_CEILING: Duration = Duration::from_secs(15 * 60);

/// Requests served since the last sweep that may have made work: set by the connection layer, read and
/// cleared here. Costs one relaxed store per request.
#[derive(Default)]
pub(crate) struct Activity(AtomicBool);

impl Activity {
    pub(crate) fn saw(&self, path: &str) {
        if !matches!(path, "/health" | "/ready" | "/metrics") {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

/// When the next sweep is due: every interval while there is work, backing off after an empty sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    interval: Duration,
    wait: Duration,
}

impl Backoff {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            wait: interval,
        }
    }

    /// After a sweep: `Some(left)` jobs still in the index, `None` when the sweep failed.
    pub(crate) fn after(&mut self, left: Option<u64>) {
        self.wait = match left {
            Some(0) => (self.wait * 2).min(IDLE_CEILING.max(self.interval)),
            _ => self.interval,
        };
    }

    /// A request that may have made work: sweep again at the next interval.
    pub(crate) fn woken(&mut self) {
        self.wait = self.interval;
    }

    pub(crate) fn wait(&self) -> Duration {
        self.wait
    }
}

/// Takes the sweeper over every `interval` (or less often while the index is empty) until `stop`
/// completes; the first one an interval after the start, which took it over already.
pub(crate) async fn run(
    engine: Engine,
    interval: Duration,
    activity: Arc<Activity>,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    let mut backoff = Backoff::new(interval);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut stop => return,
        }
        if activity.take() {
            backoff.woken();
        }
        if last.elapsed() + Duration::from_millis(5) < backoff.wait() {
            continue;
        }
        last = Instant::now();
        let left = match engine.take_over_sweeper().await {
            Ok(StepOutcome::Swept { requeued, left }) => {
                debug!(requeued, left, "takeover sweep");
                Some(left)
            }
            Ok(other) => {
                debug!(outcome = ?other, "takeover sweep");
                None
            }
            Err(e) => {
                warn!(error = %e, "takeover sweep failed; trying again at the next interval");
                None
            }
        };
        backoff.after(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_to_the_ceiling_while_empty_and_returns_to_the_interval_on_work_or_activity() {
        let mut b = Backoff::new(Duration::from_secs(30));
        assert_eq!(b.wait(), Duration::from_secs(30));
        b.after(Some(0));
        assert_eq!(b.wait(), Duration::from_secs(60));
        for _ in 0..10 {
            b.after(Some(0));
        }
        assert_eq!(b.wait(), IDLE_CEILING);
        b.after(Some(3));
        assert_eq!(b.wait(), Duration::from_secs(30));
        b.after(Some(0));
        b.woken();
        assert_eq!(b.wait(), Duration::from_secs(30));
        b.after(None);
        assert_eq!(b.wait(), Duration::from_secs(30), "a failed sweep is tried again soon");
        let activity = Activity::default();
        activity.saw("/health");
        activity.saw("/metrics");
        assert!(!activity.take(), "health checks and scrapes make no work");
        activity.saw("/v1/generate");
        assert!(activity.take());
        assert!(!activity.take(), "cleared when read");
    }
}
