//! The in-memory store: the embedded default of `stepper-local` and the fast unit tests.
//! Same semantics as the Upstash store (the store contract suite runs against both).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::budget::{self, Bucket, Buckets, Charge, Spent};
use crate::domain::incidents::{self, AlertBook};
use crate::domain::job::{id_gen, record_id, Job, JobSpec, JobState, StepRef};
use crate::domain::llm::{ChatMessage, ResponseFormat, Role};
use crate::domain::origins::{self, OriginState};
use crate::domain::quota::{ProviderEvent, ProviderState, Reservation, Reserve};
use crate::ports::{
    Admission, AttemptCount, Claim, Clock, Created, Enlist, FinishOutcome, JobRead, Limits, OriginDown, Overview,
    OverviewBounds, RateLimit, RateWindow, Standing, Store, StoreError, Submitted, SweepRequest, Swept, TenantCount,
    DAY_MS, HORIZONS_MS,
};

/// The hasher of the maps every request touches (jobs, leases, the due-index's scores, rate windows,
/// interned texts): foldhash instead of SipHash, which over a whole prompt was a visible part of a
/// submit's CPU. Each map is seeded at random when it is made (`RandomState`), so a caller who writes
/// the prompts (the interned texts hold caller text) cannot choose keys that collide without the seed.
type Fast = foldhash::fast::RandomState;

/// A due-index score as Redis holds it: the millisecond, plus k/4096 ms for the k-th job that create or
/// finish put at that millisecond (create.lua, finish.lua: ties keep their arrival order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    ms: u64,
    tie: u64,
}

impl Due {
    /// A plain score (claim, sweep: ZADD of a whole millisecond).
    fn at(ms: u64) -> Self {
        Self { ms, tie: 0 }
    }
}

/// The due-index, ordered as Redis orders a sorted set (score, then member `st:j:<owner>:<id>`): a
/// rank, a count up to a score or the due entries are a walk over a range, never a pass over every job
/// (the ETA reads one on every submit and poll).
#[derive(Default)]
struct DueIndex {
    scores: HashMap<(String, String), Due, Fast>,
    order: BTreeMap<(Due, String), (String, String)>,
}

fn member((owner, id): &(String, String)) -> String {
    format!("st:j:{owner}:{id}")
}

/// The first position at or after millisecond `ms` in the index's order.
fn from_ms(ms: u64) -> Bound<(Due, String)> {
    Bound::Included((Due::at(ms), String::new()))
}

impl DueIndex {
    fn get(&self, key: &(String, String)) -> Option<Due> {
        self.scores.get(key).copied()
    }

    fn remove(&mut self, key: &(String, String)) -> Option<Due> {
        let due = self.scores.remove(key)?;
        self.order.remove(&(due, member(key)));
        Some(due)
    }

    fn insert(&mut self, key: (String, String), due: Due) {
        self.remove(&key);
        self.order.insert((due, member(&key)), key.clone());
        self.scores.insert(key, due);
    }

    fn len(&self) -> usize {
        self.scores.len()
    }

    /// The earliest entry's score.
    fn first(&self) -> Option<Due> {
        self.order.first_key_value().map(|((due, _), _)| *due)
    }

    /// Entries due at a millisecond before `ms`, in order.
    fn before(&self, ms: u64) -> impl Iterator<Item = (&Due, &(String, String))> {
        self.order
            .range((Bound::Unbounded, from_ms(ms)))
            .map(|((due, _), key)| (due, key))
    }

    /// Entries due at `ms` or earlier (create.lua's ZCOUNT up to the new job's millisecond).
    fn count_through(&self, ms: u64) -> u64 {
        self.count_below(from_ms(ms.saturating_add(1)))
    }

    /// Entries strictly before `bound` in the index's order, walking from both ends at once: the cost
    /// is the shorter side (a new job joins the end of a backlog: its count costs nothing), not the
    /// index's size.
    fn count_below(&self, bound: Bound<(Due, String)>) -> u64 {
        // The rest starts where `bound` ends: what it excludes, or just past what it includes.
        let after = match &bound {
            Bound::Included(b) => Bound::Excluded(b.clone()),
            Bound::Excluded(b) => Bound::Included(b.clone()),
            Bound::Unbounded => return self.order.len() as u64,
        };
        let mut below = self.order.range((Bound::Unbounded, bound));
        let mut rest = self.order.range((after, Bound::Unbounded));
        let (mut counted_below, mut counted_rest) = (0u64, 0u64);
        loop {
            if below.next().is_none() {
                return counted_below;
            }
            counted_below += 1;
            if rest.next().is_none() {
                return self.order.len() as u64 - counted_rest;
            }
            counted_rest += 1;
        }
    }

    /// Entries due at exactly millisecond `ms`, ties included.
    fn ties_at(&self, ms: u64) -> u64 {
        self.order.range((from_ms(ms), from_ms(ms.saturating_add(1)))).count() as u64
    }

    /// The rank of `key` (ZRANK): entries before it in the index's order; 0 when it is not there.
    fn rank(&self, key: &(String, String)) -> u64 {
        let Some(due) = self.get(key) else { return 0 };
        self.count_below(Bound::Excluded((due, member(key))))
    }

    /// For each horizon h: the entries due after millisecond `ms` and at most h past it, in one walk.
    fn later(&self, ms: u64, horizons: &[u64]) -> Vec<u64> {
        let mut counts = vec![0u64; horizons.len()];
        let Some(&longest) = horizons.iter().max() else {
            return counts;
        };
        for ((due, _), _) in self.order.range((from_ms(ms.saturating_add(1)), Bound::Unbounded)) {
            let past = due.ms - ms;
            if past > longest {
                break;
            }
            for (count, h) in counts.iter_mut().zip(horizons) {
                if past <= *h {
                    *count += 1;
                }
            }
        }
        counts
    }

    /// Keeps the entries whose key passes `keep`.
    fn retain(&mut self, keep: impl Fn(&(String, String)) -> bool) {
        let gone: Vec<(String, String)> = self.scores.keys().filter(|k| !keep(k)).cloned().collect();
        for key in gone {
            self.remove(&key);
        }
    }
}

/// A prompt's text, held once however many jobs (and a job's compact prompt) carry it.
type Text = Arc<str>;

