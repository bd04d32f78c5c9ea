//! Shared provider state: what every instance has learned about each provider's limits.
//!
//! The state is updated by [`ProviderState::apply`] here (in-memory store) and by the same rules
//! in `store/upstash/scripts/finish.lua` (the store contract tests hold the two together).
//! Reading it is pure: [`ProviderState::available_at`] says when a provider may be called again.

use std::collections::{BTreeMap, HashMap};

use chrono::{Offset, TimeZone, Utc};
use chrono_tz::America::Los_Angeles;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::error_class::ErrorClass;
use crate::domain::llm::Usage;

pub(crate) const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 86_400_000;

/// When a provider's daily quota starts again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetClock {
    /// 00:00 UTC (OpenRouter, Groq, most).
    #[default]
    UtcMidnight,
    /// 00:00 America/Los_Angeles (Gemini).
    PacificMidnight,
}

impl ResetClock {
    /// The id of the quota day `now_ms` falls in.
    pub fn day(self, now_ms: u64) -> u64 {
        match self {
            ResetClock::UtcMidnight => now_ms / DAY_MS,
            ResetClock::PacificMidnight => (now_ms - pacific_offset_ms(now_ms)) / DAY_MS,
        }
    }

    /// The instant the quota day containing `now_ms` ends.
    pub fn next_reset(self, now_ms: u64) -> u64 {
        let next_day = self.day(now_ms) + 1;
        match self {
            ResetClock::UtcMidnight => next_day * DAY_MS,
            ResetClock::PacificMidnight => {
                // Local midnight never falls inside a 02:00 DST switch, so one correction suffices.
                let standard = next_day * DAY_MS + 8 * 3_600_000;
                next_day * DAY_MS + pacific_offset_ms(standard)
            }
        }
    }
}

/// How far US Pacific time is behind UTC at `t` (7 h in daylight time, 8 h otherwise), from the IANA
/// rules for `America/Los_Angeles` (chrono-tz, built with that one zone: see `.cargo/config.toml`).
fn pacific_offset_ms(t: u64) -> u64 {
    let Some(utc) = Utc.timestamp_millis_opt(t as i64).single() else {
        return 8 * 3_600_000;
    };
    let offset = Los_Angeles.offset_from_utc_datetime(&utc.naive_utc()).fix();
    u64::try_from(-i64::from(offset.local_minus_utc())).map_or(8 * 3_600_000, |s| s * 1000)
}

/// A provider's published limits (configuration, never hard-coded truths).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderLimits {
    pub rpm: Option<u64>,
    pub rpd: Option<u64>,
    pub tpm: Option<u64>,
    #[serde(default)]
    pub reset: ResetClock,
}

impl ProviderLimits {
    /// A request limit that every instance and every concurrent step share (`rpm` or `rpd`): a call is
    /// reserved by its claim (`reserve`).
    pub(crate) fn shared_requests(&self) -> bool {
        self.rpm.is_some() || self.rpd.is_some()
    }
}

/// How failures back a provider off (shared by every job).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackoffPolicy {
    /// First back-off after an overload; doubles with each consecutive failure.
    pub(crate) base_ms: u64,
    pub(crate) cap_ms: u64,
    /// Consecutive failures that open the circuit.
    pub circuit_threshold: u32,
    /// How long an open circuit keeps the provider out before one trial call (half-open).
    pub(crate) circuit_open_ms: u64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            base_ms: 2_000,
            cap_ms: 300_000,
            circuit_threshold: 5,
            circuit_open_ms: 120_000,
        }
    }
}

/// Stored per provider (short keys: it is read on every step).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderState {
    /// Minute window id and requests counted in it.
    #[serde(rename = "mw", default)]
    pub(crate) minute: u64,
    #[serde(rename = "mc", default)]
    pub minute_requests: u64,
    /// Tokens counted in the minute window `tw`: as the provider reported them, estimated where it did not.
    #[serde(rename = "tw", default)]
    pub(crate) token_minute: u64,
    #[serde(rename = "tc", default)]
    pub minute_tokens: u64,
    /// Quota day id (per the provider's reset clock) and requests counted in it.
    #[serde(rename = "dw", default)]
    pub(crate) day: u64,
    #[serde(rename = "dc", default)]
    pub(crate) day_requests: u64,
    /// Not to be called before this instant (rate limit, quota, back-off).
    #[serde(rename = "cu", default)]
    pub cooldown_until_ms: u64,
    #[serde(rename = "cf", default)]
    pub(crate) consecutive_failures: u32,
    /// The circuit is open until this instant; afterwards one trial call decides (half-open).
    #[serde(rename = "co", default)]
    pub(crate) circuit_open_until_ms: u64,
    /// Disabled for everyone (bad key, retired model) and why.
    #[serde(rename = "dis", default, skip_serializing_if = "Option::is_none")]
    pub(crate) disabled: Option<String>,
    /// The last outcome (`ok` or an [`ErrorClass`] name) and when.
    #[serde(rename = "lc", default, skip_serializing_if = "Option::is_none")]
    pub last_class: Option<LastOutcome>,
    #[serde(rename = "la", default)]
    pub(crate) last_at_ms: u64,
    /// One claim holds the provider's probe until this instant: when a cooldown ends, that claim's
    /// job may call it, the others wait for the probe's outcome (the thundering herd).
    #[serde(rename = "pu", default, skip_serializing_if = "is_zero")]
    pub(crate) probe_until_ms: u64,
    /// A moving average of its successful calls' latency (ms, engine clock; 0: never timed): each
    /// success moves it a quarter of the way to the new duration. The ETA's pace (engine/eta.rs).
    #[serde(rename = "lat", default, skip_serializing_if = "is_zero")]
    pub latency_ms: u64,
    /// Turns booked on this provider while its minute's requests are used up, per tenant: the instant
    /// from which the tenant's next waiting job is booked (`book`). Entries in the past are dropped.
    #[serde(rename = "q", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) bookings: BTreeMap<String, u64>,
    /// Per tenant, its jobs that booked a turn behind earlier turns of the tenant's jobs of a lower
    /// priority (`Job::line`): the first of those lower jobs to come to its turn hands it over (`reserve`).
    /// Never an empty list; entries past their own turn are dropped.
    #[serde(rename = "h", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) jumpers: BTreeMap<String, Vec<Jumper>>,
    /// Requests handed over, counted already: the job's key → until when its claim may use it.
    #[serde(rename = "g", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) grants: BTreeMap<String, u64>,
    /// Per tenant, the latest turn a `low` job of it holds: until then a `normal` job of the tenant
    /// that books behind it waits as a jumper.
    #[serde(rename = "lw", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) low_turns: BTreeMap<String, u64>,
}

