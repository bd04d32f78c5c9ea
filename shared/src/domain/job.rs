//! The job: what was asked, where it is in its life, and what came of each attempt.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::contract::{Failure, FailureCode};
use crate::domain::error_class::ErrorClass;
use crate::domain::llm::{ChatMessage, ResponseFormat};
use crate::domain::targets::{self, DeliveryState, DeliveryStatus, Target};

/// A job's stored lifecycle. Whether a step is working on it right now is not stored: the store
/// reports it beside the record (a held step lease), and the poll's view words it `active`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    WaitingForRetry,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }

    /// One letter in the stored record's header, read by the Lua scripts.
    pub(crate) fn code(self) -> char {
        match self {
            JobState::Queued => 'q',
            JobState::WaitingForRetry => 'w',
            JobState::Succeeded => 's',
            JobState::Failed => 'f',
        }
    }
}

/// A job's place among its own tenant's jobs when a provider is scarce (the request's `priority`):
/// a `high` job takes the tenant's next turn before the tenant's earlier `normal` and `low` jobs, a
/// `normal` job before its earlier `low` ones; never another tenant's turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

/// How far a priority moves a job in its tenant's line: a `high` job goes before the tenant's
/// `normal` jobs submitted up to this long before it, a `low` one after those submitted up to this
/// long after it. The one bound on a low job's wait for its tenant's normal ones: a normal job
/// submitted more than this after it never takes its turn.
pub(crate) const PRIORITY_LEAD_MS: u64 = 3_600_000;

