//! Where alerts go: sinks parsed from `ALERT_WEBHOOK_URLS` (and the original's `DISCORD_WEBHOOK_URL`),
//! each with the payload its kind expects, sent through the same SSRF guard as callbacks.
//!
//! The kind comes from the host in production (`discord.com`/`discordapp.com` → Discord,
//! `hooks.slack.com` → Slack, anything else → a generic JSON body signed with Standard Webhooks
//! headers). A `discord+`, `slack+` or `webhook+` prefix on the scheme names the kind explicitly
//! (a proxy, a self-hosted relay, the tests' loopback receivers): `discord+http://127.0.0.1:9000/api/webhooks/1/abc`.

use serde_json::{json, Value};
use url::Url;

use crate::adapters::outbound::guard::UrlGuard;
use crate::adapters::outbound::sign::WebhookSecrets;
use crate::domain::alert::{Alert, Incident, Severity};
use crate::domain::scrub::Scrubber;

/// The longest provider or receiver text an alert carries (after scrubbing), in characters.
pub(crate) const TEXT_CAP: usize = 300;

/// The payload a sink expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SinkKind {
    /// `content` + `embeds` (colour by severity).
    Discord,
    /// `text` + `blocks` (Slack incoming webhooks).
    Slack,
    /// Our own JSON, signed like job webhooks.
    Generic,
}

impl SinkKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SinkKind::Discord => "discord",
            SinkKind::Slack => "slack",
            SinkKind::Generic => "webhook",
        }
    }
}

/// The alert configuration (`ALERT_*` variables; docs/configuration.md).
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub(crate) sinks: Vec<Sink>,
    /// Signs generic sinks' bodies (`ALERT_WEBHOOK_SECRET`, Standard Webhooks).
    pub(crate) secrets: Option<WebhookSecrets>,
    /// At most one alert per provider in this window (`ALERT_FLAP_WINDOW_SECONDS`, 15 min).
    pub(crate) flap_window_ms: u64,
    /// The waits before each retry of a failed alert (`ALERT_RETRY_SCHEDULE`, 5s,30s,2m); then it is
    /// dropped (logged).
    pub(crate) retry_ms: Vec<u64>,
    /// The store unreachable this long alerts (`ALERT_STORE_DOWN_SECONDS`, 60 s).
    pub(crate) store_down_ms: u64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            sinks: Vec::new(),
            secrets: None,
            flap_window_ms: 900_000,
            retry_ms: vec![5_000, 30_000, 120_000],
            store_down_ms: 60_000,
        }
    }
}

/// One configured alert destination.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Sink {
    pub(crate) kind: SinkKind,
    /// The URL actually called (without the kind prefix). Never logged: it holds the webhook's token.
    pub(crate) url: Url,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The path of a Discord or Slack webhook URL is its secret.
        f.debug_struct("Sink")
            .field("kind", &self.kind)
            .field("host", &self.url.host_str())
            .finish()
    }
}

/// Why an alert URL was refused at start. The URL itself is never echoed (its path is a token).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SinkError {
    #[error("entry {index}: not a URL ({reason})")]
    NotAUrl { index: usize, reason: String },
    #[error(
        "entry {index}: unknown scheme `{scheme}` (expected http(s), optionally prefixed discord+, slack+ or webhook+)"
    )]
    UnknownScheme { index: usize, scheme: String },
    #[error("entry {index}: refused by the callback URL guard: {reason} (CALLBACK_ALLOWED_ORIGINS opens an origin)")]
    Refused { index: usize, reason: String },
}

