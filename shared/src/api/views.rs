//! Response bodies of the HTTP contract: typed, so that `/openapi.json` describes exactly what is sent.
//! Field order is the order on the wire; `skip_serializing_if` marks a field that is omitted rather
//! than null (the document's component schemas are derived from these types).

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde_json::Value;

#[allow(unused_imports)] // named by `Liveness`'s doc, which is also its published description
use crate::app::HEALTH_CHECK_EVERY;
use crate::app::{Eta, ProviderStates, StoreCheck};
use crate::domain::batch::BatchItem;
use crate::domain::budget;
use crate::domain::contract::{Failure, FailureCode};
use crate::domain::error_class::ErrorClass;
use crate::domain::job::{Attempt, Job, JobResult, JobState};
use crate::domain::quota::{Availability, ProviderLimits, ProviderState};
use crate::domain::targets::{DeliveryState, DeliveryStatus, TargetKind};
use crate::ports::BatchRead;

/// An instant as RFC 3339 UTC with milliseconds (`2026-01-31T12:00:00.000Z`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub(crate) struct Timestamp(String);

impl Timestamp {
    pub(crate) fn from_ms(ms: u64) -> Self {
        Self(
            chrono::DateTime::from_timestamp_millis(ms as i64)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default(),
        )
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "format": "date-time"})
    }
}

/// The status word of an answer that is always the same (`"queued"`, `"completed"`).
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Queued {
    Queued,
}

#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Completed {
    Completed,
}

/// `202`: a new job, or the identical job already in flight.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueuedJob {
    pub(crate) status: Queued,
    pub(crate) job_id: String,
    /// Where to poll: `/v1/reports/<id>` or `/v1/jobs/<id>`.
    pub(crate) status_url: String,
    pub(crate) contract_version: Version,
    /// Seconds until the job is expected to have ended (rounded up, ≥ 0): an estimate from the
    /// providers' shared state and the jobs due ahead of it (docs/api.md, "How long will it take?").
    /// Absent when no estimate is possible.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64")]
    pub(crate) eta_seconds: Option<u64>,
    /// The same estimate as an instant.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Timestamp")]
    pub(crate) eta_at: Option<Timestamp>,
}

impl QueuedJob {
    pub(crate) fn new(job_id: &str, status_prefix: &str, eta: Option<Eta>) -> Self {
        Self {
            status: Queued::Queued,
            job_id: job_id.to_string(),
            status_url: format!("{status_prefix}{job_id}"),
            contract_version: Version::CURRENT,
            eta_seconds: eta.map(Eta::seconds),
            eta_at: eta.map(|e| Timestamp::from_ms(e.at_ms)),
        }
    }
}

/// `200`: an identical job already finished and was not purged or expired.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct CachedJob {
    pub(crate) status: Completed,
    #[schemars(extend("const" = true))]
    pub(crate) cached: bool,
    /// The job's result: a commit report, or a generic job's output.
    pub(crate) data: std::sync::Arc<Value>,
    pub(crate) metadata: CachedMetadata,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CachedMetadata {
    pub(crate) provider: String,
    pub(crate) fallback: bool,
    /// True for a provider's result, false for a fallback.
    pub(crate) validated: bool,
    pub(crate) contract_version: Version,
    pub(crate) timings: TotalTiming,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TotalTiming {
    pub(crate) total_ms: u64,
}

/// The `200 cached` answer of a submit that met a finished identical job.
pub(crate) fn cached(result: &JobResult) -> CachedJob {
    CachedJob {
        status: Completed::Completed,
        cached: true,
        data: result.output.clone(),
        metadata: CachedMetadata {
            provider: result.used_provider.clone(),
            fallback: result.fallback,
            validated: !result.fallback,
            contract_version: Version::CURRENT,
            timings: TotalTiming {
                total_ms: result.total_ms,
            },
        },
    }
}

/// `DELETE /v1/reports`: the commit's job is gone (or was not there: the answer is the same).
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct PurgedReport {
    #[schemars(extend("const" = true))]
    pub(crate) success: bool,
    /// `Cache entry deleted`.
    pub(crate) message: String,
    /// Whether a job was there to delete.
    pub(crate) deleted: bool,
}

/// `DELETE /v1/jobs/{jobId}`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct PurgedJob {
    #[schemars(extend("const" = true))]
    pub(crate) success: bool,
    /// `Job deleted`.
    pub(crate) message: String,
}

/// A job's status word (1.1.0): anything but `completed` and `failed` means "poll again later".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StatusWord {
    /// Not being worked on right now: waiting for its turn or for a provider to cool down
    /// (`rawStatus` says which).
    Queued,
    /// A provider call is under way.
    Active,
    Completed,
    Failed,
}

/// The finer word: the queue's own (`waiting`, `delayed`), as the original's `rawStatus` carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawStatus {
    /// Queued, no attempt under way.
    Waiting,
    /// A provider call is under way.
    Active,
    /// Every usable provider is cooling down; `nextAttemptAt` says until when.
    Delayed,
    Completed,
    Failed,
}

impl RawStatus {
    /// The word for a stored state; `running` (a step holds the job's lease, which the store reports
    /// beside the record) makes an unfinished job `active`: being worked on is not a stored state.
    pub(crate) fn of(state: JobState, running: bool) -> Self {
        match state {
            JobState::Succeeded => RawStatus::Completed,
            JobState::Failed => RawStatus::Failed,
            _ if running => RawStatus::Active,
            JobState::Queued => RawStatus::Waiting,
            JobState::WaitingForRetry => RawStatus::Delayed,
        }
    }

    /// The status word of this raw word.
    pub(crate) fn status(self) -> StatusWord {
        match self {
            RawStatus::Waiting | RawStatus::Delayed => StatusWord::Queued,
            RawStatus::Active => StatusWord::Active,
            RawStatus::Completed => StatusWord::Completed,
            RawStatus::Failed => StatusWord::Failed,
        }
    }
}

/// The contract version every answer that names one carries (`"1"`).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Version(&'static str);

impl Version {
    pub(crate) const CURRENT: Version = Version(crate::domain::contract::CONTRACT_VERSION);
}

impl JsonSchema for Version {
    fn schema_name() -> Cow<'static, str> {
        "ContractVersionWord".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"const": crate::domain::contract::CONTRACT_VERSION})
    }
}

/// Why a job (or a batch item) failed, in the original's words.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FailureView {
    pub(crate) error_code: FailureCode,
    pub(crate) message: String,
    /// Submitting the same request again may succeed.
    pub(crate) retryable: bool,
    /// With `RATE_LIMIT`: the longest wait a provider named.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64")]
    pub(crate) retry_after_seconds: Option<u64>,
}

impl From<Failure> for FailureView {
    fn from(f: Failure) -> Self {
        Self {
            error_code: f.code,
            message: f.message,
            retryable: f.retryable,
            retry_after_seconds: f.retry_after_seconds,
        }
    }
}