/// A job waiting to take an earlier turn of its tenant: its key in the store, the step it is woken by
/// (owner, job id, gen, seq), the turn it holds, its place in its tenant's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Jumper {
    #[serde(rename = "k")]
    pub(crate) key: String,
    #[serde(rename = "o")]
    pub(crate) owner: String,
    #[serde(rename = "i")]
    pub(crate) job_id: String,
    #[serde(rename = "g")]
    pub(crate) gen: String,
    #[serde(rename = "s")]
    pub(crate) seq: u64,
    #[serde(rename = "a")]
    pub(crate) at_ms: u64,
    #[serde(rename = "l")]
    pub(crate) line: i64,
}

impl Jumper {
    /// The step that wakes it (its fields keep the short names claim.lua writes).
    fn step(self) -> crate::domain::job::StepRef {
        crate::domain::job::StepRef {
            owner: self.owner,
            job_id: self.job_id,
            gen: self.gen,
            seq: self.seq,
        }
    }
}

/// Most jumpers one provider's state holds (it travels with every claim): past it, a job keeps the
/// turn it booked.
pub(crate) const MAX_JUMPERS: usize = 16;

/// The claiming job, for its tenant's line: its key in the store (unique), its next step (the seq its
/// finish writes: a jumper is woken at it), its tenant and place in the line (`Job::line`), its
/// priority. claim.lua reads the same from the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claimant {
    pub(crate) key: String,
    pub(crate) next: crate::domain::job::StepRef,
    pub(crate) tenant: String,
    pub(crate) line: i64,
    pub(crate) priority: crate::domain::job::Priority,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The classes after which a provider is probed by one caller before the others follow (`claim.lua`
/// looks for the same three names in the stored JSON).
pub(crate) const PROBED_AFTER: [ErrorClass; 3] = [
    ErrorClass::RateLimited,
    ErrorClass::QuotaExhausted,
    ErrorClass::Overloaded,
];

/// A provider's last outcome as stored in `lc`: `"ok"` or the [`ErrorClass`] name (`"rate_limited"`).
/// The Lua scripts write and match these same strings (`finish.lua`, `claim.lua`), so the serde form is
/// the string, not a tagged enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LastOutcome {
    Ok,
    Failed(ErrorClass),
}

impl LastOutcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LastOutcome::Ok => "ok",
            LastOutcome::Failed(class) => class.as_str(),
        }
    }

    /// The failure's class; `None` after a success.
    pub(crate) fn class(self) -> Option<ErrorClass> {
        match self {
            LastOutcome::Ok => None,
            LastOutcome::Failed(class) => Some(class),
        }
    }

    /// Whether the last call failed with one of `classes`.
    pub(crate) fn is_any(self, classes: &[ErrorClass]) -> bool {
        self.class().is_some_and(|c| classes.contains(&c))
    }
}

impl From<Option<ErrorClass>> for LastOutcome {
    fn from(class: Option<ErrorClass>) -> Self {
        class.map_or(LastOutcome::Ok, LastOutcome::Failed)
    }
}

impl Serialize for LastOutcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LastOutcome {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::IntoDeserializer;
        let name = String::deserialize(d)?;
        if name == "ok" {
            return Ok(LastOutcome::Ok);
        }
        let class: Result<ErrorClass, serde::de::value::Error> =
            ErrorClass::deserialize(name.as_str().into_deserializer());
        class
            .map(LastOutcome::Failed)
            .map_err(|_| serde::de::Error::unknown_variant(&name, &["ok", "an ErrorClass name"]))
    }
}

impl ProviderState {
    /// A cooldown (or an open circuit) after a rate limit, a quota or an overload has just ended:
    /// the next call is a probe. Claim scripts give the probe to one claim at a time (`pu`).
    pub(crate) fn probe_open(&self, now_ms: u64) -> bool {
        let until = self.cooldown_until_ms.max(self.circuit_open_until_ms);
        until > 0
            && until <= now_ms
            && self.probe_until_ms <= now_ms
            && self.last_class.is_some_and(|c| c.is_any(&PROBED_AFTER))
    }
}

/// How long a claim held back by another claim's probe waits before it looks again: about two of the
/// provider's calls (its moving-average latency), within these bounds, and never past the probe's lease.
const PROBE_RECHECK_MIN_MS: u64 = 500;
const PROBE_RECHECK_MAX_MS: u64 = 5_000;

/// The states a claim's decision sees: a provider whose probe another claim holds is cooling down for
/// about two of its calls, then the held claim looks again (by then the probe's outcome is usually in
/// the shared state: a success lets it through at the provider's pace, another 429 moves the
/// cooldown on), and never past the probe's lease (a probe that died). Waiting for the lease itself
/// held a whole backlog for a lease after its provider had recovered. A cooldown that ended between the
/// claim's read (`claimed_at_ms`) and the decision (`now_ms`) holds the claim back the same way: it could
/// not take the probe, and calling would make one more probe (several claims in that gap made several).
/// Pure.
pub(crate) fn hold_back_for_probes(
    states: &mut HashMap<String, ProviderState>,
    probes: &[String],
    claimed_at_ms: u64,
    now_ms: u64,
) {
    for (name, state) in states.iter_mut() {
        let probed = state.last_class.is_some_and(|c| c.is_any(&PROBED_AFTER));
        let probing = probed && state.probe_until_ms > now_ms;
        let ends = state.cooldown_until_ms.max(state.circuit_open_until_ms);
        let ended_since_claim = probed && ends > claimed_at_ms && ends <= now_ms;
        if (probing || ended_since_claim) && !probes.contains(name) {
            let recheck = (2 * state.latency_ms).clamp(PROBE_RECHECK_MIN_MS, PROBE_RECHECK_MAX_MS);
            let held = if probing {
                state.probe_until_ms.min(now_ms + recheck)
            } else {
                now_ms + recheck
            };
            state.cooldown_until_ms = state.cooldown_until_ms.max(held);
        }
    }
}

/// A provider a claim may reserve a request of: the claim reserves one request of the first of these
/// (the job's providers in the order its decision ranks them) that can be called now, so that instances
/// claiming at once cannot all take a minute's last request. `day` is today's quota day by the
/// provider's own reset clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservable {
    pub name: String,
    pub limits: ProviderLimits,
    pub day: u64,
}