/// What the store keeps of a job: the record, less its spec's bulky parts that repeat from job to job,
/// which are held once in [`Interned`]. A report's JSON Schema is the same for every report (as a
/// `serde_json::Value` tree it was the largest part of a record in memory), its system prompt too, and
/// its compact prompt is its full prompt whenever the diff fits the smaller budget.
/// Reads rebuild the whole `Job` ([`Held::to_job`]): what the store hands out is unchanged.
struct Held {
    /// The record with `spec.messages` and `spec.compact_messages` empty and `spec.format` set to
    /// `Text`: the real ones are the fields below. Its other fields are the record's.
    head: Job,
    messages: Box<[(Role, Text)]>,
    compact_messages: Option<Box<[(Role, Text)]>>,
    format: Arc<ResponseFormat>,
}

impl Held {
    /// The job as it was written.
    fn to_job(&self) -> Job {
        let texts = |messages: &[(Role, Text)]| -> Vec<ChatMessage> {
            messages
                .iter()
                .map(|(role, content)| ChatMessage {
                    role: *role,
                    content: content.to_string(),
                })
                .collect()
        };
        let mut job = self.head.clone();
        job.spec.messages = texts(&self.messages);
        job.spec.compact_messages = self.compact_messages.as_deref().map(texts);
        job.spec.format = (*self.format).clone();
        job
    }
}

/// The texts and response formats the held jobs share. Entries no job uses any more are dropped
/// at each clearing of expired entries.
#[derive(Default)]
struct Interned {
    texts: HashSet<Text, Fast>,
    /// Few distinct ones (one per preset and caller-supplied schema), compared whole.
    formats: Vec<Arc<ResponseFormat>>,
}

/// Past this many distinct formats held, a new one is kept with its job only (callers' own schemas).
const MAX_SHARED_FORMATS: usize = 32;

impl Interned {
    fn text(&mut self, text: &str) -> Text {
        if let Some(held) = self.texts.get(text) {
            return held.clone();
        }
        let held: Text = Arc::from(text);
        self.texts.insert(held.clone());
        held
    }

    fn messages(&mut self, messages: &[ChatMessage]) -> Box<[(Role, Text)]> {
        messages.iter().map(|m| (m.role, self.text(&m.content))).collect()
    }

    fn format(&mut self, format: &ResponseFormat) -> Arc<ResponseFormat> {
        if let Some(held) = self.formats.iter().find(|held| ***held == *format) {
            return held.clone();
        }
        let held = Arc::new(format.clone());
        if self.formats.len() < MAX_SHARED_FORMATS {
            self.formats.push(held.clone());
        }
        held
    }

    /// The held form of `job`, copying only what is not shared already.
    fn hold(&mut self, job: &Job) -> Held {
        let spec = &job.spec;
        let head = Job {
            id: job.id.clone(),
            owner: job.owner.clone(),
            gen: job.gen.clone(),
            seq: job.seq,
            state: job.state,
            spec: JobSpec {
                providers: spec.providers.clone(),
                kind: spec.kind,
                messages: Vec::new(),
                compact_messages: None,
                format: ResponseFormat::Text,
                max_tokens: spec.max_tokens,
                temperature: spec.temperature,
                fallback: spec.fallback.clone(),
                context: spec.context.clone(),
                targets: spec.targets.clone(),
                purge_on_delivery: spec.purge_on_delivery,
                priority: spec.priority,
            },
            created_at_ms: job.created_at_ms,
            deadline_ms: job.deadline_ms,
            next_attempt_at_ms: job.next_attempt_at_ms,
            attempts: job.attempts.clone(),
            result: job.result.clone(),
            error: job.error.clone(),
            finished_at_ms: job.finished_at_ms,
            expires_at_ms: job.expires_at_ms,
            deliveries: job.deliveries.clone(),
        };
        Held {
            head,
            messages: self.messages(&spec.messages),
            compact_messages: spec.compact_messages.as_deref().map(|m| self.messages(m)),
            format: self.format(&spec.format),
        }
    }

    /// Drops what no held job uses.
    fn clear_unused(&mut self) {
        self.texts.retain(|text| Arc::strong_count(text) > 1);
        self.formats.retain(|format| Arc::strong_count(format) > 1);
    }
}

#[derive(Default)]
struct Inner {
    /// Boxed: a map slot is then a key and a pointer, so the map's spare capacity (up to half its
    /// slots after it grows) costs little, and growing it moves pointers, not records.
    jobs: HashMap<(String, String), Box<Held>, Fast>,
    /// The parts of the job records that repeat from job to job, held once.
    interned: Interned,
    /// Step leases, one per job: (owner, job id) → (gen, seq, held until in epoch ms).
    leases: HashMap<(String, String), (String, u64, u64), Fast>,
    /// The due-index: (owner, job id) → when its next step is due.
    due: DueIndex,
    /// The live sweeper: its token, the round its next message carries, and when it lapses.
    sweeper: Option<(String, u64, u64)>,
    providers: HashMap<String, ProviderState>,
    /// Failing (or lately recovered) delivery origins' shared state (`~o:<origin>` in `st:pv` on Upstash).
    origins: HashMap<String, OriginState>,
    /// Per origin, the jobs waiting on its recovery → their delivery's scheduled time (`st:o:<origin>`).
    waiting: HashMap<String, HashMap<(String, String), u64>>,
    /// Which incidents are raised and the flap windows (`st:alerts` on Upstash).
    alerts: AlertBook,
    /// Requests per (owner, rate window id) → (count, window end in epoch ms).
    rates: HashMap<(String, u64), (u64, u64), Fast>,
    /// The same for polls and purges, counted apart from the other requests as the Upstash store
    /// counts them (in its process, at no command: `ReadWindows` there).
    read_rates: HashMap<(String, u64), (u64, u64), Fast>,
    /// Each owner's unfinished jobs as (record expiry, id): the in-flight cap counts these, less the few
    /// that expired since the last clearing, not every job.
    unfinished: HashMap<String, BTreeSet<(u64, String)>>,
    /// Each owner's finished jobs with a dead-lettered delivery (the overview lists them).
    dead: HashMap<String, BTreeSet<String>>,
    /// When the maps are next cleared of expired entries (at most once a second: every read checks
    /// an entry's expiry itself, so the clearing only bounds memory).
    next_prune_ms: u64,
    /// Per UTC day: provider attempts by (provider, outcome), and jobs finished by (owner, 's' | 'f')
    /// (on Upstash: the owner's bucket and the provider states). Kept through the next day.
    days: HashMap<u64, Day>,
    /// The budget's buckets, named as on Upstash (`st:b:h:<yyyymmddhh>`, `st:b:m:<yyyymm>`) → (expiry in
    /// epoch ms, field → count), with budget.lua's fields.
    budget: HashMap<String, (u64, HashMap<String, u64>)>,
    /// The current hour's bucket names, by the hour's start: naming them formats dates, and every
    /// call counts into them (a month ends on an hour's end, so one hour's names hold for all of it).
    buckets: Option<(u64, Buckets)>,
    /// Batch records: (owner, batch id) → the record (its expiry inside).
    batches: HashMap<(String, String), crate::domain::batch::BatchRecord>,
}

