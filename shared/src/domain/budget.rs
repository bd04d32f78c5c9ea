//! The budget: what this deployment spends on Upstash, Lambda and SQS, counted in the store
//! calls it makes anyway, and the month's projection against the free tiers (`GET /v1/budget`).
//!
//! **What is counted is what Upstash bills: every command executed.** Every store call a route or a
//! step makes is one script; Upstash bills the script call plus every command inside it. Each script
//! counts its own commands (store/upstash/scripts/count.lua) and, once its work is done, adds what the
//! call spent to its owner's month bucket `st:b:m:<yyyymm>:<owner>`: 64-bit counters (`BITFIELD`), the
//! month's jobs created, store commands, Lambda invocations and SQS requests, then the same four for
//! each hour of the month, all added by one `BITFIELD` (billed, so counted in the store commands too):
//! the budget costs one command per call. The deployment's totals are the sum of its owners (the month's
//! owner list `st:b:o:<yyyymm>`; the owner `''` is the deployment's own calls: sweeps, provider reads).
//! The bucket is kept until 35 days after the month ends; the day window reads the last 24 hours from
//! this month's bucket and the previous one's. The memory store keeps hour and month buckets in memory
//! with the same fields and rules (one store command per call).
//!
//! **What each call implies on AWS** is [`Charge::aws`], the one table of it. The store command is
//! what the script executed, plus one when the script had to be loaded first (`EVALSHA` answered
//! `NOSCRIPT`, then `EVAL`: Upstash bills both). SQS requests are counted where a message is consumed,
//! not where it is sent: the step that claims a message counts its `SendMessage` (whoever sent it: the
//! submit, the previous step, a `Busy` claim, the sweeper), the event source's `ReceiveMessage` that
//! delivered it and its `DeleteMessage`; so a parked wait (no message) costs nothing until the sweeper
//! queues it. Per message: one Lambda invocation (the step function's batch of one) and three SQS
//! requests. Not seen (documented in the README): the event source's empty receives while the queue is
//! idle, batches of several messages (one invocation, one receive and one delete for several: the
//! figures are then an upper bound), Lambda invocations that never reach the store (a 401, a malformed
//! id, `/openapi.json`, a cached `/health`, an alert message), retries of a message whose claim failed
//! before the store answered.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, TimeZone, Utc};

/// Upstash Redis free plan: 500K commands a month (<https://upstash.com/pricing/redis>).
pub const FREE_STORE_COMMANDS: u64 = 500_000;
/// AWS Lambda free tier: 1M requests a month, always free (<https://aws.amazon.com/lambda/pricing/>).
pub const FREE_LAMBDA_INVOCATIONS: u64 = 1_000_000;
/// Amazon SQS free tier: 1M requests a month, always free (<https://aws.amazon.com/sqs/pricing/>).
pub const FREE_SQS_REQUESTS: u64 = 1_000_000;

const HOUR_MS: u64 = 3_600_000;
/// The day window: the last 24 hourly buckets, the current one included.
pub(crate) const DAY_HOURS: u64 = 24;

/// A store call that counts what it spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Charge {
    /// `Store::create`: the submit route (the submit function's invocation).
    Create,
    /// `Store::claim`: one step message consumed by the step function.
    Claim,
    /// `Store::finish`: the same step's (or a redelivery's) second store call.
    Finish,
    /// `Store::deliver`: a poll (or a redelivery's read: also one invocation, of the submit function).
    Deliver,
    /// `Store::purge`: the purge route.
    Purge,
    /// `Store::sweep`: one sweep message consumed by the step function (the deployment's, no owner's).
    Sweep,
    /// `Store::provider_states`: `/health` (cached per instance) and `/v1/providers`.
    ProviderStates,
    /// `Store::spent`: `GET /v1/budget` (the poll function).
    BudgetRead,
    /// `Store::overview`: `GET /v1/jobs` (the poll function; the dashboard's data).
    Overview,
    /// What this process's polls and purges executed and no call has counted yet (the Upstash store
    /// counts them with the owner's next counted call), counted on their own once they are many or
    /// old: no AWS request of its own (the polls' and purges' invocations come with their count).
    Flush,
}