/// What a claim may reserve: the job's providers in its decision's ranking, and its tenant (whose
/// turns `book` spaces). Empty: the claim reserves nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reserve {
    pub providers: Vec<Reservable>,
    pub tenant: String,
}

impl Reservable {
    /// Whether a call to it must be reserved (`ProviderLimits::shared_requests`).
    pub(crate) fn counted(&self) -> bool {
        self.limits.shared_requests()
    }
}

impl ProviderState {
    /// Whether a claim can count on calling this provider now: not disabled, not cooling down, its
    /// probe not held by another claim (`probes`: the ones this claim took), under its minute's requests
    /// and tokens and its day's requests. The same test as `available_at` at `now_ms` plus the probe;
    /// claim.lua mirrors it.
    pub(crate) fn open_now(&self, limits: &ProviderLimits, now_ms: u64, day: u64, took_probe: bool) -> bool {
        if self.disabled.is_some() || self.cooldown_until_ms.max(self.circuit_open_until_ms) > now_ms {
            return false;
        }
        let probing = self.probe_until_ms > now_ms && self.last_class.is_some_and(|c| c.is_any(&PROBED_AFTER));
        if probing && !took_probe {
            return false;
        }
        let minute = now_ms / MINUTE_MS;
        let over = |window: u64, used: u64, limit: Option<u64>, now_window: u64| {
            limit.is_some_and(|l| window == now_window && used >= l)
        };
        !(over(self.minute, self.minute_requests, limits.rpm, minute)
            || over(self.token_minute, self.minute_tokens, limits.tpm, minute)
            || over(self.day, self.day_requests, limits.rpd, day))
    }

    /// Counts one request in `minute` and `day` when it is made (a claim's reservation, or a finish of
    /// an unreserved call): a count from a window older than the one held is dropped, so a late finish
    /// never wipes the newer window's count. claim.lua and finish.lua mirror it.
    pub(crate) fn count_request(&mut self, minute: u64, day: u64) {
        if minute > self.minute {
            self.minute = minute;
            self.minute_requests = 1;
        } else if minute == self.minute {
            self.minute_requests += 1;
        }
        if day > self.day {
            self.day = day;
            self.day_requests = 1;
        } else if day == self.day {
            self.day_requests += 1;
        }
    }

    /// Takes a claim's own reservation back out of the view its decision sees (the decision asks
    /// whether a request is left for this call, which the reservation already holds).
    pub(crate) fn unreserve(&mut self, minute: u64, day: u64) {
        if self.minute == minute {
            self.minute_requests = self.minute_requests.saturating_sub(1);
        }
        if self.day == day {
            self.day_requests = self.day_requests.saturating_sub(1);
        }
    }
}

/// What a claim's reservation came to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Reservation {
    /// Nothing reserved: the first provider that can be called has no shared request limit, or none can
    /// be called and none is merely out of this minute's requests.
    #[default]
    None,
    /// A request of this provider is counted for this step's call.
    Reserved(String),
    /// Every ranked provider is out of reach now and this one only for its minute's requests: the job's
    /// turn on it is booked at `at_ms`, and the job waits for it rather than for the next minute.
    Booked { provider: String, at_ms: u64 },
    /// The request reserved at the job's turn went to a job of its tenant ahead of it in the line (a
    /// jumper, its step `to` to be sent now): this job takes that job's turn at `at_ms` instead.
    Handed {
        provider: String,
        at_ms: u64,
        to: crate::domain::job::StepRef,
    },
}

impl ProviderState {
    /// Out of this minute's requests and nothing else: not disabled, not cooling down, its probe not
    /// another claim's, under its tokens and its day's requests.
    fn only_minute_full(&self, limits: &ProviderLimits, now_ms: u64, day: u64, took_probe: bool) -> bool {
        let minute = now_ms / MINUTE_MS;
        let minute_full = limits
            .rpm
            .is_some_and(|l| self.minute == minute && self.minute_requests >= l);
        let without_rpm = ProviderLimits { rpm: None, ..*limits };
        minute_full && self.open_now(&without_rpm, now_ms, day, took_probe)
    }

    /// Books `tenant`'s next turn on a provider whose minute is used up: from the next minute on, each
    /// tenant's waiting jobs are booked one request's share apart (a minute over `rpm`, times the tenants
    /// booking), so a backlog wakes at the provider's pace instead of all at once each minute, and a
    /// tenant with one job waiting is booked at the next minute whatever another tenant has queued.
    /// Returns the booked instant. claim.lua mirrors it.
    pub(crate) fn book(&mut self, rpm: u64, tenant: &str, now_ms: u64) -> u64 {
        self.bookings.retain(|_, from| *from > now_ms);
        let tenants = self.bookings.len() as u64 + u64::from(!self.bookings.contains_key(tenant));
        let spacing = MINUTE_MS.div_ceil(rpm.max(1)) * tenants;
        let next_minute = (now_ms / MINUTE_MS + 1) * MINUTE_MS;
        let at = self.bookings.get(tenant).copied().unwrap_or(0).max(next_minute);
        self.bookings.insert(tenant.to_string(), at + spacing);
        at
    }
}

/// A claim's reservation, in place in `states`: a request of the first of `reservable` (the job's
/// ranking) that can be called now (`open_now`) when it has a shared request limit; when none can be
/// called, a booked turn (`book`) on the first that is only out of its minute's requests. claim.lua
/// mirrors it.
///
/// Priority within a tenant (`claimant`): a request handed over to this job earlier (`grants`) is its
/// reservation, counted already. A job that reserves at its turn while a job of its tenant ahead of it in
/// the line (`Job::line`) waits as a jumper hands the request over (`Handed`): the jumper is woken now
/// and this job takes the jumper's turn, so the tenant's turns, and every other tenant's, stay as
/// booked. A job booked behind earlier turns of its tenant's lower-priority jobs waits as a jumper.
pub(crate) fn reserve(
    states: &mut HashMap<String, ProviderState>,
    reservable: &[Reservable],
    probes: &[String],
    tenant: &str,
    claimant: Option<&Claimant>,
    now_ms: u64,
) -> Reservation {
    if let Some(me) = claimant {
        for r in reservable {
            if let Some(state) = states.get_mut(&r.name) {
                state.grants.retain(|_, until| *until > now_ms);
                if state.grants.remove(&me.key).is_some() {
                    return Reservation::Reserved(r.name.clone());
                }
            }
        }
    }
    for r in reservable {
        let state = states.entry(r.name.clone()).or_default();
        if state.open_now(&r.limits, now_ms, r.day, probes.contains(&r.name)) {
            if !r.counted() {
                return Reservation::None;
            }
            state.count_request(now_ms / MINUTE_MS, r.day);
            if let Some(to) = claimant.and_then(|me| state.hand_over(me, now_ms)) {
                return Reservation::Handed {
                    provider: r.name.clone(),
                    at_ms: to.1,
                    to: to.0,
                };
            }
            return Reservation::Reserved(r.name.clone());
        }
    }
    for r in reservable {
        let Some(rpm) = r.limits.rpm else { continue };
        let state = states.entry(r.name.clone()).or_default();
        if state.only_minute_full(&r.limits, now_ms, r.day, probes.contains(&r.name)) {
            let ahead = state.bookings.get(tenant).is_some_and(|from| *from > now_ms);
            let at_ms = state.book(rpm, tenant, now_ms);
            if let Some(me) = claimant {
                state.wait_to_jump(me, ahead, at_ms, now_ms);
            }
            return Reservation::Booked {
                provider: r.name.clone(),
                at_ms,
            };
        }
    }
    Reservation::None
}

