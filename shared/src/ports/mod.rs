//! The ports: small traits the engine and the HTTP routes talk through. Adapters live beside them
//! (`store::memory`, `store::upstash`, `queue::local`, `queue::sqs`, `providers::*`, `outbound`).

pub mod metrics;
pub mod outbound;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::alert::Alert;
use crate::domain::batch::BatchRecord;
use crate::domain::budget::Spent;
use crate::domain::job::{Job, StepRef};
use crate::domain::llm::CompletionRequest;
use crate::domain::message::Message;
use crate::domain::origins::OriginState;
use crate::domain::outcome::CallReport;
use crate::domain::quota::{ProviderEvent, ProviderState, Reservation, Reserve};

/// What went wrong behind the `Store` port, in words every store adapter shares: the engine and the
/// routes match on it without knowing which adapter answered.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store rejected our credentials")]
    Unauthorized,
    #[error("store command failed: {0}")]
    Command(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A write whose absolute expiry is already past by the store's own clock: the engine's clock is
    /// behind the store's (a manual clock anchored to a fixed date, a drifted host). Refused before
    /// anything is written, so the mistake shows instead of a job that vanishes as it is written.
    #[error("expiry in the past: {0}")]
    ExpiryInPast(String),
    /// The store's plan has no commands left (hosted Upstash: `ERR max requests limit exceeded`, the
    /// free plan's monthly quota spent): nothing runs until the quota resets or the plan changes.
    #[error("store quota exhausted: {0}")]
    QuotaExhausted(String),
    /// The request would be larger than the store takes in one request (hosted Upstash: `max request
    /// size`): refused before it is sent, nothing was written.
    #[error("a store request of {bytes} bytes exceeds the store's limit of {limit} bytes")]
    RequestTooLarge { bytes: usize, limit: usize },
}

/// What went wrong behind the `Queue` port: a message that was not queued.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue unavailable: {0}")]
    Unavailable(String),
}

/// Milliseconds since the Unix epoch. A port so tests and the pure engine never read the wall clock.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// One provider: one call, classified. Knows its wire format and nothing about jobs.
#[async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> &str;
    async fn call(&self, request: &CompletionRequest) -> CallReport;
}

/// What `Store::create` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// The job was written, and entered the due-index.
    New,
    /// A live job with the same id exists (in flight or finished and not yet purged).
    Existing(Box<Job>),
}

/// What `Store::create` answered, with the sweeper it armed.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub created: Created,
    /// No sweeper was alive: this token now names the one the caller must start (`Message::Sweep`,
    /// round 1).
    pub arm_sweeper: Option<String>,
    /// What the job's ETA needs, read in the same request (empty when the job met is finished).
    pub standing: Standing,
}

/// Where an unfinished job stands, for its ETA (engine/eta.rs): read by the script the route runs
/// anyway (create, read), never by a request of its own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Standing {
    /// Jobs due ahead of it in the due-index. A new job: those due no later than it (it joins the
    /// end of their line). A job already there: its rank in the index's order (score, then member).
    pub ahead: u64,
    /// Every provider's shared state.
    pub providers: HashMap<String, ProviderState>,
    /// The millisecond the job is due at in the index (`None`: it is not there).
    pub due_ms: Option<u64>,
    /// For each of [`HORIZONS_MS`], the jobs due after that millisecond and at most the horizon past
    /// it: those that go first should this job have to wait (a backlog parked until a quota reset).
    pub later: Vec<u64>,
}

/// The horizons of [`Standing::later`] (ms past the job's own due time).
pub const HORIZONS_MS: [u64; 18] = [
    0,
    15_000,
    30_000,
    60_000,
    90_000,
    120_000,
    180_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
    7_200_000,
    21_600_000,
    43_200_000,
    86_400_000,
    172_800_000,
    // Beyond any deadline: everything after the job.
    400 * 86_400_000,
];

/// Where `Store::create` puts a new job in the due-index, and the sweeper token it arms when none
/// is alive.
#[derive(Debug, Clone, PartialEq)]
pub struct Enlist {
    /// The due-index score: when the job's first step should have started (now + the sweep grace).
    pub due_at_ms: u64,
    /// A fresh token, armed only when no sweeper holds one.
    pub sweeper_token: String,
    /// How long an armed token lives without a sweep renewing it.
    pub sweeper_life: Duration,
}

/// One sweep of the due-index.
#[derive(Debug, Clone, PartialEq)]
pub enum Swept {
    /// Another sweeper holds the token: this one stops.
    Stale,
    /// The steps that were due (each moved to `requeue_at`), what is left in the index, the
    /// earliest score there (`None` when the index is empty: the sweeper is released), and the round
    /// the chain's next message carries.
    Due {
        steps: Vec<StepRef>,
        left: u64,
        next_due_ms: Option<u64>,
        next_round: u64,
        /// How many of `steps` were stranded: their job was queued or running (not parked, not
        /// finished) and its step had been due for a whole grace — a lost message, a dead worker.
        stranded: u64,
    },
}

