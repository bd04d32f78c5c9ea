//! The use cases of the HTTP API, over the ports: submit, poll, purge, redeliver, and the reads behind
//! health, providers, the jobs overview and the budget. Each takes what a handler parsed and answers
//! data (never HTTP): the handlers in `api/routes.rs` authenticate, parse, call one method here and
//! turn the answer into a body (`api/views.rs`); `api/errors.rs` turns a [`JobsError`] into a status.
//!
//! Most calls are counted against the owner's limits by the store, in the same request that does the
//! work: their answer is a [`Counted`], whose rate window goes on the response whatever the outcome.

pub mod auth;

use std::collections::HashMap;
use std::time::Duration;

use crate::domain::batch::{new_batch_id, BatchItem, BatchRecord};
use crate::domain::budget::Spent;
use crate::domain::contract::{Failure, FailureCode};
use crate::domain::job::{job_id, Job, JobResult, JobState};
use crate::domain::presets::batch::Batch;
use crate::domain::presets::{FieldError, Submission};
use crate::domain::quota::ProviderState;
use crate::engine::{Engine, NothingToRedeliver, ProviderSlot, Redelivered, StepError};
use crate::ports::{
    Admission, BatchRead, Created, JobRead, Overview, OverviewBounds, QueueError, RateLimit, RateWindow, StoreError,
};

/// Why a use case did not do what was asked. Mapped to HTTP once, in `api/errors.rs`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JobsError {
    /// The owner's request budget for this window is spent: nothing was done.
    #[error("rate limited")]
    RateLimited(RateWindow),
    /// The owner has `limit` unfinished jobs already: nothing was written.
    #[error("too many jobs in flight")]
    TooManyInFlight { limit: u32, rate: Option<RateWindow> },
    /// A callback or webhook target is refused before anything is stored; the error names its field.
    #[error(transparent)]
    InvalidTarget(FieldError),
    /// No such job for this owner (never created, purged, expired, or another owner's).
    #[error("job not found")]
    NotFound,
    /// A redelivery found nothing to send: the job is unfinished, has no deliveries, or all were delivered.
    #[error("nothing to redeliver: {0:?}")]
    NothingToRedeliver(NothingToRedeliver),
    /// The job moved on (a delivery attempt ended) between the read and the write of a redelivery.
    #[error("the job changed during the request")]
    Changed,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl From<StepError> for JobsError {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Store(e) => Self::Store(e),
            StepError::Queue(e) => Self::Queue(e),
        }
    }
}

/// The answer of a call the store counted against its owner's rate limit: `rate` is the owner's window
/// after it (None when the owner is not rate-limited), to be announced with the answer, refusals
/// found after the count (`NotFound`, …) included.
#[derive(Debug)]
pub(crate) struct Counted<T> {
    pub(crate) outcome: Result<T, JobsError>,
    pub(crate) rate: Option<RateWindow>,
}

impl<T> Counted<T> {
    fn ok(value: T, rate: Option<RateWindow>) -> Self {
        Self {
            outcome: Ok(value),
            rate,
        }
    }

    fn refused(error: JobsError, rate: Option<RateWindow>) -> Self {
        Self {
            outcome: Err(error),
            rate,
        }
    }
}

/// What the store did for `owner`, or the refusal that says why it did nothing.
fn admitted<T>(owner: &str, admission: Admission<T>) -> Result<(T, Option<RateWindow>), JobsError> {
    match admission {
        Admission::Admitted { value, rate } => Ok((value, rate)),
        Admission::RateLimited(window) => {
            tracing::info!(%owner, limit = window.limit.limit, "request refused: over the owner's rate limit");
            Err(JobsError::RateLimited(window))
        }
        Admission::TooManyInFlight { limit, rate } => {
            tracing::info!(%owner, limit, "submit refused: the owner's cap on jobs in flight is reached");
            Err(JobsError::TooManyInFlight { limit, rate })
        }
    }
}

/// An unfinished job's expected end (engine/eta.rs) as seen at `now_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Eta {
    pub(crate) at_ms: u64,
    pub(crate) now_ms: u64,
}

impl Eta {
    /// The estimate `at_ms` (if any) as seen at `now_ms`.
    pub(crate) fn of(at_ms: Option<u64>, now_ms: u64) -> Option<Self> {
        at_ms.map(|at_ms| Self { at_ms, now_ms })
    }