/// One provider attempt.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AttemptView {
    pub(crate) provider: String,
    /// 1-based, counted across the whole job.
    pub(crate) attempt_number: u32,
    pub(crate) duration_ms: u64,
    /// What went wrong (absent on success).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub(crate) error: Option<String>,
    /// The outcome class: `rate_limited`, `quota_exhausted`, `overloaded`, `auth_invalid`, `bad_request`,
    /// `filtered`, `invalid_output`, `gone` (absent on success; new classes may appear).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub(crate) error_code: Option<ErrorClass>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64")]
    pub(crate) retry_after_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u16")]
    pub(crate) http_status: Option<u16>,
    pub(crate) at: Timestamp,
}

impl From<&Attempt> for AttemptView {
    fn from(a: &Attempt) -> Self {
        Self {
            provider: a.provider.clone(),
            attempt_number: a.number,
            duration_ms: a.duration_ms,
            error: a
                .class
                .map(|class| a.message.clone().unwrap_or_else(|| class.as_str().to_string())),
            error_code: a.class,
            retry_after_seconds: a.retry_after_s,
            http_status: a.http_status,
            at: Timestamp::from_ms(a.at_ms),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeliveryKind {
    /// The job's `callbackUrl` (signed webhook).
    Webhook,
    /// An entry of `callbacks`.
    Callback,
}

impl From<TargetKind> for DeliveryKind {
    fn from(kind: TargetKind) -> Self {
        match kind {
            TargetKind::Webhook => DeliveryKind::Webhook,
            TargetKind::Callback => DeliveryKind::Callback,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeliveryWord {
    Pending,
    Delivered,
    /// Every attempt failed (or the address was refused): the dead letter.
    Dead,
    /// Not attempted: an earlier callback without `continueOnFailure` died.
    Skipped,
}

impl From<DeliveryStatus> for DeliveryWord {
    fn from(status: DeliveryStatus) -> Self {
        match status {
            DeliveryStatus::Pending => DeliveryWord::Pending,
            DeliveryStatus::Delivered => DeliveryWord::Delivered,
            DeliveryStatus::Dead => DeliveryWord::Dead,
            DeliveryStatus::Skipped => DeliveryWord::Skipped,
        }
    }
}

/// A webhook or callback the finished job owes.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeliveryView {
    pub(crate) kind: DeliveryKind,
    /// The target's origin only: a callback URL may carry the caller's token in its path or query.
    pub(crate) target: String,
    /// The `webhook-id` header of every attempt of this delivery, redeliveries included.
    pub(crate) webhook_id: String,
    pub(crate) status: DeliveryWord,
    /// Attempts made, across redeliveries.
    pub(crate) attempts: u32,
    /// How often it was redelivered (`POST /v1/jobs/{jobId}/deliveries/redeliver`); absent when never.
    #[serde(skip_serializing_if = "is_zero")]
    #[schemars(with = "u32")]
    pub(crate) redeliveries: u32,
    /// The HTTP status of the last attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u16")]
    pub(crate) last_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub(crate) last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Timestamp")]
    pub(crate) next_attempt_at: Option<Timestamp>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl DeliveryView {
    /// The `index`-th delivery of `job`.
    pub(crate) fn of(job: &Job, index: usize, d: &DeliveryState) -> Self {
        Self {
            kind: d.target.kind.into(),
            target: url::Url::parse(&d.target.url)
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_default(),
            webhook_id: crate::adapters::outbound::send::message_id(&job.id, &job.gen, index),
            status: d.status.into(),
            attempts: d.attempts,
            redeliveries: d.redeliveries,
            last_status: d.last_status,
            last_error: d.last_error.clone(),
            next_attempt_at: d.next_at_ms.map(Timestamp::from_ms),
        }
    }
}

/// A completed job's result.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobData {
    /// A commit report, or a generic job's output (JSON, or a string in text mode).
    pub(crate) result: std::sync::Arc<Value>,
    /// The provider that produced the result (`fallback` for the commit report's template).
    pub(crate) used_provider: String,
    pub(crate) providers_attempted: Vec<AttemptView>,
    pub(crate) fallback: bool,
    /// The result passed the job's checks (its JSON or schema): true for a provider's result, false
    /// for a fallback.
    pub(crate) validated: bool,
    pub(crate) timings: Timings,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Timings {
    pub(crate) total_ms: u64,
    pub(crate) provider_ms: u64,
}

/// `GET /v1/reports/{jobId}`, `GET /v1/jobs/{jobId}`.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobView {
    pub(crate) id: String,
    pub(crate) status: StatusWord,
    pub(crate) raw_status: RawStatus,
    pub(crate) contract_version: Version,
    /// 0 until the job is finished, then 100.
    #[schemars(extend("enum" = [0, 100]))]
    pub(crate) progress: u8,
    /// Only when `status` is `completed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "JobData")]
    pub(crate) data: Option<JobData>,
    /// Only when `status` is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub(crate) error: Option<String>,
    /// Only when `status` is `failed`: the failure in the original's codes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "FailureView")]
    pub(crate) failure: Option<FailureView>,
    pub(crate) attempts: Vec<AttemptView>,
    pub(crate) created_at: Timestamp,
    /// When the job gives up if it has not finished.
    pub(crate) deadline: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Timestamp")]
    pub(crate) next_attempt_at: Option<Timestamp>,
    /// Only while the job is unfinished: seconds until it is expected to have ended (rounded up,
    /// ≥ 0), an estimate from the providers' shared state and the jobs due ahead of it (docs/api.md,
    /// "How long will it take?"). Absent when no estimate is possible.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64")]
    pub(crate) eta_seconds: Option<u64>,
    /// The same estimate as an instant.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Timestamp")]
    pub(crate) eta_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Timestamp")]
    pub(crate) finished_at: Option<Timestamp>,
    /// The webhooks and callbacks of a finished job (absent when it has none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) deliveries: Vec<DeliveryView>,
}

/// `GET /v1/jobs/{id}`: the contract's fields plus attempts, timing, the next attempt's time and,
/// while the job is unfinished, its ETA.
pub(crate) fn job_status(job: &Job, running: bool, eta: Option<Eta>) -> JobView {
    let eta = eta.filter(|_| !job.state.is_finished());
    let attempts: Vec<AttemptView> = job.attempts.iter().map(AttemptView::from).collect();
    let data = match (job.state, &job.result) {
        (JobState::Succeeded, Some(result)) => Some(JobData {
            result: result.output.clone(),
            used_provider: result.used_provider.clone(),
            providers_attempted: attempts.clone(),
            fallback: result.fallback,
            validated: !result.fallback,
            timings: Timings {
                total_ms: result.total_ms,
                provider_ms: result.provider_ms,
            },
        }),
        _ => None,
    };
    JobView {
        id: job.id.clone(),
        status: RawStatus::of(job.state, running).status(),
        raw_status: RawStatus::of(job.state, running),
        contract_version: Version::CURRENT,
        progress: if job.state.is_finished() { 100 } else { 0 },
        data,
        error: (job.state == JobState::Failed).then(|| job.error.clone().unwrap_or_else(|| "failed".into())),
        failure: job.failure().map(FailureView::from),
        attempts,
        created_at: Timestamp::from_ms(job.created_at_ms),
        deadline: Timestamp::from_ms(job.deadline_ms),
        next_attempt_at: job.next_attempt_at_ms.map(Timestamp::from_ms),
        eta_seconds: eta.map(Eta::seconds),
        eta_at: eta.map(|e| Timestamp::from_ms(e.at_ms)),
        finished_at: job.finished_at_ms.map(Timestamp::from_ms),
        deliveries: deliveries(job),
    }
}

fn deliveries(job: &Job) -> Vec<DeliveryView> {
    job.deliveries
        .iter()
        .enumerate()
        .map(|(i, d)| DeliveryView::of(job, i, d))
        .collect()
}

/// `202` from `POST /v1/jobs/{jobId}/deliveries/redeliver`: the deliveries sent again now, and every
/// delivery's state (as on poll).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Redelivered {
    pub(crate) job_id: String,
    /// Deliveries made due now: dead ones (and the callbacks their death skipped) start a new round with
    /// the same `webhook-id` and a fresh timestamp; pending ones waiting for a retry go at once.
    pub(crate) redelivered: usize,
    pub(crate) deliveries: Vec<DeliveryView>,
}

pub(crate) fn redelivered(job: &Job, count: usize) -> Redelivered {
    Redelivered {
        job_id: job.id.clone(),
        redelivered: count,
        deliveries: deliveries(job),
    }
}

/// `GET /v1/jobs`: the key owner's jobs at a glance (the dashboard's data), read in one store request.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobsOverview {
    pub(crate) counts: JobCounts,
    /// The owner's unfinished jobs; `counts` covers the oldest `counted` of them.
    pub(crate) unfinished: u64,
    pub(crate) counted: u64,
    /// The oldest unfinished jobs, oldest first (at most 20), as a poll shows them.
    pub(crate) oldest: Vec<JobView>,
    /// Finished jobs with a dead-lettered delivery (at most 20, soonest to expire first): each can be
    /// sent again with `POST /v1/jobs/{jobId}/deliveries/redeliver`.
    pub(crate) dead_letters: Vec<JobView>,
    /// Today's (UTC) provider attempts by outcome, every owner's (providers are shared).
    pub(crate) attempts_today: Vec<ProviderAttempts>,
    /// The counted unfinished jobs by tenant (their share of a scarce provider is the tenant's): the
    /// most unfinished first, at most 50.
    pub(crate) tenants: Vec<TenantJobs>,
    /// Where "today" starts (UTC midnight).
    pub(crate) day: Timestamp,
    pub(crate) timestamp: Timestamp,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobCounts {
    /// Queued, no attempt under way.
    pub(crate) waiting: u64,
    /// A provider call is under way.
    pub(crate) active: u64,
    /// Every usable provider is cooling down.
    pub(crate) delayed: u64,
    /// Finished today (UTC).
    pub(crate) completed_today: u64,
    pub(crate) failed_today: u64,
    /// Finished jobs holding a dead-lettered delivery.
    pub(crate) dead_lettered: u64,
}

/// One tenant's unfinished jobs.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TenantJobs {
    /// The jobs' `tenantId` (generic jobs, batch items), else `userId` (reports); absent for jobs
    /// naming neither (the API key's own share).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tenant_id: Option<String>,
    /// Unfinished: queued, delayed or running.
    pub(crate) unfinished: u64,
    /// Of them, a provider call is under way.
    pub(crate) active: u64,
}

/// One provider's attempts today.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ProviderAttempts {
    pub(crate) provider: String,
    pub(crate) total: u64,
    /// Attempts by outcome: `ok`, or the error class (`rate_limited`, `quota_exhausted`, `overloaded`, …).
    pub(crate) outcomes: std::collections::BTreeMap<String, u64>,
}

/// The overview's answer from what the store read.
/// `etas` gives each of the oldest unfinished jobs its estimate, in their order (the engine's, from what
/// the overview script read for it).
pub(crate) fn jobs_overview(overview: &crate::ports::Overview, now: u64, etas: &[Option<Eta>]) -> JobsOverview {
    let mut attempts: Vec<ProviderAttempts> = Vec::new();
    for count in &overview.attempts_today {
        match attempts.last_mut() {
            Some(last) if last.provider == count.provider => {
                last.total += count.count;
                *last.outcomes.entry(count.outcome.clone()).or_default() += count.count;
            }
            _ => attempts.push(ProviderAttempts {
                provider: count.provider.clone(),
                total: count.count,
                outcomes: [(count.outcome.clone(), count.count)].into_iter().collect(),
            }),
        }
    }
    JobsOverview {
        counts: JobCounts {
            waiting: overview.waiting,
            active: overview.active,
            delayed: overview.delayed,
            completed_today: overview.completed_today,
            failed_today: overview.failed_today,
            dead_lettered: overview.dead_lettered,
        },
        unfinished: overview.unfinished,
        counted: overview.counted,
        oldest: overview
            .oldest
            .iter()
            .enumerate()
            .map(|(i, d)| job_status(&d.job, d.running, etas.get(i).copied().flatten()))
            .collect(),
        dead_letters: overview
            .dead_letters
            .iter()
            .map(|job| job_status(job, false, None))
            .collect(),
        attempts_today: attempts,
        tenants: overview
            .tenants
            .iter()
            .map(|t| TenantJobs {
                tenant_id: t.tenant.clone(),
                unfinished: t.unfinished,
                active: t.running,
            })
            .collect(),
        day: Timestamp::from_ms(now - now % crate::ports::DAY_MS),
        timestamp: Timestamp::from_ms(now),
    }
}

/// `GET /ready`: whether this instance takes work. Liveness is `GET /health`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct Readiness {
    pub(crate) status: ReadyWord,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReadyWord {
    /// Taking work.
    Ready,
    /// Told to stop: finishing what is under way (`SHUTDOWN_GRACE_SECONDS`), taking no new work.
    Draining,
}

/// `GET /health`'s status word: the instance is up and its store answers, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LiveWord {
    /// Up, and the store answered its last check.
    Healthy,
    /// The store did not answer its last check: `GET /health` answers 503.
    Unhealthy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StoreReach {
    Reachable,
    Unreachable,
}

/// `GET /health`: only what a load balancer needs. No provider names, no provider text: that detail is on
/// the authenticated `GET /v1/providers`. The store check is cached per instance ([`HEALTH_CHECK_EVERY`]).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Liveness {
    pub(crate) status: LiveWord,
    pub(crate) store: StoreReach,
    /// When this instance last asked the store (answers in between reuse that check).
    pub(crate) checked_at: Timestamp,
}

/// `GET /health`'s answer from the instance's store check.
pub(crate) fn liveness(check: StoreCheck) -> Liveness {
    Liveness {
        status: if check.reachable {
            LiveWord::Healthy
        } else {
            LiveWord::Unhealthy
        },
        store: if check.reachable {
            StoreReach::Reachable
        } else {
            StoreReach::Unreachable
        },
        checked_at: Timestamp::from_ms(check.checked_at_ms),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum HealthStatus {
    /// Every provider is usable.
    Healthy,
    /// Some providers are disabled or their circuit is open.
    Degraded,
    /// Nothing can serve jobs (no usable provider, or the store is down).
    Unhealthy,
}

#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StoreWord {
    Unavailable,
}

/// `GET /v1/providers`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Health {
    pub(crate) status: HealthStatus,
    pub(crate) providers: Vec<ProviderHealth>,
    pub(crate) timestamp: Timestamp,
    /// Present only when the job store could not be read (the providers' state is then unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "StoreWord")]
    pub(crate) store: Option<StoreWord>,
    #[serde(rename = "contractVersion")]
    pub(crate) contract_version: Version,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ProviderHealth {
    pub(crate) name: String,
    pub(crate) healthy: bool,
    /// The shared quota state; absent when the store could not be read.
    #[serde(flatten)]
    pub(crate) quota: Option<ProviderQuota>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProviderQuota {
    /// False once a provider is disabled for everyone (a bad key, a retired model).
    pub(crate) enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub(crate) disabled_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Timestamp")]
    pub(crate) cooling_down_until: Option<Timestamp>,
    /// Null when no per-minute limit is configured.
    pub(crate) requests_left_minute: Option<u64>,
    /// Null when no per-day limit is configured.
    pub(crate) requests_left_day: Option<u64>,
    /// The class of the last failed outcome, null when the last one succeeded or none happened.
    #[schemars(with = "Option<String>")]
    pub(crate) last_error_class: Option<ErrorClass>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Timestamp")]
    pub(crate) last_at: Option<Timestamp>,
}

/// One provider's health from its shared state.
fn provider_health(name: &str, limits: &ProviderLimits, state: &ProviderState, now: u64) -> ProviderHealth {
    let availability = state.available_at(limits, now);
    let healthy = !matches!(availability, Availability::Disabled(_)) && state.circuit_open_until_ms <= now;
    let (left_minute, left_day) = state.remaining(limits, now);
    let (disabled_reason, cooling_down_until) = match availability {
        Availability::Disabled(reason) => (Some(reason), None),
        Availability::At(at) if at > now => (None, Some(Timestamp::from_ms(at))),
        Availability::At(_) => (None, None),
    };
    ProviderHealth {
        name: name.to_string(),
        healthy,
        quota: Some(ProviderQuota {
            enabled: state.disabled.is_none(),
            disabled_reason,
            cooling_down_until,
            requests_left_minute: left_minute,
            requests_left_day: left_day,
            last_error_class: state.last_class.and_then(crate::domain::quota::LastOutcome::class),
            last_at: (state.last_at_ms > 0).then(|| Timestamp::from_ms(state.last_at_ms)),
        }),
    }
}

/// Health and per-provider shared state (`GET /v1/providers`).
pub(crate) fn health(read: &ProviderStates<'_>) -> Health {
    let now = read.now_ms;
    let Some(states) = &read.states else {
        let providers = read
            .providers
            .iter()
            .map(|p| ProviderHealth {
                name: p.name.clone(),
                healthy: false,
                quota: None,
            })
            .collect();
        return Health {
            status: HealthStatus::Unhealthy,
            providers,
            timestamp: Timestamp::from_ms(now),
            store: Some(StoreWord::Unavailable),
            contract_version: Version::CURRENT,
        };
    };
    let providers: Vec<ProviderHealth> = read
        .providers
        .iter()
        .map(|slot| {
            provider_health(
                &slot.name,
                &slot.limits,
                &states.get(&slot.name).cloned().unwrap_or_default(),
                now,
            )
        })
        .collect();
    let usable = providers.iter().filter(|p| p.healthy).count();
    let status = match (usable, providers.len()) {
        (0, _) => HealthStatus::Unhealthy,
        (u, n) if u < n => HealthStatus::Degraded,
        _ => HealthStatus::Healthy,
    };
    Health {
        status,
        providers,
        timestamp: Timestamp::from_ms(now),
        store: None,
        contract_version: Version::CURRENT,
    }
}

/// The word of a failed answer.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Failed {
    Failed,
}

/// `200` of `POST /v1/generate/immediate` and `POST /v1/reports/immediate`: the job finished within
/// the wait.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ImmediateAnswer {
    pub(crate) status: Completed,
    /// The job behind the answer (it can be polled and purged like any job).
    pub(crate) job_id: String,
    /// An identical job had already finished: its result.
    pub(crate) cached: bool,
    /// A commit report, or a generic job's output (JSON, or a string in text mode).
    pub(crate) data: std::sync::Arc<Value>,
    pub(crate) metadata: ResultMetadata,
}

/// How a result came about (an immediate answer's, a batch item's).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResultMetadata {
    pub(crate) provider: String,
    pub(crate) fallback: bool,
    /// True for a provider's result (it passed the job's checks), false for a fallback.
    pub(crate) validated: bool,
    pub(crate) contract_version: Version,
    pub(crate) timings: Timings,
    pub(crate) providers_attempted: Vec<AttemptView>,
}

