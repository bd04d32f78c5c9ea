//! Where status, headers and bodies become outcome classes. Wire modules hand their raw answer here.

use std::time::Duration;

use http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use super::de;
use crate::domain::error_class::ErrorClass;
use crate::domain::outcome::{Failure, RateSignals, RetryHint};
use crate::domain::quota::ResetClock;

/// Parses a Go duration as rate-limit headers carry it: `1s`, `6m0s`, `2m59.56s`, `12ms`, `1h2m3.5s`.
pub(crate) fn go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

/// `retry-after`: delay-seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<RetryHint> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(seconds) = v.parse::<f64>() {
        return (seconds >= 0.0).then(|| RetryHint::After(Duration::from_secs_f64(seconds)));
    }
    chrono::DateTime::parse_from_rfc2822(v)
        .ok()
        .map(|t| RetryHint::At(t.timestamp_millis().max(0) as u64))
}

/// "Please try again in 5.289s" (Groq, OpenAI) or "Please retry in 47.08s" (Gemini) inside an error message.
pub(crate) fn try_again_in(message: &str) -> Option<RetryHint> {
    let lower = message.to_ascii_lowercase();
    let at = ["try again in ", "retry in "]
        .iter()
        .find_map(|p| lower.find(p).map(|i| i + p.len()))?;
    let token: String = lower[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    go_duration(token.trim_end_matches('.')).map(RetryHint::After)
}

/// What Google's `error.details` say: `RetryInfo.retryDelay`, the `QuotaFailure` quota ids, the `ErrorInfo` reason.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct GoogleDetails {
    retry_delay: Option<Duration>,
    quota_ids: Vec<String>,
    reason: Option<String>,
}

impl GoogleDetails {
    /// A per-day quota is used up (it resets at midnight US Pacific); per-minute ones pass within the minute.
    fn daily_quota(&self) -> bool {
        self.quota_ids.iter().any(|id| id.contains("PerDay"))
    }

    fn read(details: &[GoogleDetail]) -> Self {
        let mut found = GoogleDetails::default();
        for detail in details {
            let kind = detail.kind.as_deref().unwrap_or("");
            if kind.ends_with("RetryInfo") {
                found.retry_delay = detail.retry_delay.as_deref().and_then(go_duration);
            } else if kind.ends_with("QuotaFailure") {
                found
                    .quota_ids
                    .extend(detail.violations.iter().filter_map(|v| v.quota_id.clone()));
            } else if kind.ends_with("ErrorInfo") {
                found.reason = detail.reason.clone();
            }
        }
        found
    }
}

/// The error body of any wire format, as far as we read it: `{"error":{...}}` (OpenAI, Anthropic, Gemini),
/// Cloudflare's `{"errors":[{"code","message"}]}`, NVIDIA's problem details `{"status","title","detail"}`,
/// or Cohere's `{"message"}`. Gemini's OpenAI endpoint wraps it in an array (see [`ErrorBody::parse`]).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorBody {
    /// Cloudflare: only the first error is read.
    #[serde(deserialize_with = "first_error")]
    errors: Option<CodedMessage>,
    /// Present counts, whatever it holds (an object, a bare message string, even `null`).
    #[serde(deserialize_with = "de::lenient")]
    error: Option<ErrorField>,
    #[serde(deserialize_with = "de::lenient")]
    title: Option<String>,
    #[serde(deserialize_with = "de::lenient")]
    detail: Option<String>,
    #[serde(deserialize_with = "de::lenient")]
    message: Option<String>,
}

/// `error` as the wires send it: an object, a bare message, or something else that says nothing.
#[derive(Debug)]
enum ErrorField {
    Text(String),
    Object(ErrorObject),
    Other,
}

impl<'de> Deserialize<'de> for ErrorField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::String(message) => ErrorField::Text(message),
            value @ Value::Object(_) => ErrorField::Object(serde_json::from_value(value).unwrap_or_default()),
            _ => ErrorField::Other,
        })
    }
}