/// AWS requests one store call implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Aws {
    pub(crate) lambda_invocations: u64,
    pub(crate) sqs_requests: u64,
}

/// `SendMessage` of the message, the event source's `ReceiveMessage` that delivered it, its `DeleteMessage`.
pub(crate) const SQS_REQUESTS_PER_MESSAGE: u64 = 3;

impl Charge {
    /// The one table of what each store call implies on AWS (see the module's doc for the rule).
    pub(crate) const fn aws(self) -> Aws {
        let (lambda_invocations, sqs_requests) = match self {
            // The submit's own message is counted by the claim that consumes it.
            Charge::Create => (1, 0),
            Charge::Claim | Charge::Sweep => (1, SQS_REQUESTS_PER_MESSAGE),
            // Inside the invocation the claim (or the redelivery's read) counted.
            Charge::Finish => (0, 0),
            Charge::Deliver | Charge::Purge | Charge::BudgetRead | Charge::Overview => (1, 0),
            // /health asks the store at most once per ten seconds: its invocations are not attributable.
            Charge::ProviderStates | Charge::Flush => (0, 0),
        };
        Aws {
            lambda_invocations,
            sqs_requests,
        }
    }
}

/// One scope's spending in one bucket or window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub jobs: u64,
    pub store_commands: u64,
    pub lambda_invocations: u64,
    pub sqs_requests: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.jobs += other.jobs;
        self.store_commands += other.store_commands;
        self.lambda_invocations += other.lambda_invocations;
        self.sqs_requests += other.sqs_requests;
    }

    fn is_empty(&self) -> bool {
        *self == Tally::default()
    }

    /// Adds `n` to the counter a bucket field's letter names; false for an unknown letter.
    fn count(&mut self, letter: char, n: u64) -> bool {
        let counter = match letter {
            'j' => &mut self.jobs,
            's' => &mut self.store_commands,
            'l' => &mut self.lambda_invocations,
            'q' => &mut self.sqs_requests,
            _ => return false,
        };
        *counter += n;
        true
    }
}

/// One bucket: the deployment's totals and each owner's share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bucket {
    pub total: Tally,
    pub owners: BTreeMap<String, Tally>,
}

impl Bucket {
    /// Folds one stored field (`s` for the deployment, `s:<owner>` for an owner) in; unknown fields
    /// are ignored.
    pub(crate) fn fold(&mut self, field: &str, n: u64) {
        let mut chars = field.chars();
        let Some(letter) = chars.next() else { return };
        match chars.as_str().strip_prefix(':') {
            Some(owner) => {
                let mut tally = self.owners.get(owner).copied().unwrap_or_default();
                if tally.count(letter, n) {
                    self.owners.insert(owner.to_string(), tally);
                }
            }
            None if chars.as_str().is_empty() => {
                self.total.count(letter, n);
            }
            None => {}
        }
    }
}

/// The buckets a budget read returns: the last [`DAY_HOURS`] hours (oldest first, each with its start
/// in epoch ms; the last is the current hour) and the current month. An owner's read holds only that
/// owner's fields; the deployment's read holds every field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spent {
    pub hours: Vec<(u64, Bucket)>,
    pub month: Bucket,
}

/// Where one call's counts go, named from the engine's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Buckets {
    pub(crate) hour_key: String,
    pub(crate) month_key: String,
    /// When the hour's bucket may go (epoch s): 25 hours after it starts, so the day window finds it.
    pub(crate) hour_expires_s: u64,
    /// When the month's bucket may go (epoch s): 35 days after the month ends.
    pub(crate) month_expires_s: u64,
}

fn utc(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms as i64).unwrap_or_default()
}

/// The start of the hour `ms` falls in.
pub(crate) fn hour_start(ms: u64) -> u64 {
    ms - ms % HOUR_MS
}

