//! What one provider call produced: the answer, or a classified [`Failure`] with the provider's
//! [`RetryHint`], and the rate-limit signals read from every response. The `Provider` port returns a
//! [`CallReport`]; the wire adapters build them and the engine and the shared provider state read them.
//! The quota day of a [`RetryHint::NextReset`] is the provider's [`ResetClock`] (`quota`, below this).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error_class::ErrorClass;
use crate::domain::llm::{FinishReason, Usage};
use crate::domain::quota::ResetClock;

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
    pub(crate) fn resolve(self, now_ms: u64) -> u64 {
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
    pub(crate) tokens_remaining: Option<u64>,
    pub(crate) tokens_reset: Option<RetryHint>,
}

impl RateSignals {
    /// The instant before which calling again is pointless because a window is used up.
    pub(crate) fn exhausted_until(&self, now_ms: u64) -> Option<u64> {
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

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
