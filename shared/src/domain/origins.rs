//! The receiver-recovery fast path, as pure rules: what a delivery's origin is, which failures say the
//! origin is down, the state every instance shares about a failing origin ([`OriginState`], kept in the
//! store beside the provider states), when its one probe goes next ([`probe_delay_ms`]) and when a
//! waiting delivery may go before its schedule ([`fast_due`]).
//!
//! Why: a delivery that fails waits out its schedule (0, 5 s, 5 min, 30 min, …), so a receiver down for
//! 30 s got its webhooks 5 minutes later although it was answering again within seconds. Now one
//! delivery per failing origin (the probe holder) is retried on a short back-off, and any success to the
//! origin (the probe's or another delivery's) makes every delivery waiting on it due at once. The
//! schedule still bounds an origin that stays down: an attempt made early (a probe, or once after a
//! recovery) does not use up a place in the schedule, and the dead letter comes after the schedule's
//! last attempt as before.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::targets::{DeliveryState, DeliveryStatus};

/// The first probe of a failing origin goes this long after the failure that marked it down, and every
/// probe in the outage's first minute as long after the last.
pub const PROBE_FIRST_MS: u64 = 5_000;
/// The outage's first minute: probes every [`PROBE_FIRST_MS`].
pub const PROBE_FIRST_MINUTE_MS: u64 = 60_000;
/// Probes' gap from the first minute of an outage until [`PROBE_STEADY_AFTER_MS`].
pub const PROBE_EARLY_MS: u64 = 10_000;
/// From this long into an outage the probes back off: a tenth of the outage's length so far.
pub const PROBE_STEADY_AFTER_MS: u64 = 180_000;
/// The longest gap between two probes: an origin down for the whole schedule (27½ h) costs about 160
/// probes, not one every few minutes (a gap past the engine's park threshold waits in the due-index,
/// like any long wait).
pub const PROBE_MAX_MS: u64 = 900_000;
/// A probe holder keeps the probe this long past its next probe's time; a holder that does not come
/// back by then (its job purged, its step lost) loses it to the next delivery that fails there.
pub const PROBE_LEASE_MS: u64 = 60_000;
/// Most origins the store tracks as down at once; past that, a newly failing origin's deliveries keep
/// their schedule only (the states are read by every claim: they must stay small).
pub const MAX_ORIGINS: usize = 64;
/// How long an origin's "seen up" mark is kept after its recovery: every delivery it woke has run by
/// then (their steps are sent at once), and the mark only lets a delivery that failed before it go early.
pub const UP_MARK_KEPT_MS: u64 = 600_000;
/// Where a failing origin's state is kept in the shared provider states (`st:pv`): this prefix and the
/// origin. Names starting with `~` are never providers.
pub const ORIGIN_PREFIX: &str = "~o:";

/// What every instance knows about an origin that failed: stored as `~o:<origin>` in the provider
/// states (Upstash: `st:pv`, read by every claim's existing `MGET`, so knowing costs no command).
/// Short field names: the states travel with every claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginState {
    /// Down since (epoch ms); 0 once a success was seen.
    #[serde(default, rename = "d")]
    pub down_since_ms: u64,
    /// The probe holder: `<job id>/<delivery index>` (empty: none).
    #[serde(default, rename = "p", skip_serializing_if = "String::is_empty")]
    pub holder: String,
    /// When the holder's next probe goes (epoch ms).
    #[serde(default, rename = "pa")]
    pub probe_at_ms: u64,
    /// The holder keeps the probe until then; past it the next failing delivery takes it.
    #[serde(default, rename = "pu")]
    pub probe_until_ms: u64,
    /// Probes that failed in this outage (the back-off's count).
    #[serde(default, rename = "n")]
    pub probes_failed: u32,
    /// When a delivery to the origin last succeeded after it was down (epoch ms; 0: never).
    #[serde(default, rename = "u")]
    pub up_at_ms: u64,
}

