//! One delivery a finished job owes: the body the contract promises ([`body`]), the headers beside its
//! signatures ([`headers`]) and what an attempt came to ([`report`]); the POST itself is
//! [`super::signed_post`]. What is owed and when — targets, their states and the retry schedule — are
//! the domain's (`crate::domain::targets`).
//! Every attempt of one delivery carries the same `webhook-id` ([`message_id`]), redeliveries included.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

use super::js_json;
use super::sign::{self, WebhookSecrets};
use super::Posted;
use crate::domain::job::{Job, JobState};
use crate::domain::targets::{AttemptReport, Target, TargetKind};

/// The `webhook-id` of one delivery of one job's incarnation: the same for every attempt and every
/// redelivery, so receivers can drop duplicates by id.
pub(crate) fn message_id(job_id: &str, gen: &str, index: usize) -> String {
    format!("msg_{job_id}_{gen}_{index}")
}

/// The facts of a finished job that the bodies carry.
pub(crate) struct Finished<'a> {
    pub(crate) job_id: &'a str,
    pub(crate) completed: bool,
    pub(crate) result: Option<&'a Value>,
    pub(crate) error: Option<&'a str>,
    pub(crate) provider: Option<&'a str>,
    pub(crate) generation_time_ms: u64,
    pub(crate) fallback: bool,
    pub(crate) context: &'a Map<String, Value>,
}

impl<'a> Finished<'a> {
    /// What a finished job's bodies say of it.
    pub(crate) fn of(job: &'a Job) -> Self {
        let result = job.result.as_ref();
        Self {
            job_id: &job.id,
            completed: job.state == JobState::Succeeded,
            result: result.map(|r| &*r.output),
            error: job.error.as_deref(),
            provider: result.map(|r| r.used_provider.as_str()),
            generation_time_ms: result.map_or(0, |r| r.total_ms),
            fallback: result.is_some_and(|r| r.fallback),
            context: &job.spec.context,
        }
    }
}

/// `"completed"`.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CompletedWord {
    Completed,
}

/// `"failed"`.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FailedWord {
    Failed,
}

/// The `callbackUrl` webhook's body when the job completed (the original's shape).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WebhookCompleted<'a> {
    pub(crate) job_id: &'a str,
    pub(crate) status: CompletedWord,
    /// The report, or the generic job's output.
    pub(crate) result: Option<&'a Value>,
    /// The provider that answered (`fallback` for the preset's template report).
    pub(crate) provider: Option<&'a str>,
    pub(crate) generation_time_ms: u64,
    pub(crate) fallback: bool,
    /// When this attempt was sent, epoch milliseconds (the same instant as `X-Webhook-Timestamp`).
    pub(crate) timestamp: u64,
}

/// The `callbackUrl` webhook's body when the job failed for good (sent once, not per retry).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WebhookFailed<'a> {
    pub(crate) job_id: &'a str,
    pub(crate) status: FailedWord,
    pub(crate) error: &'a str,
    /// When this attempt was sent, epoch milliseconds.
    pub(crate) timestamp: u64,
}

/// A `callbacks` entry's body.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CallbackBody<'a> {
    pub(crate) success: bool,
    /// The output, when `success`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) result: Option<&'a Value>,
    /// Why the job failed, when not `success`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<&'a str>,
    pub(crate) metadata: CallbackMetadata<'a>,
}

/// A callback's `metadata`; the commit fields come with commit reports only.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CallbackMetadata<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user_id: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) commit_sha: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) repo: Option<&'a Value>,
    /// The request's `requestId`, as given (a batch item's defaults to `<batch requestId>:<item id>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) request_id: Option<&'a Value>,
    /// The request's `tenantId`, as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tenant_id: Option<&'a Value>,
    pub(crate) job_id: &'a str,
    pub(crate) provider: Option<&'a str>,
    pub(crate) generation_time_ms: u64,
    /// When this attempt was sent, ISO-8601 UTC with milliseconds (`2026-01-31T12:00:00.000Z`, as
    /// JavaScript's `toISOString` writes it): the original's shape, which receivers show as is.
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub(crate) timestamp: String,
    /// The request's own `metadata`, as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) request_metadata: Option<&'a Value>,
}