/// `502` of the immediate routes: the job failed within the wait (every provider failed for good, or
/// none could answer before the job's deadline).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ImmediateFailed {
    pub(crate) status: Failed,
    pub(crate) job_id: String,
    pub(crate) error: String,
    pub(crate) failure: FailureView,
    pub(crate) providers_attempted: Vec<AttemptView>,
}

fn result_metadata(job: &Job, result: &JobResult) -> ResultMetadata {
    ResultMetadata {
        provider: result.used_provider.clone(),
        fallback: result.fallback,
        validated: !result.fallback,
        contract_version: Version::CURRENT,
        timings: Timings {
            total_ms: result.total_ms,
            provider_ms: result.provider_ms,
        },
        providers_attempted: job.attempts.iter().map(AttemptView::from).collect(),
    }
}

/// A finished job as an immediate route answers it: its result, or why it failed.
pub(crate) fn immediate(job: &Job, cached: bool) -> Result<ImmediateAnswer, ImmediateFailed> {
    match (&job.result, job.failure()) {
        (Some(result), _) if job.state == JobState::Succeeded => Ok(ImmediateAnswer {
            status: Completed::Completed,
            job_id: job.id.clone(),
            cached,
            data: result.output.clone(),
            metadata: result_metadata(job, result),
        }),
        (_, failure) => {
            let failure = failure.unwrap_or_else(|| Failure {
                code: FailureCode::Unknown,
                message: "the job ended without a result".into(),
                retryable: false,
                retry_after_seconds: None,
            });
            Err(ImmediateFailed {
                status: Failed::Failed,
                job_id: job.id.clone(),
                error: failure.message.clone(),
                failure: failure.into(),
                providers_attempted: job.attempts.iter().map(AttemptView::from).collect(),
            })
        }
    }
}