/// How long a handed-over request waits for the woken job's claim (its step is sent at once).
pub(crate) const GRANT_MS: u64 = 60_000;

impl ProviderState {
    /// The jumper of `me`'s tenant furthest ahead in the line, when it is ahead of `me`: taken off the
    /// list and granted the request `me` reserved. Returns its step and the turn it held.
    fn hand_over(&mut self, me: &Claimant, now_ms: u64) -> Option<(crate::domain::job::StepRef, u64)> {
        self.drop_past_jumpers(now_ms);
        let list = self.jumpers.get_mut(&me.tenant)?;
        let (i, _) = list
            .iter()
            .enumerate()
            .filter(|(_, j)| j.line < me.line && j.key != me.key)
            .min_by_key(|(_, j)| (j.line, j.at_ms))?;
        let jumper = list.remove(i);
        if list.is_empty() {
            self.jumpers.remove(&me.tenant);
        }
        self.grants.insert(jumper.key.clone(), now_ms + GRANT_MS);
        let at_ms = jumper.at_ms;
        Some((jumper.step(), at_ms))
    }

    /// After `me` booked its turn at `at_ms` (`ahead`: its tenant held turns before it): a `low` job
    /// marks the tenant's low turns; a `high` job, or a `normal` one behind a low turn, waits as a jumper
    /// (while the provider holds fewer than `MAX_JUMPERS`).
    fn wait_to_jump(&mut self, me: &Claimant, ahead: bool, at_ms: u64, now_ms: u64) {
        use crate::domain::job::Priority;
        self.drop_past_jumpers(now_ms);
        let below = match me.priority {
            Priority::Low => {
                let latest = self.low_turns.entry(me.tenant.clone()).or_default();
                *latest = (*latest).max(at_ms);
                return;
            }
            Priority::High => true,
            Priority::Normal => self.low_turns.get(&me.tenant).is_some_and(|at| *at > now_ms),
        };
        let held: usize = self.jumpers.values().map(Vec::len).sum();
        if !ahead || !below || held >= MAX_JUMPERS {
            return;
        }
        self.jumpers.entry(me.tenant.clone()).or_default().push(Jumper {
            key: me.key.clone(),
            owner: me.next.owner.clone(),
            job_id: me.next.job_id.clone(),
            gen: me.next.gen.clone(),
            seq: me.next.seq,
            at_ms,
            line: me.line,
        });
    }

    /// Jumpers whose own turn has come, and low turns past, are dropped.
    fn drop_past_jumpers(&mut self, now_ms: u64) {
        for list in self.jumpers.values_mut() {
            list.retain(|j| j.at_ms > now_ms);
        }
        self.jumpers.retain(|_, list| !list.is_empty());
        self.low_turns.retain(|_, at| *at > now_ms);
    }
}

/// When a provider may be called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// From this instant on (at or before `now`: right away).
    At(u64),
    /// Never, until someone fixes the configuration.
    Disabled(String),
}

impl ProviderState {
    pub fn available_at(&self, limits: &ProviderLimits, now_ms: u64) -> Availability {
        if let Some(reason) = &self.disabled {
            return Availability::Disabled(reason.clone());
        }
        let mut at = self.cooldown_until_ms.max(self.circuit_open_until_ms);
        let minute = now_ms / MINUTE_MS;
        if let Some(rpm) = limits.rpm {
            if self.minute == minute && self.minute_requests >= rpm {
                at = at.max((minute + 1) * MINUTE_MS);
            }
        }
        if let Some(tpm) = limits.tpm {
            if self.token_minute == minute && self.minute_tokens >= tpm {
                at = at.max((minute + 1) * MINUTE_MS);
            }
        }
        if let Some(rpd) = limits.rpd {
            if self.day == limits.reset.day(now_ms) && self.day_requests >= rpd {
                at = at.max(limits.reset.next_reset(now_ms));
            }
        }
        Availability::At(at)
    }

    /// Requests left in the current minute and day, where limits are known.
    pub(crate) fn remaining(&self, limits: &ProviderLimits, now_ms: u64) -> (Option<u64>, Option<u64>) {
        let minute_used = if self.minute == now_ms / MINUTE_MS {
            self.minute_requests
        } else {
            0
        };
        let day_used = if self.day == limits.reset.day(now_ms) {
            self.day_requests
        } else {
            0
        };
        (
            limits.rpm.map(|l| l.saturating_sub(minute_used)),
            limits.rpd.map(|l| l.saturating_sub(day_used)),
        )
    }