/// The arguments of one sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRequest<'a> {
    pub token: &'a str,
    /// The message's round: only the one the live chain sent last is accepted (a duplicate
    /// delivery of an older one stops).
    pub round: u64,
    /// Take the token over (a process start, the manual redrive) instead of requiring it.
    pub take_over: bool,
    pub now_ms: u64,
    pub limit: usize,
    /// The swept jobs' new score: when the sweep looks at them again unless they progress.
    pub requeue_at_ms: u64,
    /// How long the token lives without the next sweep.
    pub token_life: Duration,
}

/// What `Store::claim` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The step's lease is ours: here is the job and every provider's shared state, and the
    /// providers whose probe this claim took (their cooldown just ended: this job may call them, the
    /// others wait for the outcome). `reserved`: the provider whose next request this claim reserved
    /// (counted in its minute and day, in `providers` too) or the turn it booked (`quota::reserve`).
    Acquired {
        job: Job,
        providers: HashMap<String, ProviderState>,
        probes: Vec<String>,
        reservation: Reservation,
        /// Every failing (or lately recovered) delivery origin's shared state, by origin
        /// (`domain/origins.rs`), read with the provider states: no command of its own.
        origins: HashMap<String, OriginState>,
    },
    /// Another worker holds this step's lease right now; it ends in `lease_left` (come back then).
    Busy { lease_left: Duration },
    /// The job moved past this step (or is another incarnation): the message is stale.
    Stale(Job),
    /// No such job (purged or expired).
    Missing,
}

/// A delivery that failed because its origin did not answer (`Store::origin_down`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginDown<'a> {
    /// `scheme://host:port` (`origins::origin_of`).
    pub origin: &'a str,
    pub owner: &'a str,
    pub job_id: &'a str,
    /// The delivery as a probe holder (`origins::holder_of`).
    pub holder: &'a str,
    /// Its scheduled next attempt: until then it waits on the origin's recovery. `None`: it was
    /// dead-lettered and waits no more (a probe it held is released).
    pub waits_until_ms: Option<u64>,
    /// The attempt was this holder's probe: a failure moves the probe on by the back-off.
    pub probed: bool,
    pub now_ms: u64,
}

/// What `Store::finish` did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FinishOutcome {
    /// The next state was written (false: the job moved on meanwhile, nothing changed).
    pub written: bool,
    /// The incidents this write's provider event caused, already deduplicated: this caller, and no
    /// other instance, alerts them.
    pub alerts: Vec<Alert>,
}

/// A job as the poller sees it (`Store::read`).
#[derive(Debug, Clone, PartialEq)]
pub struct JobRead {
    pub job: Job,
    /// A step holds the job's lease: the job is being worked on right now.
    pub running: bool,
    /// What the job's ETA needs (empty when the job is finished).
    pub standing: Standing,
}

/// How much one jobs overview (`Store::overview`) reads: bounded, whatever the owner holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverviewBounds {
    /// Most unfinished jobs whose state is counted, the oldest first.
    pub scan: usize,
    /// Most of the oldest unfinished jobs answered whole.
    pub oldest: usize,
    /// Most dead-lettered jobs answered whole.
    pub dead: usize,
    /// Most tenants answered in `Overview::tenants` (those with the most unfinished jobs).
    pub tenants: usize,
}

/// One tenant's unfinished jobs among those the overview counted (`Overview::counted`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantCount {
    /// The jobs' `tenantId`, else `userId` (`Job::tenant_name`); `None`: jobs naming neither, the
    /// owner's own share.
    pub tenant: Option<String>,
    pub unfinished: u64,
    /// Of them, those a step holds the lease of.
    pub running: u64,
}

/// Today's (UTC) provider attempts of one outcome (`ok` or an error class name), every owner's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AttemptCount {
    pub provider: String,
    pub outcome: String,
    pub count: u64,
}

/// One owner's jobs at a glance (`GET /v1/jobs`), read in one atomic request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overview {
    /// The owner's unfinished jobs (those found expired are dropped from the count).
    pub unfinished: u64,
    /// How many of them were counted by state below (the oldest, at most `OverviewBounds::scan`).
    pub counted: u64,
    pub waiting: u64,
    /// A step holds the job's lease: a provider call is under way.
    pub active: u64,
    pub delayed: u64,
    /// The oldest unfinished jobs, oldest first (`running`: a step holds the lease).
    pub oldest: Vec<JobRead>,
    /// The owner's jobs that finished today (UTC), by how they ended.
    pub completed_today: u64,
    pub failed_today: u64,
    /// The owner's finished jobs with a dead-lettered delivery, and the first of them (soonest to expire first).
    pub dead_lettered: u64,
    pub dead_letters: Vec<Job>,
    /// Today's provider attempts by provider and outcome, sorted.
    pub attempts_today: Vec<AttemptCount>,
    /// The counted jobs by tenant: the most unfinished first, ties by name (the owner's own share,
    /// `None`, first), at most `OverviewBounds::tenants`.
    pub tenants: Vec<TenantCount>,
}