/// `202` of `POST /v1/generate/batch`.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BatchQueuedView {
    pub(crate) status: Queued,
    /// The batch's id (a UUID): poll it at `statusUrl`.
    pub(crate) job_id: String,
    pub(crate) status_url: String,
    pub(crate) item_count: usize,
    pub(crate) concurrency: u64,
    pub(crate) contract_version: Version,
}

pub(crate) fn batch_queued(batch_id: &str, item_count: usize, concurrency: u64) -> BatchQueuedView {
    BatchQueuedView {
        status: Queued::Queued,
        job_id: batch_id.to_string(),
        status_url: format!("/v1/jobs/{batch_id}"),
        item_count,
        concurrency,
        contract_version: Version::CURRENT,
    }
}

/// A batch's progress: items finished of all.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct BatchProgress {
    pub(crate) done: usize,
    pub(crate) total: usize,
}

/// A batch item's word once the batch is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ItemWord {
    Completed,
    Failed,
}

/// One item of a finished batch, at its input position.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BatchItemView {
    pub(crate) id: String,
    pub(crate) index: usize,
    pub(crate) status: ItemWord,
    /// The item's own job (absent when it was refused at submit).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub(crate) job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Value")]
    pub(crate) data: Option<std::sync::Arc<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "ResultMetadata")]
    pub(crate) metadata: Option<ResultMetadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "FailureView")]
    pub(crate) failure: Option<FailureView>,
}

