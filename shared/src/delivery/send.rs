//! The deliveries a finished job owes (its `callbackUrl` webhook, then its `callbacks` in order), one
//! attempt at a time. Planning and retry scheduling are pure; [`attempt`] is the one POST.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::guard::{self, UrlGuard};
use super::js_json;
use super::sign::{self, WebhookSecrets};
use crate::scrub::Scrubber;

/// Longest wait between two attempts of one target.
const MAX_BACKOFF_MS: u64 = 600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// `callbackUrl`: the signed webhook the caller verifies.
    Webhook,
    /// An entry of `callbacks`, with its own headers and retry policy.
    Callback,
}

/// Who to tell when the job ends; fixed at submit and stored with the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub kind: TargetKind,
    pub url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    pub continue_on_failure: bool,
    pub max_attempts: u32,
    pub backoff_ms: u64,
}

impl Target {
    pub fn webhook(url: String) -> Self {
        Self {
            kind: TargetKind::Webhook,
            url,
            headers: BTreeMap::new(),
            continue_on_failure: true,
            max_attempts: 5,
            backoff_ms: 2_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    /// Every attempt failed (or the address was refused): the dead letter, shown on poll.
    Dead,
    /// Not attempted: an earlier callback without `continueOnFailure` died.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    pub target: Target,
    pub status: DeliveryStatus,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at_ms: Option<u64>,
}

pub fn plan(targets: &[Target]) -> Vec<DeliveryState> {
    targets
        .iter()
        .map(|t| DeliveryState {
            target: t.clone(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            last_status: None,
            last_error: None,
            next_at_ms: None,
            done_at_ms: None,
        })
        .collect()
}

/// The next delivery to attempt and when: targets go strictly in order (the webhook, then each callback).
pub fn next_due(states: &[DeliveryState]) -> Option<(usize, u64)> {
    states
        .iter()
        .position(|s| s.status == DeliveryStatus::Pending)
        .map(|i| (i, states[i].next_at_ms.unwrap_or(0)))
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
            for key in ["userId", "commitSha", "repo"] {
                if let Some(v) = f.context.get(key) {
                    metadata.insert(key.into(), v.clone());
                }
            }
            metadata.insert("jobId".into(), json!(f.job_id));
            metadata.insert("provider".into(), json!(f.provider));
            metadata.insert("generationTimeMs".into(), json!(f.generation_time_ms));
            metadata.insert("timestamp".into(), json!(now_ms));
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptReport {
    pub delivered: bool,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// Retrying cannot help (the address is refused): dead at once.
    pub permanent: bool,
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

/// Folds one attempt into the states and says what is due next. Failures wait `backoff_ms × 2^(n-1)`
/// (±20 % jitter from `jitter` ∈ [0, 1), at most 10 min); the last allowed failure is the dead letter,
/// and a dead callback without `continueOnFailure` skips the callbacks after it.
pub fn record(
    states: &mut [DeliveryState],
    index: usize,
    report: &AttemptReport,
    now_ms: u64,
    jitter: f64,
) -> Option<(usize, u64)> {
    let Some(s) = states.get_mut(index) else {
        return next_due(states);
    };
    s.attempts += 1;
    s.last_status = report.status;
    s.last_error = report.error.as_ref().map(|e| e.chars().take(200).collect());
    s.next_at_ms = None;
    if report.delivered {
        s.status = DeliveryStatus::Delivered;
        s.done_at_ms = Some(now_ms);
    } else if report.permanent || s.attempts >= s.target.max_attempts {
        s.status = DeliveryStatus::Dead;
        s.done_at_ms = Some(now_ms);
        if s.target.kind == TargetKind::Callback && !s.target.continue_on_failure {
            for later in states[index + 1..]
                .iter_mut()
                .filter(|l| l.target.kind == TargetKind::Callback)
            {
                later.status = DeliveryStatus::Skipped;
            }
        }
    } else {
        let base = s.target.backoff_ms.saturating_mul(1 << (s.attempts - 1).min(20));
        let spread = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
        s.next_at_ms = Some(now_ms + ((base as f64 * spread) as u64).min(MAX_BACKOFF_MS));
    }
    next_due(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn callback(url: &str, continue_on_failure: bool, max_attempts: u32) -> Target {
        Target {
            kind: TargetKind::Callback,
            url: url.into(),
            headers: BTreeMap::new(),
            continue_on_failure,
            max_attempts,
            backoff_ms: 1_000,
        }
    }

    fn failed(status: u16) -> AttemptReport {
        AttemptReport {
            delivered: false,
            status: Some(status),
            error: Some(format!("HTTP {status}")),
            permanent: false,
        }
    }

    const OK: AttemptReport = AttemptReport {
        delivered: true,
        status: Some(200),
        error: None,
        permanent: false,
    };

    #[test]
    fn failures_back_off_with_growing_gaps_then_die() {
        let mut s = plan(&[Target::webhook("https://x.example/h".into())]);
        assert_eq!(next_due(&s), Some((0, 0)));
        assert_eq!(record(&mut s, 0, &failed(500), 1_000, 0.5), Some((0, 3_000)));
        assert_eq!(record(&mut s, 0, &failed(500), 3_000, 0.5), Some((0, 7_000)));
        assert_eq!(
            record(&mut s, 0, &failed(500), 7_000, 0.0),
            Some((0, 7_000 + 6_400)),
            "jitter -20 %"
        );
        record(&mut s, 0, &failed(503), 20_000, 0.5);
        assert_eq!(record(&mut s, 0, &failed(503), 40_000, 0.5), None);
        assert_eq!(
            (s[0].status, s[0].attempts, s[0].last_status),
            (DeliveryStatus::Dead, 5, Some(503))
        );
    }

    #[test]
    fn callbacks_go_in_order_and_stop_at_a_failure_unless_told_to_continue() {
        let mut s = plan(&[
            callback("https://a.example", false, 1),
            callback("https://b.example", true, 1),
            callback("https://c.example", true, 1),
        ]);
        assert_eq!(record(&mut s, 0, &failed(500), 10, 0.5), None);
        assert_eq!(
            s.iter().map(|x| x.status).collect::<Vec<_>>(),
            [DeliveryStatus::Dead, DeliveryStatus::Skipped, DeliveryStatus::Skipped]
        );

        let mut s = plan(&[
            callback("https://a.example", true, 1),
            callback("https://b.example", true, 2),
        ]);
        assert_eq!(record(&mut s, 0, &failed(500), 10, 0.5), Some((1, 0)));
        assert_eq!(record(&mut s, 1, &OK, 20, 0.5), None);
        assert_eq!(s[1].status, DeliveryStatus::Delivered);
    }

    #[test]
    fn a_refused_address_dies_at_once() {
        let mut s = plan(&[Target::webhook("https://x.example".into())]);
        let refused = AttemptReport {
            delivered: false,
            status: None,
            error: Some("loopback address".into()),
            permanent: true,
        };
        assert_eq!(record(&mut s, 0, &refused, 5, 0.5), None);
        assert_eq!((s[0].status, s[0].attempts), (DeliveryStatus::Dead, 1));
    }

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
