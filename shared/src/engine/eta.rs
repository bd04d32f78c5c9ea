//! The ETA of an unfinished job: a pure function of the provider chain's shared state,
//! the job's place in the due-index and the time. It does no I/O and reads no clock, so it is
//! property-tested (see the tests below), like [`decide`](super::decide).
//!
//! **The rule.** The jobs due ahead of this one are served first, in order, then this one. Each is
//! served as [`decide`](super::decide::decide) would serve it: by the first provider of the chain (in
//! configuration order) that may be called at that instant, or, when none may, by the first that
//! frees up. A provider may be called once its cooldown and open circuit are over and while its
//! configured `rpm` (per minute) and `rpd` (per quota day, on its reset clock) leave room; every call
//! is counted in the minute and day it ends in, as `ProviderState::apply` counts it, so the windows roll
//! and reset exactly as the shared state will. A call takes the provider's recent latency (its moving
//! average in the shared state; a provider never timed takes the mean of those that were, or
//! [`UNKNOWN_LATENCY_MS`]), and at most `concurrency` calls run at once (steps are parallel up to the
//! queue's concurrency: the worker pool, the step function's maximum concurrency). The job itself
//! only uses the providers it has not spent (a hard failure, or the policy's count of soft ones) and
//! starts no earlier than its own next attempt; a job whose step is running now has nobody ahead.
//! **Turns.** Where a provider's minute is used up, jobs book their tenant's turns on it
//! (`quota::ProviderState::book`): a job that has not waited yet (no next attempt of its own) whose tenant
//! holds turns on a provider is served there no earlier than its tenant's next turn, however few jobs
//! the due-index holds ahead of it (its tenant's earlier jobs hold the turns before it, parked where
//! the index's order does not show them), and the jobs due after it in the index are not counted as
//! going first (the turns booked before its own are those); a job that waits already holds its turn
//! as its next attempt.
//! The answer is when this job's call ends — the latest end it would have at any place in line up to
//! its own, so that more jobs ahead never give a sooner answer (a place may get a faster provider than
//! the one before it) — never before `now` and never after the job's deadline (by then it has ended
//! one way or another); `None` when no provider of the chain can serve it (none
//! configured, all disabled or spent for it): the job is about to give up and no estimate is honest.
//!
//! What it cannot know is in docs/api.md ("What the ETA cannot know"): a quota the provider never
//! published, jobs submitted later but due earlier, a provider failing afresh, tokens-per-minute
//! limits, the time deliveries take, the store's and the engine's clocks disagreeing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::decide::{job_failures, Candidate, StepPolicy};
use crate::domain::job::Job;
use crate::domain::quota::{ProviderLimits, ProviderState};

const MINUTE_MS: u64 = 60_000;

/// The latency assumed for a provider when no provider of the chain has been timed yet.
pub(crate) const UNKNOWN_LATENCY_MS: u64 = 2_000;

/// Most jobs ahead the estimate serves one by one. Beyond, the line keeps the pace of the simulated
/// places: each further job ahead moves this one's start by the mean time a simulated place took
/// (monotone; it cannot see a quota reset or a cooldown past the simulated stretch). An estimate is
/// computed on every submit and poll: serving every place of a 20,000-job backlog one by one made the
/// embedded server spend milliseconds of CPU per request (stepper-bench capacity).
pub(crate) const MAX_SIMULATED: u64 = 512;

/// Where the job stands: how many jobs are due ahead of it, whether its step is running now, and the
/// jobs due after it that go first should it have to wait.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) ahead: u64,
    pub(crate) running: bool,
    /// `(until, n)`, `until` ascending: n jobs are due after this one and no later than `until`
    /// (epoch ms). Should this job's turn come after `until` (it waits for a provider), they are
    /// served before it: they were waiting already (a backlog parked until a quota reset).
    pub(crate) later: Vec<(u64, u64)>,
    /// How far past its wake a waiting job's due score lies (the sweep grace of a queued wait).
    pub(crate) slack_ms: u64,
}