#[derive(Default)]
struct Day {
    attempts: BTreeMap<(String, String), u64>,
    finished: HashMap<(String, char), u64>,
}

/// How often expired entries are dropped from the maps.
const PRUNE_EVERY_MS: u64 = 1_000;

impl Inner {
    /// The job under `key` unless it expired (an expired record is gone, as in Redis).
    fn job(&self, key: &(String, String), now: u64) -> Option<&Held> {
        self.jobs
            .get(key)
            .map(|held| &**held)
            .filter(|held| held.head.expires_at_ms > now)
    }

    /// The record's own fields (never its spec's shared parts) under `key`, unless it expired.
    fn head_mut(&mut self, key: &(String, String), now: u64) -> Option<&mut Job> {
        self.jobs
            .get_mut(key)
            .map(|held| &mut held.head)
            .filter(|job| job.expires_at_ms > now)
    }

    /// The live lease of `key`: (gen, seq, held until).
    fn lease(&self, key: &(String, String), now: u64) -> Option<&(String, u64, u64)> {
        self.leases.get(key).filter(|(_, _, until)| *until > now)
    }

    /// Writes a job record and keeps its owner's unfinished set in step with it.
    fn put(&mut self, key: (String, String), job: &Job) {
        let held = self.interned.hold(job);
        let ids = self.unfinished.entry(key.0.clone()).or_default();
        if let Some(old) = self.jobs.get(&key) {
            ids.remove(&(old.head.expires_at_ms, key.1.clone()));
        }
        if !job.state.is_finished() {
            ids.insert((job.expires_at_ms, key.1.clone()));
        }
        if job.dead_lettered() {
            self.dead.entry(key.0.clone()).or_default().insert(key.1.clone());
        } else if let Some(ids) = self.dead.get_mut(&key.0) {
            ids.remove(&key.1);
        }
        self.jobs.insert(key, Box::new(held));
    }

    fn remove(&mut self, key: &(String, String)) -> Option<Box<Held>> {
        let held = self.jobs.remove(key)?;
        if let Some(ids) = self.unfinished.get_mut(&key.0) {
            ids.remove(&(held.head.expires_at_ms, key.1.clone()));
        }
        if let Some(ids) = self.dead.get_mut(&key.0) {
            ids.remove(&key.1);
        }
        Some(held)
    }

    /// The owner's unfinished jobs that are still alive: the set, less those expired since the last
    /// clearing (at most a second's worth: a short walk from the set's start).
    fn in_flight(&self, owner: &str, now: u64) -> usize {
        self.unfinished.get(owner).map_or(0, |ids| {
            let expired = ids.range(..(now.saturating_add(1), String::new())).count();
            ids.len() - expired
        })
    }

    /// Drops every expired entry.
    fn prune(&mut self, now: u64) {
        let Inner {
            jobs, unfinished, dead, ..
        } = self;
        jobs.retain(|(owner, id), held| {
            let alive = held.head.expires_at_ms > now;
            if !alive {
                if let Some(ids) = unfinished.get_mut(owner) {
                    ids.remove(&(held.head.expires_at_ms, id.clone()));
                }
                if let Some(ids) = dead.get_mut(owner) {
                    ids.remove(id);
                }
            }
            alive
        });
        unfinished.retain(|_, ids| !ids.is_empty());
        dead.retain(|_, ids| !ids.is_empty());
        self.interned.clear_unused();
        self.leases.retain(|_, (_, _, until)| *until > now);
        self.rates.retain(|_, (_, ends)| *ends > now);
        self.read_rates.retain(|_, (_, ends)| *ends > now);
        let today = now / DAY_MS;
        self.days.retain(|day, _| day + 1 >= today);
        self.budget.retain(|_, (expires, _)| *expires > now);
        self.batches.retain(|_, b| b.expires_at_ms > now);
        self.next_prune_ms = now + PRUNE_EVERY_MS;
    }

    /// What budget.lua counts for one call: one store command (as if it were one Upstash script) and
    /// what `charge` implies on AWS, for the deployment and for `owner` (`""`: the deployment's call).
    fn spend(&mut self, charge: Charge, owner: &str, now: u64) {
        let aws = charge.aws();
        self.add_to_budget(
            owner,
            now,
            &[('s', 1), ('l', aws.lambda_invocations), ('q', aws.sqs_requests)],
        );
    }

    fn add_to_budget(&mut self, owner: &str, now: u64, counts: &[(char, u64)]) {
        let hour = budget::hour_start(now);
        if self.buckets.as_ref().is_none_or(|(start, _)| *start != hour) {
            self.buckets = Some((hour, Buckets::at(now)));
        }
        let Inner {
            buckets: Some((_, buckets)),
            budget,
            ..
        } = self
        else {
            return;
        };
        // Counted in place: a field's name is allocated only the first time it is seen.
        fn bump(fields: &mut HashMap<String, u64>, field: &str, n: u64) {
            match fields.get_mut(field) {
                Some(count) => *count += n,
                None => {
                    fields.insert(field.to_string(), n);
                }
            }
        }
        let mut field = String::with_capacity(owner.len() + 2);
        for (key, expires_s) in [
            (&buckets.hour_key, buckets.hour_expires_s),
            (&buckets.month_key, buckets.month_expires_s),
        ] {
            if !budget.contains_key(key.as_str()) {
                budget.insert(key.clone(), Default::default());
            }
            let Some((expires_ms, fields)) = budget.get_mut(key.as_str()) else {
                continue;
            };
            *expires_ms = expires_s * 1000;
            for &(letter, n) in counts.iter().filter(|(_, n)| *n > 0) {
                field.clear();
                field.push(letter);
                bump(fields, &field, n);
                if !owner.is_empty() {
                    field.push(':');
                    field.push_str(owner);
                    bump(fields, &field, n);
                }
            }
        }
    }