    /// Whole seconds from now, rounded up (never negative).
    pub(crate) fn seconds(self) -> u64 {
        self.at_ms.saturating_sub(self.now_ms).div_ceil(1000)
    }
}

/// How long the immediate routes wait for their job: inside API Gateway's 30 s, with room for the
/// submit before and the answer after. Past it they answer 202 with the job to poll.
pub(crate) const IMMEDIATE_WAIT: Duration = Duration::from_secs(25);
/// The immediate routes' first look at their job, then each wait doubles up to [`WAIT_AT_MOST`]: a
/// job of a few seconds is seen within a few reads, and 25 s cost at most about 16 (one `GET` each
/// on Upstash).
const WAIT_FIRST: Duration = Duration::from_millis(100);
const WAIT_AT_MOST: Duration = Duration::from_secs(2);

/// What an immediate request came to.
#[derive(Debug)]
pub(crate) enum Immediate {
    /// The job finished within the wait (`cached`: an identical job had finished before).
    Finished { job: Box<Job>, cached: bool },
    /// Still running at the end of the wait: poll it.
    Pending { job_id: String, eta: Option<Eta> },
}

/// A batch written: its id, and what the 202 echoes.
#[derive(Debug)]
pub(crate) struct BatchQueued {
    pub(crate) batch_id: String,
    pub(crate) item_count: usize,
    pub(crate) concurrency: u64,
}

/// What a submit did.
#[derive(Debug)]
pub(crate) enum SubmitOutcome {
    /// A new job, or the identical job in flight (queued again): poll it.
    Queued { job_id: String, eta: Option<Eta> },
    /// The identical job already succeeded and is still kept: its result.
    Cached { job_id: String, result: JobResult },
}

/// A job as a poll sees it.
#[derive(Debug)]
pub(crate) struct Polled {
    pub(crate) job: Job,
    /// A step holds the job's lease right now.
    pub(crate) running: bool,
    pub(crate) eta: Option<Eta>,
}

/// A redelivery made: the job as written, and how many deliveries were made due now.
#[derive(Debug)]
pub(crate) struct Redelivery {
    pub(crate) job: Job,
    pub(crate) due: usize,
}

/// `GET /health`'s store check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoreCheck {
    pub(crate) reachable: bool,
    pub(crate) checked_at_ms: u64,
}

/// Every configured provider and, when the store could be read, its shared state.
pub(crate) struct ProviderStates<'a> {
    pub(crate) now_ms: u64,
    pub(crate) providers: &'a [ProviderSlot],
    /// `None`: the store could not be read (the providers' state is unknown).
    pub(crate) states: Option<HashMap<String, ProviderState>>,
}

/// `GET /v1/jobs`'s read, and the ETA of each of its oldest unfinished jobs (in their order).
#[derive(Debug)]
pub(crate) struct OverviewRead {
    pub(crate) overview: Overview,
    pub(crate) etas: Vec<Option<Eta>>,
    pub(crate) now_ms: u64,
}

/// What an owner (or, for the admin owner, the deployment) spent.
#[derive(Debug)]
pub(crate) struct BudgetRead {
    /// The owner is the configured admin owner: the answer covers the whole deployment.
    pub(crate) deployment: bool,
    pub(crate) spent: Spent,
    pub(crate) now_ms: u64,
}

/// What `GET /v1/jobs` reads: the state of the owner's oldest 1,000 unfinished jobs (the default cap on
/// jobs in flight), 20 of them whole, and 20 dead-lettered jobs.
pub(crate) const OVERVIEW_BOUNDS: OverviewBounds = OverviewBounds {
    scan: 1000,
    oldest: 20,
    dead: 20,
    tenants: 50,
};

/// A poll's read that never shortens the job's life (the grace applies to reads that deliver a result).
const READ_WITHOUT_GRACE: Duration = Duration::from_secs(10 * 365 * 86_400);

/// However often `/health` is called, an instance asks the store at most once in this long.
pub(crate) const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(10);

/// The instance's last store check, shared by every `/health` request of the process.
#[derive(Debug, Default)]
pub(crate) struct HealthCache {
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, StoreCheck)>>,
}

/// The use cases, over the engine's ports. Borrowed from the [`crate::wiring::service::Service`] per request.
#[derive(Clone, Copy)]
pub(crate) struct Jobs<'a> {
    engine: &'a Engine,
    health: &'a HealthCache,
}