/// A finished batch's results, in input order.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct BatchData {
    pub(crate) items: Vec<BatchItemView>,
    pub(crate) total: usize,
    pub(crate) completed: usize,
    pub(crate) failed: usize,
}

/// `GET /v1/jobs/{batchId}` (and `/v1/reports/{batchId}`): a batch.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BatchView {
    pub(crate) id: String,
    /// `queued` until an item is worked on, `active` until every item has finished, then `completed`
    /// (even when items failed: each says how it ended).
    pub(crate) status: StatusWord,
    pub(crate) raw_status: RawStatus,
    pub(crate) contract_version: Version,
    pub(crate) progress: BatchProgress,
    /// Only when `status` is `completed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "BatchData")]
    pub(crate) data: Option<BatchData>,
}

fn batch_item(index: usize, item: &BatchItem, job: Option<&Job>) -> BatchItemView {
    let mut view = BatchItemView {
        id: item.id.clone(),
        index,
        status: ItemWord::Failed,
        job_id: item.job_id.clone(),
        data: None,
        metadata: None,
        failure: None,
    };
    match (job, &item.refused) {
        (_, Some(refused)) => view.failure = Some(refused.clone().into()),
        (Some(job), None) => match (&job.result, job.state) {
            (Some(result), JobState::Succeeded) => {
                view.status = ItemWord::Completed;
                view.data = Some(result.output.clone());
                view.metadata = Some(result_metadata(job, result));
            }
            _ => view.failure = job.failure().map(FailureView::from),
        },
        (None, None) => {
            view.failure = Some(FailureView {
                error_code: FailureCode::Unknown,
                message: "the item's job is gone (purged or expired)".into(),
                retryable: false,
                retry_after_seconds: None,
            })
        }
    }
    view
}

/// A batch as its poll shows it: progress while items run, every item's outcome once all are done.
pub(crate) fn batch_status(read: &BatchRead) -> BatchView {
    let total = read.batch.items.len();
    let finished = |job: &Option<Job>| job.as_ref().is_none_or(|j| j.state.is_finished());
    let done = read.jobs.iter().filter(|j| finished(j)).count();
    let started = done > 0
        || read
            .jobs
            .iter()
            .flatten()
            .any(|j| !j.attempts.is_empty() || j.state != JobState::Queued);
    let raw = match (done == total, started) {
        (true, _) => RawStatus::Completed,
        (false, true) => RawStatus::Active,
        (false, false) => RawStatus::Waiting,
    };
    let data = (done == total).then(|| {
        let items: Vec<BatchItemView> = read
            .batch
            .items
            .iter()
            .zip(&read.jobs)
            .enumerate()
            .map(|(index, (item, job))| batch_item(index, item, job.as_ref()))
            .collect();
        let completed = items.iter().filter(|i| i.status == ItemWord::Completed).count();
        BatchData {
            total,
            completed,
            failed: total - completed,
            items,
        }
    });
    BatchView {
        id: read.batch.id.clone(),
        status: raw.status(),
        raw_status: raw,
        contract_version: Version::CURRENT,
        progress: BatchProgress { done, total },
        data,
    }
}