    /// Counts one request in its owner's current window. `Err` when it is over the limit.
    fn count(&mut self, owner: &str, rate: Option<RateLimit>, now: u64) -> Result<Option<RateWindow>, RateWindow> {
        let Some(limit) = rate else { return Ok(None) };
        let (id, ends) = limit.window(now);
        let (count, _) = self.rates.entry((owner.to_string(), id)).or_insert((0, ends));
        *count += 1;
        limit.check(*count, now).map(Some)
    }

    /// Counts one poll or purge in its owner's current window of reads (`read_rates`).
    fn count_read(&mut self, owner: &str, rate: Option<RateLimit>, now: u64) -> Result<Option<RateWindow>, RateWindow> {
        let Some(limit) = rate else { return Ok(None) };
        let (id, ends) = limit.window(now);
        let (count, _) = self.read_rates.entry((owner.to_string(), id)).or_insert((0, ends));
        *count += 1;
        limit.check(*count, now).map(Some)
    }
}

pub struct MemoryStore {
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
}

impl MemoryStore {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            clock,
        }
    }

    /// Locks the state. Records keep their own expiry instant and every read checks it; the maps are
    /// cleared of expired entries at most once a second (a full pass per call cost 15 % of the
    /// server's CPU at capacity).
    fn live(&self) -> MutexGuard<'_, Inner> {
        let now = self.clock.now_ms();
        // A poisoned lock only means another request panicked mid-update; the maps stay usable.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if now >= inner.next_prune_ms {
            inner.prune(now);
        }
        if inner.sweeper.as_ref().is_some_and(|(_, _, until)| *until <= now) {
            inner.sweeper = None;
        }
        inner
    }

    /// Drops the due-index entries of jobs that are gone (the Upstash sweep does it on read).
    fn prune_due(inner: &mut Inner, now: u64) {
        inner.prune(now);
        let Inner { due, jobs, .. } = inner;
        due.retain(|key| jobs.contains_key(key));
    }

    /// Puts a job in the due-index after those already due at the same millisecond (create.lua's and
    /// finish.lua's `due_add`).
    fn due_add(inner: &mut Inner, key: (String, String), ms: u64) {
        inner.due.remove(&key);
        let tie = inner.due.ties_at(ms);
        inner.due.insert(key, Due { ms, tie });
    }

    /// A job's rank in the due-index, in the order Redis keeps a sorted set: score, then member (the
    /// record key `st:j:<owner>:<id>`). 0 when it is not in the index.
    fn rank(inner: &Inner, key: &(String, String)) -> u64 {
        inner.due.rank(key)
    }

    /// What an unfinished job's ETA needs: `ahead`, every provider's state, and the jobs due after its
    /// millisecond within each horizon (create.lua's `standing`; a poll's is the rank and the states).
    fn standing(inner: &Inner, key: &(String, String), ahead: u64) -> Standing {
        let Some(ms) = inner.due.get(key).map(|d| d.ms) else {
            return Standing {
                providers: inner.providers.clone(),
                ..Standing::default()
            };
        };
        let later = inner.due.later(ms, &HORIZONS_MS);
        Standing {
            ahead,
            providers: inner.providers.clone(),
            due_ms: Some(ms),
            later,
        }
    }

    /// Arms the sweeper with `token` unless one is alive; true when armed.
    fn arm(inner: &mut Inner, enlist: &Enlist, now: u64) -> bool {
        if inner.sweeper.is_some() {
            return false;
        }
        let until = now + enlist.sweeper_life.as_millis() as u64;
        inner.sweeper = Some((enlist.sweeper_token.clone(), 1, until));
        true
    }
}

/// The same refusal as the Upstash scripts' clock check: a record written already expired would vanish
/// as it is written. Here one clock judges both, so only an engine bug can trip it.
fn expiry_ahead(job: &Job, now: u64) -> Result<(), StoreError> {
    if job.expires_at_ms <= now {
        return Err(StoreError::ExpiryInPast(format!(
            "job expires at {} ms, the store clock reads {now} ms",
            job.expires_at_ms
        )));
    }
    Ok(())
}

fn key_of(job: &Job) -> (String, String) {
    (job.owner.clone(), record_id(&job.id).to_string())
}

fn job_key(step: &StepRef) -> (String, String) {
    (step.owner.clone(), record_id(&step.job_id).to_string())
}

#[async_trait]
impl Store for MemoryStore {
    async fn create(&self, job: &Job, enlist: &Enlist, limits: Limits) -> Result<Admission<Submitted>, StoreError> {
        let now = self.clock.now_ms();
        expiry_ahead(job, now)?;
        let mut inner = self.live();
        inner.spend(Charge::Create, &job.owner, now);
        let rate = match inner.count(&job.owner, limits.rate, now) {
            Ok(rate) => rate,
            Err(window) => return Ok(Admission::RateLimited(window)),
        };
        let key = (job.owner.clone(), record_id(&job.id).to_string());
        if let Some(existing) = inner
            .job(&key, now)
            .filter(|existing| existing.head.state != JobState::Failed)
        {
            let standing = if existing.head.state.is_finished() {
                Standing::default()
            } else {
                Self::standing(&inner, &key, Self::rank(&inner, &key))
            };
            let created = Created::Existing(Box::new(existing.to_job()));
            let arm_sweeper = Self::arm(&mut inner, enlist, now).then(|| enlist.sweeper_token.clone());
            return Ok(Admission::Admitted {
                value: Submitted {
                    created,
                    arm_sweeper,
                    standing,
                },
                rate,
            });
        }
        if let Some(cap) = limits.in_flight {
            // Counted from the owner's live unfinished jobs, so a finished, purged or expired job never lingers.
            if inner.in_flight(&job.owner, now) >= cap as usize {
                return Ok(Admission::TooManyInFlight { limit: cap, rate });
            }
        }
        inner.leases.remove(&key);
        // The new job joins the end of the line of those due no later than it (create.lua's ZCOUNT).
        inner.due.remove(&key);
        let ahead = inner.due.count_through(enlist.due_at_ms);
        Self::due_add(&mut inner, key.clone(), enlist.due_at_ms);
        inner.put(key, job);
        inner.add_to_budget(&job.owner, now, &[('j', 1)]);
        let arm_sweeper = Self::arm(&mut inner, enlist, now).then(|| enlist.sweeper_token.clone());
        Ok(Admission::Admitted {
            value: Submitted {
                created: Created::New,
                arm_sweeper,
                standing: Self::standing(&inner, &key_of(job), ahead),
            },
            rate,
        })
    }