/// One provider as the estimate serves calls through it: its windows as they will be.
#[derive(Debug, Clone)]
struct Lane {
    limits: ProviderLimits,
    latency_ms: u64,
    blocked_until_ms: u64,
    minute: u64,
    minute_used: u64,
    day: u64,
    day_used: u64,
    /// Spent for the job the estimate is for (it serves only the jobs ahead).
    spent: bool,
    /// The job's own earliest call here: its tenant's next turn (0: none booked, or the job holds its own).
    turn_ms: u64,
}

impl Lane {
    fn new(state: &ProviderState, limits: ProviderLimits, latency_ms: u64, spent: bool) -> Self {
        Self {
            turn_ms: 0,
            limits,
            latency_ms,
            blocked_until_ms: state.cooldown_until_ms.max(state.circuit_open_until_ms),
            minute: state.minute,
            minute_used: state.minute_requests,
            day: state.day,
            day_used: state.day_requests,
            spent,
        }
    }

    fn used_in_minute(&self, t: u64) -> u64 {
        if self.minute == t / MINUTE_MS {
            self.minute_used
        } else {
            0
        }
    }

    fn used_in_day(&self, t: u64) -> u64 {
        if self.day == self.limits.reset.day(t) {
            self.day_used
        } else {
            0
        }
    }

