//! The POST of one delivery a finished job owes: the body the contract promises ([`body`]), its
//! signatures, and the SSRF-guarded, pinned attempt ([`attempt`]). What is owed and when — targets,
//! their states and the retry schedule — are the domain's (`crate::domain::targets`); this module only sends.
//! Every attempt of one delivery carries the same `webhook-id` ([`message_id`]), redeliveries included.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::guard::{self, UrlGuard};
use super::js_json;
use super::sign::{self, WebhookSecrets};
use crate::domain::scrub::Scrubber;
use crate::domain::targets::{AttemptReport, Target, TargetKind};

/// The `webhook-id` of one delivery of one job's incarnation: the same for every attempt and every
/// redelivery, so receivers can drop duplicates by id.
pub fn message_id(job_id: &str, gen: &str, index: usize) -> String {
    format!("msg_{job_id}_{gen}_{index}")
}

/// The facts of a finished job that the bodies carry.
pub struct Finished<'a> {
    pub job_id: &'a str,
    pub completed: bool,
    pub result: Option<&'a Value>,
    pub error: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub generation_time_ms: u64,
    pub fallback: bool,
    pub context: &'a Map<String, Value>,
}

/// The contract's body for a target, as the bytes JavaScript's `JSON.stringify` would produce.
pub fn body(kind: TargetKind, f: &Finished, now_ms: u64) -> String {
    let value = match (kind, f.completed) {
        (TargetKind::Webhook, true) => json!({
            "jobId": f.job_id, "status": "completed", "result": f.result, "provider": f.provider,
            "generationTimeMs": f.generation_time_ms, "fallback": f.fallback, "timestamp": now_ms,
        }),
        (TargetKind::Webhook, false) => {
            json!({"jobId": f.job_id, "status": "failed", "error": f.error.unwrap_or("failed"), "timestamp": now_ms})
        }
        (TargetKind::Callback, completed) => {
            let mut metadata = Map::new();
            // The request's own correlation keys, as the original's callbacks carry them.
            for key in ["userId", "commitSha", "repo", "requestId", "tenantId"] {
                if let Some(v) = f.context.get(key) {
                    metadata.insert(key.into(), v.clone());
                }
            }
            metadata.insert("jobId".into(), json!(f.job_id));
            metadata.insert("provider".into(), json!(f.provider));
            metadata.insert("generationTimeMs".into(), json!(f.generation_time_ms));
            metadata.insert("timestamp".into(), json!(now_ms));
            if let Some(m) = f.context.get("metadata") {
                metadata.insert("requestMetadata".into(), m.clone());
            }
            let mut body = Map::new();
            body.insert("success".into(), json!(completed));
            if completed {
                body.insert("result".into(), json!(f.result));
            } else {
                body.insert("error".into(), json!(f.error.unwrap_or("failed")));
            }
            body.insert("metadata".into(), Value::Object(metadata));
            Value::Object(body)
        }
    };
    js_json::stringify(&value)
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

/// One POST to a target: SSRF-guarded and pinned, signed with the owner's secrets when there are any.
/// What the receiver's side said (a redirect's `Location`, a connection error) passes `scrub` here,
/// before it is logged or stored with the job.
#[allow(clippy::too_many_arguments)]
pub async fn attempt(
    target: &Target,
    body: &str,
    msg_id: &str,
    secrets: Option<&WebhookSecrets>,
    guard: &UrlGuard,
    now_ms: u64,
    timeout: Duration,
    scrub: &Scrubber,
) -> AttemptReport {
    let mut report = attempt_unscrubbed(target, body, msg_id, secrets, guard, now_ms, timeout).await;
    report.error = report.error.map(|e| scrub.scrub_owned(e));
    report
}

async fn attempt_unscrubbed(
    target: &Target,
    body: &str,
    msg_id: &str,
    secrets: Option<&WebhookSecrets>,
    guard: &UrlGuard,
    now_ms: u64,
    timeout: Duration,
) -> AttemptReport {
    let refused = |error: String| AttemptReport {
        delivered: false,
        status: None,
        error: Some(error),
        permanent: true,
    };
    let url = match url::Url::parse(&target.url) {
        Ok(url) => url,
        Err(e) => return refused(format!("invalid URL: {e}")),
    };
    let pinned = match guard.resolve(&url).await {
        Ok(p) => p,
        Err(e) => return refused(e.to_string()),
    };
    let mut headers: Vec<(String, String)> = target
        .headers
        .iter()
        .filter(|(k, _)| !reserved(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(secrets) = secrets {
        headers.extend(sign::signed_headers(secrets, msg_id, now_ms, body));
    }
    match guard::post(&pinned, &headers, body.to_string(), timeout).await {
        Ok(outcome) => AttemptReport {
            delivered: outcome.is_delivered(),
            status: Some(outcome.status),
            error: outcome.failure_reason(),
            permanent: false,
        },
        Err(e) => AttemptReport {
            delivered: false,
            status: None,
            error: Some(e.to_string()),
            permanent: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_follow_the_contract() {
        let mut ctx = Map::new();
        ctx.insert("userId".into(), json!("u1"));
        ctx.insert("commitSha".into(), json!("abc"));
        ctx.insert("repo".into(), json!("acme/x"));
        let result = json!({"title": "Déjà vu 🚀", "n": 12345678901234567890u64, "f": 1.0});
        let done = Finished {
            job_id: "j",
            completed: true,
            result: Some(&result),
            error: None,
            provider: Some("groq"),
            generation_time_ms: 42,
            fallback: false,
            context: &ctx,
        };
        assert_eq!(
            body(TargetKind::Webhook, &done, 7),
            r#"{"jobId":"j","status":"completed","result":{"title":"Déjà vu 🚀","n":12345678901234567000,"f":1},"provider":"groq","generationTimeMs":42,"fallback":false,"timestamp":7}"#
        );
        let failed = Finished {
            completed: false,
            result: None,
            error: Some("no provider"),
            provider: None,
            ..done
        };
        assert_eq!(
            body(TargetKind::Webhook, &failed, 7),
            r#"{"jobId":"j","status":"failed","error":"no provider","timestamp":7}"#
        );
        assert_eq!(
            body(TargetKind::Callback, &failed, 7),
            r#"{"success":false,"error":"no provider","metadata":{"userId":"u1","commitSha":"abc","repo":"acme/x","jobId":"j","provider":null,"generationTimeMs":42,"timestamp":7}}"#
        );
    }
}