impl OriginState {
    pub fn is_down(&self) -> bool {
        self.down_since_ms > 0
    }
}

/// The origin (`scheme://host:port`, the port always written) of a delivery URL; `None` when it does not
/// parse (such a target was refused at submit). Never the path, the query or any credentials.
pub fn origin_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    let port = parsed.port_or_known_default()?;
    Some(format!("{}://{host}:{port}", parsed.scheme()))
}

/// The wait before a failing origin's next probe: 5 s in the outage's first minute, 10 s until the
/// third, then a tenth of the outage so far (at most [`PROBE_MAX_MS`]). `down_for_ms`: how long the
/// origin has been down; `probes_failed`: the outage's failed probes.
pub fn probe_delay_ms(probes_failed: u32, down_for_ms: u64) -> u64 {
    if down_for_ms < PROBE_FIRST_MINUTE_MS || probes_failed == 0 {
        PROBE_FIRST_MS
    } else if down_for_ms < PROBE_STEADY_AFTER_MS {
        PROBE_EARLY_MS
    } else {
        (down_for_ms / 10).clamp(PROBE_EARLY_MS, PROBE_MAX_MS)
    }
}

/// What `Store::origin_down` does to the origins' states (scripts/origin_down.lua mirrors it rule for
/// rule; the store contract suite holds the two together): drops "seen up" marks older than
/// [`UP_MARK_KEPT_MS`], marks `origin` down (a new outage: its probe count starts afresh), then the
/// probe: a holder's failed probe moves its probe on by the back-off; a waiting delivery takes the probe
/// when nobody holds it or its holder's lease lapsed; a dead one (`waits` false) releases it. Answers
/// whether the origin is tracked (false: [`MAX_ORIGINS`] are down already, nothing changed) and the
/// probe's time when `holder` holds it.
pub fn mark_down(
    all: &mut HashMap<String, OriginState>,
    origin: &str,
    holder: &str,
    waits: bool,
    probed: bool,
    now_ms: u64,
) -> (bool, Option<u64>) {
    all.retain(|_, o| o.is_down() || o.up_at_ms + UP_MARK_KEPT_MS >= now_ms);
    if !all.contains_key(origin) && all.values().filter(|o| o.is_down()).count() >= MAX_ORIGINS {
        return (false, None);
    }
    let o = all.entry(origin.to_string()).or_default();
    if !o.is_down() {
        *o = OriginState {
            down_since_ms: now_ms,
            up_at_ms: o.up_at_ms,
            ..OriginState::default()
        };
    }
    let mut holds = o.holder == holder;
    if holds && probed {
        o.probes_failed += 1;
    } else if !holds && waits && (o.holder.is_empty() || o.probe_until_ms <= now_ms) {
        o.holder = holder.to_string();
        holds = true;
    }
    if holds && !waits {
        o.holder.clear();
        o.probe_at_ms = 0;
        o.probe_until_ms = 0;
        return (true, None);
    }
    if !holds {
        return (true, None);
    }
    o.probe_at_ms = now_ms + probe_delay_ms(o.probes_failed, now_ms.saturating_sub(o.down_since_ms));
    o.probe_until_ms = o.probe_at_ms + PROBE_LEASE_MS;
    (true, Some(o.probe_at_ms))
}

/// What `Store::origin_up` does to the origins' states (scripts/origin_up.lua mirrors it): a down
/// origin becomes "seen up at `now_ms`", its probe gone. Answers whether it was down (only then are
/// its waiting deliveries woken).
pub fn mark_up(all: &mut HashMap<String, OriginState>, origin: &str, now_ms: u64) -> bool {
    match all.get_mut(origin) {
        Some(o) if o.is_down() => {
            *o = OriginState {
                up_at_ms: now_ms,
                ..OriginState::default()
            };
            true
        }
        _ => false,
    }
}

/// The name of a job's delivery as a probe holder.
pub fn holder_of(job_id: &str, index: usize) -> String {
    format!("{job_id}/{index}")
}