/// `errors[0]`: any first element counts, even one that says nothing (then code and message are empty).
fn first_error<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<CodedMessage>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items.into_iter().next().map(|first| match first {
            value @ Value::Object(_) => serde_json::from_value(value).unwrap_or_default(),
            _ => CodedMessage::default(),
        }),
        _ => None,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorObject {
    #[serde(deserialize_with = "de::lenient")]
    message: Option<String>,
    #[serde(deserialize_with = "de::lenient")]
    code: Option<Code>,
    /// The code when there is no `code`: a status name (`RESOURCE_EXHAUSTED`), else Anthropic's error `type`.
    #[serde(deserialize_with = "de::lenient")]
    status: Option<String>,
    #[serde(rename = "type", deserialize_with = "de::lenient")]
    kind: Option<String>,
    #[serde(deserialize_with = "de::list")]
    details: Vec<GoogleDetail>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CodedMessage {
    #[serde(deserialize_with = "de::lenient")]
    code: Option<Code>,
    #[serde(deserialize_with = "de::lenient")]
    message: Option<String>,
}

/// An error code as text: providers send strings (`"insufficient_quota"`) or numbers (`402`, `3036`).
#[derive(Debug)]
struct Code(String);

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Code(match Value::deserialize(d)? {
            Value::String(s) => s,
            other => other.to_string(),
        }))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct GoogleDetail {
    #[serde(rename = "@type", deserialize_with = "de::lenient")]
    kind: Option<String>,
    #[serde(deserialize_with = "de::lenient")]
    retry_delay: Option<String>,
    #[serde(deserialize_with = "de::list")]
    violations: Vec<QuotaViolation>,
    #[serde(deserialize_with = "de::lenient")]
    reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct QuotaViolation {
    #[serde(deserialize_with = "de::lenient")]
    quota_id: Option<String>,
}

impl ErrorBody {
    /// `None` when the body is not JSON, not an object, or an empty array.
    fn parse(body: &str) -> Option<Self> {
        let value = match serde_json::from_str(body).ok()? {
            // Gemini's OpenAI endpoint answers `[{"error":{...}}]`.
            Value::Array(items) => items.into_iter().next()?,
            other => other,
        };
        value
            .is_object()
            .then(|| serde_json::from_value(value).unwrap_or_default())
    }

    /// The error's code (empty when none) and message, the first shape that matches.
    fn code_and_message(&self) -> Option<(String, String)> {
        if let Some(first) = &self.errors {
            let code = first.code.as_ref().map(|c| c.0.clone()).unwrap_or_default();
            return Some((code, first.message.clone().unwrap_or_default()));
        }
        if let Some(error) = &self.error {
            return Some(match error {
                ErrorField::Text(message) => (String::new(), message.clone()),
                ErrorField::Object(e) => {
                    let code = e.code.as_ref().map(|c| c.0.clone());
                    let code = code.or_else(|| e.status.clone()).or_else(|| e.kind.clone());
                    (code.unwrap_or_default(), e.message.clone().unwrap_or_default())
                }
                ErrorField::Other => (String::new(), String::new()),
            });
        }
        if let Some(title) = &self.title {
            return Some((title.clone(), self.detail.clone().unwrap_or_else(|| title.clone())));
        }
        self.message.clone().map(|m| (String::new(), m))
    }

    fn google(&self) -> GoogleDetails {
        match &self.error {
            Some(ErrorField::Object(e)) => GoogleDetails::read(&e.details),
            _ => GoogleDetails::default(),
        }
    }
}

/// The code of an error body (`error.code`, Cloudflare's `errors[0].code`, ...), when it has one.
pub(crate) fn error_code(body: &str) -> Option<String> {
    ErrorBody::parse(body)?.code_and_message().map(|(code, _)| code)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers
        .get(name)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .map(|v| v.max(0.0) as u64)
}

/// A reset header: a Go duration, float seconds, or epoch seconds/milliseconds.
fn reset_hint(headers: &HeaderMap, name: &str) -> Option<RetryHint> {
    let v = headers.get(name)?.to_str().ok()?.trim();
    if let Ok(n) = v.parse::<f64>() {
        return Some(match n {
            n if n > 1e12 => RetryHint::At(n as u64),
            n if n > 1e9 => RetryHint::At((n * 1000.0) as u64),
            n => RetryHint::After(Duration::from_secs_f64(n.max(0.0))),
        });
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Some(RetryHint::At(t.timestamp_millis().max(0) as u64));
    }
    go_duration(v).map(RetryHint::After)
}

/// Rate-limit headers of any response, success included.
pub(crate) fn rate_signals(headers: &HeaderMap) -> RateSignals {
    let first = |names: &[&str]| names.iter().find_map(|n| header_u64(headers, n));
    let first_reset = |names: &[&str]| names.iter().find_map(|n| reset_hint(headers, n));
    RateSignals {
        requests_remaining: first(&[
            "x-ratelimit-remaining-requests",
            "x-ratelimit-remaining-requests-day",
            "x-ratelimit-remaining-req-minute",
            "x-ratelimit-remaining",
            "anthropic-ratelimit-requests-remaining",
        ]),
        requests_reset: first_reset(&[
            "x-ratelimit-reset-requests",
            "x-ratelimit-reset-requests-day",
            "x-ratelimit-reset",
            "anthropic-ratelimit-requests-reset",
        ]),
        tokens_remaining: first(&[
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-remaining-tokens-minute",
            "anthropic-ratelimit-tokens-remaining",
        ]),
        tokens_reset: first_reset(&[
            "x-ratelimit-reset-tokens",
            "x-ratelimit-reset-tokens-minute",
            "anthropic-ratelimit-tokens-reset",
        ]),
    }
}

fn short(s: &str) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

/// Classifies an HTTP error answer (any status that is not a usable 200). `reset` is the provider's quota
/// clock: an exhausted daily quota parks the provider until it turns.
pub(crate) fn http_failure(status: u16, headers: &HeaderMap, body: &str, reset: ResetClock) -> Failure {
    let parsed = ErrorBody::parse(body);
    let read = parsed.as_ref().and_then(ErrorBody::code_and_message);
    let (code, message) = read.unwrap_or_else(|| {
        let text = if body.trim_start().starts_with('<') {
            "an HTML error page".to_string()
        } else {
            body.to_string()
        };
        (String::new(), text)
    });
    let google = parsed.as_ref().map(ErrorBody::google).unwrap_or_default();
    let lower = format!("{code} {message}").to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    let text = short(&format!(
        "{status} {}{}",
        if code.is_empty() {
            String::new()
        } else {
            format!("{code}: ")
        },
        message
    ));
    let daily = Some(RetryHint::NextReset(reset));
    let out_of_money = [
        "credit balance",
        "spend_limit",
        "spend limit",
        "insufficient_quota",
        "insufficient balance",
    ];
    match status {
        // Gemini says which quota ran out: per day waits for the Pacific midnight, per minute for retryDelay.
        429 if google.daily_quota() => Failure::new(ErrorClass::QuotaExhausted, text).with_retry(daily),
        429 if !google.quota_ids.is_empty() || google.retry_delay.is_some() => {
            let hint = google
                .retry_delay
                .map(RetryHint::After)
                .or_else(|| retry_after(headers))
                .or_else(|| try_again_in(&message));
            Failure::new(ErrorClass::RateLimited, text).with_retry(hint)
        }
        429 if has(&["/ month", "per month", "monthly"]) => {
            Failure::new(ErrorClass::QuotaExhausted, text).with_retry(Some(RetryHint::NextMonth))
        }
        // Cloudflare's 3036: the daily free neurons are spent.
        429 if code == "3036"
            || (has(&["quota", "credits", "balance", "per day", "daily"]) || has(&out_of_money))
                && !has(&["per minute", "per-minute"]) =>
        {
            // Groq's per-day limits are rolling and say when: trust that over the midnight guess.
            let hint = retry_after(headers).or_else(|| try_again_in(&message)).or(daily);
            Failure::new(ErrorClass::QuotaExhausted, text).with_retry(hint)
        }
        429 => {
            let hint = retry_after(headers)
                .or_else(|| try_again_in(&message))
                .or_else(|| reset_hint(headers, "x-ratelimit-reset-requests"))
                .or_else(|| reset_hint(headers, "x-ratelimit-reset"));
            Failure::new(ErrorClass::RateLimited, text).with_retry(hint)
        }
        402 => Failure::new(ErrorClass::QuotaExhausted, text).with_retry(daily),
        // Anthropic answers an empty balance or a reached spend limit with 400/403.
        400 | 403 if has(&out_of_money) => Failure::new(ErrorClass::QuotaExhausted, text).with_retry(daily),
        401 | 403 if has(&["moderation", "flagged"]) => Failure::new(ErrorClass::Filtered, text),
        401 | 403 => Failure::new(ErrorClass::AuthInvalid, text),
        // Gemini answers a bad key with 400 INVALID_ARGUMENT, reason API_KEY_INVALID.
        400 if google.reason.as_deref() == Some("API_KEY_INVALID")
            || has(&["api_key_invalid", "api key not valid"]) =>
        {
            Failure::new(ErrorClass::AuthInvalid, text)
        }
        404 | 410 => Failure::new(ErrorClass::Gone, text),
        408 | 498 | 500..=599 => Failure::new(ErrorClass::Overloaded, text).with_retry(retry_after(headers)),
        400..=499 => Failure::new(ErrorClass::BadRequest, text),
        _ => Failure::new(ErrorClass::Overloaded, text),
    }
}

/// A transport failure: no answer, a reset connection, or our own deadline.
pub(crate) fn transport_failure(error: &reqwest::Error, timeout_ms: u64) -> Failure {
    let message = if error.is_timeout() {
        format!("timeout after {timeout_ms}ms")
    } else if error.is_connect() {
        "connection failed".to_string()
    } else {
        "connection error".to_string()
    };
    Failure::new(ErrorClass::Overloaded, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    #[test]
    fn go_durations() {
        for (s, ms) in [
            ("1s", 1000),
            ("6m0s", 360_000),
            ("2m59.56s", 179_560),
            ("12ms", 12),
            ("1h2m3.5s", 3_723_500),
        ] {
            assert_eq!(go_duration(s).map(|d| d.as_millis()), Some(ms), "{s}");
        }
        assert_eq!(go_duration("soon"), None);
    }

    const NOW: u64 = 1_764_000_000_000;

    #[test]
    fn table_of_error_answers() {
        type Row<'a> = (u16, Vec<(&'a str, &'a str)>, &'a str, ErrorClass, Option<RetryHint>);
        let rows: Vec<Row> = vec![
            (
                429,
                vec![("retry-after", "7")],
                r#"{"error":{"message":"Rate limit","code":"rate_limit_exceeded"}}"#,
                ErrorClass::RateLimited,
                Some(RetryHint::After(Duration::from_secs(7))),
            ),
            (
                429,
                vec![],
                r#"{"error":{"message":"Rate limit reached. Please try again in 5.289s.","type":"tokens"}}"#,
                ErrorClass::RateLimited,
                Some(RetryHint::After(Duration::from_millis(5289))),
            ),
            (
                429,
                vec![("x-ratelimit-reset-requests", "2m59.56s")],
                r#"{"error":{"message":"slow down"}}"#,
                ErrorClass::RateLimited,
                Some(RetryHint::After(Duration::from_millis(179_560))),
            ),
            (
                429,
                vec![],
                r#"{"error":{"message":"You exceeded your current quota","code":"insufficient_quota"}}"#,
                ErrorClass::QuotaExhausted,
                Some(RetryHint::NextReset(ResetClock::UtcMidnight)),
            ),
            (
                429,
                vec![],
                r#"{"status":429,"title":"Too Many Requests"}"#,
                ErrorClass::RateLimited,
                None,
            ),
            (
                429,
                vec![],
                r#"[{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED"}}]"#,
                ErrorClass::RateLimited,
                None,
            ),
            (
                402,
                vec![],
                r#"{"error":{"message":"Insufficient credits","code":402}}"#,
                ErrorClass::QuotaExhausted,
                Some(RetryHint::NextReset(ResetClock::UtcMidnight)),
            ),
            (
                401,
                vec![],
                r#"{"error":{"message":"Invalid API Key","code":"invalid_api_key"}}"#,
                ErrorClass::AuthInvalid,
                None,
            ),
            (
                400,
                vec![],
                r#"[{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT"}}]"#,
                ErrorClass::AuthInvalid,
                None,
            ),
            (
                400,
                vec![],
                r#"{"error":{"message":"context too long"}}"#,
                ErrorClass::BadRequest,
                None,
            ),
            (413, vec![], "", ErrorClass::BadRequest, None),
            (
                404,
                vec![],
                r#"{"error":{"message":"model not found"}}"#,
                ErrorClass::Gone,
                None,
            ),
            (410, vec![], "", ErrorClass::Gone, None),
            (
                503,
                vec![],
                r#"{"error":{"message":"overloaded"}}"#,
                ErrorClass::Overloaded,
                None,
            ),
            (
                529,
                vec![],
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                ErrorClass::Overloaded,
                None,
            ),
            (
                502,
                vec![],
                "<html><body>Bad Gateway</body></html>",
                ErrorClass::Overloaded,
                None,
            ),
            (498, vec![], "{}", ErrorClass::Overloaded, None),
            (
                429,
                vec![],
                r#"{"error":{"message":"Rate limit reached for model `llama-3.3-70b-versatile` on requests per day (RPD): Limit 1000, Used 1000, Requested 1. Please try again in 1m26.4s.","type":"requests","code":"rate_limit_exceeded"}}"#,
                ErrorClass::QuotaExhausted,
                Some(RetryHint::After(Duration::from_millis(86_400))),
            ),
            (
                429,
                vec![],
                r#"{"errors":[{"message":"AiError: you have used up your daily free allocation of 10,000 neurons","code":3036}],"success":false,"result":null,"messages":[]}"#,
                ErrorClass::QuotaExhausted,
                Some(RetryHint::NextReset(ResetClock::UtcMidnight)),
            ),
            (
                429,
                vec![],
                r#"[{"error":{"code":429,"message":"You exceeded your current quota. Please retry in 47.08s.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]}]}}]"#,
                ErrorClass::RateLimited,
                Some(RetryHint::After(Duration::from_millis(47_080))),
            ),
            (
                429,
                vec![],
                r#"{"message":"You are using a Trial key, which is limited to 1000 API calls / month."}"#,
                ErrorClass::QuotaExhausted,
                Some(RetryHint::NextMonth),
            ),
        ];
        for (status, h, body, class, retry) in rows {
            let f = http_failure(status, &headers(&h), body, ResetClock::UtcMidnight);
            assert_eq!(f.class, class, "{status} {body}");
            assert_eq!(f.retry, retry, "{status} {body}");
            assert!(!f.message.contains('\n') && f.message.chars().count() <= 170);
        }
    }

    #[test]
    fn http_date_retry_after() {
        let f = http_failure(
            429,
            &headers(&[("retry-after", "Wed, 25 Nov 2026 10:00:00 GMT")]),
            "{}",
            ResetClock::UtcMidnight,
        );
        let expected = chrono::DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
            .unwrap()
            .timestamp_millis() as u64;
        assert_eq!(f.retry, Some(RetryHint::At(expected)));
    }

    #[test]
    fn rate_headers_on_success() {
        let s = rate_signals(&headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "6m0s"),
        ]));
        assert_eq!(s.exhausted_until(NOW), Some(NOW + 360_000));
        let openrouter = rate_signals(&headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1764000060000"),
        ]));
        assert_eq!(openrouter.exhausted_until(NOW), Some(1_764_000_060_000));
        assert_eq!(rate_signals(&HeaderMap::new()).exhausted_until(NOW), None);
    }
}