/// Milliseconds in a UTC day: the overview's "today" is `now / DAY_MS`.
pub const DAY_MS: u64 = 86_400_000;

/// An owner's request budget: at most `limit` requests in each fixed window of `window_ms`.
/// Windows are aligned to the Unix epoch (window id = now / window_ms), so every instance agrees
/// on them without talking to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u32,
    pub window_ms: u64,
}

impl RateLimit {
    /// The window `now_ms` falls in, and the instant it ends.
    pub(crate) fn window(&self, now_ms: u64) -> (u64, u64) {
        // Configuration never gives a window under a second; a zero here must not divide by zero.
        let length = self.window_ms.max(1);
        let id = now_ms / length;
        (id, (id + 1) * length)
    }

    /// The owner's window once it has counted `count` requests, the last one at `now_ms`; `Err` when
    /// that one is over the limit.
    pub(crate) fn check(self, count: u64, now_ms: u64) -> Result<RateWindow, RateWindow> {
        let remaining = u64::from(self.limit).saturating_sub(count) as u32;
        let window = RateWindow {
            limit: self,
            remaining,
            resets_in_ms: self.window(now_ms).1 - now_ms,
        };
        if count > u64::from(self.limit) {
            Err(window)
        } else {
            Ok(window)
        }
    }
}

/// Where an owner stands in its current window once a request has been counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateWindow {
    pub limit: RateLimit,
    /// Requests the owner may still make in this window.
    pub remaining: u32,
    /// Time left until the window ends.
    pub resets_in_ms: u64,
}

impl RateWindow {
    /// Whole seconds until the window ends, rounded up (so waiting them is always enough).
    pub(crate) fn resets_in_seconds(&self) -> u64 {
        self.resets_in_ms.div_ceil(1000)
    }
}

/// The limits one store call applies to the request's owner (`None`: not limited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub rate: Option<RateLimit>,
    /// Most unfinished jobs the owner may have at once (`create` only).
    pub in_flight: Option<u32>,
}

/// A store call that first counts the request against its owner's limits.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission<T> {
    /// Counted and done; `rate` is the owner's window after this request (None when not rate-limited).
    Admitted { value: T, rate: Option<RateWindow> },
    /// Over the rate limit: nothing was done.
    RateLimited(RateWindow),
    /// The owner has `limit` jobs in flight already: nothing was written.
    TooManyInFlight { limit: u32, rate: Option<RateWindow> },
}

/// A batch and its items' jobs, as a poll sees them (`Store::read_batch`).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRead {
    pub batch: BatchRecord,
    /// One per item, in item order: the item's job, `None` when it was refused at submit or its job
    /// expired or was purged.
    pub jobs: Vec<Option<Job>>,
}

