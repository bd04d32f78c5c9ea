//! The deliveries a finished job owes, as data and pure rules: who to tell ([`Target`], fixed at
//! submit and stored with the job), how far each delivery got ([`DeliveryState`], stored in the job's
//! record), and the retry schedule: [`plan`], [`next_due`], [`record`], [`redeliver`], [`owed_until`].
//! No I/O: the POST and the bodies are `delivery::send`'s, which imports these words.
//!
//! The webhook follows a schedule measured in hours (Standard Webhooks' by default: immediately, 5 s,
//! 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, each wait ±10 % jitter), independent of the callbacks; the
//! callbacks go strictly in order, each with its own `retry` policy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest wait between two attempts of one target on an exponential policy (callbacks' `retry`).
const MAX_BACKOFF_MS: u64 = 600_000;

/// Standard Webhooks' retry schedule: the wait before each attempt (the first is immediate).
pub const STANDARD_SCHEDULE_MS: [u64; 8] = [
    0, 5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000,
];

/// A scheduled wait varies by this fraction either way, so receivers coming back are not hit at once.
const SCHEDULE_JITTER: f64 = 0.1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// `callbackUrl`: the signed webhook the caller verifies.
    Webhook,
    /// An entry of `callbacks`, with its own headers and retry policy.
    Callback,
}

/// Who to tell when the job ends; fixed at submit and stored with the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub(crate) kind: TargetKind,
    pub(crate) url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) continue_on_failure: bool,
    pub(crate) max_attempts: u32,
    pub(crate) backoff_ms: u64,
    /// The wait before each attempt (`[0, 5 s, 5 min, …]`); when set, it replaces `max_attempts` and
    /// `backoff_ms` (which callbacks' exponential `retry` policy uses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) schedule_ms: Vec<u64>,
}

impl Target {
    pub fn webhook(url: String) -> Self {
        Self {
            kind: TargetKind::Webhook,
            url,
            headers: BTreeMap::new(),
            continue_on_failure: true,
            max_attempts: STANDARD_SCHEDULE_MS.len() as u32,
            backoff_ms: 2_000,
            schedule_ms: STANDARD_SCHEDULE_MS.to_vec(),
        }
    }

    /// Attempts one round may make.
    pub(crate) fn attempts_allowed(&self) -> u32 {
        if self.schedule_ms.is_empty() {
            self.max_attempts
        } else {
            self.schedule_ms.len() as u32
        }
    }