    /// Folds one attempt's outcome in. Mirrors `finish.lua` rule for rule.
    pub fn apply(&mut self, e: &ProviderEvent) {
        if !e.reserved {
            self.count_request(e.minute, e.day);
        }
        if self.token_minute == e.minute {
            self.minute_tokens += e.tokens;
        } else if e.minute > self.token_minute {
            self.token_minute = e.minute;
            self.minute_tokens = e.tokens;
        }
        self.cooldown_until_ms = self.cooldown_until_ms.max(e.cooldown_until_ms);
        match e.class {
            None => {
                self.consecutive_failures = 0;
                self.circuit_open_until_ms = 0;
                self.latency_ms = if self.latency_ms == 0 {
                    e.latency_ms
                } else {
                    (3 * self.latency_ms + e.latency_ms) / 4
                };
            }
            Some(ErrorClass::Overloaded) => {
                self.consecutive_failures += 1;
                let doublings = (self.consecutive_failures - 1).min(20);
                let backoff = e.backoff.base_ms.saturating_mul(1 << doublings).min(e.backoff.cap_ms);
                self.cooldown_until_ms = self.cooldown_until_ms.max(e.now_ms + backoff);
                if self.consecutive_failures >= e.backoff.circuit_threshold {
                    self.circuit_open_until_ms = e.now_ms + e.backoff.circuit_open_ms;
                }
            }
            Some(ErrorClass::AuthInvalid) | Some(ErrorClass::Gone) => {
                self.disabled = Some(e.message.clone());
            }
            Some(_) => {}
        }
        self.last_class = Some(LastOutcome::from(e.class));
        self.last_at_ms = e.now_ms;
    }
}

/// One attempt's effect on its provider's shared state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderEvent {
    pub provider: String,
    pub now_ms: u64,
    pub minute: u64,
    pub day: u64,
    pub tokens: u64,
    /// `None` on success.
    pub class: Option<ErrorClass>,
    /// From a retry hint, a quota reset, or a success whose headers said nothing is left (0 = none).
    pub cooldown_until_ms: u64,
    /// Short reason, kept when the class disables the provider.
    pub message: String,
    pub backoff: BackoffPolicy,
    /// How long the call took (ms, engine clock): folded into the latency average on success.
    #[serde(default)]
    pub latency_ms: u64,
    /// What the store needs to decide on alerts (the providers, the flap window).
    #[serde(default)]
    pub alerts: crate::domain::alert::AlertRules,
    /// The step's claim reserved this request (counted it in the minute and the day): not counted again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reserved: bool,
    /// Whether the provider limits its requests (`rpm`, `rpd`) or its tokens (`tpm`): then every call
    /// counts in the shared state (`changes_shared_state`). Not sent: the store's rules read the counts.
    #[serde(skip)]
    pub limits_requests: bool,
    #[serde(skip)]
    pub limits_tokens: bool,
}

impl ProviderEvent {
    /// Counts the call against the per-minute token budget (`tpm`): the tokens the provider reported it
    /// used when it said (input + output), else `estimate` (a failed call, a wire that reports no usage).
    pub(crate) fn count_tokens(&mut self, estimate: u64, reported: Option<Usage>) {
        let used = reported.map_or(0, |u| u.input_tokens.saturating_add(u.output_tokens));
        self.tokens = if used > 0 { used } else { estimate };
    }

    pub fn new(provider: &str, limits: &ProviderLimits, now_ms: u64, backoff: BackoffPolicy) -> Self {
        Self {
            provider: provider.to_string(),
            now_ms,
            minute: now_ms / MINUTE_MS,
            day: limits.reset.day(now_ms),
            tokens: 0,
            class: None,
            cooldown_until_ms: 0,
            message: String::new(),
            backoff,
            latency_ms: 0,
            alerts: crate::domain::alert::AlertRules::default(),
            reserved: false,
            limits_requests: limits.shared_requests(),
            limits_tokens: limits.tpm.is_some(),
        }
    }

