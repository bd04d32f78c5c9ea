//! The classes of failure the step engine tells apart: the vocabulary of the provider adapters that
//! classify an answer, of the shared provider state (`quota`), of a job's attempts and of `decide`.
//! A leaf: it imports nothing of the crate, so every layer can name a class.

use serde::{Deserialize, Serialize};

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
    pub(crate) fn as_str(self) -> &'static str {
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