impl<'a> Jobs<'a> {
    pub(crate) fn new(engine: &'a Engine, health: &'a HealthCache) -> Self {
        Self { engine, health }
    }

    /// The owner's request budget (`None`: not rate-limited), announced by answers that are not counted.
    pub(crate) fn rate_limit(&self, owner: &str) -> Option<RateLimit> {
        self.engine.settings().limits.for_owner(owner).rate
    }

    fn eta(&self, job: &Job, read: &JobRead) -> Option<Eta> {
        let engine = self.engine;
        Eta::of(engine.eta(job, &read.standing, read.running), engine.clock().now_ms())
    }

    /// Checks the request's delivery targets, then submits it (`Engine::submit`: create or meet,
    /// first step, undone when that step cannot be queued).
    pub(crate) async fn submit(
        &self,
        owner: String,
        mut submission: Submission,
    ) -> Result<Counted<SubmitOutcome>, JobsError> {
        let engine = self.engine;
        engine
            .check_targets(&owner, &mut submission)
            .map_err(JobsError::InvalidTarget)?;
        let (accepted, rate) = admitted(&owner, engine.submit(owner.clone(), submission).await?)?;
        let eta = |job: &Job| Eta::of(engine.eta(job, &accepted.standing, false), engine.clock().now_ms());
        let answer = match &accepted.created {
            Created::New => SubmitOutcome::Queued {
                job_id: accepted.job.id.clone(),
                eta: eta(&accepted.job),
            },
            Created::Existing(existing) => match (&existing.state, &existing.result) {
                (JobState::Succeeded, Some(result)) => SubmitOutcome::Cached {
                    job_id: existing.id.clone(),
                    result: result.clone(),
                },
                _ => SubmitOutcome::Queued {
                    job_id: existing.id.clone(),
                    eta: eta(existing),
                },
            },
        };
        Ok(Counted::ok(answer, rate))
    }

    /// Reads the owner's job; the first read of a finished job shortens its life to the grace.
    pub(crate) async fn poll(&self, owner: &str, job_id: &str) -> Result<Counted<Polled>, JobsError> {
        let settings = self.engine.settings();
        let grace = Duration::from_millis(settings.delivery_grace_ms);
        let rate = settings.limits.for_owner(owner).rate;
        let (read, rate) = admitted(owner, self.engine.store().read(owner, job_id, grace, rate).await?)?;
        Ok(match read {
            Some(read) => {
                let eta = self.eta(&read.job, &read);
                Counted::ok(
                    Polled {
                        job: read.job,
                        running: read.running,
                        eta,
                    },
                    rate,
                )
            }
            None => Counted::refused(JobsError::NotFound, rate),
        })
    }

    /// Deletes the owner's job by id; `NotFound` when there was none.
    pub(crate) async fn purge(&self, owner: &str, job_id: &str) -> Result<Counted<()>, JobsError> {
        let (deleted, rate) = self.purge_counted(owner, job_id).await?;
        Ok(if deleted {
            Counted::ok((), rate)
        } else {
            Counted::refused(JobsError::NotFound, rate)
        })
    }

    /// Deletes the owner's job of this identity (a commit report's); answers whether one was there.
    pub(crate) async fn purge_identity(&self, owner: &str, identity: &str) -> Result<Counted<bool>, JobsError> {
        let (deleted, rate) = self.purge_counted(owner, &job_id(owner, identity)).await?;
        Ok(Counted::ok(deleted, rate))
    }

    async fn purge_counted(&self, owner: &str, job_id: &str) -> Result<(bool, Option<RateWindow>), JobsError> {
        let rate = self.rate_limit(owner);
        admitted(owner, self.engine.store().purge(owner, job_id, rate).await?)
    }

    /// Sends the job's dead (and failed, waiting) deliveries again now (`Engine::redeliver`). Counted
    /// like a poll: one counted read, then the write, fenced on the step the read saw (a delivery
    /// attempt that ends in between wins: `Changed`), then the step message.
    pub(crate) async fn redeliver(&self, owner: &str, job_id: &str) -> Result<Counted<Redelivery>, JobsError> {
        let engine = self.engine;
        let rate = self.rate_limit(owner);
        let (read, rate) = admitted(
            owner,
            engine.store().read(owner, job_id, READ_WITHOUT_GRACE, rate).await?,
        )?;
        let Some(read) = read else {
            return Ok(Counted::refused(JobsError::NotFound, rate));
        };
        Ok(match engine.redeliver(read.job).await? {
            Redelivered::Made { job, due } => Counted::ok(Redelivery { job, due }, rate),
            Redelivered::Nothing(why) => Counted::refused(JobsError::NothingToRedeliver(why), rate),
            Redelivered::Changed => Counted::refused(JobsError::Changed, rate),
        })
    }

