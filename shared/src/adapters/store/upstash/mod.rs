//! The Upstash store: job state in Upstash Redis over its REST API, one request per state change.
//!
//! Upstash bills every command Redis executes: a script call and each `redis.call` inside it
//! (scripts/count.lua counts them; the figures per route: `BILLED_PER_ROUTE` in bench/src/routes.rs).
//! So each key below exists because a state change needs it, and each script runs only the commands
//! its change needs: a delivered job (submit, claim, finish, poll, purge) executes 16, about 15 in a
//! stream of jobs (a submit takes provider states read within 5 s; quiet successes write them once).
//!
//! Key layout (every key expires):
//! - `st:j:<owner>:<job id>` — the job record: a header line
//!   `J2 <lease end, 13 digits> <state> <gen> <seq> <expires ms>` (then ` d` while a finished job still
//!   owes deliveries: a poll does not shorten its life; else ` x` when one of its deliveries was
//!   dead-lettered: purge.lua then clears `st:x:<owner>`) that the Lua scripts read
//!   (scripts/header.lua), then the job as JSON (never rewritten by Lua, so user JSON stays exact;
//!   overview.lua only walks it to the spec's context for the job's tenant).
//!   The lease is the header's own field: a claim writes its end in place (`SETRANGE`), so it is
//!   fenced by the header's gen and seq, and the finish's new record or a purge drops it with the
//!   record. The id is derived from the owner and the request's identity (`job::job_id`), so this key
//!   is also the dedupe index and a purge by commit needs no lookup. It expires at the job's `expires_at_ms`.
//! - `st:due` — the due-index: every unfinished job and every finished one that owes deliveries, member
//!   its record key, scored by when its next step is due (create: now + the sweep grace, with a
//!   fraction of a millisecond that keeps arrival order; finish: the next attempt; a sweep: the lease's
//!   end for a job whose step is running, now + the grace for one it sends again). One per store, so
//!   one sweep reads it in one command whatever the number of owners; entries whose record expired are
//!   dropped by the sweep that meets them. Its member `~s`, scored by minus the instant the sweeper
//!   chain lapses (so first), tells a create whether a chain is alive (create.lua, sweep.lua). Each
//!   sixteenth sweep extends it by 8 days (`INDEX_LIFE_MS`); it goes with the chain when it holds no job.
//! - `st:sweeper` — `<token>:<round>` of the one live sweeper chain (sweep.lua).
//! - `st:pv` — every provider's shared quota state (quota.rs): one JSON object, provider name → state
//!   (with today's attempts by outcome for the overview), and `~all` while every provider is unusable
//!   (an alert's state). One string, so a claim and a poll read it with the job's record in one `MGET`;
//!   a finish rewrites it whole, unless its attempt changed nothing another step acts on (a quiet
//!   success, `QuietSuccesses`: folded in by the next finish that writes). Expires 8 days after the
//!   last finish. Its `~o:<origin>` fields are the failing delivery origins' states (domain/origins.rs: the receiver-recovery fast path), so a
//!   delivery's claim reads its origin's state in the same `MGET`; only origin_down.lua and
//!   origin_up.lua (the failure path) write them.
//! - `st:o:<origin>` — the jobs waiting on a down origin's recovery: member the record key, score the
//!   delivery's scheduled time (origin_down.lua adds, origin_up.lua moves them in the due-index and
//!   deletes it). Expires 8 days after the outage's last change.
//! - `st:b:m:<yyyymm>:<owner>` — an owner's month (scripts/budget.lua): signed 64-bit counters in one
//!   string (`BITFIELD`): the budget (budget.rs: the month's four, then four for each hour of the
//!   month), then the owner's live counters: its rate window (the window's id, its requests), its jobs
//!   in flight, today's completed and failed jobs. The command that counts a request against the rate
//!   limit (submit, the dashboard's reads), or takes a finished job out of flight (finish), adds the
//!   call's spending to the budget in the same command; a claim's spending is added by the finish of
//!   its step, a poll's or a purge's (plain commands) by the owner's next counted call in this process
//!   (`Uncounted`). The jobs in flight are carried into a new month's bucket; a count that
//!   drifted up (a job expired unfinished) is recounted from the index before a create is refused.
//!   It expires 35 days after the month ends. `st:b:o:<yyyymm>`: the month's owners (the deployment's
//!   read sums them).
//! - `st:x:<owner>` — the owner's finished jobs with a dead-lettered delivery, member job id, scored by
//!   the record's expiry (finish adds or removes as the record says, purge removes).
//! - `st:alerts` — the alert book (finish.lua): flap windows and suppressed counts per provider.
//!
//! Requests per job that succeeds on its first attempt: submit 1 (create.lua), claim 1 (claim.lua),
//! finish 1 (finish.lua), poll 2 (`MGET`, then `PEXPIRE` or `ZRANK`), purge 1 (`GETDEL`); plus the
//! sweeps, shared by every job in the store. The submit's script counts the request against its owner's
//! limits in the same request, and a refused request writes nothing that stays; polls and purges are
//! counted by the process (`ReadWindows`).
//!
//! Hosted Upstash runs a script under a global lock unless it declares every key it touches, and may
//! stall on a cold key read by a name built at run time. Every key of the job path is passed in
//! `KEYS`; built at run time, off the job path: sweep.lua's job records (named by the index),
//! overview.lua's (the owner's index entries), create.lua's recount when an owner's count says full,
//! spent.lua's other owners' buckets (the deployment's budget read), batch_read.lua's items.

pub(crate) mod client;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use client::arg;
pub use client::{Script, UpstashClient};

use crate::domain::budget::{self, Bucket, Buckets, Charge, Spent};
use crate::domain::job::{id_gen, record_id, Job, StepRef};
use crate::domain::origins::{self, OriginState, ORIGIN_PREFIX};
use crate::domain::quota::{ProviderEvent, ProviderState, Reservation, Reserve};
use crate::ports::{
    Admission, AttemptCount, Claim, Clock, Created, Enlist, FinishOutcome, JobRead, Limits, OriginDown, Overview,
    OverviewBounds, RateLimit, RateWindow, Standing, Store, StoreError, Submitted, SweepRequest, Swept, TenantCount,
    DAY_MS, HORIZONS_MS,
};

const PROVIDERS_KEY: &str = "st:pv";
const DUE_KEY: &str = "st:due";
const SWEEPER_KEY: &str = "st:sweeper";
/// Which incidents are raised, and the per-provider flap windows (finish.lua).
const ALERTS_KEY: &str = "st:alerts";
const JOB_PREFIX: &str = "st:j:";

/// A job's record key: by its record id (`job::record_id`), whichever incarnation the id names.
fn job_key(owner: &str, id: &str) -> String {
    format!("st:j:{owner}:{}", record_id(id))
}

fn batch_key(owner: &str, id: &str) -> String {
    format!("st:B:{owner}:{id}")
}

/// The stored form of a batch: a header of its items' job ids (`-` for an item refused at submit) that
/// batch_read.lua reads, then the JSON.
fn encode_batch(batch: &crate::domain::batch::BatchRecord) -> Result<String, StoreError> {
    let json = serde_json::to_string(batch).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let ids: Vec<&str> = batch
        .items
        .iter()
        .map(|item| item.job_id.as_deref().unwrap_or("-"))
        .collect();
    Ok(format!("B1 {}\n{json}", ids.join(" ")))
}