/// The hour bucket's key (`st:b:h:<yyyymmddhh>`, UTC).
pub(crate) fn hour_key(ms: u64) -> String {
    format!("st:b:h:{}", utc(ms).format("%Y%m%d%H"))
}

/// The month bucket's key (`st:b:m:<yyyymm>`, UTC).
pub(crate) fn month_key(ms: u64) -> String {
    format!("st:b:m:{}", utc(ms).format("%Y%m"))
}

/// The hour of its UTC month `ms` falls in (0 for the first hour of the month's first day).
pub(crate) fn hour_of_month(ms: u64) -> u64 {
    let (start, _, _) = month_of(ms);
    (hour_start(ms) - start) / HOUR_MS
}

/// The set of the owners with a month bucket in the month `ms` falls in (`st:b:o:<yyyymm>`, UTC).
pub(crate) fn owners_key(ms: u64) -> String {
    format!("st:b:o:{}", utc(ms).format("%Y%m"))
}

/// The UTC calendar month `ms` falls in: its start and its end (epoch ms), and its name (`2026-11`).
pub(crate) fn month_of(ms: u64) -> (u64, u64, String) {
    let t = utc(ms);
    let start = Utc
        .with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(t);
    let (y, m) = if t.month() == 12 {
        (t.year() + 1, 1)
    } else {
        (t.year(), t.month() + 1)
    };
    let end = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().unwrap_or(t);
    (
        start.timestamp_millis() as u64,
        end.timestamp_millis() as u64,
        format!("{:04}-{:02}", t.year(), t.month()),
    )
}

impl Buckets {
    pub(crate) fn at(now_ms: u64) -> Self {
        let (_, month_end, _) = month_of(now_ms);
        Self {
            hour_key: hour_key(now_ms),
            month_key: month_key(now_ms),
            hour_expires_s: (hour_start(now_ms) + (DAY_HOURS + 1) * HOUR_MS) / 1000,
            month_expires_s: (month_end + 35 * 86_400_000) / 1000,
        }
    }
}

/// The hours a read covers, oldest first: (start in epoch ms, key).
pub(crate) fn day_hours(now_ms: u64) -> Vec<(u64, String)> {
    let current = hour_start(now_ms);
    (0..DAY_HOURS)
        .rev()
        .map(|back| current.saturating_sub(back * HOUR_MS))
        .map(|start| (start, hour_key(start)))
        .collect()
}

/// One scope's three windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Windows {
    /// This UTC clock hour so far.
    pub(crate) hour: Tally,
    /// The last 24 clock hours, this one included.
    pub day: Tally,
    /// This UTC calendar month so far (the free tiers' period).
    pub(crate) month: Tally,
    /// How long the day window's spending spans: from the start of its first hour with any count to
    /// now, at least one hour (the rate's denominator).
    pub(crate) day_span_ms: u64,
}

/// The windows of the deployment (`owner` None) or of one owner, from a read's buckets.
pub fn windows(spent: &Spent, owner: Option<&str>, now_ms: u64) -> Windows {
    let pick = |bucket: &Bucket| match owner {
        None => bucket.total,
        Some(o) => bucket.owners.get(o).copied().unwrap_or_default(),
    };
    let mut w = Windows {
        month: pick(&spent.month),
        ..Windows::default()
    };
    let current = hour_start(now_ms);
    let mut first = None;
    for (start, bucket) in &spent.hours {
        let tally = pick(bucket);
        if tally.is_empty() {
            continue;
        }
        first = Some(first.map_or(*start, |f: u64| f.min(*start)));
        w.day.add(&tally);
        if *start == current {
            w.hour.add(&tally);
        }
    }
    w.day_span_ms = first.map_or(HOUR_MS, |f| now_ms.saturating_sub(f).max(HOUR_MS));
    w
}

/// One resource's month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Projection {
    pub(crate) spent: u64,
    pub(crate) projected: u64,
    pub(crate) free_tier: u64,
    /// When the free tier runs out at the current rate (epoch ms); None when it does not this month.
    pub(crate) runs_out_at_ms: Option<u64>,
}