    /// Whether folding this attempt into `before` (the provider's state as this process last read it;
    /// `None`: not read) changes anything another step acts on: a failure, a cooldown, a count a limit
    /// reads (a request no claim reserved, tokens under `tpm`), or a success that ends a failure streak,
    /// an open circuit or a failed last outcome. When it does not, the attempt moves only the latency
    /// average, the last attempt's instant and today's successes (`apply`): a store that pays for every
    /// command may fold such successes in later, several at once (the Upstash store's quiet successes).
    pub(crate) fn changes_shared_state(&self, before: Option<&ProviderState>) -> bool {
        let Some(before) = before else { return true };
        self.class.is_some()
            || self.cooldown_until_ms > 0
            || (self.limits_requests && !self.reserved)
            || self.limits_tokens
            || before.last_class != Some(LastOutcome::Ok)
            || before.consecutive_failures > 0
            || before.circuit_open_until_ms > 0
            || before.disabled.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_held_back_by_a_probe_looks_again_after_about_two_calls() {
        let now = 1_000_000;
        let probed = ProviderState {
            last_class: Some(LastOutcome::Failed(ErrorClass::RateLimited)),
            cooldown_until_ms: now - 10,
            probe_until_ms: now + 60_000,
            latency_ms: 800,
            ..ProviderState::default()
        };
        let mut states = HashMap::from([("p".to_string(), probed.clone())]);
        hold_back_for_probes(&mut states, &[], now, now);
        assert_eq!(states["p"].cooldown_until_ms, now + 1_600, "two calls of 800 ms");
        // The probe's holder is not held; a probe about to end holds no longer than its lease.
        let mut states = HashMap::from([("p".to_string(), probed.clone())]);
        hold_back_for_probes(&mut states, &["p".to_string()], now, now);
        assert_eq!(states["p"].cooldown_until_ms, now - 10);
        let ending = ProviderState {
            probe_until_ms: now + 300,
            latency_ms: 0,
            ..probed.clone()
        };
        let mut states = HashMap::from([("p".to_string(), ending)]);
        hold_back_for_probes(&mut states, &[], now, now);
        assert_eq!(states["p"].cooldown_until_ms, now + 300);
        // A cooldown that ended after the claim read the states: the claim took no probe, so it waits too.
        let just_ended = ProviderState {
            cooldown_until_ms: now - 2,
            probe_until_ms: 0,
            latency_ms: 0,
            ..probed
        };
        let mut states = HashMap::from([("p".to_string(), just_ended.clone())]);
        hold_back_for_probes(&mut states, &[], now - 5, now);
        assert_eq!(states["p"].cooldown_until_ms, now + 500);
        // Ended before the claim read them: the claim could have taken the probe; it is not held.
        let mut states = HashMap::from([("p".to_string(), just_ended)]);
        hold_back_for_probes(&mut states, &[], now - 1, now);
        assert_eq!(states["p"].cooldown_until_ms, now - 2);
    }

    fn ms(rfc3339: &str) -> u64 {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis() as u64
    }

    #[test]
    fn pacific_reset_follows_daylight_time() {
        // Summer: midnight PDT is 07:00 UTC.
        assert_eq!(
            ResetClock::PacificMidnight.next_reset(ms("2026-07-01T12:00:00Z")),
            ms("2026-07-02T07:00:00Z")
        );
        // Winter: midnight PST is 08:00 UTC.
        assert_eq!(
            ResetClock::PacificMidnight.next_reset(ms("2026-12-01T12:00:00Z")),
            ms("2026-12-02T08:00:00Z")
        );
        // 05:00 UTC on 1 July is still 30 June in California.
        assert_eq!(
            ResetClock::PacificMidnight.next_reset(ms("2026-07-01T05:00:00Z")),
            ms("2026-07-01T07:00:00Z")
        );
        // The day daylight time ends (1 Nov 2026): the next midnight is already PST.
        assert_eq!(
            ResetClock::PacificMidnight.next_reset(ms("2026-11-01T12:00:00Z")),
            ms("2026-11-02T08:00:00Z")
        );
        // The day it starts (8 Mar 2026): the next midnight is PDT.
        assert_eq!(
            ResetClock::PacificMidnight.next_reset(ms("2026-03-08T12:00:00Z")),
            ms("2026-03-09T07:00:00Z")
        );
        assert_eq!(
            ResetClock::UtcMidnight.next_reset(ms("2026-03-08T12:00:00Z")),
            ms("2026-03-09T00:00:00Z")
        );
    }

    #[test]
    fn daily_quota_parks_until_reset_and_rpm_until_next_minute() {
        let limits = ProviderLimits {
            rpm: Some(2),
            rpd: Some(3),
            tpm: None,
            reset: ResetClock::UtcMidnight,
        };
        let now = ms("2026-11-25T10:00:10Z");
        let mut s = ProviderState::default();
        let e = ProviderEvent::new("p", &limits, now, BackoffPolicy::default());
        s.apply(&e);
        assert_eq!(s.available_at(&limits, now), Availability::At(0));
        s.apply(&e);
        assert_eq!(
            s.available_at(&limits, now),
            Availability::At(ms("2026-11-25T10:01:00Z"))
        );
        let later = ms("2026-11-25T10:05:00Z");
        s.apply(&ProviderEvent::new("p", &limits, later, BackoffPolicy::default()));
        assert_eq!(
            s.available_at(&limits, later),
            Availability::At(ms("2026-11-26T00:00:00Z"))
        );
        assert_eq!(s.remaining(&limits, later), (Some(1), Some(0)));
    }

    #[test]
    fn overloads_back_off_exponentially_and_open_the_circuit() {
        let limits = ProviderLimits::default();
        let policy = BackoffPolicy {
            base_ms: 1_000,
            cap_ms: 10_000,
            circuit_threshold: 3,
            circuit_open_ms: 60_000,
        };
        let mut s = ProviderState::default();
        let mut e = ProviderEvent::new("p", &limits, 1_000_000, policy);
        e.class = Some(ErrorClass::Overloaded);
        s.apply(&e);
        assert_eq!(s.cooldown_until_ms, 1_001_000);
        s.apply(&e);
        assert_eq!(s.cooldown_until_ms, 1_002_000);
        s.apply(&e);
        assert_eq!(s.circuit_open_until_ms, 1_060_000);
        let mut ok = ProviderEvent::new("p", &limits, 1_070_000, policy);
        ok.class = None;
        s.apply(&ok);
        assert_eq!((s.consecutive_failures, s.circuit_open_until_ms), (0, 0));
    }

    #[test]
    fn the_token_budget_counts_reported_usage_and_the_estimate_only_without_it() {
        let limits = ProviderLimits {
            tpm: Some(1_000),
            ..Default::default()
        };
        let now = ms("2026-11-25T10:00:10Z");
        let mut s = ProviderState::default();
        let mut e = ProviderEvent::new("p", &limits, now, BackoffPolicy::default());
        // The estimate (900) alone would exhaust the minute; the provider said the call used 200 tokens.
        e.count_tokens(
            900,
            Some(Usage {
                input_tokens: 120,
                output_tokens: 80,
            }),
        );
        s.apply(&e);
        assert_eq!(s.minute_tokens, 200);
        assert_eq!(s.available_at(&limits, now), Availability::At(0));
        // No usage reported (a failure, a wire without usage): the estimate is counted.
        e.count_tokens(900, Some(Usage::default()));
        s.apply(&e);
        assert_eq!(s.minute_tokens, 1_100);
        e.count_tokens(900, None);
        assert_eq!(e.tokens, 900);
        assert_eq!(
            s.available_at(&limits, now),
            Availability::At(ms("2026-11-25T10:01:00Z"))
        );
    }

    #[test]
    fn the_last_outcome_is_stored_as_the_class_name() {
        let mut s = ProviderState::default();
        for (outcome, stored) in [
            (LastOutcome::Ok, "ok"),
            (LastOutcome::Failed(ErrorClass::RateLimited), "rate_limited"),
            (LastOutcome::Failed(ErrorClass::QuotaExhausted), "quota_exhausted"),
            (LastOutcome::Failed(ErrorClass::InvalidOutput), "invalid_output"),
        ] {
            s.last_class = Some(outcome);
            let json = serde_json::to_value(&s).unwrap();
            assert_eq!(json["lc"], serde_json::json!(stored));
            assert_eq!(serde_json::from_value::<ProviderState>(json).unwrap(), s);
        }
        s.last_class = None;
        assert!(serde_json::to_value(&s).unwrap().get("lc").is_none());
        assert!(serde_json::from_str::<ProviderState>(r#"{"lc":"sleepy"}"#).is_err());
    }

    #[test]
    fn bad_key_disables_for_everyone() {
        let limits = ProviderLimits::default();
        let mut s = ProviderState::default();
        let mut e = ProviderEvent::new("p", &limits, 5, BackoffPolicy::default());
        e.class = Some(ErrorClass::AuthInvalid);
        e.message = "401 invalid api key".into();
        s.apply(&e);
        assert_eq!(
            s.available_at(&limits, 10),
            Availability::Disabled("401 invalid api key".into())
        );
    }

    /// A claimant of tenant `tenant` (within owner o), job `id`, submitted at `created`.
    fn claimant(tenant: &str, id: &str, created: u64, priority: crate::domain::job::Priority) -> Claimant {
        let mut job = crate::testing::job();
        job.created_at_ms = created;
        job.spec.priority = priority;
        job.spec.context.insert("tenantId".into(), serde_json::json!(tenant));
        Claimant {
            key: format!("k:{id}"),
            next: crate::domain::job::StepRef {
                owner: job.owner.clone(),
                job_id: id.into(),
                gen: "g".into(),
                seq: 2,
            },
            tenant: job.tenant(),
            line: job.line(),
            priority,
        }
    }

    /// Priority within a tenant: a high job booked behind its tenant's normal turns takes the first of
    /// them (the normal job at its turn hands its request over and takes the high job's turn); the other
    /// tenant's turns stay as booked; a normal job does the same behind a low one; a high job submitted
    /// more than PRIORITY_LEAD_MS after a normal one does not jump it.
    #[test]
    fn a_higher_priority_takes_its_tenants_next_turn_and_no_other_tenants() {
        use crate::domain::job::Priority::{High, Low, Normal};
        let limits = ProviderLimits {
            rpm: Some(6),
            ..Default::default()
        };
        let reservable = [Reservable {
            name: "p".into(),
            limits,
            day: 0,
        }];
        let t0 = 10 * MINUTE_MS;
        let full = || {
            let mut state = ProviderState::default();
            for _ in 0..6 {
                state.count_request(t0 / MINUTE_MS, 0);
            }
            HashMap::from([("p".to_string(), state)])
        };
        let mut states = full();
        let claim = |states: &mut HashMap<String, ProviderState>, me: &Claimant, now: u64| {
            reserve(states, &reservable, &[], &me.tenant, Some(me), now)
        };
        // A's backlog of normal jobs books A's turns, B's one job a turn of B's; then A's high job.
        let normal: Vec<Claimant> = (0..3).map(|i| claimant("a", &format!("n{i}"), t0, Normal)).collect();
        let turns: Vec<u64> = normal
            .iter()
            .map(|me| match claim(&mut states, me, t0 + 1) {
                Reservation::Booked { at_ms, .. } => at_ms,
                other => panic!("{other:?}"),
            })
            .collect();
        let b = claimant("b", "b0", t0, Normal);
        let Reservation::Booked { at_ms: b_turn, .. } = claim(&mut states, &b, t0 + 2) else {
            panic!("b not booked")
        };
        let high = claimant("a", "h", t0 + 5, High);
        let Reservation::Booked { at_ms: high_turn, .. } = claim(&mut states, &high, t0 + 3) else {
            panic!("high not booked")
        };
        assert!(high_turn > turns[2] && high_turn > b_turn);
        assert_eq!(
            states["p"].jumpers[&high.tenant].len(),
            1,
            "the high job waits as a jumper"
        );
        // B at its turn: B's request, nothing handed (A's jumper is A's).
        assert_eq!(claim(&mut states, &b, b_turn), Reservation::Reserved("p".into()));
        // A's first normal job at its turn hands the request to the high job and takes its turn.
        match claim(&mut states, &normal[0], turns[0]) {
            Reservation::Handed { at_ms, to, .. } => {
                assert_eq!(at_ms, high_turn);
                assert_eq!((to.job_id.as_str(), to.gen.as_str(), to.seq), ("h", "g", 2));
            }
            other => panic!("{other:?}"),
        }
        assert!(states["p"].jumpers.is_empty());
        // The high job's claim finds the request granted: counted once, by the hand-over.
        let counted = states["p"].minute_requests;
        assert_eq!(
            claim(&mut states, &high, turns[0] + 10),
            Reservation::Reserved("p".into())
        );
        assert_eq!(states["p"].minute_requests, counted);
        assert_eq!(
            (states["p"].minute, counted),
            (turns[0] / MINUTE_MS, 2),
            "B's request and the hand-over's"
        );
        assert!(states["p"].grants.is_empty());
        // The next normal job of A keeps its own turn.
        assert_eq!(
            claim(&mut states, &normal[1], turns[1]),
            Reservation::Reserved("p".into())
        );

        // A normal job behind a low one takes its turn; a high one submitted past the lead does not
        // jump a normal one.
        let mut states = full();
        let low = claimant("a", "l", t0, Low);
        let Reservation::Booked { at_ms: low_turn, .. } = claim(&mut states, &low, t0 + 1) else {
            panic!("low not booked")
        };
        let late = claimant("a", "n", t0 + 1, Normal);
        assert!(matches!(claim(&mut states, &late, t0 + 2), Reservation::Booked { .. }));
        assert!(matches!(
            claim(&mut states, &low, low_turn),
            Reservation::Handed { to, .. } if to.job_id == "n"
        ));
        let mut states = full();
        let old = claimant("a", "old", t0, Normal);
        let Reservation::Booked { at_ms: old_turn, .. } = claim(&mut states, &old, t0 + 1) else {
            panic!("not booked")
        };
        let much_later = claimant("a", "h2", t0 + crate::domain::job::PRIORITY_LEAD_MS + 1, High);
        assert!(matches!(
            claim(&mut states, &much_later, t0 + 2),
            Reservation::Booked { .. }
        ));
        assert_eq!(claim(&mut states, &old, old_turn), Reservation::Reserved("p".into()));
    }

    /// Serves every job of `jobs` (tenant, priority, submitted at) on a `rpm` provider whose minute
    /// `t0` is used up: each books at its submit, then comes back at its turn (a handed-over turn's
    /// jumper at once). Returns each job's call instant, by index.
    fn serve_all(jobs: &[(&str, crate::domain::job::Priority, u64)], rpm: u64, t0: u64) -> Vec<u64> {
        let limits = ProviderLimits {
            rpm: Some(rpm),
            ..Default::default()
        };
        let reservable = [Reservable {
            name: "p".into(),
            limits,
            day: 0,
        }];
        let mut state = ProviderState::default();
        for _ in 0..rpm {
            state.count_request(t0 / MINUTE_MS, 0);
        }
        let mut states = HashMap::from([("p".to_string(), state)]);
        let claimants: Vec<Claimant> = jobs
            .iter()
            .enumerate()
            .map(|(i, (tenant, priority, at))| claimant(tenant, &i.to_string(), *at, *priority))
            .collect();
        let mut served = vec![None; jobs.len()];
        // (when, job): the claims still to come, earliest first (ties by job).
        let mut pending: std::collections::BTreeSet<(u64, usize)> =
            jobs.iter().enumerate().map(|(i, (_, _, at))| (*at, i)).collect();
        while let Some((now, i)) = pending.pop_first() {
            let me = &claimants[i];
            match reserve(&mut states, &reservable, &[], &me.tenant, Some(me), now) {
                Reservation::Reserved(_) => served[i] = Some(now),
                Reservation::Booked { at_ms, .. } => {
                    pending.insert((at_ms, i));
                }
                Reservation::Handed { at_ms, to, .. } => {
                    pending.insert((at_ms, i));
                    let j: usize = to.job_id.parse().unwrap();
                    pending.retain(|(_, k)| *k != j);
                    pending.insert((now, j));
                }
                Reservation::None => panic!("the provider is always reservable"),
            }
        }
        served.into_iter().map(|s| s.expect("every job served")).collect()
    }

    proptest::proptest! {
        /// A success that changes nothing shared moves only the latency average and the last
        /// attempt's instant (and, for a provider that limits nothing, the counts no limit reads).
        #[test]
        fn a_quiet_success_moves_only_the_latency_and_the_last_attempt(
            mc in 0u64..50, dc in 0u64..500, tc in 0u64..5000, cu in 0u64..2_000_000, lat in 0u64..5000,
            call in 0u64..5000, now in 1_000_000u64..1_100_000, reserved: bool,
            rpm in proptest::option::of(1u64..60), tpm in proptest::option::of(1u64..60_000),
        ) {
            let before = ProviderState {
                minute: now / MINUTE_MS, minute_requests: mc, token_minute: now / MINUTE_MS, minute_tokens: tc,
                day: 1, day_requests: dc, cooldown_until_ms: cu, last_class: Some(LastOutcome::Ok),
                last_at_ms: now - 1, latency_ms: lat, ..ProviderState::default()
            };
            let limits = ProviderLimits { rpm, rpd: None, tpm, reset: ResetClock::default() };
            let mut event = ProviderEvent::new("p", &limits, now, BackoffPolicy::default());
            event.day = 1;
            event.latency_ms = call;
            event.reserved = reserved;
            event.tokens = 7;
            let mut after = before.clone();
            after.apply(&event);
            if !event.changes_shared_state(Some(&before)) {
                let mut expected = before.clone();
                expected.latency_ms = after.latency_ms;
                expected.last_at_ms = after.last_at_ms;
                if rpm.is_none() {
                    expected.minute_requests = after.minute_requests;
                    expected.day_requests = after.day_requests;
                }
                if tpm.is_none() {
                    expected.minute_tokens = after.minute_tokens;
                }
                proptest::prop_assert_eq!(after, expected);
            } else {
                proptest::prop_assert!(rpm.is_some() && !reserved || tpm.is_some());
            }
        }

        /// Priorities reorder a tenant's own calls only: whatever priorities tenant A's jobs carry, tenant
        /// B's jobs are called at the same instants as when all of A's are normal, A's calls at the same
        /// instants in some order, and the provider never serves more than `rpm` a minute. A single
        /// high job among A's normal ones is called no later than as a normal one, and before every A
        /// job submitted before it that was not yet called when it was submitted, but for those whose
        /// turn (the next minute's) was booked before its own.
        #[test]
        fn priorities_reorder_a_tenants_own_calls_only(
            rpm in 2u64..12,
            a in proptest::collection::vec(0u8..3, 1..40),
            b in 0usize..10,
            high in proptest::option::of(0usize..40),
        ) {
            use crate::domain::job::Priority::{High, Low, Normal};
            let t0 = 100 * MINUTE_MS;
            let word = |p: u8| [Low, Normal, High][p as usize];
            let mut jobs: Vec<(&str, crate::domain::job::Priority, u64)> = match high {
                // One high job among normal ones.
                Some(h) => (0..a.len()).map(|i| ("a", if i == h % a.len() { High } else { Normal }, t0 + 1 + i as u64)).collect(),
                None => a.iter().enumerate().map(|(i, p)| ("a", word(*p), t0 + 1 + i as u64)).collect(),
            };
            jobs.extend((0..b).map(|i| ("b", Normal, t0 + 1 + (a.len() + i) as u64)));
            let plain: Vec<_> = jobs.iter().map(|(t, _, at)| (*t, Normal, *at)).collect();
            let with = serve_all(&jobs, rpm, t0);
            let without = serve_all(&plain, rpm, t0);
            let mut a_with = Vec::new();
            let mut a_without = Vec::new();
            for (i, job) in jobs.iter().enumerate() {
                if job.0 == "b" {
                    proptest::prop_assert_eq!(with[i], without[i], "B's job {} moved", i);
                } else {
                    a_with.push(with[i]);
                    a_without.push(without[i]);
                }
            }
            a_with.sort();
            a_without.sort();
            proptest::prop_assert_eq!(a_with, a_without, "A's calls at the same instants");
            if let Some(h) = high.map(|h| h % a.len()) {
                proptest::prop_assert!(with[h] <= without[h], "the high job came later");
                let first_turn = (t0 / MINUTE_MS + 1) * MINUTE_MS;
                for k in 0..h {
                    if with[k] > with[h] {
                        continue;
                    }
                    // Called before the high job: only one whose turn was booked at the next minute.
                    proptest::prop_assert!(with[k] == first_turn || with[k] <= jobs[h].2, "A's job {} went before the high job", k);
                }
            }
            let mut per_minute: HashMap<u64, u64> = HashMap::new();
            for at in &with {
                *per_minute.entry(at / MINUTE_MS).or_default() += 1;
            }
            proptest::prop_assert!(per_minute.values().all(|n| *n <= rpm), "{:?}", per_minute);
        }

        /// A tenant alone is booked at the provider's pace from the next minute on (never more than `rpm`
        /// turns in a minute), and a tenant new to the provider is booked at the next minute whatever the
        /// others have booked.
        #[test]
        fn turns_are_booked_at_the_providers_pace_and_a_new_tenant_goes_next(
            rpm in 1u64..120,
            backlog in 1usize..300,
            now in 0u64..10_000_000,
            later in 0u64..600_000,
        ) {
            let mut state = ProviderState::default();
            let next_minute = (now / MINUTE_MS + 1) * MINUTE_MS;
            let turns: Vec<u64> = (0..backlog).map(|_| state.book(rpm, "o/a", now)).collect();
            proptest::prop_assert_eq!(turns[0], next_minute);
            for pair in turns.windows(2) {
                proptest::prop_assert!(pair[1] >= pair[0] + MINUTE_MS / rpm);
            }
            let mut per_minute: HashMap<u64, u64> = HashMap::new();
            for t in &turns {
                *per_minute.entry(t / MINUTE_MS).or_default() += 1;
            }
            proptest::prop_assert!(per_minute.values().all(|n| *n <= rpm));
            let then = now + later;
            let first = state.book(rpm, "o/b", then);
            proptest::prop_assert_eq!(first, (then / MINUTE_MS + 1) * MINUTE_MS);
        }
    }
}