fn decode_batch(record: &str) -> Result<crate::domain::batch::BatchRecord, StoreError> {
    let json = record
        .strip_prefix("B1 ")
        .and_then(|rest| rest.split_once('\n'))
        .map(|(_, json)| json)
        .ok_or_else(|| StoreError::Corrupt("batch record without header".into()))?;
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The steps a script answered as flat triples (record key, gen, seq): a sweep's due jobs, an origin's
/// woken deliveries. `None` when the answer is not such a list.
fn step_refs(items: &[Value]) -> Option<Vec<StepRef>> {
    if !items.len().is_multiple_of(3) {
        return None;
    }
    items
        .chunks(3)
        .map(|entry| {
            let [Value::String(key), Value::String(gen), Value::String(seq)] = entry else {
                return None;
            };
            let (owner, id) = parse_job_key(key)?;
            Some(StepRef {
                owner: owner.to_string(),
                job_id: id.to_string(),
                gen: gen.clone(),
                seq: seq.parse().ok()?,
            })
        })
        .collect()
}

/// The owner and id a due-index member (a record key) names: the id is the last 32 characters.
fn parse_job_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(JOB_PREFIX)?;
    let split = rest.len().checked_sub(33)?;
    let (owner, id) = (rest.get(..split)?, rest.get(split + 1..)?);
    crate::domain::job::is_valid_job_id(id).then_some((owner, id))
}

fn dead_key(owner: &str) -> String {
    format!("st:x:{owner}")
}

/// Today's number (UTC days since the epoch): the day today's counts belong to (finish.lua, overview.lua).
fn today(now_ms: u64) -> u64 {
    now_ms / DAY_MS
}

/// The due score of a job due at `ms`: that millisecond and a fraction of it that grows with every
/// score this process hands out, so jobs due at the same millisecond keep the order they arrived in
/// (a job's rank is its place in line: the ETA; store/memory.rs keeps the same order) without a
/// command to count them. A whole millisecond still decides when a sweep sees the job.
fn due_score(ms: u64) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 4096;
    format!("{ms}.{:06}", n * 1_000_000 / 4096)
}

/// A count a script answered (an integer, or a hash value as a string).
fn count_of(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// A request's rate arguments as the route scripts take them (budget.lua's owner_request): the limit
/// (`0`: not limited) and the current window's id, its end (epoch ms).
struct RateArgs {
    limit: u32,
    ends_at_ms: u64,
}

impl RateArgs {
    fn new(rate: Option<RateLimit>, now_ms: u64) -> Self {
        match rate {
            Some(rate) => Self {
                limit: rate.limit,
                ends_at_ms: rate.window(now_ms).1,
            },
            None => Self {
                limit: 0,
                ends_at_ms: 0,
            },
        }
    }
}

/// The request's number in its owner's window, as a script counted it.
fn request_count(count: &Value) -> Result<u64, StoreError> {
    count
        .as_u64()
        .ok_or_else(|| StoreError::Corrupt(format!("unexpected request count {count}")))
}

/// Reads the head a counted script's answer starts with — the owner's request count in the current
/// window — and checks it against the owner's rate limit: the window to announce and the rest of the
/// answer, or `Err(window)` when the request is over the limit (the script then did nothing else).
fn counted<'a>(
    answer: &'a Value,
    rate: Option<RateLimit>,
    now_ms: u64,
    script: &str,
) -> Result<Result<(Option<RateWindow>, &'a [Value]), RateWindow>, StoreError> {
    let Some([count, rest @ ..]) = answer.as_array().map(Vec::as_slice) else {
        return Err(StoreError::Corrupt(format!("unexpected {script} answer {answer}")));
    };
    let count = request_count(count)?;
    Ok(match rate.map(|r| r.check(count, now_ms)).transpose() {
        Ok(window) => Ok((window, rest)),
        Err(window) => Err(window),
    })
}

/// A record's lease field when no step holds it (scripts/header.lua: 13 digits, written in place).
const NO_LEASE: &str = "0000000000000";

/// A lease's end as the header holds it: 13 digits, so a claim rewrites the field in place.
fn lease_field(end_ms: u64) -> String {
    format!("{end_ms:013}")
}

/// The stored form of a job: a header the scripts read, then the JSON.
pub(crate) fn encode(job: &Job) -> Result<String, StoreError> {
    let json = serde_json::to_string(job).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(format!(
        "J2 {NO_LEASE} {} {} {} {}{}\n{json}",
        job.state.code(),
        job.gen,
        job.seq,
        job.expires_at_ms,
        if job.state.is_finished() && job.owes_deliveries() {
            " d"
        } else if job.dead_lettered() {
            " x"
        } else {
            ""
        }
    ))
}

pub(crate) fn decode(record: &str) -> Result<Job, StoreError> {
    let (header, json) = record
        .split_once('\n')
        .ok_or_else(|| StoreError::Corrupt("record without header".into()))?;
    if !header.starts_with("J2 ") && !header.starts_with("J1 ") {
        return Err(StoreError::Corrupt(format!(
            "unknown record version {:?}",
            header.get(..2)
        )));
    }
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode_value(v: &Value) -> Result<Option<Job>, StoreError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => decode(s).map(Some),
        other => Err(StoreError::Corrupt(format!("unexpected record {other}"))),
    }
}

fn decode_providers(v: &Value) -> HashMap<String, ProviderState> {
    let mut states = HashMap::new();
    // One JSON object, provider name → state (st:pv); absent (false) before any provider was called.
    let Value::String(blob) = v else {
        return states;
    };
    let all: serde_json::Map<String, Value> = match serde_json::from_str(blob) {
        Ok(all) => all,
        Err(e) => {
            // Unreadable states must not stop every job: every provider starts afresh.
            tracing::warn!(error = %e, "unreadable provider states ignored");
            return states;
        }
    };
    for (name, raw) in all {
        // A deployment's flag beside the providers (finish.lua's ~all), not a provider.
        if name.starts_with('~') {
            continue;
        }
        match serde_json::from_value(raw) {
            Ok(state) => {
                states.insert(name, state);
            }
            // One unreadable entry must not stop every job: start that provider afresh.
            Err(e) => tracing::warn!(provider = %name, error = %e, "unreadable provider state ignored"),
        }
    }
    states
}

/// The delivery origins' shared states kept in the provider states (`~o:<origin>` fields, origins.rs),
/// by origin: read by the claim's existing `MGET`, so the fast path costs an ordinary delivery nothing.
fn decode_origins(v: &Value) -> HashMap<String, OriginState> {
    let Value::String(blob) = v else {
        return HashMap::new();
    };
    // Cheap test first: no origin is down on the ordinary path.
    if !blob.contains(ORIGIN_PREFIX) {
        return HashMap::new();
    }
    let Ok(all) = serde_json::from_str::<serde_json::Map<String, Value>>(blob) else {
        return HashMap::new();
    };
    all.into_iter()
        .filter_map(|(name, raw)| {
            let origin = name.strip_prefix(ORIGIN_PREFIX)?.to_string();
            match serde_json::from_value(raw) {
                Ok(state) => Some((origin, state)),
                Err(e) => {
                    // An unreadable origin state only costs that origin its fast path.
                    tracing::warn!(origin = %origin, error = %e, "unreadable origin state ignored");
                    None
                }
            }
        })
        .collect()
}

/// A delivery origin's list of waiting jobs (origin_down.lua, origin_up.lua).
fn origin_key(origin: &str) -> String {
    format!("st:o:{origin}")
}

/// What a route script read for the ETA: `{ahead, provider states, due ms, {later counts}}`, or `{}`
/// for a finished job.
fn decode_standing(v: &Value) -> Result<Standing, StoreError> {
    let unexpected = || StoreError::Corrupt(format!("unexpected standing {v}"));
    match v.as_array().map(Vec::as_slice) {
        Some([]) => Ok(Standing::default()),
        Some([ahead, providers, due, later]) => {
            let due = due.as_u64().ok_or_else(unexpected)?;
            Ok(Standing {
                ahead: ahead.as_u64().ok_or_else(unexpected)?,
                providers: decode_providers(providers),
                due_ms: (due > 0).then_some(due),
                later: later
                    .as_array()
                    .ok_or_else(unexpected)?
                    .iter()
                    .map(|n| n.as_u64().ok_or_else(unexpected))
                    .collect::<Result<_, _>>()?,
            })
        }
        _ => Err(unexpected()),
    }
}