/// The contract's body for a target, as the bytes JavaScript's `JSON.stringify` would produce.
pub(crate) fn body(kind: TargetKind, f: &Finished, now_ms: u64) -> String {
    let value = match (kind, f.completed) {
        (TargetKind::Webhook, true) => serde_json::to_value(WebhookCompleted {
            job_id: f.job_id,
            status: CompletedWord::Completed,
            result: f.result,
            provider: f.provider,
            generation_time_ms: f.generation_time_ms,
            fallback: f.fallback,
            timestamp: now_ms,
        }),
        (TargetKind::Webhook, false) => serde_json::to_value(WebhookFailed {
            job_id: f.job_id,
            status: FailedWord::Failed,
            error: f.error.unwrap_or("failed"),
            timestamp: now_ms,
        }),
        (TargetKind::Callback, completed) => serde_json::to_value(CallbackBody {
            success: completed,
            result: if completed {
                Some(f.result.unwrap_or(&Value::Null))
            } else {
                None
            },
            error: (!completed).then(|| f.error.unwrap_or("failed")),
            metadata: CallbackMetadata {
                user_id: f.context.get("userId"),
                commit_sha: f.context.get("commitSha"),
                repo: f.context.get("repo"),
                request_id: f.context.get("requestId"),
                tenant_id: f.context.get("tenantId"),
                job_id: f.job_id,
                provider: f.provider,
                generation_time_ms: f.generation_time_ms,
                timestamp: iso_ms(now_ms),
                request_metadata: f.context.get("metadata"),
            },
        }),
    };
    // Plain structs of strings, numbers and JSON values: serialising them cannot fail.
    js_json::stringify(&value.unwrap_or(Value::Null))
}

/// An instant as JavaScript's `Date.prototype.toISOString` writes it: `2026-01-31T12:00:00.000Z`.
pub(crate) fn iso_ms(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Headers a target may not set: ours carry the signatures and the body type.
fn reserved(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "content-type"
        || n == "content-length"
        || n == "host"
        || n.starts_with("x-webhook-")
        || n.starts_with("webhook-")
}

/// The headers of one delivery besides its signatures: the target's own (never ours), and with
/// `legacy_bearer` (`WEBHOOK_LEGACY_BEARER=true`) on a `callbackUrl` webhook the original's
/// `Authorization: Bearer <secret>`; callbacks never carry it.
pub(crate) fn headers(target: &Target, secrets: Option<&WebhookSecrets>, legacy_bearer: bool) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = target
        .headers
        .iter()
        .filter(|(k, _)| !reserved(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(secrets) = secrets.filter(|_| legacy_bearer && target.kind == TargetKind::Webhook) {
        headers.push(sign::legacy_bearer_header(secrets));
    }
    headers
}

/// An attempt that never left: retrying cannot help.
pub(crate) fn refused(error: String) -> AttemptReport {
    AttemptReport {
        delivered: false,
        status: None,
        error: Some(error),
        permanent: true,
    }
}

/// What one delivery's POST came to, as the schedule reads it.
pub(crate) fn report(posted: Posted) -> AttemptReport {
    match posted {
        Posted::Answered(outcome) => AttemptReport {
            delivered: outcome.is_delivered(),
            status: Some(outcome.status),
            error: outcome.failure_reason(),
            permanent: false,
        },
        Posted::Refused(error) => refused(error),
        Posted::Failed(error) => AttemptReport {
            delivered: false,
            status: None,
            error: Some(error),
            permanent: false,
        },
    }
}

/// A commit report's context (`userId`, `commitSha`, `repo`), for tests of the bodies.
#[cfg(test)]
pub(crate) fn example_context() -> Map<String, Value> {
    let mut context = Map::new();
    context.insert("userId".into(), Value::from("u1"));
    context.insert("commitSha".into(), Value::from("abc"));
    context.insert("repo".into(), Value::from("acme/x"));
    context
}

/// Job `job_id` done (`result`, from groq in 42 ms) and failed ("no provider"), for tests of the bodies.
#[cfg(test)]
pub(crate) fn examples<'a>(job_id: &'a str, result: &'a Value, context: &'a Map<String, Value>) -> [Finished<'a>; 2] {
    let done = Finished {
        job_id,
        completed: true,
        result: Some(result),
        error: None,
        provider: Some("groq"),
        generation_time_ms: 42,
        fallback: false,
        context,
    };
    let failed = Finished {
        completed: false,
        result: None,
        error: Some("no provider"),
        provider: None,
        ..done
    };
    [done, failed]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_follow_the_contract() {
        let context = example_context();
        let result = json!({"title": "Déjà vu 🚀", "n": 12345678901234567890u64, "f": 1.0});
        let [done, failed] = examples("j", &result, &context);
        assert_eq!(
            body(TargetKind::Webhook, &done, 7),
            r#"{"jobId":"j","status":"completed","result":{"title":"Déjà vu 🚀","n":12345678901234567000,"f":1},"provider":"groq","generationTimeMs":42,"fallback":false,"timestamp":7}"#
        );
        assert_eq!(
            body(TargetKind::Webhook, &failed, 7),
            r#"{"jobId":"j","status":"failed","error":"no provider","timestamp":7}"#
        );
        assert_eq!(
            body(TargetKind::Callback, &failed, 7),
            r#"{"success":false,"error":"no provider","metadata":{"userId":"u1","commitSha":"abc","repo":"acme/x","jobId":"j","provider":null,"generationTimeMs":42,"timestamp":"1970-01-01T00:00:00.007Z"}}"#
        );
        assert_eq!(iso_ms(1_796_000_000_123), "2026-11-30T00:53:20.123Z");
    }
}
