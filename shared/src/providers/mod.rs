//! Provider adapters: one module per wire format, the catalog of known providers, and the
//! classification of every answer into an [`ErrorClass`]. A provider module knows its wire format
//! and nothing about jobs.

pub mod anthropic;
pub mod catalog;
pub mod classify;
pub mod cohere;
pub mod custom;
pub mod gemini;
pub mod openai;
pub mod spec;
pub mod transport;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::llm::{FinishReason, Usage};
use crate::quota::ResetClock;

/// The classes of failure the step engine tells apart (see docs/providers.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Busy for a short, known time: cool down for everyone, try the next provider now.
    RateLimited,
    /// A quota window is used up: park the provider until its reset.
    QuotaExhausted,
    /// Transient trouble on their side (5xx, 529, timeouts, resets): back off, fail over.
    Overloaded,
    /// Our configuration is wrong (bad key): disable the provider for everyone.
    AuthInvalid,
    /// This job cannot go to this provider (too long, unsupported option).
    BadRequest,
    /// The content was refused by a safety system.
    Filtered,
    /// An answer came, but it is not usable (prose instead of JSON, truncated, schema violation).
    InvalidOutput,
    /// The model or endpoint is retired.
    Gone,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::QuotaExhausted => "quota_exhausted",
            ErrorClass::Overloaded => "overloaded",
            ErrorClass::AuthInvalid => "auth_invalid",
            ErrorClass::BadRequest => "bad_request",
            ErrorClass::Filtered => "filtered",
            ErrorClass::InvalidOutput => "invalid_output",
            ErrorClass::Gone => "gone",
        }
    }
}

/// When a rate-limited or exhausted provider may be called again, as the provider said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryHint {
    /// Relative to the moment the answer arrived (`retry-after: 7`, `"retryDelay": "47s"`, `2m59.56s`).
    After(#[serde(with = "duration_ms")] Duration),
    /// An absolute instant, epoch milliseconds (HTTP dates, RFC 3339 and epoch resets).
    At(u64),
    /// The next start of the provider's quota day (a daily quota is used up).
    NextReset(ResetClock),
    /// The next first of the month, 00:00 UTC (a monthly quota is used up: Cohere's trial keys).
    NextMonth,
}

impl RetryHint {
    /// The instant meant, seen from `now_ms` (the engine's clock, so tests can drive time).
    pub fn resolve(self, now_ms: u64) -> u64 {
        match self {
            RetryHint::After(d) => now_ms + d.as_millis() as u64,
            RetryHint::At(at) => at,
            RetryHint::NextReset(clock) => clock.next_reset(now_ms),
            RetryHint::NextMonth => next_month_start(now_ms),
        }
    }
}

fn next_month_start(now_ms: u64) -> u64 {
    use chrono::{Datelike, TimeZone, Utc};
    let Some(now) = Utc.timestamp_millis_opt(now_ms as i64).single() else {
        return now_ms;
    };
    let (year, month) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .map_or(now_ms, |t| t.timestamp_millis() as u64)
}

/// A classified failure. `message` is short and never contains secrets or prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub class: ErrorClass,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryHint>,
}

impl Failure {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            retry: None,
        }
    }
    pub fn with_retry(mut self, retry: Option<RetryHint>) -> Self {
        self.retry = retry;
        self
    }
}

/// A model's answer before any output validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub text: String,
    pub finish: FinishReason,
    #[serde(default)]
    pub usage: Usage,
}

/// Rate-limit signals read from any response, success included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateSignals {
    pub requests_remaining: Option<u64>,
    pub requests_reset: Option<RetryHint>,
    pub tokens_remaining: Option<u64>,
    pub tokens_reset: Option<RetryHint>,
}

impl RateSignals {
    /// The instant before which calling again is pointless because a window is used up.
    pub fn exhausted_until(&self, now_ms: u64) -> Option<u64> {
        let requests = match (self.requests_remaining, self.requests_reset) {
            (Some(0), Some(reset)) => Some(reset.resolve(now_ms)),
            _ => None,
        };
        let tokens = match (self.tokens_remaining, self.tokens_reset) {
            (Some(0), Some(reset)) => Some(reset.resolve(now_ms)),
            _ => None,
        };
        requests.max(tokens)
    }
}

/// Everything one provider attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct CallReport {
    pub result: Result<Answer, Failure>,
    /// The HTTP status, when a response arrived at all.
    pub http_status: Option<u16>,
    pub duration_ms: u64,
    pub rate: RateSignals,
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