/// The ETA's horizons as script arguments: their number, then each (standing.lua reads exactly these:
/// budget.lua's arguments come after them).
fn horizons() -> impl Iterator<Item = Value> {
    std::iter::once(arg(HORIZONS_MS.len() as u64)).chain(HORIZONS_MS.iter().map(|h| arg(*h)))
}

/// A store script: the counting wrapper (scripts/count.lua), the budget (scripts/budget.lua), the
/// preludes named (scripts/clock.lua: the clock check every absolute expiry goes through;
/// scripts/standing.lua: what an unfinished job's ETA needs), then the body in `stepper_main`. The
/// epilogue runs the body, counts its spending in the budget's buckets (scripts/budget.lua) and answers
/// with every command the call executed in front (scripts/count.lua): `{executed, answer}`.
macro_rules! script {
    ($file:literal $(, $prelude:literal)*) => {
        Script::counted(concat!(
            include_str!("scripts/count.lua"),
            "\n",
            include_str!("scripts/budget.lua"),
            "\n",
            include_str!("scripts/header.lua"),
            "\n",
            $(include_str!($prelude), "\n",)*
            "local function stepper_main()\n",
            include_str!($file),
            "\nend\nlocal stepper_answer = stepper_main()\nbudget_count()\nreturn {EXECUTED, stepper_answer}\n",
        ))
    };
}

pub struct UpstashStore {
    client: UpstashClient,
    /// When this process last saw the engine's clock agree with the store's (clock.lua): checked on
    /// the first call that writes an expiry, then once a minute.
    clock_checked: std::sync::Mutex<Option<std::time::Instant>>,
    /// Store commands each acquired claim executed, by its step (record key, gen, seq): the finish of
    /// that step adds them to the budget (budget.lua), so a claim spends no command on the budget.
    carried: std::sync::Mutex<HashMap<(String, String, u64), u64>>,
    /// What this process's polls and purges executed, by owner, that no call has counted in the budget
    /// yet: the owner's next counted call adds it (budget.lua's carry), or a flush once it is many or
    /// old (`Uncounted::due`), so a poll or a purge spends no command on the budget.
    uncounted: std::sync::Mutex<HashMap<String, Uncounted>>,
    /// Polls and purges counted against their owner's rate limit in this process (`ReadWindows`).
    read_windows: ReadWindows,
    /// Successes whose finish does not rewrite the provider states (`QuietSuccesses`).
    quiet: std::sync::Mutex<QuietSuccesses>,
    /// The provider states (`st:pv`, as read) this process read last (`StatesRead`): a create's ETA
    /// takes them while they are fresh instead of reading them again.
    states_read: std::sync::Mutex<StatesRead>,
    /// Names the rate window a request falls in and the instant expired jobs are pruned at.
    clock: Arc<dyn Clock>,
    create: Script,
    claim: Script,
    finish: Script,
    purge: Script,
    purged: Script,
    flush: Script,
    sweep: Script,
    overview: Script,
    providers: Script,
    spent: Script,
    batch_put: Script,
    batch_read: Script,
    origin_down: Script,
    origin_up: Script,
}

impl UpstashStore {
    pub fn new(client: UpstashClient, clock: Arc<dyn Clock>) -> Self {
        Self {
            client,
            clock_checked: std::sync::Mutex::new(None),
            carried: std::sync::Mutex::new(HashMap::new()),
            uncounted: std::sync::Mutex::new(HashMap::new()),
            read_windows: ReadWindows::default(),
            quiet: std::sync::Mutex::new(QuietSuccesses::default()),
            states_read: std::sync::Mutex::new(StatesRead::default()),
            clock,
            create: script!("scripts/create.lua", "scripts/clock.lua", "scripts/standing.lua"),
            // Claim and sweep write no absolute expiry: no clock check (one TIME call less).
            claim: script!("scripts/claim.lua", "scripts/json.lua"),
            finish: script!("scripts/finish.lua", "scripts/clock.lua"),
            purge: script!("scripts/purge.lua"),
            purged: script!("scripts/purged.lua"),
            flush: script!("scripts/flush.lua"),
            sweep: script!("scripts/sweep.lua"),
            overview: script!("scripts/overview.lua", "scripts/json.lua", "scripts/standing.lua"),
            providers: script!("scripts/providers.lua"),
            spent: script!("scripts/spent.lua"),
            batch_put: script!("scripts/batch_put.lua", "scripts/clock.lua"),
            batch_read: script!("scripts/batch_read.lua"),
            origin_down: script!("scripts/origin_down.lua"),
            origin_up: script!("scripts/origin_up.lua"),
        }
    }

    /// Runs a counted script: budget.lua's keys (the owner's bucket this month and last month's, the
    /// month's owners) and arguments (`owner`, what `charge` implies on AWS, the hour of the month, the
    /// bucket's expiry, the commands of a carried claim, whether to check the clock, one billed
    /// command) go last. Answers `(executed, answer)`.
    async fn eval_counted(
        &self,
        script: &Script,
        charge: Charge,
        owner: &str,
        keys: &[&str],
        args: Vec<Value>,
    ) -> Result<Value, StoreError> {
        self.eval_carrying(script, charge, owner, keys, args, Carry::Counted(0))
            .await
            .map(|(_, answer)| answer)
    }

    /// A counted script that also counts `carry`: a claim's commands (the finish of its step), and
    /// unless the call leaves its own count to its caller (`Carry::Left`), whatever the owner's polls
    /// and purges in this process left uncounted.
    async fn eval_carrying(
        &self,
        script: &Script,
        charge: Charge,
        owner: &str,
        keys: &[&str],
        args: Vec<Value>,
        carry: Carry,
    ) -> Result<(u64, Value), StoreError> {
        // What this call counts besides itself: a claim's commands, the owner's uncounted reads.
        let extra = match carry {
            Carry::Counted(claim) => {
                let mut extra = self.take_uncounted(owner);
                extra.commands += claim;
                extra
            }
            Carry::Left => Uncounted::default(),
        };
        let answer: Result<(u64, Value), StoreError> = async {
            let mut args = args;
            let now = self.clock.now_ms();
            let buckets = Buckets::at(now);
            let (month_start, _, _) = budget::month_of(now);
            let month = format!("{}:{owner}", buckets.month_key);
            let previous = format!("{}:{owner}", budget::month_key(month_start.saturating_sub(1)));
            let owners = budget::owners_key(now);
            let mut all = keys.to_vec();
            all.extend([month.as_str(), previous.as_str(), owners.as_str()]);
            let aws = charge.aws();
            let check_clock = self
                .clock_checked
                .lock()
                .map(|at| at.is_none_or(|at| at.elapsed() >= CLOCK_CHECK_EVERY))
                .unwrap_or(true);
            args.extend([
                arg(owner),
                arg(aws.lambda_invocations + extra.lambda_invocations),
                arg(aws.sqs_requests),
                arg(budget::hour_of_month(now)),
                arg(buckets.month_expires_s),
                arg(extra.commands),
                arg(if check_clock { "1" } else { "0" }),
                arg(1),
            ]);
            let answer = self.client.eval(script, &all, args).await?;
            let unexpected = || StoreError::Corrupt(format!("unexpected script answer {answer}"));
            let [executed, answer] = answer.as_array().map(Vec::as_slice).ok_or_else(unexpected)? else {
                return Err(unexpected());
            };
            let executed = executed.as_u64().ok_or_else(unexpected)?;
            crate::ports::metrics::redis_commands(executed as usize);
            if check_clock && script.checks_clock() {
                if let Ok(mut at) = self.clock_checked.lock() {
                    *at = Some(std::time::Instant::now());
                }
            }
            Ok((executed, answer.clone()))
        }
        .await;
        if answer.is_err() {
            // Not counted: the next call counts it.
            self.leave_uncounted(owner, extra);
        }
        answer
    }