/// `GET /`: what this service is and what it serves (no key needed).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceInfo {
    /// `stepper`.
    pub(crate) service: String,
    pub(crate) version: String,
    pub(crate) contract_version: Version,
    /// `"<METHOD> <path>"` → what it does, for every route.
    pub(crate) endpoints: std::collections::BTreeMap<String, String>,
    pub(crate) security: SecurityInfo,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SecurityInfo {
    /// Cross-origin requests are answered (this service sends no CORS headers: false).
    pub(crate) cors: bool,
    /// Some key's owner has a request budget.
    pub(crate) rate_limit: bool,
    /// The browser security headers of the original's helmet (this service sends none: false).
    pub(crate) helmet: bool,
    pub(crate) api_key_required: bool,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::quota::ResetClock;

    /// The view's JSON, after checking it against the schema `/openapi.json` documents for it.
    fn to_json<T: Serialize + JsonSchema>(view: &T) -> String {
        let value = serde_json::to_value(view).unwrap();
        crate::api::openapi::check(&T::schema_name(), &value).unwrap();
        value.to_string()
    }
    use crate::domain::job::JobResult;
    use crate::domain::targets::{DeliveryStatus, Target};

    #[test]
    fn the_budget_shows_an_owner_its_own_and_the_admin_everyone() {
        // 2026-11-10 12:30 UTC; alice and bob spent this hour, the sweeper is the deployment's.
        let now = 1_794_313_800_000;
        let mut spent = budget::Spent::default();
        for (start, _) in budget::day_hours(now) {
            let mut bucket = budget::Bucket::default();
            if start == budget::hour_start(now) {
                for (field, n) in [
                    ("j", 3),
                    ("s", 18),
                    ("l", 12),
                    ("q", 12),
                    ("j:alice", 2),
                    ("s:alice", 10),
                    ("l:alice", 8),
                    ("q:alice", 6),
                    ("j:bob", 1),
                    ("s:bob", 5),
                    ("l:bob", 3),
                    ("q:bob", 3),
                ] {
                    bucket.fold(field, n);
                }
            }
            spent.hours.push((start, bucket));
        }
        spent.month = spent.hours.last().map(|(_, b)| b.clone()).unwrap_or_default();
        let all: Value = serde_json::from_str(&to_json(&budget("ops", true, &spent, now))).unwrap();
        assert_eq!(all["scope"], "deployment");
        assert_eq!(all["owner"], "ops");
        assert_eq!(
            all["windows"]["hour"],
            json!({"jobs": 3, "storeCommands": 18, "lambdaInvocations": 12, "sqsRequests": 12})
        );
        assert_eq!(all["windows"]["day"], all["windows"]["month"]);
        assert_eq!(
            all["perJob"],
            json!({"storeCommands": 6.0, "lambdaInvocations": 4.0, "sqsRequests": 4.0})
        );
        assert_eq!(all["owners"][0]["owner"], "alice");
        assert_eq!(all["owners"][1]["windows"]["month"]["storeCommands"], 5);
        let projection = &all["projection"];
        assert_eq!(projection["month"], "2026-11");
        assert_eq!(projection["storeCommands"]["freeTier"], 500_000);
        assert_eq!(projection["storeCommands"]["spent"], 18);
        // 18 commands an hour (the span is at least an hour) for the 491.5 hours left.
        assert_eq!(projection["storeCommands"]["projected"], 18 + 18 * 4915 / 10);
        assert_eq!(projection["firstRunsOut"], Value::Null);

        let mine: Value = serde_json::from_str(&to_json(&budget("alice", false, &spent, now))).unwrap();
        assert_eq!(mine["scope"], "owner");
        assert_eq!(mine["windows"]["month"]["storeCommands"], 10);
        assert_eq!(mine["perJob"]["lambdaInvocations"], 4.0);
        assert!(mine.get("owners").is_none(), "{mine}");
    }
    use crate::domain::presets::generic::GenerateRequest;
    use crate::domain::presets::Preset;

    fn job(state: JobState) -> Job {
        Job {
            id: "0123456789abcdef0123456789abcdef".into(),
            owner: "alice".into(),
            seq: 3,
            state,
            spec: GenerateRequest::parse(json!({"prompt": "x"})).unwrap().spec(),
            created_at_ms: 1_700_000_000_000,
            deadline_ms: 1_700_086_400_000,
            expires_at_ms: 1_700_090_000_000,
            ..crate::testing::job()
        }
    }

    fn attempts() -> Vec<Attempt> {
        vec![
            Attempt {
                provider: "groq".into(),
                number: 1,
                class: Some(ErrorClass::RateLimited),
                http_status: Some(429),
                duration_ms: 120,
                retry_after_s: Some(7),
                message: Some("slow down".into()),
                at_ms: 1_700_000_001_000,
            },
            Attempt {
                provider: "gemini".into(),
                number: 2,
                class: Some(ErrorClass::Overloaded),
                http_status: None,
                duration_ms: 30,
                retry_after_s: None,
                message: None,
                at_ms: 1_700_000_002_000,
            },
            Attempt {
                provider: "gemini".into(),
                number: 3,
                class: None,
                http_status: None,
                duration_ms: 900,
                retry_after_s: None,
                message: None,
                at_ms: 1_700_000_003_000,
            },
        ]
    }

    // These strings pin the contract byte for byte: field order, omitted versus null.
    #[test]
    fn an_unfinished_job_reads_as_the_contract_says() {
        let mut waiting = job(JobState::WaitingForRetry);
        waiting.attempts = attempts()[..1].to_vec();
        waiting.next_attempt_at_ms = Some(1_700_000_060_000);
        assert_eq!(
            to_json(&job_status(&waiting, false, None)),
            r#"{"id":"0123456789abcdef0123456789abcdef","status":"queued","rawStatus":"delayed","contractVersion":"1","progress":0,"attempts":[{"provider":"groq","attemptNumber":1,"durationMs":120,"error":"slow down","errorCode":"rate_limited","retryAfterSeconds":7,"httpStatus":429,"at":"2023-11-14T22:13:21.000Z"}],"createdAt":"2023-11-14T22:13:20.000Z","deadline":"2023-11-15T22:13:20.000Z","nextAttemptAt":"2023-11-14T22:14:20.000Z"}"#
        );
        assert_eq!(
            to_json(&job_status(&job(JobState::Queued), true, None)),
            r#"{"id":"0123456789abcdef0123456789abcdef","status":"active","rawStatus":"active","contractVersion":"1","progress":0,"attempts":[],"createdAt":"2023-11-14T22:13:20.000Z","deadline":"2023-11-15T22:13:20.000Z"}"#
        );
        assert_eq!(
            job_status(&job(JobState::Queued), false, None).raw_status,
            RawStatus::Waiting
        );
        // The ETA: seconds rounded up, after nextAttemptAt.
        let eta = Eta::of(Some(1_700_000_090_500), 1_700_000_000_000);
        assert_eq!(
            to_json(&job_status(&waiting, false, eta)),
            r#"{"id":"0123456789abcdef0123456789abcdef","status":"queued","rawStatus":"delayed","contractVersion":"1","progress":0,"attempts":[{"provider":"groq","attemptNumber":1,"durationMs":120,"error":"slow down","errorCode":"rate_limited","retryAfterSeconds":7,"httpStatus":429,"at":"2023-11-14T22:13:21.000Z"}],"createdAt":"2023-11-14T22:13:20.000Z","deadline":"2023-11-15T22:13:20.000Z","nextAttemptAt":"2023-11-14T22:14:20.000Z","etaSeconds":91,"etaAt":"2023-11-14T22:14:50.500Z"}"#
        );
        assert_eq!(
            to_json(&QueuedJob::new("0123456789abcdef0123456789abcdef", "/v1/jobs/", eta)),
            r#"{"status":"queued","jobId":"0123456789abcdef0123456789abcdef","statusUrl":"/v1/jobs/0123456789abcdef0123456789abcdef","contractVersion":"1","etaSeconds":91,"etaAt":"2023-11-14T22:14:50.500Z"}"#
        );
        // No estimate: the 202 of the original contract, byte for byte.
        assert_eq!(
            to_json(&QueuedJob::new("0123456789abcdef0123456789abcdef", "/v1/jobs/", None)),
            r#"{"status":"queued","jobId":"0123456789abcdef0123456789abcdef","statusUrl":"/v1/jobs/0123456789abcdef0123456789abcdef","contractVersion":"1"}"#
        );
        // A finished job has none, whatever it is given.
        let done = job(JobState::Succeeded);
        assert_eq!(job_status(&done, false, eta).eta_seconds, None);
        assert_eq!(job_status(&done, false, eta).eta_at, None);
    }

    #[test]
    fn a_finished_job_reads_as_the_contract_says() {
        let mut done = job(JobState::Succeeded);
        done.attempts = attempts();
        done.finished_at_ms = Some(1_700_000_004_000);
        done.result = Some(JobResult {
            output: std::sync::Arc::new(json!({"title": "t"})),
            used_provider: "gemini".into(),
            fallback: false,
            total_ms: 4000,
            provider_ms: 1050,
        });
        let mut delivered = DeliveryState {
            target: Target::webhook("https://hooks.example/path?token=secret".into()),
            status: DeliveryStatus::Delivered,
            attempts: 1,
            round_attempts: 1,
            redeliveries: 0,
            last_status: Some(200),
            last_error: None,
            next_at_ms: None,
            done_at_ms: Some(1_700_000_005_000),
            last_at_ms: None,
            waits_origin: false,
        };
        let mut pending = delivered.clone();
        pending.target.kind = crate::domain::targets::TargetKind::Callback;
        pending.status = DeliveryStatus::Pending;
        pending.last_status = Some(502);
        pending.last_error = Some("bad gateway".into());
        pending.next_at_ms = Some(1_700_000_009_000);
        delivered.done_at_ms = None;
        done.deliveries = vec![delivered, pending];
        let view = to_json(&job_status(&done, true, None));
        assert_eq!(
            view,
            concat!(
                r#"{"id":"0123456789abcdef0123456789abcdef","status":"completed","rawStatus":"completed","contractVersion":"1","progress":100,"data":{"result":{"title":"t"},"usedProvider":"gemini","providersAttempted":["#,
                r#"{"provider":"groq","attemptNumber":1,"durationMs":120,"error":"slow down","errorCode":"rate_limited","retryAfterSeconds":7,"httpStatus":429,"at":"2023-11-14T22:13:21.000Z"},"#,
                r#"{"provider":"gemini","attemptNumber":2,"durationMs":30,"error":"overloaded","errorCode":"overloaded","at":"2023-11-14T22:13:22.000Z"},"#,
                r#"{"provider":"gemini","attemptNumber":3,"durationMs":900,"at":"2023-11-14T22:13:23.000Z"}],"#,
                r#""fallback":false,"validated":true,"timings":{"totalMs":4000,"providerMs":1050}},"attempts":["#,
                r#"{"provider":"groq","attemptNumber":1,"durationMs":120,"error":"slow down","errorCode":"rate_limited","retryAfterSeconds":7,"httpStatus":429,"at":"2023-11-14T22:13:21.000Z"},"#,
                r#"{"provider":"gemini","attemptNumber":2,"durationMs":30,"error":"overloaded","errorCode":"overloaded","at":"2023-11-14T22:13:22.000Z"},"#,
                r#"{"provider":"gemini","attemptNumber":3,"durationMs":900,"at":"2023-11-14T22:13:23.000Z"}],"#,
                r#""createdAt":"2023-11-14T22:13:20.000Z","deadline":"2023-11-15T22:13:20.000Z","finishedAt":"2023-11-14T22:13:24.000Z","deliveries":["#,
                r#"{"kind":"webhook","target":"https://hooks.example","webhookId":"msg_0123456789abcdef0123456789abcdef_g_0","status":"delivered","attempts":1,"lastStatus":200},"#,
                r#"{"kind":"callback","target":"https://hooks.example","webhookId":"msg_0123456789abcdef0123456789abcdef_g_1","status":"pending","attempts":1,"lastStatus":502,"lastError":"bad gateway","nextAttemptAt":"2023-11-14T22:13:29.000Z"}]}"#
            )
        );
        let mut failed = job(JobState::Failed);
        failed.finished_at_ms = Some(1_700_000_004_000);
        assert_eq!(
            to_json(&job_status(&failed, false, None)),
            r#"{"id":"0123456789abcdef0123456789abcdef","status":"failed","rawStatus":"failed","contractVersion":"1","progress":100,"error":"failed","failure":{"errorCode":"UNKNOWN","message":"failed","retryable":false},"attempts":[],"createdAt":"2023-11-14T22:13:20.000Z","deadline":"2023-11-15T22:13:20.000Z","finishedAt":"2023-11-14T22:13:24.000Z"}"#
        );
        failed.error = Some("every provider failed".into());
        assert_eq!(
            job_status(&failed, false, None).error.as_deref(),
            Some("every provider failed")
        );
        assert_eq!(
            to_json(&cached(done.result.as_ref().unwrap())),
            r#"{"status":"completed","cached":true,"data":{"title":"t"},"metadata":{"provider":"gemini","fallback":false,"validated":true,"contractVersion":"1","timings":{"totalMs":4000}}}"#
        );
    }
    #[test]
    fn the_overview_groups_attempts_by_provider_and_reads_as_documented() {
        use crate::ports::{AttemptCount, JobRead, Overview, TenantCount};
        let count = |provider: &str, outcome: &str, count| AttemptCount {
            provider: provider.into(),
            outcome: outcome.into(),
            count,
        };
        let mut delayed = job(JobState::WaitingForRetry);
        delayed.next_attempt_at_ms = Some(1_700_000_060_000);
        let overview = Overview {
            unfinished: 3,
            counted: 3,
            waiting: 1,
            active: 1,
            delayed: 1,
            oldest: vec![JobRead {
                job: delayed,
                running: false,
                standing: Default::default(),
            }],
            completed_today: 4,
            failed_today: 1,
            dead_lettered: 0,
            dead_letters: vec![],
            attempts_today: vec![
                count("alpha", "ok", 3),
                count("alpha", "rate_limited", 2),
                count("beta", "quota_exhausted", 1),
            ],
            tenants: vec![
                TenantCount {
                    tenant: Some("acme".into()),
                    unfinished: 2,
                    running: 1,
                },
                TenantCount {
                    tenant: None,
                    unfinished: 1,
                    running: 0,
                },
            ],
        };
        let now = 1_700_000_030_000;
        let view = jobs_overview(&overview, now, &[]);
        assert_eq!(
            to_json(&view.attempts_today[0]),
            r#"{"provider":"alpha","total":5,"outcomes":{"ok":3,"rate_limited":2}}"#
        );
        assert_eq!(view.attempts_today.len(), 2);
        let json: serde_json::Value = serde_json::from_str(&to_json(&view)).unwrap();
        assert_eq!(json["counts"]["completedToday"], 4);
        assert_eq!(json["oldest"][0]["status"], "queued");
        assert_eq!(json["oldest"][0]["rawStatus"], "delayed");
        assert_eq!(json["day"], "2023-11-14T00:00:00.000Z");
        assert_eq!(
            json["tenants"],
            serde_json::json!([{"tenantId": "acme", "unfinished": 2, "active": 1}, {"unfinished": 1, "active": 0}])
        );
    }

    #[test]
    fn status_words_are_the_contract_words() {
        for (state, running, word) in [
            (JobState::Queued, false, "waiting"),
            (JobState::Queued, true, "active"),
            (JobState::WaitingForRetry, true, "active"),
            (JobState::WaitingForRetry, false, "delayed"),
            (JobState::Succeeded, false, "completed"),
            (JobState::Succeeded, true, "completed"),
            (JobState::Failed, false, "failed"),
            (JobState::Failed, true, "failed"),
        ] {
            assert_eq!(
                serde_json::to_value(RawStatus::of(state, running)).unwrap(),
                word,
                "{state:?} running={running}"
            );
        }
    }

    #[test]
    fn provider_health_shows_quota_cooldown_and_disablement() {
        let now = 1_700_000_030_000;
        let limits = ProviderLimits {
            rpm: Some(30),
            rpd: Some(1000),
            tpm: None,
            reset: ResetClock::UtcMidnight,
        };
        let busy = ProviderState {
            minute: now / 60_000,
            minute_requests: 30,
            day: ResetClock::UtcMidnight.day(now),
            day_requests: 400,
            last_class: Some(crate::domain::quota::LastOutcome::Failed(
                crate::domain::error_class::ErrorClass::RateLimited,
            )),
            last_at_ms: 1_700_000_020_000,
            ..ProviderState::default()
        };
        assert_eq!(
            to_json(&provider_health("groq", &limits, &busy, now)),
            r#"{"name":"groq","healthy":true,"enabled":true,"coolingDownUntil":"2023-11-14T22:14:00.000Z","requestsLeftMinute":0,"requestsLeftDay":600,"lastErrorClass":"rate_limited","lastAt":"2023-11-14T22:13:40.000Z"}"#
        );
        let dead = ProviderState {
            disabled: Some("auth_invalid: bad key".into()),
            last_class: Some(crate::domain::quota::LastOutcome::Ok),
            ..ProviderState::default()
        };
        let open = ProviderLimits {
            rpm: None,
            rpd: None,
            tpm: None,
            reset: ResetClock::UtcMidnight,
        };
        assert_eq!(
            to_json(&provider_health("gemini", &open, &dead, now)),
            r#"{"name":"gemini","healthy":false,"enabled":false,"disabledReason":"auth_invalid: bad key","requestsLeftMinute":null,"requestsLeftDay":null,"lastErrorClass":null}"#
        );
        let unknown = ProviderHealth {
            name: "groq".into(),
            healthy: false,
            quota: None,
        };
        let report = Health {
            status: HealthStatus::Unhealthy,
            providers: vec![unknown],
            timestamp: Timestamp::from_ms(now),
            store: Some(StoreWord::Unavailable),
            contract_version: Version::CURRENT,
        };
        assert_eq!(
            to_json(&report),
            r#"{"status":"unhealthy","providers":[{"name":"groq","healthy":false}],"timestamp":"2023-11-14T22:13:50.000Z","store":"unavailable","contractVersion":"1"}"#
        );
    }
}