impl Priority {
    pub(crate) fn is_normal(&self) -> bool {
        *self == Priority::Normal
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Report,
    Generic,
}

/// What the caller asked for, normalised at submit. Everything a step needs is here, so a job
/// survives any queue and any cold start (the old service lost its schemas in the queue).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub kind: JobKind,
    pub messages: Vec<ChatMessage>,
    /// A shorter prompt for providers marked `small_context` (the report preset's smaller evidence budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compact_messages: Option<Vec<ChatMessage>>,
    pub format: ResponseFormat,
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// The deterministic result used when every provider has failed for good (report preset). Shared
    /// (`Arc`): every read of the job hands it out as a reference count, not a copy of the tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<std::sync::Arc<serde_json::Value>>,
    /// Caller-supplied context echoed in callbacks (userId, commitSha, repo, tenantId, requestId, metadata).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub context: serde_json::Map<String, serde_json::Value>,
    /// Who to tell when the job ends (`callbackUrl`, then `callbacks` in order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
    /// The request's own provider chain (`preferredProviders`, `excludeProviders`); `None`: the
    /// configured order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub providers: Option<crate::domain::contract::ProviderPrefs>,
    /// The job deletes itself once every delivery it owes is acknowledged (`purgeOnDelivery`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub purge_on_delivery: bool,
    /// Its place among its tenant's jobs when a provider is scarce (`priority`).
    #[serde(default, skip_serializing_if = "Priority::is_normal")]
    pub priority: Priority,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One provider attempt, as shown to the caller in `providersAttempted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub(crate) provider: String,
    /// 1-based, counted across the whole job.
    pub(crate) number: u32,
    /// `None` on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) class: Option<ErrorClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) http_status: Option<u16>,
    pub(crate) duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) retry_after_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
    pub(crate) at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// Shared (`Arc`), like the spec's fallback it may be: reads and views hand it out without a copy.
    pub output: std::sync::Arc<serde_json::Value>,
    pub used_provider: String,
    pub fallback: bool,
    pub(crate) total_ms: u64,
    pub(crate) provider_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub owner: String,
    /// A random nonce per creation: a job purged and submitted again gets a new one, so messages
    /// of the old incarnation can never act on the new one.
    pub gen: String,
    /// The step sequence number: the fencing token every step message carries.
    pub seq: u64,
    pub state: JobState,
    pub spec: JobSpec,
    pub created_at_ms: u64,
    pub deadline_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at_ms: Option<u64>,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// When the stored record expires (epoch ms); set from the TTL policy at every write.
    pub expires_at_ms: u64,
    /// The deliveries a finished job owes, planned in the same write that finishes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<DeliveryState>,
}

impl Job {
    /// Whose share of the providers the job takes when they are scarce (`quota::ProviderState::book`):
    /// its `tenantId` (generic jobs), else its `userId` (reports), within its owner (`owner/tenant`);
    /// the owner itself when it names neither.
    pub(crate) fn tenant(&self) -> String {
        match self.tenant_name() {
            Some(tenant) => format!("{}/{tenant}", self.owner),
            None => self.owner.clone(),
        }
    }

    /// Its place in its tenant's line (ms; smaller goes first): when it was submitted, moved
    /// `PRIORITY_LEAD_MS` sooner for a `high` job and later for a `low` one. claim.lua reads the same
    /// from the record.
    pub(crate) fn line(&self) -> i64 {
        let lead = PRIORITY_LEAD_MS as i64;
        self.created_at_ms as i64
            + match self.spec.priority {
                Priority::High => -lead,
                Priority::Normal => 0,
                Priority::Low => lead,
            }
    }

    /// The tenant the job names within its owner: its `tenantId`, else its `userId`, when a non-empty
    /// string (overview.lua reads the same from the record).
    pub(crate) fn tenant_name(&self) -> Option<&str> {
        ["tenantId", "userId"].iter().find_map(|field| {
            self.spec
                .context
                .get(*field)
                .and_then(|v| v.as_str())
                .filter(|t| !t.is_empty())
        })
    }

    /// Work is left: steps to run, or deliveries to make.
    pub(crate) fn has_work_left(&self) -> bool {
        !self.state.is_finished() || self.owes_deliveries()
    }

    /// A finished job with webhooks or callbacks still to send: a poll must not shorten its life.
    pub(crate) fn owes_deliveries(&self) -> bool {
        targets::next_due(&self.deliveries).is_some()
    }

    /// A finished job one of whose deliveries gave up: shown on the dashboard with a redeliver button.
    pub(crate) fn dead_lettered(&self) -> bool {
        self.state.is_finished() && self.deliveries.iter().any(|d| d.status == DeliveryStatus::Dead)
    }

    pub fn step_ref(&self) -> StepRef {
        StepRef {
            owner: self.owner.clone(),
            job_id: self.id.clone(),
            gen: self.gen.clone(),
            seq: self.seq,
        }
    }
}

/// Names one step of one incarnation of one job: what a step message carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StepRef {
    pub owner: String,
    pub job_id: String,
    pub gen: String,
    pub seq: u64,
}

/// The deterministic job id of an owner's request identity: identical submits meet on one record,
/// and a purge by commit finds its job without an index.
pub fn job_id(owner: &str, identity: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"stepper-job-v1\0");
    h.update(owner.as_bytes());
    h.update(b"\0");
    h.update(identity.as_bytes());
    let digest = h.finalize();
    hex::encode(&digest[..16])
}

/// A job's public id: the record id of its identity, then its incarnation's gen (48 lowercase hex
/// characters). Identical submits while a job lives meet on its record (the record id is the store's
/// dedupe key), but every new job of an identity (after a failure, a purge, an expiry) has a new gen,
/// so a caller that keeps job ids unique never sees one twice; an id of an incarnation that is gone
/// answers 404, never the newer job.
pub fn public_id(record_id: &str, gen: &str) -> String {
    format!("{record_id}{gen}")
}

/// The record id (the store's key) inside a job id: its first 32 characters. Ids of 32 characters
/// (jobs created before ids carried their gen) are their own record id.
pub fn record_id(id: &str) -> &str {
    id.get(..RECORD_ID_LEN).unwrap_or(id)
}

/// The incarnation a job id names, when it names one (`None` for a 32-character id: any incarnation).
pub fn id_gen(id: &str) -> Option<&str> {
    id.get(RECORD_ID_LEN..).filter(|gen| !gen.is_empty())
}

const RECORD_ID_LEN: usize = 32;

/// A fresh nonce for a job's incarnation.
pub fn new_gen() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}

/// Job ids are 48 lowercase hex characters (record id and gen), or 32 (a record id alone, as ids were
/// before they carried their gen); anything else is not a job of ours.
pub(crate) fn is_valid_job_id(id: &str) -> bool {
    (id.len() == 48 || id.len() == RECORD_ID_LEN) && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The error text a job that ran past its deadline ends with (engine/decide.rs `GiveUp::Deadline`).
const DEADLINE_PREFIX: &str = "deadline_exceeded";

impl Job {
    /// The failure of a failed job, in the original's codes: every attempt rate-limited → `RATE_LIMIT` (with the longest wait
    /// a provider named); the deadline passed → `TIMEOUT`; every attempt of one code → that code;
    /// mixed codes → `UPSTREAM_UNAVAILABLE` when one was transient, else `UNKNOWN`; no attempt at all
    /// (no provider, or every one excluded) → `UNKNOWN`. `None` unless the job failed.
    pub(crate) fn failure(&self) -> Option<Failure> {
        if self.state != JobState::Failed {
            return None;
        }
        let message = self.error.clone().unwrap_or_else(|| "failed".into());
        let codes: Vec<FailureCode> = self
            .attempts
            .iter()
            .filter_map(|a| a.class.map(FailureCode::of))
            .collect();
        let retry_after = self.attempts.iter().filter_map(|a| a.retry_after_s).max();
        let code = if !codes.is_empty() && codes.iter().all(|c| *c == FailureCode::RateLimit) {
            FailureCode::RateLimit
        } else if message.starts_with(DEADLINE_PREFIX) {
            FailureCode::Timeout
        } else if let [first, rest @ ..] = codes.as_slice() {
            if rest.iter().all(|c| c == first) {
                *first
            } else if codes.iter().any(|c| c.transient()) {
                FailureCode::UpstreamUnavailable
            } else {
                FailureCode::Unknown
            }
        } else {
            FailureCode::Unknown
        };
        Some(Failure {
            code,
            message,
            retryable: code.transient() || codes.iter().any(|c| c.transient()),
            retry_after_seconds: if code == FailureCode::RateLimit {
                retry_after
            } else {
                None
            },
        })
    }
}

#[cfg(test)]
mod failure_tests {
    use super::*;

    fn failed(attempts: &[(Option<ErrorClass>, Option<u64>)], error: &str) -> Job {
        let mut job: Job = serde_json::from_value(serde_json::json!({
            "id": "0123456789abcdef0123456789abcdef", "owner": "o", "gen": "g", "seq": 3, "state": "failed",
            "spec": {"kind": "generic", "messages": [], "format": {"mode": "text"}, "max_tokens": 1},
            "created_at_ms": 0, "deadline_ms": 1, "expires_at_ms": 2, "error": error
        }))
        .expect("a job");
        job.attempts = attempts
            .iter()
            .enumerate()
            .map(|(i, (class, retry))| Attempt {
                provider: format!("p{i}"),
                number: i as u32 + 1,
                class: *class,
                http_status: None,
                duration_ms: 1,
                retry_after_s: *retry,
                message: None,
                at_ms: 0,
            })
            .collect();
        job
    }

    #[test]
    fn a_failure_speaks_the_originals_codes() {
        use ErrorClass as C;
        let of = |attempts: &[(Option<C>, Option<u64>)], error: &str| failed(attempts, error).failure().unwrap();
        let limited = of(
            &[(Some(C::RateLimited), Some(7)), (Some(C::QuotaExhausted), Some(60))],
            "deadline_exceeded: x",
        );
        assert_eq!(
            (limited.code, limited.retryable, limited.retry_after_seconds),
            (FailureCode::RateLimit, true, Some(60))
        );
        let timeout = of(
            &[(Some(C::Overloaded), None), (Some(C::RateLimited), None)],
            "deadline_exceeded: x",
        );
        assert_eq!((timeout.code, timeout.retryable), (FailureCode::Timeout, true));
        let auth = of(&[(Some(C::AuthInvalid), None)], "every provider failed");
        assert_eq!(
            (auth.code, auth.retryable, auth.retry_after_seconds),
            (FailureCode::Auth, false, None)
        );
        let mixed = of(
            &[(Some(C::InvalidOutput), None), (Some(C::Overloaded), None)],
            "every provider failed",
        );
        assert_eq!((mixed.code, mixed.retryable), (FailureCode::UpstreamUnavailable, true));
        let hard = of(
            &[(Some(C::BadRequest), None), (Some(C::InvalidOutput), None)],
            "every provider failed",
        );
        assert_eq!((hard.code, hard.retryable), (FailureCode::Unknown, false));
        let none = of(&[], "no AI provider is configured");
        assert_eq!(
            (none.code, none.message.as_str()),
            (FailureCode::Unknown, "no AI provider is configured")
        );
        let mut ok = failed(&[], "");
        ok.state = JobState::Succeeded;
        assert!(ok.failure().is_none());
    }
}