    /// The provider states read lately (`states_read`), when fresh, and the epoch a read starting now
    /// must still find to be kept.
    fn fresh_states(&self) -> (u64, Option<Value>) {
        let now = self.clock.now_ms();
        match self.states_read.lock() {
            Ok(read) => (
                read.epoch,
                read.held
                    .as_ref()
                    .filter(|(at, _)| now >= *at && now - *at < StatesRead::FRESH_FOR_MS)
                    .map(|(_, states)| states.clone()),
            ),
            Err(_) => (u64::MAX, None),
        }
    }

    /// Keeps provider states read by a request that started at `epoch`, unless this process changed
    /// them since.
    fn states_seen(&self, epoch: u64, states: &Value) {
        let now = self.clock.now_ms();
        if let Ok(mut read) = self.states_read.lock() {
            if read.epoch == epoch {
                read.held = Some((now, states.clone()));
            }
        }
    }

    /// This process changed the provider states (or may have): what it read is stale.
    fn states_changed(&self) {
        if let Ok(mut read) = self.states_read.lock() {
            read.epoch += 1;
            read.held = None;
        }
    }

    fn take_uncounted(&self, owner: &str) -> Uncounted {
        self.uncounted
            .lock()
            .ok()
            .and_then(|mut u| u.remove(owner))
            .unwrap_or_default()
    }

    fn leave_uncounted(&self, owner: &str, more: Uncounted) {
        if more.commands == 0 && more.lambda_invocations == 0 {
            return;
        }
        if let Ok(mut uncounted) = self.uncounted.lock() {
            uncounted.entry(owner.to_string()).or_default().add(more);
        }
    }

    /// Leaves what a poll or a purge executed (`commands`, and the AWS requests `charge` implies) to
    /// the owner's next counted call, and counts it on its own when it is due (`Uncounted::due`). A
    /// failed flush leaves it for the next call: the read it follows has its answer already.
    async fn count_later(&self, owner: &str, commands: u64, charge: Charge) {
        self.leave_uncounted(
            owner,
            Uncounted {
                commands,
                lambda_invocations: charge.aws().lambda_invocations,
                since: Some(std::time::Instant::now()),
            },
        );
        let due = self
            .uncounted
            .lock()
            .map(|u| u.get(owner).is_some_and(Uncounted::due))
            .unwrap_or(false);
        if due {
            if let Err(error) = self
                .eval_counted(&self.flush, Charge::Flush, owner, &[], Vec::new())
                .await
            {
                tracing::warn!(owner, %error, "budget: counting this process's polls and purges failed; the next call counts them");
            }
        }
    }
}

/// What a call that leaves the budget to others carries (`UpstashStore::eval_carrying`).
enum Carry {
    /// The call counts itself, this many commands of a claim, and the owner's uncounted polls and purges.
    Counted(u64),
    /// The script leaves its own count to its caller (budget.lua's `BUDGET_CARRY`): nothing else rides on it.
    Left,
}

/// An owner's polls and purges that no call has counted in the budget yet.
#[derive(Debug, Default)]
struct Uncounted {
    commands: u64,
    lambda_invocations: u64,
    /// When the oldest of them ran.
    since: Option<std::time::Instant>,
}

impl Uncounted {
    /// Counted on their own (one flush call) once this many commands wait, or once the oldest has
    /// waited this long: the budget lags a process's reads by at most that, and a process that ends
    /// drops at most that much of its count.
    const FLUSH_AT_COMMANDS: u64 = 64;
    const FLUSH_AFTER: Duration = Duration::from_secs(60);

    fn due(&self) -> bool {
        self.commands >= Self::FLUSH_AT_COMMANDS || self.since.is_some_and(|at| at.elapsed() >= Self::FLUSH_AFTER)
    }