    /// The first instant at or after `t` at which this provider may be called (the same reading as
    /// `ProviderState::available_at`, applied to the windows as the estimate has filled them).
    fn free_at(&self, t: u64) -> u64 {
        let mut at = t.max(self.blocked_until_ms);
        // A new minute or day empties its window, so two rounds settle it; four are a safe bound.
        for _ in 0..4 {
            let mut moved = false;
            if let Some(rpd) = self.limits.rpd {
                if self.used_in_day(at) >= rpd {
                    at = self.limits.reset.next_reset(at);
                    moved = true;
                }
            }
            if let Some(rpm) = self.limits.rpm {
                if self.used_in_minute(at) >= rpm {
                    at = (at / MINUTE_MS + 1) * MINUTE_MS;
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        at
    }

    /// Counts a call that ends at `done` (as `ProviderState::apply` counts the attempt's event).
    fn count(&mut self, done: u64) {
        let minute = done / MINUTE_MS;
        if self.minute == minute {
            self.minute_used += 1;
        } else {
            self.minute = minute;
            self.minute_used = 1;
        }
        let day = self.limits.reset.day(done);
        if self.day == day {
            self.day_used += 1;
        } else {
            self.day = day;
            self.day_used = 1;
        }
    }
}

/// When `job`'s call is expected to end (epoch ms); see the module's doc for the rule.
pub(crate) fn estimate(
    job: &Job,
    chain: &[Candidate<'_>],
    position: &Position,
    now_ms: u64,
    policy: &StepPolicy,
    concurrency: u32,
) -> Option<u64> {
    let timed: Vec<u64> = chain.iter().map(|c| c.state.latency_ms).filter(|l| *l > 0).collect();
    let fallback_latency = if timed.is_empty() {
        UNKNOWN_LATENCY_MS
    } else {
        timed.iter().sum::<u64>() / timed.len() as u64
    };
    // Disabled providers serve nobody; a zero limit never frees up.
    // A job that has not waited yet takes its tenant's next turn where the tenant holds turns.
    let tenant = job.next_attempt_at_ms.is_none().then(|| job.tenant());
    let lanes: Vec<Lane> = chain
        .iter()
        .filter(|c| c.state.disabled.is_none() && c.limits.rpm != Some(0) && c.limits.rpd != Some(0))
        .map(|c| {
            let (failures, hard) = job_failures(job, c.name);
            let latency = if c.state.latency_ms > 0 {
                c.state.latency_ms
            } else {
                fallback_latency
            };
            let mut lane = Lane::new(
                c.state,
                c.limits,
                latency,
                hard || failures >= policy.max_failures_per_provider,
            );
            lane.turn_ms = tenant
                .as_ref()
                .and_then(|t| c.state.bookings.get(t))
                .copied()
                .filter(|at| *at > now_ms)
                .unwrap_or(0);
            lane
        })
        .collect();
    if lanes.iter().all(|l| l.spent) {
        return None;
    }
    let run = |ahead: u64| {
        let (start, end) = simulate(job, lanes.clone(), ahead.min(MAX_SIMULATED), now_ms, concurrency);
        if ahead <= MAX_SIMULATED {
            return (start, end);
        }
        let pace = start.saturating_sub(now_ms) as f64 / MAX_SIMULATED as f64;
        let more = ((ahead - MAX_SIMULATED) as f64 * pace) as u64;
        let clamp = |at: u64| at.saturating_add(more).min(job.deadline_ms.max(now_ms));
        (clamp(start), clamp(end))
    };
    if position.running {
        return Some(run(0).1);
    }
    // Served at its tenant's turn: the turns booked before it are the jobs that go first there (the
    // booking spaced them), so the jobs due after it in the index are not counted again.
    let (start, end) = run(position.ahead);
    if lanes
        .iter()
        .any(|l| !l.spent && l.turn_ms > 0 && start == l.free_at(l.turn_ms))
    {
        return Some(end);
    }
    // Jobs due after this one that are due before its turn go first: count them in until that stops
    // moving its turn (each round only adds jobs, so it ends within one round per horizon).
    let mut extra = 0;
    for _ in 0..=position.later.len() {
        let (start, end) = run(position.ahead.saturating_add(extra));
        let reach = start.saturating_add(position.slack_ms);
        let before = position
            .later
            .iter()
            .find(|(until, _)| *until >= reach)
            .or(position.later.last())
            .map_or(0, |(_, n)| *n);
        if before <= extra {
            return Some(end);
        }
        extra = before;
    }
    Some(run(position.ahead.saturating_add(extra)).1)
}

/// Serves `ahead` jobs then this one; when this one's call starts and its answer (see the module's
/// doc), both within [now, deadline].
fn simulate(job: &Job, mut lanes: Vec<Lane>, ahead: u64, now_ms: u64, concurrency: u32) -> (u64, u64) {
    let slots = u64::from(concurrency.max(1)).min(ahead + 1) as usize;
    let mut free: BinaryHeap<Reverse<u64>> = (0..slots).map(|_| Reverse(now_ms)).collect();
    let own_start = job.next_attempt_at_ms.unwrap_or(now_ms).max(now_ms);
    let clamp = |at: u64| at.min(job.deadline_ms).max(now_ms);
    // The latest end this job could have at any place up to its own: the answer never gets sooner
    // with more jobs ahead, whichever provider a place happens to get.
    let mut hull = now_ms;
    for served in 0..=ahead {
        let slot = free.peek().map_or(now_ms, |Reverse(at)| *at);
        let (_, start, mine) = serve(&lanes, slot.max(own_start), |l| !l.spent, |l| l.turn_ms);
        hull = hull.max(mine);
        if served == ahead {
            return (clamp(start), clamp(hull));
        }
        free.pop();
        let (index, _, done) = serve(&lanes, slot, |_| true, |_| 0);
        lanes[index].count(done);
        // Places that start past the deadline cannot make this job end any later than it.
        if done >= job.deadline_ms {
            return (clamp(job.deadline_ms), clamp(job.deadline_ms));
        }
        free.push(Reverse(done));
    }
    (clamp(hull), clamp(hull))
}

/// Which provider a call ready at `ready` gets, when it starts and when it ends: the first of the
/// chain (among `eligible` ones) that may be called then, else the first to free up; never on a
/// provider before its `turn` (the job's tenant's turn there; 0: none). The caller makes sure one is
/// eligible.
fn serve(
    lanes: &[Lane],
    ready: u64,
    eligible: impl Fn(&Lane) -> bool,
    turn: impl Fn(&Lane) -> u64,
) -> (usize, u64, u64) {
    let free_at = |l: &Lane, t: u64| l.free_at(t.max(turn(l)));
    let mut t = ready;
    // Each round moves t to a window's end or a turn at least; a handful settle any chain.
    for _ in 0..16 {
        if let Some(i) = lanes.iter().position(|l| eligible(l) && free_at(l, t) <= t) {
            return (i, t, t.saturating_add(lanes[i].latency_ms));
        }
        t = lanes
            .iter()
            .filter(|l| eligible(l))
            .map(|l| free_at(l, t))
            .min()
            .unwrap_or(t);
    }
    let (i, at) = lanes
        .iter()
        .enumerate()
        .filter(|(_, l)| eligible(l))
        .map(|(i, l)| (i, free_at(l, t)))
        .min_by_key(|(_, at)| *at)
        .unwrap_or((0, t));
    (i, at, at.saturating_add(lanes.get(i).map_or(0, |l| l.latency_ms)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::error_class::ErrorClass;
    use crate::domain::job::Attempt;
    use crate::domain::quota::ResetClock;

    fn job(deadline_ms: u64, next_attempt_at_ms: Option<u64>, attempts: Vec<Attempt>) -> Job {
        Job {
            deadline_ms,
            next_attempt_at_ms,
            attempts,
            expires_at_ms: deadline_ms,
            ..crate::testing::job()
        }
    }

    fn failed_on(provider: &str, class: ErrorClass) -> Attempt {
        Attempt {
            provider: provider.into(),
            number: 1,
            class: Some(class),
            http_status: None,
            duration_ms: 1,
            retry_after_s: None,
            message: None,
            at_ms: 0,
        }
    }

    const NAMES: [&str; 4] = ["a", "b", "c", "d"];
    const DAY: u64 = 86_400_000;

    fn chain<'a>(states: &'a [ProviderState], limits: &[ProviderLimits]) -> Vec<Candidate<'a>> {
        states
            .iter()
            .zip(limits)
            .enumerate()
            .map(|(i, (state, limits))| Candidate {
                name: NAMES[i],
                limits: *limits,
                state,
            })
            .collect()
    }

    fn at(ahead: u64) -> Position {
        Position {
            ahead,
            ..Position::default()
        }
    }

    #[test]
    fn rate_windows_are_filled_in_chain_order_then_wait_for_the_next_minute() {
        // a: 2 a minute, 1 s a call; b: 1 a minute, 3 s. One worker. Minute 10 starts at 600 s.
        let states = [
            ProviderState {
                latency_ms: 1_000,
                ..Default::default()
            },
            ProviderState {
                latency_ms: 3_000,
                ..Default::default()
            },
        ];
        let limits = [
            ProviderLimits {
                rpm: Some(2),
                ..Default::default()
            },
            ProviderLimits {
                rpm: Some(1),
                ..Default::default()
            },
        ];
        let c = chain(&states, &limits);
        let now = 600_000;
        let j = job(now + DAY, None, vec![]);
        let eta = |ahead| estimate(&j, &c, &at(ahead), now, &StepPolicy::default(), 1).unwrap() - now;
        // a, a, b in minute 10 (one after another), then the next minute's a.
        assert_eq!([eta(0), eta(1), eta(2), eta(3)], [1_000, 2_000, 5_000, 61_000]);
        // Five workers: the calls of a minute run side by side.
        let wide = |ahead| estimate(&j, &c, &at(ahead), now, &StepPolicy::default(), 5).unwrap() - now;
        assert_eq!([wide(0), wide(1), wide(2), wide(3)], [1_000, 1_000, 3_000, 61_000]);
    }

    #[test]
    fn a_daily_quota_waits_for_its_reset_and_a_cooldown_for_its_end() {
        let now = 10 * DAY + 3_600_000;
        let states = [
            ProviderState {
                day: 10,
                day_requests: 5,
                latency_ms: 500,
                ..Default::default()
            },
            ProviderState {
                cooldown_until_ms: now + 90_000,
                latency_ms: 700,
                ..Default::default()
            },
        ];
        let limits = [
            ProviderLimits {
                rpd: Some(5),
                reset: ResetClock::UtcMidnight,
                ..Default::default()
            },
            ProviderLimits::default(),
        ];
        let c = chain(&states, &limits);
        let j = job(now + 2 * DAY, None, vec![]);
        assert_eq!(
            estimate(&j, &c, &at(0), now, &StepPolicy::default(), 1),
            Some(now + 90_700)
        );
        // Without b, the job waits for a's new day.
        let j = job(now + 2 * DAY, None, vec![failed_on("b", ErrorClass::BadRequest)]);
        assert_eq!(
            estimate(&j, &c, &at(0), now, &StepPolicy::default(), 1),
            Some(11 * DAY + 500)
        );
        // A deadline before that is the answer: by then the job has ended one way or another.
        let j = job(now + 60_000, None, vec![failed_on("b", ErrorClass::BadRequest)]);
        assert_eq!(
            estimate(&j, &c, &at(0), now, &StepPolicy::default(), 1),
            Some(now + 60_000)
        );
    }

    #[test]
    fn a_backlog_parked_until_the_reset_goes_first() {
        // a has spent its day; five jobs wait for its reset; a new job is due in 30 s.
        let now = 10 * DAY + 3_600_000;
        let states = [ProviderState {
            day: 10,
            day_requests: 10,
            latency_ms: 1_000,
            ..Default::default()
        }];
        let limits = [ProviderLimits {
            rpd: Some(10),
            ..Default::default()
        }];
        let c = chain(&states, &limits);
        let j = job(now + 2 * DAY, None, vec![]);
        let due = now + 30_000;
        let backlog = Position {
            ahead: 0,
            running: false,
            later: vec![(due, 0), (due + 60_000, 0), (due + DAY, 5), (due + 400 * DAY, 5)],
            slack_ms: 30_000,
        };
        let p = StepPolicy::default();
        assert_eq!(estimate(&j, &c, &at(0), now, &p, 1), Some(11 * DAY + 1_000));
        assert_eq!(estimate(&j, &c, &backlog, now, &p, 1), Some(11 * DAY + 6_000));
        // Had the job its turn before they wake, they would not be ahead of it.
        let fresh = [ProviderState {
            latency_ms: 1_000,
            ..Default::default()
        }];
        assert_eq!(
            estimate(&j, &chain(&fresh, &limits), &backlog, now, &p, 1),
            Some(now + 1_000)
        );
    }

    #[test]
    fn no_usable_provider_means_no_estimate() {
        let disabled = ProviderState {
            disabled: Some("401".into()),
            ..Default::default()
        };
        let states = [disabled.clone(), disabled];
        let limits = [ProviderLimits::default(); 2];
        let j = job(DAY, None, vec![]);
        let p = StepPolicy::default();
        assert_eq!(estimate(&j, &chain(&states, &limits), &at(0), 0, &p, 1), None);
        assert_eq!(estimate(&j, &[], &at(0), 0, &p, 1), None);
        let fresh = [ProviderState::default()];
        let spent = job(DAY, None, vec![failed_on("a", ErrorClass::Gone)]);
        assert_eq!(estimate(&spent, &chain(&fresh, &limits), &at(3), 0, &p, 1), None);
    }

    fn limits_strategy() -> impl Strategy<Value = ProviderLimits> {
        (prop::option::of(1u64..5), prop::option::of(1u64..8), any::<bool>()).prop_map(|(rpm, rpd, pacific)| {
            ProviderLimits {
                rpm,
                rpd,
                tpm: None,
                reset: if pacific {
                    ResetClock::PacificMidnight
                } else {
                    ResetClock::UtcMidnight
                },
            }
        })
    }

    const T0: u64 = 1_790_000_000_000;

    fn state_strategy() -> impl Strategy<Value = ProviderState> {
        (
            0u64..300_000,
            0u64..3,
            0u64..8,
            prop::bool::weighted(0.2),
            0u64..5_000,
            0u64..200_000,
        )
            .prop_map(|(cu, mc, dc, dis, lat, co)| ProviderState {
                minute: T0 / MINUTE_MS,
                minute_requests: mc,
                day: T0 / DAY,
                day_requests: dc,
                cooldown_until_ms: T0 + cu,
                circuit_open_until_ms: if co > 150_000 { T0 + co } else { 0 },
                disabled: dis.then(|| "bad key".to_string()),
                latency_ms: lat,
                ..Default::default()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Never before now, never past the deadline; more jobs ahead never make it sooner; nothing
        /// usable means no estimate; a running job is as soon as a job with nobody ahead.
        #[test]
        fn the_eta_is_bounded_and_monotone_in_the_jobs_ahead(
            states in prop::collection::vec(state_strategy(), 0..4),
            limits in prop::collection::vec(limits_strategy(), 4),
            failures in prop::collection::vec((0usize..4, any::<bool>()), 0..4),
            ahead in 0u64..60,
            now_offset in 0u64..120_000,
            deadline_in in 1u64..(3 * DAY),
            next_in in prop::option::of(0u64..400_000),
            concurrency in 0u32..6,
        ) {
            let now = T0 + now_offset;
            let c = chain(&states, &limits);
            let attempts = failures.iter().map(|(p, hard)| failed_on(NAMES[*p], if *hard { ErrorClass::BadRequest } else { ErrorClass::Overloaded })).collect();
            let j = job(now + deadline_in, next_in.map(|n| now + n), attempts);
            let p = StepPolicy::default();
            let usable = c.iter().any(|cand| {
                let (soft, hard) = job_failures(&j, cand.name);
                cand.state.disabled.is_none() && !hard && soft < p.max_failures_per_provider
            });
            let eta = estimate(&j, &c, &at(ahead), now, &p, concurrency);
            prop_assert_eq!(eta.is_some(), usable);
            if let Some(eta) = eta {
                prop_assert!(eta >= now);
                prop_assert!(eta <= j.deadline_ms);
                let later = estimate(&j, &c, &at(ahead + 1), now, &p, concurrency).unwrap();
                prop_assert!(later >= eta, "{} ahead: {}, one more: {}", ahead, eta, later);
                // Jobs due later that would go first only ever make it later.
                let backlog = Position { ahead, later: vec![(now + 60_000, 1), (now + DAY, 7), (now + 9 * DAY, 9)], slack_ms: 30_000, ..Position::default() };
                prop_assert!(estimate(&j, &c, &backlog, now, &p, concurrency).unwrap() >= eta);
                let running = estimate(&j, &c, &Position { ahead, running: true, ..Position::default() }, now, &p, concurrency).unwrap();
                prop_assert_eq!(running, estimate(&j, &c, &at(0), now, &p, concurrency).unwrap());
                prop_assert!(running <= eta);
            }
        }

        /// Turns: a job that has not waited yet, whose tenant's next turn on the only provider is at T,
        /// ends no sooner than T (and never sooner with more jobs ahead); a job of a tenant without
        /// turns there, and a job that holds its own wait, are estimated as if nobody had booked.
        #[test]
        fn a_fresh_job_waits_for_its_tenants_turn(
            state in state_strategy(),
            limits in limits_strategy(),
            ahead in 0u64..60,
            turn_in in 1u64..7_200_000,
            next_in in 0u64..400_000,
            concurrency in 1u32..6,
        ) {
            let now = T0;
            let p = StepPolicy::default();
            let mut booked = state.clone();
            booked.bookings.insert("o".into(), now + turn_in);
            booked.bookings.insert("o/busy".into(), now + 2 * turn_in);
            let (plain, booked) = ([state], [booked]);
            let (free, busy) = (chain(&plain, &[limits]), chain(&booked, &[limits]));
            let fresh = job(now + 3 * DAY, None, vec![]);
            if let Some(eta) = estimate(&fresh, &busy, &at(ahead), now, &p, concurrency) {
                prop_assert!(eta >= now + turn_in, "eta {} before the turn {}", eta, now + turn_in);
                prop_assert!(estimate(&fresh, &busy, &at(ahead + 1), now, &p, concurrency).unwrap() >= eta);
                prop_assert!(eta >= estimate(&fresh, &free, &at(ahead), now, &p, concurrency).unwrap());
            }
            let mut other = job(now + 3 * DAY, None, vec![]);
            other.spec.context.insert("tenantId".into(), serde_json::json!("other"));
            prop_assert_eq!(
                estimate(&other, &busy, &at(ahead), now, &p, concurrency),
                estimate(&other, &free, &at(ahead), now, &p, concurrency)
            );
            let waiting = job(now + 3 * DAY, Some(now + next_in), vec![]);
            prop_assert_eq!(
                estimate(&waiting, &busy, &at(ahead), now, &p, concurrency),
                estimate(&waiting, &free, &at(ahead), now, &p, concurrency)
            );
        }

        /// A job waiting for its next attempt never ends before it; with one unlimited provider of
        /// latency L and P workers, k jobs ahead end in ⌈(k + 1) / P⌉ rounds of L.
        #[test]
        fn a_wait_is_respected_and_workers_share_the_line(
            states in prop::collection::vec(state_strategy(), 1..4),
            limits in prop::collection::vec(limits_strategy(), 4),
            ahead in 0u64..40,
            next_in in 0u64..400_000,
            concurrency in 1u32..6,
            latency in 1u64..5_000,
        ) {
            let now = T0;
            let c = chain(&states, &limits);
            let j = job(now + 3 * DAY, Some(now + next_in), vec![]);
            let p = StepPolicy::default();
            if let Some(eta) = estimate(&j, &c, &at(ahead), now, &p, concurrency) {
                prop_assert!(eta >= now + next_in);
            }
            let plain = [ProviderState { latency_ms: latency, ..Default::default() }];
            let unlimited = [ProviderLimits::default()];
            let j = job(now + 3 * DAY, None, vec![]);
            let eta = estimate(&j, &chain(&plain, &unlimited), &at(ahead), now, &p, concurrency).unwrap();
            prop_assert_eq!(eta, now + (ahead + 1).div_ceil(u64::from(concurrency)) * latency);
        }

        /// Past the simulated stretch the line keeps its pace: never sooner with more jobs ahead, and
        /// with one unlimited provider within one round of L and 1 % of the exact ⌈(k + 1) / P⌉ rounds.
        #[test]
        fn past_the_simulated_places_the_line_keeps_its_pace(
            extra in 0u64..50_000,
            concurrency in 1u32..6,
            latency in 1u64..5_000,
        ) {
            let now = T0;
            let p = StepPolicy::default();
            let plain = [ProviderState { latency_ms: latency, ..Default::default() }];
            let unlimited = [ProviderLimits::default()];
            let c = chain(&plain, &unlimited);
            let j = job(now + 400 * DAY, None, vec![]);
            let ahead = MAX_SIMULATED - 1 + extra;
            let eta = estimate(&j, &c, &at(ahead), now, &p, concurrency).unwrap();
            let one_more = estimate(&j, &c, &at(ahead + 1), now, &p, concurrency).unwrap();
            prop_assert!(one_more >= eta);
            let exact = now + (ahead + 1).div_ceil(u64::from(concurrency)) * latency;
            let bound = latency + (exact - now) / 100;
            prop_assert!(eta.abs_diff(exact) <= bound, "{} ahead: {} vs exact {}", ahead, eta, exact);
        }
    }
}