    async fn claim(&self, step: &StepRef, lease: Duration, reserve: &Reserve) -> Result<Claim, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.live();
        inner.spend(Charge::Claim, &step.owner, now);
        let key = job_key(step);
        let Some(job) = inner.job(&key, now).map(|held| held.to_job()) else {
            inner.due.remove(&key);
            return Ok(Claim::Missing);
        };
        if job.gen != step.gen || job.seq != step.seq {
            return Ok(Claim::Stale(job));
        }
        if let Some((gen, seq, until)) = inner.lease(&key, now) {
            if *gen == step.gen && *seq == step.seq {
                return Ok(Claim::Busy {
                    lease_left: Duration::from_millis(until - now),
                });
            }
        }
        let until = now + lease.as_millis() as u64;
        inner.leases.insert(key.clone(), (step.gen.clone(), step.seq, until));
        inner.due.insert(key, Due::at(until));
        // The thundering herd: the same probe hand-out as claim.lua.
        let mut probes = Vec::new();
        for (name, state) in inner.providers.iter_mut() {
            if state.probe_open(now) {
                state.probe_until_ms = until;
                probes.push(name.clone());
            }
        }
        // A finished job's steps are its deliveries: they call no provider, and reserve nothing.
        let reservation = if job.state.is_finished() {
            Reservation::None
        } else {
            let claimant = crate::domain::quota::Claimant {
                key: format!("{}:{}", step.owner, record_id(&step.job_id)),
                next: StepRef {
                    seq: step.seq + 1,
                    ..step.clone()
                },
                tenant: job.tenant(),
                line: job.line(),
                priority: job.spec.priority,
            };
            crate::domain::quota::reserve(
                &mut inner.providers,
                &reserve.providers,
                &probes,
                &reserve.tenant,
                Some(&claimant),
                now,
            )
        };
        Ok(Claim::Acquired {
            job,
            providers: inner.providers.clone(),
            probes,
            reservation,
            origins: inner.origins.clone(),
        })
    }

    async fn finish(
        &self,
        step: &StepRef,
        next: &Job,
        due_at_ms: Option<u64>,
        event: Option<&ProviderEvent>,
    ) -> Result<FinishOutcome, StoreError> {
        let now = self.clock.now_ms();
        expiry_ahead(next, now)?;
        let mut inner = self.live();
        inner.spend(Charge::Finish, &step.owner, now);
        let key = (step.owner.clone(), record_id(&step.job_id).to_string());
        let was_finished = match inner.job(&key, now) {
            Some(held) if held.head.gen == step.gen && held.head.seq == step.seq => held.head.state.is_finished(),
            _ => return Ok(FinishOutcome::default()),
        };
        let day = inner.days.entry(self.clock.now_ms() / DAY_MS).or_default();
        if next.state.is_finished() && !was_finished {
            *day.finished.entry((step.owner.clone(), next.state.code())).or_default() += 1;
        }
        if let Some(event) = event {
            let outcome = event.class.map_or("ok", |c| c.as_str());
            *day.attempts
                .entry((event.provider.clone(), outcome.to_string()))
                .or_default() += 1;
        }
        inner.leases.remove(&key);
        match due_at_ms {
            Some(at) => Self::due_add(&mut inner, key.clone(), at),
            None => {
                inner.due.remove(&key);
            }
        }
        inner.put(key, next);
        let mut alerts = Vec::new();
        if let Some(event) = event {
            // The same decisions as finish.lua, under the same lock as the state change.
            let state = inner.providers.entry(event.provider.clone()).or_default();
            let before = state.clone();
            state.apply(event);
            let after = state.clone();
            let inner = &mut *inner;
            for incident in incidents::provider_incidents(&event.provider, &before, &after, event.now_ms) {
                alerts.extend(incidents::gate(
                    incident,
                    &event.alerts,
                    &mut inner.alerts,
                    event.now_ms,
                ));
            }
            let succeeded = event.class.is_none();
            if let Some(incident) = incidents::system_incident(
                &event.alerts,
                &inner.providers,
                &event.provider,
                succeeded,
                &mut inner.alerts,
                event.now_ms,
            ) {
                alerts.extend(incidents::gate(
                    incident,
                    &event.alerts,
                    &mut inner.alerts,
                    event.now_ms,
                ));
            }
        }
        Ok(FinishOutcome { written: true, alerts })
    }

    async fn read(
        &self,
        owner: &str,
        job_id: &str,
        grace: Duration,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Option<JobRead>>, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.live();
        inner.spend(Charge::Deliver, owner, now);
        let rate = match inner.count_read(owner, rate, now) {
            Ok(rate) => rate,
            Err(window) => return Ok(Admission::RateLimited(window)),
        };
        let admitted = |value| Ok(Admission::Admitted { value, rate });
        let key = (owner.to_string(), record_id(job_id).to_string());
        let Some(head) = inner.head_mut(&key, now) else {
            return admitted(None);
        };
        // Another incarnation than the id names reads as no job, and its life is not touched.
        if id_gen(job_id).is_some_and(|gen| gen != head.gen) {
            return admitted(None);
        }
        if head.state.is_finished() {
            if !head.owes_deliveries() {
                head.expires_at_ms = head.expires_at_ms.min(now + grace.as_millis() as u64);
            }
            // Read as shortened: a zero grace leaves it expired to the next read, not to this one.
            let job = inner.jobs.get(&key).map(|held| held.to_job());
            return admitted(job.map(|job| JobRead {
                job,
                running: false,
                standing: Standing::default(),
            }));
        }
        let Some(job) = inner.job(&key, now).map(|held| held.to_job()) else {
            return admitted(None);
        };
        let running = inner
            .lease(&key, now)
            .is_some_and(|(gen, seq, _)| *gen == job.gen && *seq == job.seq);
        let standing = Self::standing(&inner, &key, Self::rank(&inner, &key));
        admitted(Some(JobRead { job, running, standing }))
    }

    async fn purge(&self, owner: &str, job_id: &str, rate: Option<RateLimit>) -> Result<Admission<bool>, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.live();
        inner.spend(Charge::Purge, owner, now);
        let rate = match inner.count_read(owner, rate, now) {
            Ok(rate) => rate,
            Err(window) => return Ok(Admission::RateLimited(window)),
        };
        let key = (owner.to_string(), record_id(job_id).to_string());
        // Another incarnation than the id names is not this purge's.
        if let Some(gen) = id_gen(job_id) {
            if inner.jobs.get(&key).is_some_and(|held| held.head.gen != gen) {
                return Ok(Admission::Admitted { value: false, rate });
            }
        }
        inner.leases.remove(&key);
        inner.due.remove(&key);
        let existed = inner.remove(&key).is_some_and(|held| held.head.expires_at_ms > now);
        Ok(Admission::Admitted { value: existed, rate })
    }

    async fn sweep(&self, request: &SweepRequest<'_>) -> Result<Swept, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.live();
        inner.spend(Charge::Sweep, "", now);
        let life = now + request.token_life.as_millis() as u64;
        // Another chain's message, or a duplicate: stale. A message that finds no chain at all (its
        // own lapsed while it was late) takes the chain over, so a late message never ends it.
        let another = inner
            .sweeper
            .as_ref()
            .is_some_and(|(token, round, _)| token != request.token || *round != request.round);
        if !request.take_over && another {
            return Ok(Swept::Stale);
        }
        Self::prune_due(&mut inner, now);
        // In the index's order (score, then member), as sweep.lua's ZRANGEBYSCORE.
        let due: Vec<(Due, (String, String))> = inner
            .due
            .before(request.now_ms.saturating_add(1))
            .take(request.limit)
            .map(|(at, key)| (*at, key.clone()))
            .collect();
        let mut steps = Vec::with_capacity(due.len());
        let mut stranded = 0;
        for (_, key) in due {
            if let Some(job) = inner.jobs.get(&key).map(|held| &held.head) {
                steps.push(job.step_ref());
                if job.state == JobState::Queued {
                    stranded += 1;
                }
            }
            inner.due.insert(key, Due::at(request.requeue_at_ms));
        }
        let left = inner.due.len() as u64;
        let next_due_ms = inner.due.first().map(|d| d.ms);
        let next_round = request.round + 1;
        inner.sweeper = (left > 0).then(|| (request.token.to_string(), next_round, life));
        Ok(Swept::Due {
            steps,
            left,
            next_due_ms,
            next_round,
            stranded,
        })
    }

    async fn overview(
        &self,
        owner: &str,
        bounds: OverviewBounds,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Overview>, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.live();
        inner.spend(Charge::Overview, owner, now);
        let rate = match inner.count(owner, rate, now) {
            Ok(rate) => rate,
            Err(window) => return Ok(Admission::RateLimited(window)),
        };
        let mut overview = Overview::default();
        // From the owner's own indexes, not a pass over every job. Oldest first, ties by id: the order
        // of the Upstash index (score = created at, then member).
        let owned = |ids: Vec<&String>| -> Vec<&Job> {
            ids.into_iter()
                .filter_map(|id| inner.job(&(owner.to_string(), record_id(id).to_string()), now))
                .map(|held| &held.head)
                .collect()
        };
        let mut unfinished = owned(
            inner
                .unfinished
                .get(owner)
                .map_or_else(Vec::new, |ids| ids.iter().map(|(_, id)| id).collect()),
        );
        unfinished.retain(|j| !j.state.is_finished());
        unfinished.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        overview.unfinished = unfinished.len() as u64;
        let mut tenants: HashMap<Option<&str>, (u64, u64)> = HashMap::new();
        for job in unfinished.into_iter().take(bounds.scan.max(1)) {
            let key = (job.owner.clone(), record_id(&job.id).to_string());
            let running = inner
                .lease(&key, now)
                .is_some_and(|(gen, seq, _)| *gen == job.gen && *seq == job.seq);
            overview.counted += 1;
            let tenant = tenants.entry(job.tenant_name()).or_default();
            tenant.0 += 1;
            tenant.1 += u64::from(running);
            match (running, job.state) {
                (true, _) => overview.active += 1,
                (false, JobState::WaitingForRetry) => overview.delayed += 1,
                (false, _) => overview.waiting += 1,
            }
            if overview.oldest.len() < bounds.oldest {
                if let Some(held) = inner.jobs.get(&key) {
                    overview.oldest.push(JobRead {
                        job: held.to_job(),
                        running,
                        standing: Self::standing(&inner, &key, Self::rank(&inner, &key)),
                    });
                }
            }
        }
        // The most unfinished first, ties by name (the owner's own share first), as overview.lua sorts.
        let mut tenants: Vec<_> = tenants.into_iter().collect();
        tenants.sort_by(|(a, (n, _)), (b, (m, _))| m.cmp(n).then_with(|| a.cmp(b)));
        overview.tenants = tenants
            .into_iter()
            .take(bounds.tenants)
            .map(|(tenant, (unfinished, running))| TenantCount {
                tenant: tenant.map(str::to_string),
                unfinished,
                running,
            })
            .collect();
        // Soonest to expire first, ties by id (the Upstash index's score is the record's expiry).
        let mut dead = owned(inner.dead.get(owner).map_or_else(Vec::new, |ids| ids.iter().collect()));
        dead.retain(|j| j.dead_lettered());
        dead.sort_by(|a, b| (a.expires_at_ms, &a.id).cmp(&(b.expires_at_ms, &b.id)));
        overview.dead_lettered = dead.len() as u64;
        overview.dead_letters = dead
            .into_iter()
            .take(bounds.dead)
            .filter_map(|job| inner.jobs.get(&(job.owner.clone(), record_id(&job.id).to_string())))
            .map(|held| held.to_job())
            .collect();
        if let Some(day) = inner.days.get(&(now / DAY_MS)) {
            let finished = |code: char| day.finished.get(&(owner.to_string(), code)).copied().unwrap_or(0);
            overview.completed_today = finished('s');
            overview.failed_today = finished('f');
            overview.attempts_today = day
                .attempts
                .iter()
                .map(|((provider, outcome), count)| AttemptCount {
                    provider: provider.clone(),
                    outcome: outcome.clone(),
                    count: *count,
                })
                .collect();
        }
        Ok(Admission::Admitted { value: overview, rate })
    }

    async fn provider_states(&self) -> Result<HashMap<String, ProviderState>, StoreError> {
        let mut inner = self.live();
        inner.spend(Charge::ProviderStates, "", self.clock.now_ms());
        Ok(inner.providers.clone())
    }

    async fn spent(&self, owner: &str, all_owners: bool) -> Result<Spent, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.live();
        // What spent.lua answers: every field, or only the owner's; the read counts itself once it has
        // read (as spent.lua does: its own commands are only known then).
        let read = |key: &str| {
            let mut bucket = Bucket::default();
            if let Some((_, fields)) = inner.budget.get(key) {
                for (field, n) in fields {
                    let owned = field.get(1..).and_then(|f| f.strip_prefix(':')) == Some(owner);
                    if all_owners || owned {
                        bucket.fold(field, *n);
                    }
                }
            }
            bucket
        };
        let spent = Spent {
            hours: budget::day_hours(now)
                .into_iter()
                .map(|(start, key)| (start, read(&key)))
                .collect(),
            month: read(&budget::month_key(now)),
        };
        inner.spend(Charge::BudgetRead, owner, now);
        Ok(spent)
    }

    async fn with_work_left(&self) -> Result<Vec<Job>, StoreError> {
        let now = self.clock.now_ms();
        Ok(self
            .live()
            .jobs
            .values()
            .filter(|held| held.head.expires_at_ms > now && held.head.has_work_left())
            .map(|held| held.to_job())
            .collect())
    }

    async fn put_batch(&self, batch: &crate::domain::batch::BatchRecord) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        if batch.expires_at_ms <= now {
            return Err(StoreError::ExpiryInPast(format!(
                "batch expires at {} ms, the store clock reads {now} ms",
                batch.expires_at_ms
            )));
        }
        let mut inner = self.live();
        inner.spend(Charge::Finish, &batch.owner, now);
        inner
            .batches
            .insert((batch.owner.clone(), batch.id.clone()), batch.clone());
        Ok(())
    }

    async fn read_batch(
        &self,
        owner: &str,
        batch_id: &str,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Option<crate::ports::BatchRead>>, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.live();
        inner.spend(Charge::Deliver, owner, now);
        let rate = match inner.count(owner, rate, now) {
            Ok(rate) => rate,
            Err(window) => return Ok(Admission::RateLimited(window)),
        };
        let Some(batch) = inner
            .batches
            .get(&(owner.to_string(), batch_id.to_string()))
            .filter(|b| b.expires_at_ms > now)
            .cloned()
        else {
            return Ok(Admission::Admitted { value: None, rate });
        };
        let jobs = batch
            .items
            .iter()
            .map(|item| {
                let id = item.job_id.as_ref()?;
                inner
                    .job(&(owner.to_string(), record_id(id).to_string()), now)
                    .filter(|held| id_gen(id).is_none_or(|gen| gen == held.head.gen))
                    .map(|held| held.to_job())
            })
            .collect();
        Ok(Admission::Admitted {
            value: Some(crate::ports::BatchRead { batch, jobs }),
            rate,
        })
    }

    async fn peek(&self, owner: &str, job_id: &str) -> Result<Option<Job>, StoreError> {
        let now = self.clock.now_ms();
        let inner = self.live();
        Ok(inner
            .job(&(owner.to_string(), record_id(job_id).to_string()), now)
            .filter(|held| id_gen(job_id).is_none_or(|gen| gen == held.head.gen))
            .map(|held| held.to_job()))
    }

    async fn origin_down(&self, down: &OriginDown<'_>) -> Result<Option<u64>, StoreError> {
        let mut inner = self.live();
        inner.spend(Charge::Finish, down.owner, down.now_ms);
        let Inner { origins, waiting, .. } = &mut *inner;
        let (tracked, probe_at) = origins::mark_down(
            origins,
            down.origin,
            down.holder,
            down.waits_until_ms.is_some(),
            down.probed,
            down.now_ms,
        );
        // Lists of origins no longer tracked go with them (st:o:<origin> expires on Upstash).
        waiting.retain(|origin, _| origins.contains_key(origin));
        let key = (down.owner.to_string(), record_id(down.job_id).to_string());
        match down.waits_until_ms {
            Some(until) if tracked => {
                waiting.entry(down.origin.to_string()).or_default().insert(key, until);
            }
            _ => {
                if let Some(list) = waiting.get_mut(down.origin) {
                    list.remove(&key);
                }
            }
        }
        Ok(probe_at)
    }

    async fn origin_up(
        &self,
        origin: &str,
        owner: &str,
        now_ms: u64,
        due_at_ms: u64,
    ) -> Result<Vec<StepRef>, StoreError> {
        let mut inner = self.live();
        inner.spend(Charge::Finish, owner, now_ms);
        if !origins::mark_up(&mut inner.origins, origin, now_ms) {
            return Ok(Vec::new());
        }
        let list = inner.waiting.remove(origin).unwrap_or_default();
        let mut steps = Vec::new();
        for key in list.into_keys() {
            let owes = inner
                .job(&key, now_ms)
                .map(|held| held.to_job())
                .filter(|job| job.state.is_finished() && job.owes_deliveries());
            let (Some(job), Some(due)) = (owes, inner.due.get(&key)) else {
                continue;
            };
            // Only earlier (origin_up.lua's ZADD XX LT).
            if due.ms > due_at_ms {
                Self::due_add(&mut inner, key, due_at_ms);
            }
            steps.push(job.step_ref());
        }
        Ok(steps)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use serde_json::json;

    use super::*;
    use crate::domain::presets::generic::GenerateRequest;
    use crate::domain::presets::Preset;

    struct Hands(AtomicU64);
    impl Clock for Hands {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn job(id: &str, expires_at_ms: u64) -> Job {
        Job {
            id: id.into(),
            owner: "alice".into(),
            spec: GenerateRequest::parse(json!({"prompt": "x"})).unwrap().spec(),
            created_at_ms: 1_000,
            deadline_ms: expires_at_ms,
            expires_at_ms,
            ..crate::testing::job()
        }
    }

    proptest::proptest! {
        /// The ordered index answers what a pass over every entry would (the Redis order: score, then
        /// member), whatever was put in and taken out.
        #[test]
        fn the_due_index_counts_as_a_full_pass_would(
            ops in proptest::collection::vec((0u8..6, 0u64..40, 0u64..3), 1..120),
        ) {
            let mut index = DueIndex::default();
            let mut all: HashMap<(String, String), Due> = HashMap::new();
            for (job, ms, tie) in ops {
                let key = ("o".to_string(), format!("j{job}"));
                if tie == 2 {
                    index.remove(&key);
                    all.remove(&key);
                } else {
                    index.insert(key.clone(), Due { ms, tie });
                    all.insert(key, Due { ms, tie });
                }
            }
            let horizons = [0, 3, 10, 25];
            for (key, due) in &all {
                let mine = (*due, member(key));
                let rank = all.iter().filter(|(k, d)| (**d, member(k)) < mine).count() as u64;
                proptest::prop_assert_eq!(index.rank(key), rank);
                let later: Vec<u64> = horizons
                    .iter()
                    .map(|h| all.values().filter(|d| d.ms > due.ms && d.ms <= due.ms + h).count() as u64)
                    .collect();
                proptest::prop_assert_eq!(index.later(due.ms, &horizons), later);
            }
            for ms in 0..42 {
                let through = all.values().filter(|d| d.ms <= ms).count() as u64;
                proptest::prop_assert_eq!(index.count_through(ms), through);
                let ties = all.values().filter(|d| d.ms == ms).count() as u64;
                proptest::prop_assert_eq!(index.ties_at(ms), ties);
            }
            proptest::prop_assert_eq!(index.len(), all.len());
            proptest::prop_assert_eq!(index.first(), all.values().min().copied());
        }
    }

    fn report(commit: &str, diff: &str) -> Job {
        use crate::domain::presets::Preset;
        let request = crate::domain::presets::commit_report::ReportRequest::parse(json!({
            "userId": "u", "commitSha": commit, "repo": "acme/diary", "message": "Add token refresh",
            "files": ["src/auth.ts"], "diffSummary": diff, "template": "default"
        }))
        .unwrap();
        Job {
            spec: request.spec(),
            ..job(commit, 99_000)
        }
    }

    /// The held form gives back the very job that was written, and two reports share their schema,
    /// their system prompt and (a small diff) their compact prompt; what no job holds any more goes at
    /// the next clearing.
    #[test]
    fn a_held_job_reads_back_whole_and_shares_what_repeats() {
        let mut interned = Interned::default();
        let (a, b) = (report("c1", "+x\n"), report("c2", &"+y\n".repeat(4_000)));
        let (held_a, held_b) = (interned.hold(&a), interned.hold(&b));
        assert_eq!(held_a.to_job(), a);
        assert_eq!(held_b.to_job(), b);
        let plain = job("plain", 99_000);
        assert_eq!(interned.hold(&plain).to_job(), plain);
        assert!(Arc::ptr_eq(&held_a.format, &held_b.format));
        assert!(Arc::ptr_eq(&held_a.messages[0].1, &held_b.messages[0].1));
        let compact = held_a.compact_messages.as_deref().unwrap();
        assert!(Arc::ptr_eq(&held_a.messages[1].1, &compact[1].1));
        drop(held_b);
        interned.clear_unused();
        assert_eq!(interned.formats.len(), 1);
        assert!(interned.texts.iter().all(|text| Arc::strong_count(text) > 1));
        drop(held_a);
        interned.clear_unused();
        assert!(interned.texts.is_empty() && interned.formats.is_empty());
    }

    /// The maps are cleared once a second; a record that expires between two clearings is already gone
    /// to every read, and no longer counts against its owner's in-flight cap.
    #[tokio::test]
    async fn a_record_expired_between_two_clearings_is_gone_to_every_read() {
        let clock = Arc::new(Hands(AtomicU64::new(10_000)));
        let store = MemoryStore::new(clock.clone());
        let enlist = Enlist {
            due_at_ms: 10_000,
            sweeper_token: "t".into(),
            sweeper_life: Duration::from_secs(60),
        };
        let cap = Limits {
            rate: None,
            in_flight: Some(1),
        };
        let short = job("short", 10_300);
        assert!(matches!(
            store.create(&short, &enlist, cap).await.unwrap(),
            Admission::Admitted {
                value: Submitted {
                    created: Created::New,
                    ..
                },
                ..
            }
        ));
        // Full: the one in-flight slot is taken.
        assert!(matches!(
            store.create(&job("second", 99_000), &enlist, cap).await.unwrap(),
            Admission::TooManyInFlight { .. }
        ));
        clock.0.store(10_400, Ordering::SeqCst); // expired, and the next clearing is at 11_000
        let step = short.step_ref();
        assert!(matches!(
            store
                .claim(&step, Duration::from_secs(30), &Reserve::default())
                .await
                .unwrap(),
            Claim::Missing
        ));
        let polled = store
            .read("alice", "short", Duration::from_secs(1), None)
            .await
            .unwrap();
        assert!(matches!(polled, Admission::Admitted { value: None, .. }));
        assert!(matches!(
            store.purge("alice", "short", None).await.unwrap(),
            Admission::Admitted { value: false, .. }
        ));
        assert!(matches!(
            store.create(&job("second", 99_000), &enlist, cap).await.unwrap(),
            Admission::Admitted {
                value: Submitted {
                    created: Created::New,
                    ..
                },
                ..
            }
        ));
        assert!(store.with_work_left().await.unwrap().iter().all(|j| j.id == "second"));
    }
}