    /// Submits a job and waits for it up to `within` (the immediate routes): the job is an ordinary
    /// one, so past the wait it goes on and the caller polls it. The wait reads the job with
    /// `Store::peek` after 0.1 s, then at doubling intervals up to 2 s.
    pub(crate) async fn submit_and_wait(
        &self,
        owner: String,
        submission: Submission,
        within: Duration,
    ) -> Result<Counted<Immediate>, JobsError> {
        let until = tokio::time::Instant::now() + within;
        let store = self.engine.store();
        let submitted = self.submit(owner.clone(), submission).await?;
        let rate = submitted.rate;
        let (job_id, eta, cached) = match submitted.outcome {
            Err(e) => return Ok(Counted::refused(e, rate)),
            Ok(SubmitOutcome::Queued { job_id, eta }) => (job_id, eta, false),
            // The finished identical job: read whole (one read) for its attempts.
            Ok(SubmitOutcome::Cached { job_id, .. }) => {
                return Ok(match store.peek(&owner, &job_id).await? {
                    Some(job) => Counted::ok(
                        Immediate::Finished {
                            job: Box::new(job),
                            cached: true,
                        },
                        rate,
                    ),
                    None => Counted::refused(JobsError::NotFound, rate),
                });
            }
        };
        let mut pause = WAIT_FIRST;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(Counted::ok(Immediate::Pending { job_id, eta }, rate));
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(WAIT_AT_MOST);
            match store.peek(&owner, &job_id).await {
                Ok(Some(job)) if job.state.is_finished() => {
                    return Ok(Counted::ok(
                        Immediate::Finished {
                            job: Box::new(job),
                            cached,
                        },
                        rate,
                    ))
                }
                Ok(Some(_)) => {}
                // Purged (or expired) while we waited: nothing to answer with.
                Ok(None) => return Ok(Counted::refused(JobsError::NotFound, rate)),
                // The job exists and runs; a failed look only costs this one.
                Err(e) => tracing::warn!(job_id = %job_id, error = %e, "immediate: could not read the job"),
            }
        }
    }

    /// Submits every item of a batch as a job of its own (identity: the batch and the item id, so
    /// each is new and keeps its own callbacks), then writes the batch's record. Every item's create
    /// is counted against the owner's limits like a submit; an item refused for the owner's limits
    /// is recorded as failed (`RATE_LIMIT`), unless every item was (then the batch is refused).
    pub(crate) async fn submit_batch(&self, owner: String, batch: Batch) -> Result<Counted<BatchQueued>, JobsError> {
        let engine = self.engine;
        let settings = engine.settings();
        let batch_id = new_batch_id();
        let mut items: Vec<(String, Submission)> = batch
            .items
            .into_iter()
            .map(|(id, request)| (id, Submission::of(&request)))
            .collect();
        // Every item's targets first: a refused callback refuses the batch before anything is written.
        for (index, (_, submission)) in items.iter_mut().enumerate() {
            engine.check_targets(&owner, submission).map_err(|e| {
                JobsError::InvalidTarget(FieldError::new(
                    format!("items[{index}].request.{}", e.field),
                    e.message,
                ))
            })?;
        }
        let now = engine.clock().now_ms();
        let longest = items
            .iter()
            .map(|(_, s)| engine.deadline_ms(s.deadline_seconds))
            .max()
            .unwrap_or(engine.deadline_ms(None));
        let mut record = BatchRecord {
            id: batch_id.clone(),
            owner: owner.clone(),
            created_at_ms: now,
            // As long as its longest item can run, then be kept.
            expires_at_ms: now + longest + settings.unfinished_margin_ms.max(settings.result_ttl_ms),
            concurrency: batch.concurrency,
            tenant_id: batch.tenant_id,
            request_id: batch.request_id,
            items: Vec::with_capacity(items.len()),
        };
        let mut rate = None;
        let mut refusal = None;
        for (id, mut submission) in items {
            submission.identity = format!("batch:{batch_id}:{id}");
            let counted = self.submit(owner.clone(), submission).await?;
            rate = counted.rate.or(rate);
            let (job_id, refused) = match counted.outcome {
                Ok(SubmitOutcome::Queued { job_id, .. }) => (Some(job_id), None),
                // A new identity never meets a finished job.
                Ok(SubmitOutcome::Cached { .. }) => (None, None),
                Err(e) => {
                    let retry_after_seconds = match &e {
                        JobsError::RateLimited(window) => Some(window.resets_in_seconds()),
                        JobsError::TooManyInFlight { .. } => None,
                        other => return Err(JobsError::Store(StoreError::Command(other.to_string()))),
                    };
                    let failure = Failure {
                        code: FailureCode::RateLimit,
                        message: format!("refused at submit: {e} for this key's owner"),
                        retryable: true,
                        retry_after_seconds,
                    };
                    refusal = Some(e);
                    (None, Some(failure))
                }
            };
            record.items.push(BatchItem { id, job_id, refused });
        }
        if let Some(e) = refusal.filter(|_| record.items.iter().all(|i| i.job_id.is_none())) {
            return Ok(Counted::refused(e, rate));
        }
        engine.store().put_batch(&record).await?;
        tracing::info!(batch_id = %batch_id, owner = %owner, items = record.items.len(), "batch submitted");
        Ok(Counted::ok(
            BatchQueued {
                batch_id,
                item_count: record.items.len(),
                concurrency: record.concurrency,
            },
            rate,
        ))
    }

    /// Reads the owner's batch and its items' jobs (one store request, counted like a poll).
    pub(crate) async fn poll_batch(&self, owner: &str, batch_id: &str) -> Result<Counted<BatchRead>, JobsError> {
        let rate = self.rate_limit(owner);
        let (read, rate) = admitted(owner, self.engine.store().read_batch(owner, batch_id, rate).await?)?;
        Ok(match read {
            Some(read) => Counted::ok(read, rate),
            None => Counted::refused(JobsError::NotFound, rate),
        })
    }

    /// Whether the store answers: the cached check, or a fresh one when it is older than
    /// [`HEALTH_CHECK_EVERY`]. Concurrent callers wait for the one check under way instead of each
    /// asking the store.
    pub(crate) async fn store_check(&self) -> StoreCheck {
        let mut last = self.health.last.lock().await;
        if let Some((at, check)) = last.as_ref() {
            if at.elapsed() < HEALTH_CHECK_EVERY {
                return *check;
            }
        }
        let reachable = match self.engine.store().provider_states().await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, "health: store unavailable");
                false
            }
        };
        let check = StoreCheck {
            reachable,
            checked_at_ms: self.engine.clock().now_ms(),
        };
        *last = Some((tokio::time::Instant::now(), check));
        check
    }

    /// Every provider's shared quota state (not counted: it reads no job).
    pub(crate) async fn provider_states(&self) -> ProviderStates<'a> {
        let now_ms = self.engine.clock().now_ms();
        let states = match self.engine.store().provider_states().await {
            Ok(states) => Some(states),
            Err(e) => {
                tracing::error!(error = %e, "health: store unavailable");
                None
            }
        };
        ProviderStates {
            now_ms,
            providers: self.engine.providers(),
            states,
        }
    }

    /// The owner's jobs at a glance (the dashboard's data): one store request, counted like a poll.
    pub(crate) async fn overview(&self, owner: &str) -> Result<Counted<OverviewRead>, JobsError> {
        let engine = self.engine;
        let rate = self.rate_limit(owner);
        let (overview, rate) = admitted(owner, engine.store().overview(owner, OVERVIEW_BOUNDS, rate).await?)?;
        let now_ms = engine.clock().now_ms();
        let etas = overview
            .oldest
            .iter()
            .map(|d| Eta::of(engine.eta(&d.job, &d.standing, d.running), now_ms))
            .collect();
        Ok(Counted::ok(OverviewRead { overview, etas, now_ms }, rate))
    }

    /// What the owner spent, or the whole deployment for the configured admin owner. One store
    /// request, not counted against the rate limit.
    pub async fn budget(&self, owner: &str) -> Result<BudgetRead, JobsError> {
        let engine = self.engine;
        let deployment = engine.settings().admin_owner.as_deref() == Some(owner);
        let spent = engine.store().spent(owner, deployment).await?;
        Ok(BudgetRead {
            deployment,
            spent,
            now_ms: engine.clock().now_ms(),
        })
    }
}