/// Projects one resource to the month's end. The rule: the current rate is what the day window spent
/// (`day_spent`) over the time it spans (`day_span_ms`, see [`Windows::day_span_ms`]); linear: the
/// month ends at `spent + rate × (month_end − now)`. The free tier runs out at `now` when `spent` has
/// reached it already, else at `now + (free_tier − spent) / rate` when that is before the month ends
/// (the tiers reset with the month); never at a rate of zero.
pub(crate) fn project(
    spent: u64,
    day_spent: u64,
    day_span_ms: u64,
    now_ms: u64,
    month_end_ms: u64,
    free_tier: u64,
) -> Projection {
    let left_ms = month_end_ms.saturating_sub(now_ms);
    let span = day_span_ms.max(1) as u128;
    let projected = spent + (u128::from(day_spent) * u128::from(left_ms) / span) as u64;
    let runs_out_at_ms = if spent >= free_tier {
        Some(now_ms)
    } else if day_spent == 0 {
        None
    } else {
        // Rounded up: at this instant the tier is spent, not a millisecond before.
        let ms = (u128::from(free_tier - spent) * span).div_ceil(u128::from(day_spent));
        u64::try_from(ms)
            .ok()
            .map(|ms| now_ms.saturating_add(ms))
            .filter(|at| *at < month_end_ms)
    };
    Projection {
        spent,
        projected,
        free_tier,
        runs_out_at_ms,
    }
}

/// The resources the free tiers limit, in the order of the projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource {
    StoreCommands,
    LambdaInvocations,
    SqsRequests,
}

/// The month's projection of the three resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MonthProjection {
    /// `2026-11`.
    pub(crate) month: String,
    pub(crate) store_commands: Projection,
    pub(crate) lambda_invocations: Projection,
    pub(crate) sqs_requests: Projection,
    /// The first free tier to run out this month, and when.
    pub(crate) first_runs_out: Option<(Resource, u64)>,
}

/// The three projections of one scope's windows.
pub(crate) fn project_month(w: &Windows, now_ms: u64) -> MonthProjection {
    let (_, end, month) = month_of(now_ms);
    let one = |spent, day, free| project(spent, day, w.day_span_ms, now_ms, end, free);
    let store_commands = one(w.month.store_commands, w.day.store_commands, FREE_STORE_COMMANDS);
    let lambda_invocations = one(
        w.month.lambda_invocations,
        w.day.lambda_invocations,
        FREE_LAMBDA_INVOCATIONS,
    );
    let sqs_requests = one(w.month.sqs_requests, w.day.sqs_requests, FREE_SQS_REQUESTS);
    let first_runs_out = [
        (Resource::StoreCommands, store_commands),
        (Resource::LambdaInvocations, lambda_invocations),
        (Resource::SqsRequests, sqs_requests),
    ]
    .into_iter()
    .filter_map(|(r, p)| p.runs_out_at_ms.map(|at| (r, at)))
    .min_by_key(|(_, at)| *at);
    MonthProjection {
        month,
        store_commands,
        lambda_invocations,
        sqs_requests,
        first_runs_out,
    }
}