    fn add(&mut self, other: Uncounted) {
        self.commands += other.commands;
        self.lambda_invocations += other.lambda_invocations;
        self.since = match (self.since, other.since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Polls and purges counted against their owner's rate limit in this process, in a window of their
/// own: a submit's count is the store's (exact across instances, create.lua), a read's costs no
/// command. stepper-local is one process, so its count is exact; each Lambda instance counts its own.
#[derive(Debug, Default)]
struct ReadWindows(std::sync::Mutex<HashMap<String, (u64, u64)>>);

impl ReadWindows {
    /// Most owners remembered; past it, windows that ended are forgotten.
    const MAX_OWNERS: usize = 10_000;

    fn count(&self, owner: &str, rate: Option<RateLimit>, now_ms: u64) -> Result<Option<RateWindow>, RateWindow> {
        let Some(limit) = rate else { return Ok(None) };
        let (id, _) = limit.window(now_ms);
        let count = match self.0.lock() {
            Ok(mut windows) => {
                if windows.len() >= Self::MAX_OWNERS {
                    windows.retain(|_, (window, _)| *window == id);
                }
                let entry = windows.entry(owner.to_string()).or_insert((id, 0));
                if entry.0 != id {
                    *entry = (id, 0);
                }
                entry.1 += 1;
                entry.1
            }
            // A poisoned lock counts nothing: the request is let through.
            Err(_) => 1,
        };
        limit.check(count, now_ms).map(Some)
    }
}

/// Successes that changed nothing another step acts on (`ProviderEvent::changes_shared_state`, against
/// the provider states this process's last claim read): their finish skips the provider states' read
/// and write (two commands of finish.lua's six), and the next finish that writes them folds these in
/// (finish.lua: today's successes, the latency average, the last attempt), as each would have been.
/// Held for at most `MAX` calls or `FOR`: the ETA's latency and the overview's counts lag by that
/// much, and a process that ends loses at most that many successes from today's counts.
#[derive(Debug, Default)]
struct QuietSuccesses {
    /// The provider states as the last claim read them (`st:pv`, whole).
    seen: Option<serde_json::Map<String, Value>>,
    /// Provider → (latency ms, instant ms) of each success held.
    calls: HashMap<String, Vec<(u64, u64)>>,
    since: Option<std::time::Instant>,
}

impl QuietSuccesses {
    const MAX: usize = 16;
    const FOR: Duration = Duration::from_secs(30);

    /// Holds `event` when its finish need not write the provider states.
    fn hold(&mut self, event: &ProviderEvent, today: u64) -> bool {
        let Some(seen) = &self.seen else { return false };
        // The deployment's "every provider unusable" flag: a success clears it (finish.lua).
        if seen.contains_key("~all") {
            return false;
        }
        let Some(raw) = seen.get(&event.provider) else {
            return false;
        };
        // Today's counts start afresh on a new day: that write is not deferred.
        if raw.get("ud").and_then(Value::as_u64) != Some(today) {
            return false;
        }
        let before: Option<ProviderState> = serde_json::from_value(raw.clone()).ok();
        if event.changes_shared_state(before.as_ref()) {
            return false;
        }
        let held: usize = self.calls.values().map(Vec::len).sum();
        if held + 1 >= Self::MAX || self.since.is_some_and(|at| at.elapsed() >= Self::FOR) {
            return false;
        }
        self.calls
            .entry(event.provider.clone())
            .or_default()
            .push((event.latency_ms, event.now_ms));
        self.since.get_or_insert_with(std::time::Instant::now);
        true
    }

    /// Every success held, for a finish that writes the provider states.
    fn take(&mut self) -> HashMap<String, Vec<(u64, u64)>> {
        self.since = None;
        std::mem::take(&mut self.calls)
    }

    /// Held again: the finish that was to write them did not.
    fn put_back(&mut self, calls: HashMap<String, Vec<(u64, u64)>>) {
        if calls.is_empty() {
            return;
        }
        for (provider, mut more) in calls {
            self.calls.entry(provider).or_default().append(&mut more);
        }
        self.since.get_or_insert_with(std::time::Instant::now);
    }
}

/// A job record's header as the scripts read it (scripts/header.lua), for the routes that read a record
/// with a plain command.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    lease_end_ms: u64,
    state: char,
    gen: String,
    flag: Option<char>,
}

impl Head {
    fn of(record: &str) -> Option<Self> {
        let line = record.split_once('\n')?.0;
        let mut fields = line.split(' ');
        let lease_end_ms = match fields.next()? {
            "J2" => fields.next()?.parse().ok()?,
            "J1" => 0,
            _ => return None,
        };
        let state = fields.next()?.chars().next()?;
        let gen = fields.next()?.to_string();
        let _seq = fields.next()?;
        let _expires = fields.next()?;
        let flag = fields.next().and_then(|f| f.chars().next());
        Some(Self {
            lease_end_ms,
            state,
            gen,
            flag,
        })
    }

    fn finished(&self) -> bool {
        self.state == 's' || self.state == 'f'
    }

    /// What a purge leaves behind that purged.lua clears: an unfinished job's due-index entry and place
    /// among its owner's jobs in flight; a finished one's entry while it owes deliveries (` d`), and its
    /// place among the dead-lettered (` d`, ` x`).
    fn leaves_traces(&self) -> bool {
        !self.finished() || matches!(self.flag, Some('d' | 'x'))
    }
}

/// An expiry already past by the engine's own clock is refused before any request (the store's clock,
/// which Redis enforces, is compared by clock.lua when a check is due).
fn expiry_ahead(what: &str, expires_at_ms: u64, now_ms: u64) -> Result<(), StoreError> {
    if expires_at_ms <= now_ms {
        return Err(StoreError::ExpiryInPast(format!(
            "{what} expires at {expires_at_ms} ms, the engine clock reads {now_ms} ms"
        )));
    }
    Ok(())
}

/// How long the due-index lives past a sweep (sweep.lua): longer than any job (a job's deadline is at
/// most a day, its record a grace past it), as the provider states.
const INDEX_LIFE_MS: u64 = 8 * DAY_MS;

/// Provider states this process read, standing in for a create's read of them (the submit's ETA) for
/// `FRESH_FOR_MS` (engine clock): another instance's change shows in a submit's ETA at most that late.
/// This process's own writes drop them (a new epoch), and a read that overlapped a write is not kept.
#[derive(Debug, Default)]
struct StatesRead {
    epoch: u64,
    /// When (engine clock, ms) and what was read.
    held: Option<(u64, Value)>,
}

impl StatesRead {
    const FRESH_FOR_MS: u64 = 5_000;
}

/// Most claims whose commands wait for the finish of their step, per process (see `carried`).
const MAX_CARRIED: usize = 10_000;

/// How often a process checks the engine's clock against the store's (scripts/clock.lua).
const CLOCK_CHECK_EVERY: Duration = Duration::from_secs(60);

#[async_trait]
impl Store for UpstashStore {
    async fn create(&self, job: &Job, enlist: &Enlist, limits: Limits) -> Result<Admission<Submitted>, StoreError> {
        let now = self.clock.now_ms();
        expiry_ahead("job", job.expires_at_ms, now)?;
        let rate = RateArgs::new(limits.rate, now);
        let (epoch, held) = self.fresh_states();
        let answer = self
            .eval_counted(
                &self.create,
                Charge::Create,
                &job.owner,
                &[&job_key(&job.owner, &job.id), DUE_KEY, SWEEPER_KEY, PROVIDERS_KEY],
                [
                    arg(encode(job)?),
                    arg(job_key(&job.owner, "")),
                    arg(job.expires_at_ms),
                    arg(rate.limit),
                    arg(rate.ends_at_ms),
                    arg(limits.in_flight.unwrap_or(0)),
                    arg(due_score(enlist.due_at_ms)),
                    arg(enlist.sweeper_token.as_str()),
                    arg(enlist.sweeper_life.as_millis() as u64),
                    arg(now),
                    arg(if held.is_some() { "1" } else { "0" }),
                ]
                .into_iter()
                .chain(horizons())
                .collect(),
            )
            .await?;
        let unexpected = || StoreError::Corrupt(format!("unexpected create answer {answer}"));
        let armed = |flag: &Value| (flag.as_i64() == Some(1)).then(|| enlist.sweeper_token.clone());
        let [verdict, count, rest @ ..] = answer.as_array().map(Vec::as_slice).ok_or_else(unexpected)? else {
            return Err(unexpected());
        };
        let count = request_count(count)?;
        let rate = match limits.rate.map(|r| r.check(count, now)).transpose() {
            Ok(rate) => rate,
            Err(window) => return Ok(Admission::RateLimited(window)),
        };
        // The standing's provider states: as read by the script, else the ones held.
        let standing = |v: &Value| -> Result<Standing, StoreError> {
            let mut standing = decode_standing(v)?;
            match (&held, v.as_array().and_then(|a| a.get(1))) {
                // Left out by the script (a Lua false answers as null).
                (Some(states), Some(Value::Null | Value::Bool(false))) => standing.providers = decode_providers(states),
                (_, Some(states @ Value::String(_))) => self.states_seen(epoch, states),
                _ => {}
            }
            Ok(standing)
        };
        let value = match (verdict.as_str(), rest) {
            (Some("new"), [flag, read]) => Submitted {
                created: Created::New,
                arm_sweeper: armed(flag),
                standing: standing(read)?,
            },
            (Some("existing"), [record, flag, read]) => Submitted {
                created: Created::Existing(Box::new(
                    decode_value(record)?.ok_or_else(|| StoreError::Corrupt("empty record".into()))?,
                )),
                arm_sweeper: armed(flag),
                standing: standing(read)?,
            },
            (Some("flight"), []) => {
                return Ok(Admission::TooManyInFlight {
                    limit: limits.in_flight.unwrap_or(0),
                    rate,
                });
            }
            _ => return Err(unexpected()),
        };
        Ok(Admission::Admitted { value, rate })
    }

    async fn claim(&self, step: &StepRef, lease: Duration, reserve: &Reserve) -> Result<Claim, StoreError> {
        let lease_ms = lease.as_millis() as u64;
        let (epoch, _) = self.fresh_states();
        let now = self.clock.now_ms();
        let key = job_key(&step.owner, &step.job_id);
        // claim.lua's reservable providers, in short keys (quota::reserve's input); '' when none.
        let reservable = if reserve.providers.is_empty() {
            String::new()
        } else {
            let list: Vec<Value> = reserve
                .providers
                .iter()
                .map(|r| {
                    serde_json::json!({"p": r.name, "rpm": r.limits.rpm, "tpm": r.limits.tpm, "rpd": r.limits.rpd, "d": r.day})
                })
                .collect();
            Value::Array(list).to_string()
        };
        let (executed, answer) = self
            .eval_carrying(
                &self.claim,
                Charge::Claim,
                &step.owner,
                &[&key, PROVIDERS_KEY],
                vec![
                    arg(step.gen.as_str()),
                    arg(step.seq.to_string()),
                    arg(lease_field(now + lease_ms)),
                    arg(now),
                    arg(reservable),
                    arg(reserve.tenant.as_str()),
                    arg(step.owner.as_str()),
                    arg(step.job_id.as_str()),
                    arg(crate::domain::job::PRIORITY_LEAD_MS),
                    arg(crate::domain::quota::GRANT_MS),
                    arg(crate::domain::quota::MAX_JUMPERS as u64),
                ],
                // Counted by the finish of its step (below: `carried`).
                Carry::Left,
            )
            .await?;
        let unexpected = || StoreError::Corrupt(format!("unexpected claim answer {answer}"));
        let [verdict, rest @ ..] = answer.as_array().map(Vec::as_slice).ok_or_else(unexpected)? else {
            return Err(unexpected());
        };
        let record = |v: &Value| decode_value(v)?.ok_or_else(|| StoreError::Corrupt("empty record".into()));
        Ok(match (verdict.as_str(), rest) {
            (Some("missing"), []) => Claim::Missing,
            (Some("stale"), [job]) => Claim::Stale(record(job)?),
            (Some("busy"), [left]) => Claim::Busy {
                // PTTL: -1 (no expiry) cannot happen; treat anything odd as a full lease.
                lease_left: Duration::from_millis(left.as_u64().unwrap_or(lease_ms)),
            },
            (Some("ok"), [job, providers, probes, reserved, booked_at, handed]) => {
                self.states_seen(epoch, providers);
                // The states its finish decides against (`QuietSuccesses`).
                if let Ok(mut quiet) = self.quiet.lock() {
                    quiet.seen = providers.as_str().and_then(|blob| serde_json::from_str(blob).ok());
                }
                // Its commands are counted by the finish of this step (budget.lua's carry).
                if let Ok(mut carried) = self.carried.lock() {
                    // A step that ends without a finish (a delivery step with nothing left to send, an
                    // early redrive) leaves its entry behind, and its claim uncounted: bounded here.
                    if carried.len() >= MAX_CARRIED {
                        carried.clear();
                    }
                    carried.insert((key, step.gen.clone(), step.seq), executed);
                }
                Claim::Acquired {
                    job: record(job)?,
                    origins: decode_origins(providers),
                    providers: decode_providers(providers),
                    probes: probes
                        .as_array()
                        .map(|names| names.iter().filter_map(|n| n.as_str().map(str::to_string)).collect())
                        .unwrap_or_default(),
                    reservation: match (reserved.as_str(), booked_at.as_u64(), handed.as_array()) {
                        (Some(provider), Some(at_ms), Some(to)) => {
                            let [Value::String(owner), Value::String(job_id), Value::String(gen), Value::String(seq)] =
                                to.as_slice()
                            else {
                                return Err(unexpected());
                            };
                            Reservation::Handed {
                                provider: provider.to_string(),
                                at_ms,
                                to: StepRef {
                                    owner: owner.clone(),
                                    job_id: job_id.clone(),
                                    gen: gen.clone(),
                                    seq: seq.parse().map_err(|_| unexpected())?,
                                },
                            }
                        }
                        (Some(provider), Some(at_ms), None) => Reservation::Booked {
                            provider: provider.to_string(),
                            at_ms,
                        },
                        (Some(provider), None, _) => Reservation::Reserved(provider.to_string()),
                        _ => Reservation::None,
                    },
                }
            }
            _ => return Err(unexpected()),
        })
    }

    async fn sweep(&self, request: &SweepRequest<'_>) -> Result<Swept, StoreError> {
        let answer = self
            .eval_counted(
                &self.sweep,
                Charge::Sweep,
                "",
                &[DUE_KEY, SWEEPER_KEY],
                vec![
                    arg(request.token),
                    arg(if request.take_over { "1" } else { "0" }),
                    arg(request.now_ms),
                    arg(request.limit as u64),
                    arg(request.requeue_at_ms),
                    arg(request.token_life.as_millis() as u64),
                    arg(request.round),
                    arg(INDEX_LIFE_MS),
                ],
            )
            .await?;
        let unexpected = || StoreError::Corrupt(format!("unexpected sweep answer {answer}"));
        let items = answer.as_array().map(Vec::as_slice).ok_or_else(unexpected)?;
        match items {
            [v] if v.as_str() == Some("stale") => Ok(Swept::Stale),
            [v, left, next, round, stranded, due @ ..] if v.as_str() == Some("ok") => {
                let steps = step_refs(due).ok_or_else(unexpected)?;
                // Redis prints a score as a double ("1764500000000" or "1.7645e+12").
                let next_due_ms = next.as_str().and_then(|s| s.parse::<f64>().ok()).map(|f| f as u64);
                Ok(Swept::Due {
                    steps,
                    left: left.as_u64().ok_or_else(unexpected)?,
                    next_due_ms,
                    next_round: round.as_u64().ok_or_else(unexpected)?,
                    stranded: stranded.as_u64().ok_or_else(unexpected)?,
                })
            }
            _ => Err(unexpected()),
        }
    }

    async fn finish(
        &self,
        step: &StepRef,
        next: &Job,
        due_at_ms: Option<u64>,
        event: Option<&ProviderEvent>,
    ) -> Result<FinishOutcome, StoreError> {
        expiry_ahead("job", next.expires_at_ms, self.clock.now_ms())?;
        let today = today(self.clock.now_ms());
        // A quiet success writes no provider state; a finish that writes one folds in those held.
        let mut folded = HashMap::new();
        let event = match event {
            None => String::new(),
            Some(e) => {
                let mut quiet = self.quiet.lock().ok();
                if quiet.as_mut().is_some_and(|q| q.hold(e, today)) {
                    String::new()
                } else {
                    let mut json = serde_json::to_value(e).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    folded = quiet.as_mut().map(|q| q.take()).unwrap_or_default();
                    if !folded.is_empty() {
                        json["quiet"] = serde_json::json!(folded);
                    }
                    json.to_string()
                }
            }
        };
        let key = job_key(&step.owner, &step.job_id);
        // The claim of this step, when this process made it: its commands and its AWS requests are
        // counted here (budget.lua's carry). A finish whose claim ran elsewhere counts only itself.
        let carried = self
            .carried
            .lock()
            .ok()
            .and_then(|mut c| c.remove(&(key.clone(), step.gen.clone(), step.seq)));
        let charge = if carried.is_some() {
            Charge::Claim
        } else {
            Charge::Finish
        };
        let writes_states = !event.is_empty();
        if writes_states {
            // A create while this write is under way reads the states itself; a read that overlaps it
            // is not kept (and after it, below).
            self.states_changed();
        }
        let written = self
            .eval_carrying(
                &self.finish,
                charge,
                &step.owner,
                &[&key, PROVIDERS_KEY, DUE_KEY, ALERTS_KEY, &dead_key(&step.owner)],
                vec![
                    arg(encode(next)?),
                    arg(step.gen.as_str()),
                    arg(step.seq.to_string()),
                    arg(next.expires_at_ms),
                    arg(event),
                    arg(record_id(&step.job_id)),
                    arg(due_at_ms.map_or(String::new(), due_score)),
                    arg(if next.dead_lettered() { "1" } else { "0" }),
                    arg(today),
                ],
                Carry::Counted(carried.unwrap_or(0)),
            )
            .await;
        if writes_states {
            self.states_changed();
        }
        let written = match written {
            Ok((_, written)) if written != Value::from(0) => written,
            other => {
                if let Ok(mut quiet) = self.quiet.lock() {
                    quiet.put_back(folded);
                }
                other?.1
            }
        };
        match written {
            Value::String(incidents) => Ok(FinishOutcome {
                written: true,
                alerts: serde_json::from_str(&incidents)
                    .map_err(|e| StoreError::Corrupt(format!("finish.lua's incidents: {e}")))?,
            }),
            other => Ok(FinishOutcome {
                written: other.as_i64() == Some(1),
                alerts: Vec::new(),
            }),
        }
    }

    async fn read(
        &self,
        owner: &str,
        job_id: &str,
        grace: Duration,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Option<JobRead>>, StoreError> {
        let now = self.clock.now_ms();
        let rate = match self.read_windows.count(owner, rate, now) {
            Ok(rate) => rate,
            Err(window) => return Ok(Admission::RateLimited(window)),
        };
        let key = job_key(owner, job_id);
        // The record and the provider states in one command; then one more: for a finished job its
        // life shortened to the grace (PEXPIRE ... LT never lengthens it, so later reads keep the
        // first deadline) unless it still owes deliveries (` d`), for an unfinished one its rank in
        // the due-index (the ETA: no horizons, so a poll costs the same whatever the backlog).
        let got = self
            .client
            .command(vec![arg("MGET"), arg(key.as_str()), arg(PROVIDERS_KEY)])
            .await?;
        let unexpected = || StoreError::Corrupt(format!("unexpected MGET answer {got}"));
        let [record, providers] = got.as_array().map(Vec::as_slice).ok_or_else(unexpected)? else {
            return Err(unexpected());
        };
        // The incarnation the id names ('': whichever): another one reads as no job.
        let wanted = id_gen(job_id).unwrap_or("");
        let found = record
            .as_str()
            .and_then(|r| Head::of(r).map(|head| (r, head)))
            .filter(|(_, head)| wanted.is_empty() || head.gen == wanted);
        let Some((record, head)) = found else {
            self.count_later(owner, 1, Charge::Deliver).await;
            return Ok(Admission::Admitted { value: None, rate });
        };
        let job = decode(record)?;
        let running = head.lease_end_ms > now;
        let mut executed = 1;
        let standing = if head.finished() {
            if head.flag != Some('d') {
                self.client
                    .command(vec![
                        arg("PEXPIRE"),
                        arg(key.as_str()),
                        arg(grace.as_millis() as u64),
                        arg("LT"),
                    ])
                    .await?;
                executed += 1;
            }
            Standing::default()
        } else {
            let rank = self
                .client
                .command(vec![arg("ZRANK"), arg(DUE_KEY), arg(key.as_str())])
                .await?;
            executed += 1;
            Standing {
                // Its place: its rank less the index's member ~s (first: sweep.lua).
                ahead: rank.as_u64().unwrap_or(1).saturating_sub(1),
                providers: decode_providers(providers),
                due_ms: None,
                later: Vec::new(),
            }
        };
        self.count_later(owner, executed, Charge::Deliver).await;
        Ok(Admission::Admitted {
            value: Some(JobRead { job, running, standing }),
            rate,
        })
    }

    async fn purge(&self, owner: &str, job_id: &str, rate: Option<RateLimit>) -> Result<Admission<bool>, StoreError> {
        let now = self.clock.now_ms();
        let rate = match self.read_windows.count(owner, rate, now) {
            Ok(rate) => rate,
            Err(window) => return Ok(Admission::RateLimited(window)),
        };
        let key = job_key(owner, job_id);
        let (deleted, executed) = match id_gen(job_id) {
            // By commit (whichever incarnation): one command.
            None => (self.client.command(vec![arg("GETDEL"), arg(key.as_str())]).await?, 1),
            // By id: another incarnation is not this purge's, so the check and the delete are one
            // script (purge.lua), which leaves its count to this call.
            Some(gen) => {
                let (executed, answer) = self
                    .eval_carrying(&self.purge, Charge::Purge, owner, &[&key], vec![arg(gen)], Carry::Left)
                    .await?;
                (answer, executed)
            }
        };
        self.count_later(owner, executed, Charge::Purge).await;
        let Some(head) = deleted.as_str().and_then(Head::of) else {
            return Ok(Admission::Admitted { value: false, rate });
        };
        if head.leaves_traces() {
            // Rare: a cancelled job, or one that owes or lost deliveries. Should this fail, the sweep
            // drops an index entry whose record is gone, and a create recounts the jobs in flight.
            self.eval_counted(
                &self.purged,
                Charge::Flush,
                owner,
                &[DUE_KEY, &dead_key(owner)],
                vec![
                    arg(key.as_str()),
                    arg(record_id(job_id)),
                    arg(head.state.to_string()),
                    arg(head.flag.map_or(String::new(), |f| f.to_string())),
                ],
            )
            .await?;
        }
        Ok(Admission::Admitted { value: true, rate })
    }

    async fn overview(
        &self,
        owner: &str,
        bounds: OverviewBounds,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Overview>, StoreError> {
        let now = self.clock.now_ms();
        let args = RateArgs::new(rate, now);
        let answer = self
            .eval_counted(
                &self.overview,
                Charge::Overview,
                owner,
                &[DUE_KEY, &dead_key(owner), PROVIDERS_KEY],
                vec![
                    arg(args.limit),
                    arg(args.ends_at_ms),
                    arg(owner),
                    arg(now),
                    arg(bounds.scan.max(1) as u64),
                    arg(bounds.oldest as u64),
                    arg(bounds.dead.max(1) as u64),
                    arg(today(now)),
                ]
                .into_iter()
                .chain(horizons())
                .chain([arg(bounds.tenants as u64)])
                .collect(),
            )
            .await?;
        let unexpected = || StoreError::Corrupt(format!("unexpected overview answer {answer}"));
        let (rate, rest) = match counted(&answer, rate, now, "overview")? {
            Ok(head) => head,
            Err(window) => return Ok(Admission::RateLimited(window)),
        };
        let [unfinished, counted, waiting, active, delayed, Value::Array(oldest), dead_lettered, Value::Array(dead), Value::Array(day), Value::Array(tenants)] =
            rest
        else {
            return Err(unexpected());
        };
        let number = |v: &Value| count_of(v).ok_or_else(unexpected);
        let mut overview = Overview {
            unfinished: number(unfinished)?,
            counted: number(counted)?,
            waiting: number(waiting)?,
            active: number(active)?,
            delayed: number(delayed)?,
            dead_lettered: number(dead_lettered)?,
            ..Overview::default()
        };
        for triple in oldest.chunks(3) {
            let [record, running, standing] = triple else {
                return Err(unexpected());
            };
            // A record that expired between the header's read and its own is simply not shown.
            if let Some(job) = decode_value(record)? {
                overview.oldest.push(JobRead {
                    job,
                    running: running.as_i64() == Some(1),
                    standing: decode_standing(standing)?,
                });
            }
        }
        for record in dead {
            overview.dead_letters.extend(decode_value(record)?);
        }
        overview.dead_letters.truncate(bounds.dead);
        let mine = (format!("o:s:{owner}"), format!("o:f:{owner}"));
        for pair in day.chunks(2) {
            let [Value::String(field), value] = pair else {
                return Err(unexpected());
            };
            let value = number(value)?;
            if *field == mine.0 {
                overview.completed_today = value;
            } else if *field == mine.1 {
                overview.failed_today = value;
            } else if let Some((outcome, provider)) = field.strip_prefix("p:").and_then(|f| f.split_once(':')) {
                overview.attempts_today.push(AttemptCount {
                    provider: provider.to_string(),
                    outcome: outcome.to_string(),
                    count: value,
                });
            }
        }
        overview.attempts_today.sort();
        for triple in tenants.chunks(3) {
            let [Value::String(tenant), unfinished, running] = triple else {
                return Err(unexpected());
            };
            overview.tenants.push(TenantCount {
                tenant: (!tenant.is_empty()).then(|| tenant.clone()),
                unfinished: number(unfinished)?,
                running: number(running)?,
            });
        }
        overview.tenants.truncate(bounds.tenants);
        Ok(Admission::Admitted { value: overview, rate })
    }

    async fn provider_states(&self) -> Result<HashMap<String, ProviderState>, StoreError> {
        Ok(decode_providers(
            &self
                .eval_counted(
                    &self.providers,
                    Charge::ProviderStates,
                    "",
                    &[PROVIDERS_KEY],
                    Vec::new(),
                )
                .await?,
        ))
    }

    async fn spent(&self, owner: &str, all_owners: bool) -> Result<Spent, StoreError> {
        let now = self.clock.now_ms();
        let hours = budget::day_hours(now);
        let read = if all_owners { "" } else { owner };
        // This month's bucket and the previous one's (the day window may begin there): an owner's by
        // name; for the deployment's read the names without an owner, then those months' owner lists
        // (spent.lua reads every owner's through them).
        let this_month = budget::month_key(now);
        let last_month = budget::month_key(hours.first().map_or(now, |(start, _)| *start));
        let mut keys = vec![format!("{this_month}:{read}"), format!("{last_month}:{read}")];
        if all_owners {
            keys.push(budget::owners_key(now));
            keys.push(budget::owners_key(hours.first().map_or(now, |(start, _)| *start)));
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut args = vec![arg(read)];
        for (start, _) in &hours {
            let which = if budget::month_key(*start) == this_month { 1 } else { 2 };
            args.push(arg(format!("{which}:{}", budget::hour_of_month(*start))));
        }
        // What this process's polls and purges spent that no call has counted yet (this read counts
        // its owner's after reading): added to the answer, so a single process's budget is exact.
        let uncounted: Vec<(String, u64, u64)> = self
            .uncounted
            .lock()
            .map(|u| {
                u.iter()
                    .filter(|(o, _)| all_owners || o.as_str() == owner)
                    .map(|(o, u)| (o.clone(), u.commands, u.lambda_invocations))
                    .collect()
            })
            .unwrap_or_default();
        let answer = self
            .eval_counted(&self.spent, Charge::BudgetRead, owner, &keys, args)
            .await?;
        let unexpected = || StoreError::Corrupt(format!("unexpected budget answer {answer}"));
        let lists = answer
            .as_array()
            .filter(|l| l.len() == hours.len() + 1)
            .ok_or_else(unexpected)?;
        let mut buckets = Vec::with_capacity(lists.len());
        for list in lists {
            let mut bucket = Bucket::default();
            for pair in list.as_array().ok_or_else(unexpected)?.chunks(2) {
                let [Value::String(field), Value::String(n)] = pair else {
                    return Err(unexpected());
                };
                bucket.fold(field, n.parse().map_err(|_| unexpected())?);
            }
            buckets.push(bucket);
        }
        let mut month = buckets.pop().unwrap_or_default();
        for (o, commands, invocations) in uncounted {
            for bucket in buckets.last_mut().into_iter().chain([&mut month]) {
                bucket.fold(&format!("s:{o}"), commands);
                bucket.fold(&format!("l:{o}"), invocations);
                if all_owners {
                    bucket.fold("s", commands);
                    bucket.fold("l", invocations);
                }
            }
        }
        Ok(Spent {
            hours: hours.iter().map(|(start, _)| *start).zip(buckets).collect(),
            month,
        })
    }

    async fn with_work_left(&self) -> Result<Vec<Job>, StoreError> {
        let mut cursor = "0".to_string();
        let mut jobs = Vec::new();
        loop {
            let page = self
                .client
                .command(vec![
                    arg("SCAN"),
                    arg(cursor.as_str()),
                    arg("MATCH"),
                    arg("st:j:*"),
                    arg("COUNT"),
                    arg(500),
                ])
                .await?;
            let (next, keys) = match page.as_array().map(Vec::as_slice) {
                Some([Value::String(next), Value::Array(keys)]) => (next.clone(), keys.clone()),
                _ => return Err(StoreError::Corrupt(format!("unexpected SCAN answer {page}"))),
            };
            if !keys.is_empty() {
                let mut get = vec![arg("MGET")];
                get.extend(keys);
                if let Value::Array(records) = self.client.command(get).await? {
                    for record in &records {
                        if let Some(job) = decode_value(record)? {
                            if job.has_work_left() {
                                jobs.push(job);
                            }
                        }
                    }
                }
            }
            if next == "0" {
                return Ok(jobs);
            }
            cursor = next;
        }
    }

    async fn put_batch(&self, batch: &crate::domain::batch::BatchRecord) -> Result<(), StoreError> {
        expiry_ahead("batch", batch.expires_at_ms, self.clock.now_ms())?;
        let record = encode_batch(batch)?;
        self.eval_counted(
            &self.batch_put,
            // Inside the submit's invocation, which its items' creates counted.
            Charge::Finish,
            &batch.owner,
            &[&batch_key(&batch.owner, &batch.id)],
            vec![arg(record), arg(batch.expires_at_ms)],
        )
        .await
        .map(|_| ())
    }

    async fn read_batch(
        &self,
        owner: &str,
        batch_id: &str,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Option<crate::ports::BatchRead>>, StoreError> {
        let now = self.clock.now_ms();
        let args = RateArgs::new(rate, now);
        let answer = self
            .eval_counted(
                &self.batch_read,
                Charge::Deliver,
                owner,
                &[&batch_key(owner, batch_id)],
                vec![arg(args.limit), arg(args.ends_at_ms), arg(job_key(owner, ""))],
            )
            .await?;
        let (rate, rest) = match counted(&answer, rate, now, "batch read")? {
            Ok(head) => head,
            Err(window) => return Ok(Admission::RateLimited(window)),
        };
        let Some((record, mut records)) = rest.split_first().map(|(r, rest)| (r, rest.iter())) else {
            return Ok(Admission::Admitted { value: None, rate });
        };
        let batch = match record {
            Value::String(s) => decode_batch(s)?,
            other => return Err(StoreError::Corrupt(format!("unexpected batch record {other}"))),
        };
        let mut jobs = Vec::with_capacity(batch.items.len());
        for item in &batch.items {
            jobs.push(match &item.job_id {
                None => None,
                Some(id) => match records.next() {
                    Some(record) => {
                        decode_value(record)?.filter(|job: &Job| id_gen(id).is_none_or(|gen| gen == job.gen))
                    }
                    None => return Err(StoreError::Corrupt(format!("short batch read answer {answer}"))),
                },
            });
        }
        Ok(Admission::Admitted {
            value: Some(crate::ports::BatchRead { batch, jobs }),
            rate,
        })
    }

    async fn peek(&self, owner: &str, job_id: &str) -> Result<Option<Job>, StoreError> {
        let record = self
            .client
            .command(vec![arg("GET"), arg(job_key(owner, job_id))])
            .await?;
        Ok(decode_value(&record)?.filter(|job: &Job| id_gen(job_id).is_none_or(|gen| gen == job.gen)))
    }

    async fn origin_down(&self, down: &OriginDown<'_>) -> Result<Option<u64>, StoreError> {
        let answer = self
            .eval_counted(
                &self.origin_down,
                Charge::Finish,
                down.owner,
                &[PROVIDERS_KEY, &origin_key(down.origin)],
                vec![
                    arg(format!("{ORIGIN_PREFIX}{}", down.origin)),
                    arg(job_key(down.owner, down.job_id)),
                    arg(down.holder),
                    arg(down.waits_until_ms.map_or(String::new(), |at| at.to_string())),
                    arg(if down.probed { "1" } else { "0" }),
                    arg(down.now_ms),
                    arg(origins::PROBE_FIRST_MS),
                    arg(origins::PROBE_FIRST_MINUTE_MS),
                    arg(origins::PROBE_EARLY_MS),
                    arg(origins::PROBE_STEADY_AFTER_MS),
                    arg(origins::PROBE_MAX_MS),
                    arg(origins::PROBE_LEASE_MS),
                    arg(origins::MAX_ORIGINS as u64),
                    arg(origins::UP_MARK_KEPT_MS),
                ],
            )
            .await?;
        match answer {
            Value::Bool(false) | Value::Null => Ok(None),
            other => other
                .as_u64()
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt(format!("unexpected origin_down answer {other}"))),
        }
    }

    async fn origin_up(
        &self,
        origin: &str,
        owner: &str,
        now_ms: u64,
        due_at_ms: u64,
    ) -> Result<Vec<StepRef>, StoreError> {
        let answer = self
            .eval_counted(
                &self.origin_up,
                Charge::Finish,
                owner,
                &[PROVIDERS_KEY, &origin_key(origin), DUE_KEY],
                vec![
                    arg(format!("{ORIGIN_PREFIX}{origin}")),
                    arg(now_ms),
                    arg(due_score(due_at_ms)),
                ],
            )
            .await?;
        let unexpected = || StoreError::Corrupt(format!("unexpected origin_up answer {answer}"));
        let items = answer.as_array().map(Vec::as_slice).unwrap_or_default();
        step_refs(items).ok_or_else(unexpected)
    }
}