/// Job state. Every method is one atomic state change (one request on Upstash); the methods a
/// route calls also count the request against its owner's limits, in that same request. Every method
/// but `with_work_left` also counts what it spends in the budget's buckets (budget.rs), in that same
/// request.
#[async_trait]
pub trait Store: Send + Sync {
    /// Writes `job` unless a live job with its id exists; a finally failed job is replaced.
    /// A new job counts towards its owner's jobs in flight until it finishes, is purged or expires,
    /// and is in the due-index (score `enlist.due_at_ms`) in the same atomic write.
    /// Meeting an existing job is never refused for being over that cap.
    async fn create(&self, job: &Job, enlist: &Enlist, limits: Limits) -> Result<Admission<Submitted>, StoreError>;
    /// Takes the lease of one step (fenced by gen and seq), reads the shared provider states, and
    /// reserves a request of the first of `reserve`'s providers that can be called now when it has a
    /// shared request limit, or books the job's turn when they are only out of this minute's requests
    /// (`quota::reserve`), so instances that claim at once share a provider's minute and day.
    async fn claim(&self, step: &StepRef, lease: Duration, reserve: &Reserve) -> Result<Claim, StoreError>;
    /// Writes the job's next state if it is still at `step`, applies the provider event, releases
    /// the step's lease and moves the job's due-index entry to `due_at_ms` (`None`: out of the index).
    /// `written` is false when the job moved on meanwhile (nothing was written); `alerts` are the
    /// incidents the event's state change caused (`store::incidents`: `provider_incidents`,
    /// `system_incident`, `gate`), decided in the same atomic change so that one caller reports each.
    async fn finish(
        &self,
        step: &StepRef,
        next: &Job,
        due_at_ms: Option<u64>,
        event: Option<&ProviderEvent>,
    ) -> Result<FinishOutcome, StoreError>;
    /// One sweep of the due-index (one request): the steps due by `now`, entries of vanished jobs dropped.
    async fn sweep(&self, request: &SweepRequest<'_>) -> Result<Swept, StoreError>;
    /// Reads a job for its owner (a poll); the first read of a finished job shortens its life to
    /// `grace` (`PEXPIRE … LT` on Upstash: later reads keep the first deadline). Counted against `rate`
    /// in the owner's window of reads, apart from creates (shared with purges; kept per process).
    async fn read(
        &self,
        owner: &str,
        job_id: &str,
        grace: Duration,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Option<JobRead>>, StoreError>;
    /// Deletes an owner's job at once. Admitted with whether it existed. Counted against `rate` in the
    /// owner's window of reads, as a poll.
    async fn purge(&self, owner: &str, job_id: &str, rate: Option<RateLimit>) -> Result<Admission<bool>, StoreError>;
    /// One owner's jobs at a glance, counted against its limits like a poll: its unfinished jobs by
    /// state (the oldest `bounds.scan`), the oldest of them, its jobs finished today, its dead-lettered
    /// jobs, and today's provider attempts by outcome. Bounded work on what the store indexes anyway.
    async fn overview(
        &self,
        owner: &str,
        bounds: OverviewBounds,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Overview>, StoreError>;
    /// Every provider's shared state (for `GET /v1/providers`).
    async fn provider_states(&self) -> Result<HashMap<String, ProviderState>, StoreError>;
    /// The budget's buckets (budget.rs) for `GET /v1/budget`: every owner's fields and the deployment's
    /// totals when `all_owners`, else only `owner`'s. One request, counted for `owner` like every other
    /// call (so the read includes itself).
    async fn spent(&self, owner: &str, all_owners: bool) -> Result<Spent, StoreError>;
    /// Jobs with work left (unfinished, or owing deliveries): the manual redrive (a scan; not for hot paths).
    async fn with_work_left(&self) -> Result<Vec<Job>, StoreError>;
    /// Writes a batch's record (its items' job ids), kept until `batch.expires_at_ms`. One request;
    /// not counted against the owner's rate limit (each item's create was).
    async fn put_batch(&self, batch: &BatchRecord) -> Result<(), StoreError>;
    /// Reads an owner's batch and its items' jobs in one request of a constant number of commands,
    /// counted against the owner's rate limit like a poll. Never shortens a job's life.
    async fn read_batch(
        &self,
        owner: &str,
        batch_id: &str,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Option<BatchRead>>, StoreError>;
    /// An owner's job as it stands, uncounted and untouched: the immediate routes' wait (one plain
    /// `GET` on Upstash, the cheapest read there is).
    async fn peek(&self, owner: &str, job_id: &str) -> Result<Option<Job>, StoreError>;
    /// The receiver-recovery fast path, on a failure that says the origin is down (`AttemptReport::marks_origin_down`):
    /// marks the origin down (unless the store already tracks `origins::MAX_ORIGINS` down origins),
    /// lists the delivery's job among those waiting on it until `waits_until_ms`, and hands the
    /// origin's one probe to this delivery when nobody holds it (or moves it on by the back-off,
    /// `origins::probe_delay_ms`, when this was the holder's probe). Answers the probe's time when this
    /// delivery holds it. One request; the failure path only. Both adapters implement it; the default
    /// (a test's store double) tracks nothing, and deliveries keep their schedule.
    async fn origin_down(&self, down: &OriginDown<'_>) -> Result<Option<u64>, StoreError> {
        let _ = down;
        Ok(None)
    }
    /// A delivery to a down `origin` succeeded (`owner`'s: counted in its budget): the origin is marked
    /// up at `now_ms`, and every job waiting on it that still owes deliveries moves to `due_at_ms` in the
    /// due-index (only earlier) and comes back with its current step, for the caller to send. One
    /// request, whatever the number of waiting jobs; nothing when the origin is not down (nor in the
    /// default, as `origin_down`'s).
    async fn origin_up(
        &self,
        origin: &str,
        owner: &str,
        now_ms: u64,
        due_at_ms: u64,
    ) -> Result<Vec<StepRef>, StoreError> {
        let _ = (origin, owner, now_ms, due_at_ms);
        Ok(Vec::new())
    }
}

/// Delayed messages: the next step of a job, later deliveries.
#[async_trait]
pub trait Queue: Send + Sync {
    async fn send(&self, message: &Message, delay: Duration) -> Result<(), QueueError>;
}