/// When a waiting delivery may go before its schedule's time (`None`: it keeps its schedule): at once
/// when its origin was seen up after its last attempt failed for the origin's sake (once per recovery:
/// the attempt moves its last attempt past the mark), or at the probe's time when it holds its origin's
/// probe. `holder`: the delivery's name ([`holder_of`]).
pub fn fast_due(delivery: &DeliveryState, origin: Option<&OriginState>, holder: &str) -> Option<u64> {
    let origin = origin?;
    if delivery.status != DeliveryStatus::Pending || !delivery.waits_origin {
        return None;
    }
    let failed_at = delivery.last_at_ms?;
    if origin.up_at_ms > failed_at {
        return Some(origin.up_at_ms);
    }
    (origin.is_down() && origin.holder == holder && origin.probe_at_ms > 0).then_some(origin.probe_at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::targets::{plan, AttemptReport, Target};
    use proptest::prelude::*;

    fn failed_at(at: u64) -> DeliveryState {
        let mut s = plan(&[Target::webhook("https://x.example/h".into())]).remove(0);
        s.attempts = 1;
        s.round_attempts = 1;
        s.last_at_ms = Some(at);
        s.waits_origin = true;
        s.next_at_ms = Some(at + 300_000);
        s
    }

    #[test]
    fn the_origin_is_scheme_host_and_port_and_nothing_else() {
        assert_eq!(
            origin_of("https://user:pw@hooks.example.com/a?token=x").as_deref(),
            Some("https://hooks.example.com:443")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080/h").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(origin_of("not a url"), None);
    }

    #[test]
    fn only_an_origin_that_does_not_answer_or_is_overloaded_is_down() {
        let report = |status: Option<u16>| AttemptReport {
            delivered: false,
            status,
            error: Some("x".into()),
            permanent: false,
        };
        assert!(report(None).marks_origin_down());
        for status in [429, 502, 503, 504] {
            assert!(report(Some(status)).marks_origin_down(), "{status}");
        }
        for status in [400, 401, 404, 410, 500] {
            assert!(!report(Some(status)).marks_origin_down(), "{status}");
        }
        let refused = AttemptReport {
            permanent: true,
            ..report(None)
        };
        assert!(!refused.marks_origin_down());
    }

    #[test]
    fn probes_go_every_5_s_then_10_s_then_back_off() {
        assert_eq!(probe_delay_ms(0, 0), 5_000);
        assert_eq!(probe_delay_ms(5, 55_000), 5_000);
        assert_eq!(probe_delay_ms(12, 60_000), 10_000);
        assert_eq!(probe_delay_ms(20, 179_000), 10_000);
        assert_eq!(probe_delay_ms(25, 300_000), 30_000);
        assert_eq!(probe_delay_ms(40, 3_600_000), 360_000);
        assert_eq!(probe_delay_ms(90, 86_400_000), PROBE_MAX_MS);
    }

    #[test]
    fn a_delivery_goes_early_once_per_recovery_or_as_the_probe() {
        let s = failed_at(1_000);
        assert_eq!(fast_due(&s, None, "j/0"), None, "no origin state: the schedule");
        let up = OriginState {
            up_at_ms: 2_000,
            ..OriginState::default()
        };
        assert_eq!(fast_due(&s, Some(&up), "j/0"), Some(2_000), "seen up after it failed");
        let retried = failed_at(2_500);
        assert_eq!(fast_due(&retried, Some(&up), "j/0"), None, "once per recovery");
        let down = OriginState {
            down_since_ms: 900,
            holder: "j/0".into(),
            probe_at_ms: 6_000,
            probe_until_ms: 66_000,
            ..OriginState::default()
        };
        assert_eq!(fast_due(&s, Some(&down), "j/0"), Some(6_000), "the probe holder");
        assert_eq!(fast_due(&s, Some(&down), "k/0"), None, "another delivery waits");
        let refused = DeliveryState {
            waits_origin: false,
            ..failed_at(1_000)
        };
        assert_eq!(fast_due(&refused, Some(&up), "j/0"), None, "a 4xx keeps its schedule");
    }

    #[test]
    fn one_delivery_holds_the_probe_and_a_success_ends_the_outage() {
        let mut all = HashMap::new();
        let o = "http://h:80";
        assert_eq!(mark_down(&mut all, o, "a/0", true, false, 1_000), (true, Some(6_000)));
        assert_eq!(
            mark_down(&mut all, o, "b/0", true, false, 2_000),
            (true, None),
            "a holds it"
        );
        assert_eq!(mark_down(&mut all, o, "a/0", true, true, 6_000), (true, Some(11_000)));
        assert_eq!(all[o].probes_failed, 1);
        // The holder's lease lapses: the next failing delivery takes the probe.
        assert_eq!(mark_down(&mut all, o, "b/0", true, false, 80_000), (true, Some(90_000)));
        // A dead holder releases it.
        assert_eq!(mark_down(&mut all, o, "b/0", false, false, 81_000), (true, None));
        assert!(all[o].holder.is_empty() && all[o].is_down());
        assert!(mark_up(&mut all, o, 90_000));
        assert_eq!(
            all[o],
            OriginState {
                up_at_ms: 90_000,
                ..OriginState::default()
            }
        );
        assert!(!mark_up(&mut all, o, 91_000), "once");
        // A new outage starts its probes afresh; an old up mark goes.
        assert_eq!(
            mark_down(&mut all, o, "c/0", true, false, 100_000),
            (true, Some(105_000))
        );
        mark_up(&mut all, "http://other:80", 0);
        all.insert(
            "http://old:80".into(),
            OriginState {
                up_at_ms: 1,
                ..OriginState::default()
            },
        );
        mark_down(&mut all, o, "c/0", true, true, UP_MARK_KEPT_MS + 2);
        assert!(!all.contains_key("http://old:80"));
        for i in 0..MAX_ORIGINS {
            mark_down(
                &mut all,
                &format!("http://h{i}:80"),
                "x/0",
                true,
                false,
                UP_MARK_KEPT_MS + 3,
            );
        }
        assert_eq!(
            mark_down(
                &mut all,
                "http://one-too-many:80",
                "y/0",
                true,
                false,
                UP_MARK_KEPT_MS + 4
            ),
            (false, None),
            "at most {MAX_ORIGINS} down origins (o and the first {} others)",
            MAX_ORIGINS - 1
        );
    }

    proptest! {
        /// The probe's gap never shrinks as an outage goes on, stays within [5 s, the cap], and is at
        /// most 10 s for the first three minutes.
        #[test]
        fn the_probe_back_off_is_bounded_and_never_shrinks(n in 1u32..10_000, t in 0u64..86_400_000, dt in 0u64..86_400_000) {
            let now = probe_delay_ms(n, t);
            let later = probe_delay_ms(n + 1, t + dt);
            prop_assert!((PROBE_FIRST_MS..=PROBE_MAX_MS).contains(&now));
            prop_assert!(later >= now);
            if t < PROBE_STEADY_AFTER_MS {
                prop_assert!(now <= PROBE_EARLY_MS);
            }
        }

        /// An early attempt is only ever due once per recovery mark: after it (its last attempt at or
        /// past the mark), the delivery waits its schedule or the next probe.
        #[test]
        fn a_recovery_lets_each_delivery_go_once(failed in 1u64..1_000_000, up in 1u64..1_000_000, retry in 0u64..1_000_000) {
            let origin = OriginState { up_at_ms: up, ..OriginState::default() };
            let due = fast_due(&failed_at(failed), Some(&origin), "j/0");
            prop_assert_eq!(due.is_some(), up > failed);
            let after = failed_at(up.max(failed) + retry);
            prop_assert_eq!(fast_due(&after, Some(&origin), "j/0"), None);
        }
    }
}