/// Whose spending a `GET /v1/budget` answer shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BudgetScope {
    /// The key's owner's own calls.
    Owner,
    /// The whole deployment (the configured `STEPPER_ADMIN_OWNER`): every owner's calls and the
    /// deployment's own (the sweeper, the provider-state reads).
    Deployment,
}

/// What one scope spent in one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BudgetWindow {
    /// Jobs created.
    pub(crate) jobs: u64,
    /// Upstash commands billed (a script is one).
    pub(crate) store_commands: u64,
    /// Lambda invocations (one per route call and per step or sweep message).
    pub(crate) lambda_invocations: u64,
    /// SQS requests (per step or sweep message: its send, the event source's receive and delete).
    pub(crate) sqs_requests: u64,
}

impl From<budget::Tally> for BudgetWindow {
    fn from(t: budget::Tally) -> Self {
        Self {
            jobs: t.jobs,
            store_commands: t.store_commands,
            lambda_invocations: t.lambda_invocations,
            sqs_requests: t.sqs_requests,
        }
    }
}

/// The three windows: this UTC clock hour so far, the last 24 clock hours (this one included), this
/// UTC calendar month so far.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BudgetWindows {
    pub(crate) hour: BudgetWindow,
    pub(crate) day: BudgetWindow,
    pub(crate) month: BudgetWindow,
}