/// Parses one entry (`index` counts from 1 for the message) and checks it against `guard`.
pub(crate) fn parse(entry: &str, index: usize, guard: &UrlGuard) -> Result<Sink, SinkError> {
    let (explicit, rest) = match entry.split_once("://") {
        Some((scheme, _)) => match scheme.to_ascii_lowercase().split_once('+') {
            Some((prefix, inner)) => {
                let kind = match prefix {
                    "discord" => SinkKind::Discord,
                    "slack" => SinkKind::Slack,
                    "webhook" => SinkKind::Generic,
                    _ => {
                        return Err(SinkError::UnknownScheme {
                            index,
                            scheme: scheme.to_string(),
                        })
                    }
                };
                (Some(kind), format!("{inner}{}", &entry[scheme.len()..]))
            }
            None => (None, entry.to_string()),
        },
        None => (None, entry.to_string()),
    };
    let url = Url::parse(&rest).map_err(|e| SinkError::NotAUrl {
        index,
        reason: e.to_string(),
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(SinkError::UnknownScheme {
            index,
            scheme: url.scheme().to_string(),
        });
    }
    guard.check(url.as_str()).map_err(|e| SinkError::Refused {
        index,
        reason: e.to_string(),
    })?;
    let kind = explicit.unwrap_or_else(|| match url.host_str() {
        Some("discord.com" | "discordapp.com" | "ptb.discord.com" | "canary.discord.com") => SinkKind::Discord,
        Some("hooks.slack.com") => SinkKind::Slack,
        _ => SinkKind::Generic,
    });
    Ok(Sink { kind, url })
}

/// Scrubbed of every configured secret, then cut to [`TEXT_CAP`] characters.
pub(crate) fn clean(text: &str, scrubber: &Scrubber) -> String {
    let scrubbed = scrubber.scrub(text);
    let mut out: String = scrubbed.chars().take(TEXT_CAP).collect();
    if scrubbed.chars().count() > TEXT_CAP {
        out.push('…');
    }
    out
}

fn when(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// A one-line title and a short description, provider text cleaned.
pub fn describe(alert: &Alert, scrubber: &Scrubber) -> (String, String) {
    let (title, mut text) = match &alert.incident {
        Incident::ProviderDisabled { provider, reason } => (
            format!("Provider {provider} disabled"),
            format!(
                "{provider} refused our key or its model: no job will use it until its configuration is fixed. Reason: {}",
                clean(reason, scrubber)
            ),
        ),
        Incident::CircuitOpened {
            provider,
            until_ms,
            failures,
        } => (
            format!("Circuit opened for {provider}"),
            format!(
                "{failures} consecutive overloads: {provider} is kept out until {}.",
                when(*until_ms)
            ),
        ),
        Incident::CircuitClosed { provider } => (
            format!("Circuit closed for {provider}"),
            format!("{provider} answered again after its circuit opened."),
        ),
        Incident::QuotaExhausted { provider, until_ms } => (
            format!("Quota exhausted for {provider}"),
            format!("{provider}'s quota is spent until {}.", when(*until_ms)),
        ),
        Incident::AllProvidersUnusable { eta_ms } => (
            "All providers unusable".to_string(),
            match eta_ms {
                Some(at) => format!(
                    "Every configured provider is disabled or cooling down; jobs wait. The first returns at {} (ETA {at} ms since the epoch).",
                    when(*at)
                ),
                None => "Every configured provider is disabled: jobs cannot run until a configuration is fixed.".into(),
            },
        ),
        Incident::ProvidersRecovered { provider } => (
            "Providers recovered".to_string(),
            format!("{provider} answered again: jobs run."),
        ),
        Incident::DeliveryDeadLettered { job_id, target, error } => (
            "Webhook delivery dead-lettered".to_string(),
            format!(
                "Job {job_id}, target {target}: the last attempt failed ({}). POST /v1/jobs/{job_id}/deliveries/redeliver sends it again.",
                clean(error, scrubber)
            ),
        ),
        Incident::JobsStranded { count } => (
            format!("{count} stranded job(s) recovered"),
            format!(
                "The recovery sweep found {count} queued or running job(s) overdue by a whole grace (a lost message or a dead worker) and queued them again."
            ),
        ),
        Incident::StoreUnreachable { since_ms } => (
            "Store unreachable".to_string(),
            format!(
                "This instance has had no answer from the store since {}: submits and polls answer 503, steps wait on the queue.",
                when(*since_ms)
            ),
        ),
        Incident::StoreReachable { down_ms } => (
            "Store reachable again".to_string(),
            format!("The store answers again after {} s.", down_ms / 1000),
        ),
        Incident::StoreQuotaExhausted => (
            "Store quota exhausted".to_string(),
            "The store refused a request: its plan's request quota is spent (Upstash: max requests limit exceeded). \
             Submits, polls and steps answer 503 store_quota_exhausted until the quota resets or the plan is raised."
                .to_string(),
        ),
    };
    if alert.suppressed > 0 {
        text.push_str(&format!(
            " ({} similar alert(s) for this provider were held back in the flap window.)",
            alert.suppressed
        ));
    }
    (title, text)
}

fn colour(severity: Severity) -> u32 {
    match severity {
        Severity::Critical => 0xE0_1E_1E,
        Severity::Warning => 0xF5_A6_23,
        Severity::Info => 0x2E_CC_71,
    }
}

/// The body for `kind`.
pub(crate) fn payload(kind: SinkKind, alert: &Alert, scrubber: &Scrubber) -> Value {
    let severity = alert.incident.severity();
    let (title, text) = describe(alert, scrubber);
    let kind_name = alert.incident.kind();
    match kind {
        SinkKind::Discord => json!({
            "content": format!("[{}] {title}", severity.as_str().to_uppercase()),
            "embeds": [{
                "title": title,
                "description": text,
                "color": colour(severity),
                "timestamp": chrono::DateTime::from_timestamp_millis(alert.at_ms as i64).map(|t| t.to_rfc3339()),
                "footer": { "text": format!("stepper · {kind_name}") },
            }],
            "allowed_mentions": { "parse": [] },
        }),
        SinkKind::Slack => {
            let emoji = match severity {
                Severity::Critical => ":red_circle:",
                Severity::Warning => ":warning:",
                Severity::Info => ":large_green_circle:",
            };
            json!({
                "text": format!("[{}] {title}: {text}", severity.as_str().to_uppercase()),
                "blocks": [
                    { "type": "header", "text": { "type": "plain_text", "text": format!("{emoji} {title}"), "emoji": true } },
                    { "type": "section", "text": { "type": "mrkdwn", "text": text } },
                    { "type": "context", "elements": [
                        { "type": "mrkdwn", "text": format!("*{}* · `{kind_name}` · stepper", severity.as_str()) }
                    ] },
                ],
            })
        }
        SinkKind::Generic => {
            let mut incident = serde_json::to_value(&alert.incident).unwrap_or(Value::Null);
            // Provider and receiver text pass the same cleaning as in the other payloads.
            if let Some(fields) = incident.as_object_mut() {
                for key in ["reason", "error"] {
                    if let Some(Value::String(s)) = fields.get(key) {
                        let cleaned = clean(s, scrubber);
                        fields.insert(key.into(), Value::String(cleaned));
                    }
                }
            }
            json!({
                "type": format!("alert.{kind_name}"),
                "severity": severity.as_str(),
                "title": title,
                "text": text,
                "incident": incident,
                "suppressed": alert.suppressed,
                "at_ms": alert.at_ms,
            })
        }
    }
}

/// A stable id for one alert (the Standard Webhooks `webhook-id`: the same across retries).
pub(crate) fn alert_id(alert: &Alert) -> String {
    use sha2::Digest;
    let body = serde_json::to_string(alert).unwrap_or_default();
    let digest = sha2::Sha256::digest(body.as_bytes());
    format!("alert_{}", &hex::encode(digest)[..24])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> UrlGuard {
        UrlGuard::new(&["http://127.0.0.1:9".to_string()]).unwrap()
    }

    #[test]
    fn kinds_come_from_the_host_or_an_explicit_prefix() {
        let g = guard();
        let kind = |u: &str| parse(u, 1, &g).map(|s| s.kind);
        assert_eq!(kind("https://discord.com/api/webhooks/1/abc"), Ok(SinkKind::Discord));
        assert_eq!(kind("https://hooks.slack.com/services/T/B/X"), Ok(SinkKind::Slack));
        assert_eq!(kind("https://alerts.example.com/in"), Ok(SinkKind::Generic));
        assert_eq!(
            kind("discord+http://127.0.0.1:9/api/webhooks/1/abc"),
            Ok(SinkKind::Discord)
        );
        assert_eq!(kind("slack+http://127.0.0.1:9/services/T/B/X"), Ok(SinkKind::Slack));
        assert_eq!(
            parse("slack+http://127.0.0.1:9/x", 1, &g).map(|s| s.url.to_string()),
            Ok("http://127.0.0.1:9/x".to_string())
        );
        assert!(matches!(
            kind("ftp://discord.com/x"),
            Err(SinkError::UnknownScheme { .. })
        ));
        assert!(matches!(
            kind("teams+https://example.com/x"),
            Err(SinkError::UnknownScheme { .. })
        ));
        assert!(matches!(kind("http://10.0.0.1/x"), Err(SinkError::Refused { .. })));
        assert!(matches!(kind("http://127.0.0.1:8/x"), Err(SinkError::Refused { .. })));
    }

    #[test]
    fn provider_text_is_scrubbed_and_bounded() {
        let scrubber = Scrubber::new(["sk-live-0123456789abcdef"]);
        let alert = Alert {
            incident: Incident::ProviderDisabled {
                provider: "gemini".into(),
                reason: format!(
                    "auth_invalid: key sk-live-0123456789abcdef refused {}",
                    "x".repeat(5_000)
                ),
            },
            suppressed: 0,
            at_ms: 1_700_000_000_000,
        };
        for kind in [SinkKind::Discord, SinkKind::Slack, SinkKind::Generic] {
            let body = payload(kind, &alert, &scrubber).to_string();
            assert!(!body.contains("sk-live-0123456789abcdef"), "{kind:?}: {body}");
            assert!(body.len() < 3_000, "{kind:?} is bounded: {} bytes", body.len());
        }
        let discord = payload(SinkKind::Discord, &alert, &scrubber);
        assert_eq!(discord["embeds"][0]["color"], 0xE0_1E_1E);
        assert!(discord["content"].as_str().unwrap().starts_with("[CRITICAL]"));
        let slack = payload(SinkKind::Slack, &alert, &scrubber);
        assert_eq!(slack["blocks"][0]["type"], "header");
    }
}