/// Average spending per job created in `tally` (0 when no job was).
pub(crate) fn per_job(count: u64, jobs: u64) -> f64 {
    if jobs == 0 {
        0.0
    } else {
        count as f64 / jobs as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> u64 {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_millis() as u64
    }

    #[test]
    fn the_free_tier_runs_out_where_the_day_rate_meets_it() {
        // 2026-11-10 12:00, 100K commands spent this month, 20K in the last 24 h: 20K a day, so the
        // 400K left last 20 days: 2026-11-30 12:00, before the month ends.
        let now = ms("2026-11-10T12:00:00Z");
        let end = ms("2026-12-01T00:00:00Z");
        let p = project(100_000, 20_000, 24 * HOUR_MS, now, end, FREE_STORE_COMMANDS);
        assert_eq!(p.runs_out_at_ms, Some(ms("2026-11-30T12:00:00Z")));
        // 20.5 days left at 20K a day.
        assert_eq!(p.projected, 100_000 + 410_000);
        assert_eq!(p.free_tier, 500_000);
        // At half that rate it lasts past the month's end: it does not run out this month.
        let slower = project(100_000, 10_000, 24 * HOUR_MS, now, end, FREE_STORE_COMMANDS);
        assert_eq!(slower.runs_out_at_ms, None);
        assert_eq!(slower.projected, 305_000);
        // Spent already: now. Nothing spent lately: never.
        assert_eq!(
            project(500_000, 0, HOUR_MS, now, end, 500_000).runs_out_at_ms,
            Some(now)
        );
        assert_eq!(project(10, 0, HOUR_MS, now, end, 500_000).runs_out_at_ms, None);
        assert_eq!(project(10, 0, HOUR_MS, now, end, 500_000).projected, 10);
    }

    #[test]
    fn the_rate_spans_only_the_hours_with_spending() {
        let now = ms("2026-11-10T12:30:00Z");
        let mut spent = Spent::default();
        for (start, key) in day_hours(now) {
            let mut bucket = Bucket::default();
            if start >= hour_start(now) - HOUR_MS {
                bucket.fold("s", 60);
                bucket.fold("s:alice", 40);
                bucket.fold("j:alice", 2);
                bucket.fold("x:alice", 9);
            }
            assert!(key.starts_with("st:b:h:20261"));
            spent.hours.push((start, bucket));
        }
        spent.month.fold("s", 499_990);
        let w = windows(&spent, None, now);
        assert_eq!(w.hour.store_commands, 60);
        assert_eq!(w.day.store_commands, 120);
        assert_eq!(w.month.store_commands, 499_990);
        // Spending since 11:00: the rate is 120 over 1.5 h.
        assert_eq!(w.day_span_ms, 90 * 60_000);
        let alice = windows(&spent, Some("alice"), now);
        assert_eq!((alice.day.store_commands, alice.day.jobs), (80, 4));
        assert_eq!(windows(&spent, Some("bob"), now).day_span_ms, HOUR_MS);
        let m = project_month(&w, now);
        assert_eq!(m.month, "2026-11");
        // 10 commands left at 120 per 90 minutes: 7.5 minutes.
        assert_eq!(m.first_runs_out, Some((Resource::StoreCommands, now + 450_000)));
        assert_eq!(m.lambda_invocations.runs_out_at_ms, None);
    }

    #[test]
    fn buckets_are_named_in_utc_and_outlive_their_window() {
        let now = ms("2026-12-31T23:59:59Z");
        let b = Buckets::at(now);
        assert_eq!(b.hour_key, "st:b:h:2026123123");
        assert_eq!(b.month_key, "st:b:m:202612");
        assert_eq!(b.hour_expires_s * 1000, ms("2027-01-02T00:00:00Z"));
        assert_eq!(b.month_expires_s * 1000, ms("2027-02-05T00:00:00Z"));
        let (start, end, name) = month_of(now);
        assert_eq!(
            (start, end, name.as_str()),
            (ms("2026-12-01T00:00:00Z"), ms("2027-01-01T00:00:00Z"), "2026-12")
        );
        let hours = day_hours(now);
        assert_eq!(hours.len(), 24);
        assert_eq!(hours[0].1, "st:b:h:2026123100");
        assert_eq!(hours[23].1, "st:b:h:2026123123");
    }

    #[test]
    fn a_step_message_costs_one_invocation_and_three_sqs_requests() {
        let step = Charge::Claim.aws();
        assert_eq!((step.lambda_invocations, step.sqs_requests), (1, 3));
        let job: u64 = [
            Charge::Create,
            Charge::Claim,
            Charge::Finish,
            Charge::Deliver,
            Charge::Purge,
        ]
        .iter()
        .map(|c| c.aws().lambda_invocations)
        .sum();
        assert_eq!(job, 4, "submit, step, poll, purge");
    }
}