impl From<&budget::Windows> for BudgetWindows {
    fn from(w: &budget::Windows) -> Self {
        Self {
            hour: w.hour.into(),
            day: w.day.into(),
            month: w.month.into(),
        }
    }
}

/// This month's spending divided by the jobs created this month (0 when none were).
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PerJob {
    pub(crate) store_commands: f64,
    pub(crate) lambda_invocations: f64,
    pub(crate) sqs_requests: f64,
}

/// One resource's month against its free tier.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResourceProjection {
    /// Spent this month so far.
    pub(crate) spent: u64,
    /// At the current rate (the last 24 hours' spending over the time it spans), linearly, by the
    /// month's end.
    pub(crate) projected: u64,
    pub(crate) free_tier: u64,
    /// When the free tier runs out at the current rate (now when it has); null when not this month.
    pub(crate) runs_out_at: Option<Timestamp>,
}

impl From<budget::Projection> for ResourceProjection {
    fn from(p: budget::Projection) -> Self {
        Self {
            spent: p.spent,
            projected: p.projected,
            free_tier: p.free_tier,
            runs_out_at: p.runs_out_at_ms.map(Timestamp::from_ms),
        }
    }
}

/// A resource the free tiers limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) enum BudgetResource {
    StoreCommands,
    LambdaInvocations,
    SqsRequests,
}

/// The first free tier to run out this month.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunsOut {
    pub(crate) resource: BudgetResource,
    pub(crate) at: Timestamp,
}

/// The month's projection against the free tiers (Upstash 500K commands, Lambda 1M requests, SQS 1M requests).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BudgetProjection {
    /// The UTC calendar month, `2026-11`.
    pub(crate) month: String,
    pub(crate) store_commands: ResourceProjection,
    pub(crate) lambda_invocations: ResourceProjection,
    pub(crate) sqs_requests: ResourceProjection,
    pub(crate) first_runs_out: Option<RunsOut>,
}

/// One owner's windows in the deployment's view.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OwnerBudget {
    pub(crate) owner: String,
    pub(crate) windows: BudgetWindows,
}

/// `GET /v1/budget`: what this deployment (or the key's owner) spent on Upstash, Lambda and SQS, and
/// the month's projection against the free tiers.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Budget {
    pub(crate) scope: BudgetScope,
    /// The key's owner.
    pub(crate) owner: String,
    pub(crate) windows: BudgetWindows,
    pub(crate) per_job: PerJob,
    pub(crate) projection: BudgetProjection,
    /// Each owner's windows, in the deployment's view only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) owners: Option<Vec<OwnerBudget>>,
}

/// The budget answer from a read's buckets: the deployment's when `deployment`, else `owner`'s.
pub fn budget(owner: &str, deployment: bool, spent: &budget::Spent, now_ms: u64) -> Budget {
    let scope = (!deployment).then_some(owner);
    let w = budget::windows(spent, scope, now_ms);
    let p = budget::project_month(&w, now_ms);
    let jobs = w.month.jobs;
    let owners = deployment.then(|| {
        let mut names: Vec<&String> = spent
            .hours
            .iter()
            .flat_map(|(_, b)| b.owners.keys())
            .chain(spent.month.owners.keys())
            .collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| OwnerBudget {
                owner: name.clone(),
                windows: (&budget::windows(spent, Some(name), now_ms)).into(),
            })
            .collect()
    });
    Budget {
        scope: if deployment {
            BudgetScope::Deployment
        } else {
            BudgetScope::Owner
        },
        owner: owner.to_string(),
        windows: (&w).into(),
        per_job: PerJob {
            store_commands: budget::per_job(w.month.store_commands, jobs),
            lambda_invocations: budget::per_job(w.month.lambda_invocations, jobs),
            sqs_requests: budget::per_job(w.month.sqs_requests, jobs),
        },
        projection: BudgetProjection {
            month: p.month,
            store_commands: p.store_commands.into(),
            lambda_invocations: p.lambda_invocations.into(),
            sqs_requests: p.sqs_requests.into(),
            first_runs_out: p.first_runs_out.map(|(resource, at)| RunsOut {
                resource: match resource {
                    budget::Resource::StoreCommands => BudgetResource::StoreCommands,
                    budget::Resource::LambdaInvocations => BudgetResource::LambdaInvocations,
                    budget::Resource::SqsRequests => BudgetResource::SqsRequests,
                },
                at: Timestamp::from_ms(at),
            }),
        },
        owners,
    }
}
