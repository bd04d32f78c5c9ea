//! The outbound POSTs: webhook deliveries and alert sinks, both behind the one port
//! [`crate::ports::outbound::Outbound`] ([`GuardedPosts`]), both through [`signed_post`]. Their building
//! blocks: the body the caller can verify, its signatures, and the SSRF-guarded POST.
//!
//! - [`js_json`]: the body text, byte-identical to JavaScript's `JSON.stringify(JSON.parse(body))`.
//! - [`sign`]: the legacy `X-Webhook-*` headers and the Standard Webhooks `webhook-*` headers.
//! - [`guard`]: which URLs we may call, a resolve-once pinned target, and the POST itself.
//! - [`alert_sink`]: an alert's payload for a sink (Slack, Discord, JSON).
//! - [`send`]: the body and headers of one delivery a finished job owes.

pub(crate) mod alert_sink;
pub mod guard;
pub mod js_json;
pub(crate) mod send;
pub mod sign;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use url::Url;

use self::alert_sink::{AlertSettings, Sink};
use self::guard::{PostOutcome, UrlGuard};
use self::sign::WebhookSecrets;
use crate::domain::alert::Alert;
use crate::domain::job::Job;
use crate::domain::scrub::Scrubber;
use crate::domain::targets::{AttemptReport, TargetKind};
use crate::ports::outbound::{AlertSent, Outbound};

/// How long one delivery attempt may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one alert POST may take.
const ALERT_TIMEOUT: Duration = Duration::from_secs(5);

/// What one signed, guarded POST came to. Texts are scrubbed and never hold the URL.
#[derive(Debug)]
pub(crate) enum Posted {
    /// The receiver answered (any status).
    Answered(PostOutcome),
    /// The guard refused the address at send time: retrying cannot help.
    Refused(String),
    /// No answer (a connection error, a timeout).
    Failed(String),
}

/// One POST of `body` to `url`: the address resolved and pinned by `guard`, the body signed with
/// `signature` (the secrets and the `webhook-id`) when given, what came back scrubbed by `scrub`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn signed_post(
    guard: &UrlGuard,
    scrub: &Scrubber,
    url: &Url,
    mut headers: Vec<(String, String)>,
    body: String,
    signature: Option<(&WebhookSecrets, &str)>,
    now_ms: u64,
    timeout: Duration,
) -> Posted {
    let pinned = match guard.resolve(url).await {
        Ok(pinned) => pinned,
        Err(e) => return Posted::Refused(scrub.scrub_owned(e.to_string())),
    };
    if let Some((secrets, id)) = signature {
        headers.extend(sign::signed_headers(secrets, id, now_ms, &body));
    }
    match guard::post(&pinned, &headers, body, timeout).await {
        Ok(outcome) => Posted::Answered(PostOutcome {
            location: outcome.location.map(|l| scrub.scrub_owned(l)),
            ..outcome
        }),
        Err(e) => Posted::Failed(scrub.scrub_owned(e.to_string())),
    }
}

/// The outbound port's adapter: the URL guard, the owners' webhook secrets, the alert sinks and their
/// secret, and the scrubber every receiver's text passes.
pub(crate) struct GuardedPosts {
    guard: UrlGuard,
    scrubber: Scrubber,
    webhook_secrets: HashMap<String, WebhookSecrets>,
    legacy_bearer: bool,
    sinks: Vec<Sink>,
    sink_kinds: Vec<&'static str>,
    alert_secrets: Option<WebhookSecrets>,
}

impl GuardedPosts {
    /// `legacy_bearer`: a `callbackUrl` webhook also carries the original's `Authorization: Bearer`.
    pub(crate) fn new(
        guard: UrlGuard,
        scrubber: Scrubber,
        webhook_secrets: HashMap<String, WebhookSecrets>,
        legacy_bearer: bool,
        alerts: &AlertSettings,
    ) -> Self {
        Self {
            guard,
            scrubber,
            webhook_secrets,
            legacy_bearer,
            sink_kinds: alerts.sinks.iter().map(|s| s.kind.as_str()).collect(),
            sinks: alerts.sinks.clone(),
            alert_secrets: alerts.secrets.clone(),
        }
    }
}

#[async_trait]
impl Outbound for GuardedPosts {
    fn admits(&self, owner: &str, kind: TargetKind, url: &str) -> Result<(), String> {
        self.guard.check(url).map_err(|e| e.to_string())?;
        if kind == TargetKind::Webhook && !self.webhook_secrets.contains_key(owner) {
            return Err(
                "no webhook secret is configured for this key's owner (STEPPER_WEBHOOK_SECRETS), so \
                        the webhook could not be signed"
                    .into(),
            );
        }
        Ok(())
    }

    async fn deliver(&self, job: &Job, index: usize, now_ms: u64) -> AttemptReport {
        let Some(delivery) = job.deliveries.get(index) else {
            return send::refused("no such delivery".into());
        };
        let target = &delivery.target;
        let url = match Url::parse(&target.url) {
            Ok(url) => url,
            Err(e) => return send::refused(format!("invalid URL: {e}")),
        };
        let secrets = self.webhook_secrets.get(&job.owner);
        let headers = send::headers(target, secrets, self.legacy_bearer);
        // Stable across retries and redeliveries of one target, so receivers can drop duplicates by id.
        let id = send::message_id(&job.id, &job.gen, index);
        let body = send::body(target.kind, &send::Finished::of(job), now_ms);
        let signature = secrets.map(|s| (s, id.as_str()));
        let posted = signed_post(
            &self.guard,
            &self.scrubber,
            &url,
            headers,
            body,
            signature,
            now_ms,
            DELIVERY_TIMEOUT,
        );
        send::report(posted.await)
    }

    fn sinks(&self) -> &[&'static str] {
        &self.sink_kinds
    }

    async fn alert(&self, alert: &Alert, sink: usize, now_ms: u64) -> AlertSent {
        let Some(sink) = self.sinks.get(sink) else {
            return AlertSent::Refused("alert sink no longer configured".into());
        };
        let body = alert_sink::payload(sink.kind, alert, &self.scrubber).to_string();
        // Only our own JSON is signed; Slack and Discord verify by the URL's token.
        let id = alert_sink::alert_id(alert);
        let signature = match (sink.kind, &self.alert_secrets) {
            (alert_sink::SinkKind::Generic, Some(secrets)) => Some((secrets, id.as_str())),
            _ => None,
        };
        let posted = signed_post(
            &self.guard,
            &self.scrubber,
            &sink.url,
            Vec::new(),
            body,
            signature,
            now_ms,
            ALERT_TIMEOUT,
        );
        match posted.await {
            Posted::Answered(outcome) if outcome.is_delivered() => AlertSent::Delivered,
            Posted::Answered(outcome) => AlertSent::Failed(outcome.failure_reason().unwrap_or_default()),
            Posted::Refused(reason) => AlertSent::Refused(reason),
            Posted::Failed(reason) => AlertSent::Failed(reason),
        }
    }
}