    /// The wait after the `failed`-th failed attempt of a round (1-based), before jitter.
    fn wait_after(&self, failed: u32) -> u64 {
        match self.schedule_ms.get(failed as usize) {
            Some(wait) => *wait,
            None if self.schedule_ms.is_empty() => self
                .backoff_ms
                .saturating_mul(1 << (failed.saturating_sub(1)).min(20))
                .min(MAX_BACKOFF_MS),
            None => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    /// Every attempt failed (or the address was refused): the dead letter, shown on poll.
    Dead,
    /// Not attempted: an earlier callback without `continueOnFailure` died.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    pub target: Target,
    pub status: DeliveryStatus,
    /// Every attempt made, across redeliveries.
    pub attempts: u32,
    /// Attempts in the current round (since the job finished or the last redelivery): the schedule's place.
    #[serde(default)]
    pub round_attempts: u32,
    /// How often it was sent again by `POST /v1/jobs/{id}/deliveries/redeliver`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redeliveries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at_ms: Option<u64>,
    /// When the last attempt ended (the receiver-recovery fast path compares it with its origin's
    /// recovery: `domain/origins.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at_ms: Option<u64>,
    /// The last attempt failed because the origin was down (no answer, 429, 502–504): the delivery may
    /// go before its schedule once the origin answers again (`origins::fast_due`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub waits_origin: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

pub(crate) fn plan(targets: &[Target]) -> Vec<DeliveryState> {
    targets
        .iter()
        .map(|t| DeliveryState {
            target: t.clone(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            round_attempts: 0,
            redeliveries: 0,
            last_status: None,
            last_error: None,
            next_at_ms: None,
            done_at_ms: None,
            last_at_ms: None,
            waits_origin: false,
        })
        .collect()
}

/// The next delivery to attempt and when (the earliest due). The webhook runs on its own schedule; the
/// callbacks go strictly in order, so only the first pending one is a candidate.
pub(crate) fn next_due(states: &[DeliveryState]) -> Option<(usize, u64)> {
    next_due_with(states, |_, _| None)
}

/// [`next_due`] with each candidate's time made earlier where `early` says (the receiver-recovery fast
/// path: `origins::fast_due`); the candidates, and so the callbacks' order, are the same.
pub(crate) fn next_due_with(
    states: &[DeliveryState],
    early: impl Fn(usize, &DeliveryState) -> Option<u64>,
) -> Option<(usize, u64)> {
    let pending = |s: &DeliveryState| s.status == DeliveryStatus::Pending;
    let webhooks = states
        .iter()
        .enumerate()
        .filter(|(_, s)| s.target.kind == TargetKind::Webhook && pending(s));
    let first_callback = states
        .iter()
        .enumerate()
        .find(|(_, s)| s.target.kind == TargetKind::Callback && pending(s));
    webhooks
        .chain(first_callback)
        .map(|(i, s)| {
            let scheduled = s.next_at_ms.unwrap_or(0);
            (i, early(i, s).map_or(scheduled, |at| at.min(scheduled)))
        })
        .min_by_key(|(i, at)| (*at, *i))
}

/// Until when a job's record must be kept for the deliveries it still owes, from `now_ms`: the rest of
/// every pending delivery's round, callbacks one after another (`None` when it owes none).
pub(crate) fn owed_until(states: &[DeliveryState], now_ms: u64) -> Option<u64> {
    let mut webhooks_until = None;
    let mut callbacks_until = now_ms;
    let mut any = false;
    for s in states.iter().filter(|s| s.status == DeliveryStatus::Pending) {
        any = true;
        let start = s.next_at_ms.unwrap_or(now_ms).max(now_ms);
        let rest: u64 = (s.round_attempts + 1..s.target.attempts_allowed())
            .map(|n| s.target.wait_after(n))
            .sum();
        let rest = (rest as f64 * (1.0 + SCHEDULE_JITTER.max(0.2))) as u64;
        match s.target.kind {
            TargetKind::Webhook => webhooks_until = webhooks_until.max(Some(start + rest)),
            TargetKind::Callback => callbacks_until = callbacks_until.max(start) + rest,
        }
    }
    any.then(|| webhooks_until.unwrap_or(0).max(callbacks_until))
}

/// Sends again, now: every dead delivery (and the callbacks its death skipped) starts a new round, and
/// every pending one waiting for its next attempt is due at once. Returns how many deliveries are due.
pub(crate) fn redeliver(states: &mut [DeliveryState], now_ms: u64) -> usize {
    let mut due = 0;
    for s in states.iter_mut() {
        match s.status {
            DeliveryStatus::Dead | DeliveryStatus::Skipped => {
                if s.status == DeliveryStatus::Dead {
                    s.redeliveries += 1;
                }
                s.status = DeliveryStatus::Pending;
                s.round_attempts = 0;
                s.done_at_ms = None;
                s.next_at_ms = Some(now_ms);
                due += 1;
            }
            DeliveryStatus::Pending => {
                s.next_at_ms = Some(now_ms);
                due += 1;
            }
            DeliveryStatus::Delivered => {}
        }
    }
    due
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptReport {
    pub(crate) delivered: bool,
    pub(crate) status: Option<u16>,
    pub(crate) error: Option<String>,
    /// Retrying cannot help (the address is refused): dead at once.
    pub(crate) permanent: bool,
}

impl AttemptReport {
    /// Whether a failed attempt says the origin itself is down (no answer at all, or a gateway or
    /// overload answer), rather than that the receiver refused this one delivery (a 4xx or a 500 it
    /// will answer the same way again): only those mark it down and wait for its recovery
    /// (`origins`).
    pub fn marks_origin_down(&self) -> bool {
        if self.delivered || self.permanent {
            return false;
        }
        match self.status {
            None => true,
            Some(status) => matches!(status, 429 | 502 | 503 | 504),
        }
    }
}

/// Folds one attempt into the states and says what is due next. Failures wait the target's schedule
/// (±10 % jitter from `jitter` ∈ [0, 1)) or, without one, `backoff_ms × 2^(n-1)` (±20 %, at most 10 min);
/// the last allowed failure of a round is the dead letter, and a dead callback without
/// `continueOnFailure` skips the callbacks after it.
pub(crate) fn record(
    states: &mut [DeliveryState],
    index: usize,
    report: &AttemptReport,
    now_ms: u64,
    jitter: f64,
) -> Option<(usize, u64)> {
    let Some(s) = states.get_mut(index) else {
        return next_due(states);
    };
    s.attempts += 1;
    s.round_attempts += 1;
    s.last_status = report.status;
    s.last_error = report.error.as_ref().map(|e| e.chars().take(200).collect());
    s.next_at_ms = None;
    s.last_at_ms = Some(now_ms);
    s.waits_origin = report.marks_origin_down();
    if report.delivered {
        s.status = DeliveryStatus::Delivered;
        s.done_at_ms = Some(now_ms);
    } else if report.permanent || s.round_attempts >= s.target.attempts_allowed() {
        s.status = DeliveryStatus::Dead;
        s.done_at_ms = Some(now_ms);
        if s.target.kind == TargetKind::Callback && !s.target.continue_on_failure {
            for later in states[index + 1..]
                .iter_mut()
                .filter(|l| l.target.kind == TargetKind::Callback)
            {
                later.status = DeliveryStatus::Skipped;
            }
        }
    } else {
        let base = s.target.wait_after(s.round_attempts);
        let (spread, cap) = if s.target.schedule_ms.is_empty() {
            (0.2, MAX_BACKOFF_MS)
        } else {
            (SCHEDULE_JITTER, u64::MAX)
        };
        let factor = 1.0 - spread + 2.0 * spread * jitter.clamp(0.0, 1.0);
        s.next_at_ms = Some(now_ms + ((base as f64 * factor) as u64).min(cap));
    }
    next_due(states)
}

/// Folds an attempt made before the delivery's scheduled time (its origin's probe, or once after the
/// origin recovered): a success is delivered as any; a failure is counted but keeps the delivery's
/// place and time in its schedule, so the schedule still bounds an origin that stays down and the dead
/// letter comes after its last attempt, never sooner.
pub(crate) fn record_early(
    states: &mut [DeliveryState],
    index: usize,
    report: &AttemptReport,
    now_ms: u64,
    jitter: f64,
) -> Option<(usize, u64)> {
    match states.get_mut(index) {
        Some(s) if !report.delivered && !report.permanent => {
            // Only a pending delivery is attempted; anything else is left as it is.
            if s.status == DeliveryStatus::Pending {
                s.attempts += 1;
                s.last_status = report.status;
                s.last_error = report.error.as_ref().map(|e| e.chars().take(200).collect());
                s.last_at_ms = Some(now_ms);
                s.waits_origin = report.marks_origin_down();
            }
            next_due(states)
        }
        _ => record(states, index, report, now_ms, jitter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn callback(url: &str, continue_on_failure: bool, max_attempts: u32) -> Target {
        Target {
            kind: TargetKind::Callback,
            url: url.into(),
            headers: BTreeMap::new(),
            continue_on_failure,
            max_attempts,
            backoff_ms: 1_000,
            schedule_ms: Vec::new(),
        }
    }

    fn failed(status: u16) -> AttemptReport {
        AttemptReport {
            delivered: false,
            status: Some(status),
            error: Some(format!("HTTP {status}")),
            permanent: false,
        }
    }

    const OK: AttemptReport = AttemptReport {
        delivered: true,
        status: Some(200),
        error: None,
        permanent: false,
    };

    #[test]
    fn failures_back_off_with_growing_gaps_then_die() {
        let exponential = Target {
            max_attempts: 5,
            schedule_ms: Vec::new(),
            ..Target::webhook("https://x.example/h".into())
        };
        let mut s = plan(&[exponential]);
        assert_eq!(next_due(&s), Some((0, 0)));
        assert_eq!(record(&mut s, 0, &failed(500), 1_000, 0.5), Some((0, 3_000)));
        assert_eq!(record(&mut s, 0, &failed(500), 3_000, 0.5), Some((0, 7_000)));
        assert_eq!(
            record(&mut s, 0, &failed(500), 7_000, 0.0),
            Some((0, 7_000 + 6_400)),
            "jitter -20 %"
        );
        record(&mut s, 0, &failed(503), 20_000, 0.5);
        assert_eq!(record(&mut s, 0, &failed(503), 40_000, 0.5), None);
        assert_eq!(
            (s[0].status, s[0].attempts, s[0].last_status),
            (DeliveryStatus::Dead, 5, Some(503))
        );
    }

    #[test]
    fn the_webhook_follows_the_standard_schedule_for_about_a_day_then_dies() {
        let mut s = plan(&[Target::webhook("https://x.example/h".into())]);
        let mut now = 1_000_000;
        let mut waits = Vec::new();
        while let Some((0, at)) = next_due(&s) {
            now = at.max(now);
            if let Some(next) = record(&mut s, 0, &failed(503), now, 0.5) {
                waits.push(next.1 - now);
            }
        }
        assert_eq!(
            waits,
            STANDARD_SCHEDULE_MS[1..],
            "no jitter at the middle of the spread"
        );
        assert_eq!((s[0].status, s[0].attempts), (DeliveryStatus::Dead, 8));
        let total: u64 = waits.iter().sum();
        assert_eq!(total, 99_305_000, "27 h 35 min 5 s in all");

        let mut j = plan(&[Target::webhook("https://x.example/h".into())]);
        record(&mut j, 0, &failed(500), 0, 0.0);
        record(&mut j, 0, &failed(500), 5_000, 0.0);
        assert_eq!(j[0].next_at_ms, Some(5_000 + 270_000), "-10 % jitter on 5 min");
        record(&mut j, 0, &failed(500), 0, 0.999_999);
        assert!(j[0].next_at_ms.unwrap() > 1_979_000, "+10 % on 30 min");
    }

    #[test]
    fn a_redelivered_dead_letter_starts_a_new_round_and_revives_what_it_skipped() {
        let mut s = plan(&[
            Target::webhook("https://x.example/h".into()),
            callback("https://a.example", false, 1),
            callback("https://b.example", true, 1),
        ]);
        assert_eq!(next_due(&s), Some((0, 0)), "the webhook first at equal times");
        // The webhook's wait does not hold up the callbacks.
        assert_eq!(record(&mut s, 0, &failed(500), 10, 0.5), Some((1, 0)));
        assert_eq!(record(&mut s, 1, &failed(500), 20, 0.5), Some((0, 5_010)));
        assert_eq!(s[2].status, DeliveryStatus::Skipped);
        assert_eq!(redeliver(&mut s, 100), 3);
        assert_eq!(
            s.iter()
                .map(|x| (x.status, x.round_attempts, x.next_at_ms))
                .collect::<Vec<_>>(),
            [
                (DeliveryStatus::Pending, 1, Some(100)),
                (DeliveryStatus::Pending, 0, Some(100)),
                (DeliveryStatus::Pending, 0, Some(100))
            ]
        );
        assert_eq!((s[1].redeliveries, s[1].attempts), (1, 1));
        assert_eq!(record(&mut s, 1, &OK, 110, 0.5), Some((0, 100)));
        assert_eq!(record(&mut s, 0, &OK, 120, 0.5), Some((2, 100)));
        assert_eq!(record(&mut s, 2, &OK, 130, 0.5), None);
        assert_eq!(owed_until(&s, 130), None);
        assert_eq!(redeliver(&mut s, 200), 0, "nothing left to send");
    }

    #[test]
    fn the_record_is_kept_for_the_rest_of_every_round() {
        let mut s = plan(&[
            Target::webhook("https://x.example/h".into()),
            callback("https://a.example", true, 3),
        ]);
        let day = owed_until(&s, 0).unwrap();
        assert!((99_305_000..=99_305_000 * 13 / 10).contains(&day), "{day}");
        record(&mut s, 0, &OK, 0, 0.5);
        // The callback: two waits of 1 s and 2 s (+20 %).
        assert_eq!(owed_until(&s, 0), Some(3_600));
    }

    #[test]
    fn callbacks_go_in_order_and_stop_at_a_failure_unless_told_to_continue() {
        let mut s = plan(&[
            callback("https://a.example", false, 1),
            callback("https://b.example", true, 1),
            callback("https://c.example", true, 1),
        ]);
        assert_eq!(record(&mut s, 0, &failed(500), 10, 0.5), None);
        assert_eq!(
            s.iter().map(|x| x.status).collect::<Vec<_>>(),
            [DeliveryStatus::Dead, DeliveryStatus::Skipped, DeliveryStatus::Skipped]
        );

        let mut s = plan(&[
            callback("https://a.example", true, 1),
            callback("https://b.example", true, 2),
        ]);
        assert_eq!(record(&mut s, 0, &failed(500), 10, 0.5), Some((1, 0)));
        assert_eq!(record(&mut s, 1, &OK, 20, 0.5), None);
        assert_eq!(s[1].status, DeliveryStatus::Delivered);
    }

    #[test]
    fn an_early_attempt_keeps_the_delivery_s_place_in_its_schedule() {
        let mut s = plan(&[Target::webhook("https://x.example/h".into())]);
        record(&mut s, 0, &failed(503), 0, 0.5);
        record(&mut s, 0, &failed(503), 5_000, 0.5);
        assert_eq!((s[0].round_attempts, s[0].next_at_ms), (2, Some(305_000)));
        // Probes (or a retry after a recovery) that fail: counted, the schedule untouched.
        for at in [10_000, 15_000, 25_000] {
            assert_eq!(record_early(&mut s, 0, &failed(503), at, 0.5), Some((0, 305_000)));
        }
        assert_eq!(
            (s[0].attempts, s[0].round_attempts, s[0].last_at_ms, s[0].waits_origin),
            (5, 2, Some(25_000), true)
        );
        // The dead letter still comes after the schedule's last attempt, not sooner.
        let mut now = 305_000;
        while let Some((0, at)) = next_due(&s) {
            now = at.max(now);
            record(&mut s, 0, &failed(503), now, 0.5);
            record_early(&mut s, 0, &failed(503), now + 1, 0.5);
        }
        assert_eq!((s[0].status, s[0].round_attempts), (DeliveryStatus::Dead, 8));
        // A success early is delivered as any.
        let mut s = plan(&[Target::webhook("https://x.example/h".into())]);
        record(&mut s, 0, &failed(500), 0, 0.5);
        assert!(!s[0].waits_origin, "a 500 is the receiver's answer, not an origin down");
        assert_eq!(record_early(&mut s, 0, &OK, 1_000, 0.5), None);
        assert_eq!((s[0].status, s[0].round_attempts), (DeliveryStatus::Delivered, 2));
    }

    #[test]
    fn a_refused_address_dies_at_once() {
        let mut s = plan(&[Target::webhook("https://x.example".into())]);
        let refused = AttemptReport {
            delivered: false,
            status: None,
            error: Some("loopback address".into()),
            permanent: true,
        };
        assert_eq!(record(&mut s, 0, &refused, 5, 0.5), None);
        assert_eq!((s[0].status, s[0].attempts), (DeliveryStatus::Dead, 1));
    }
}
