//! The words of the published 1.1.0 contract that are not a preset's: the contract version, the
//! per-request provider preferences, `cacheControl`, and the `failure` object of a failed job (its
//! `errorCode` vocabulary). docs/contract.md says what each means here and where we differ on purpose.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error_class::ErrorClass;
use super::presets::fields::{leaf_schema, via_check, Refusal};

/// The HTTP contract's version: requests may name it, answers always carry it.
pub(crate) const CONTRACT_VERSION: &str = "1";

/// The message of a `contractVersion` other than [`CONTRACT_VERSION`] (the original's text, word for
/// word): `api/errors.rs` answers it with `errorCode: SCHEMA_VERSION_MISMATCH`.
pub(crate) const VERSION_UNSUPPORTED: &str = "Request contract version is not supported";

/// `contractVersion`: only the string `"1"` (the number 1 is a mismatch, as in the original).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ContractVersion;

impl ContractVersion {
    pub(crate) fn check(value: Value) -> Result<Self, Refusal> {
        match value.as_str() {
            Some(CONTRACT_VERSION) => Ok(Self),
            _ => Err(Refusal::new(VERSION_UNSUPPORTED)),
        }
    }
}

via_check!([] ContractVersion);
leaf_schema!(
    [] ContractVersion,
    |_g| "ContractVersion",
    json_schema!({"const": CONTRACT_VERSION, "description": "The contract version the caller speaks; anything else is refused with `errorCode: SCHEMA_VERSION_MISMATCH`."})
);

/// `cacheControl`: whether an identical finished job's result may answer the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum CacheControl {
    /// An identical job in flight is joined; an identical finished one answers with its result.
    #[default]
    Default,
    /// Never answered from a finished job: it is replaced by a new job (one in flight is still joined:
    /// its result is not a cached one).
    NoCache,
    /// The same as `no-cache` (as in the original, where the two behave identically).
    Refresh,
}

impl CacheControl {
    pub(crate) fn check(value: Value) -> Result<Self, Refusal> {
        match value.as_str() {
            Some("default") => Ok(Self::Default),
            Some("no-cache") => Ok(Self::NoCache),
            Some("refresh") => Ok(Self::Refresh),
            _ => Err(Refusal::new("must be \"default\", \"no-cache\" or \"refresh\"")),
        }
    }

    /// A finished identical job may not answer: a new job replaces it.
    pub(crate) fn bypasses_results(self) -> bool {
        self != Self::Default
    }
}

via_check!([] CacheControl);
leaf_schema!(
    [] CacheControl,
    |_g| "CacheControl",
    json_schema!({"enum": ["default", "no-cache", "refresh"], "default": "default"})
);

/// Most provider names one preference list holds.
pub(crate) const MAX_PROVIDER_NAMES: usize = 32;
/// Longest provider name.
const MAX_PROVIDER_NAME: usize = 64;

/// `preferredProviders` / `excludeProviders`: provider names (compared without regard to case;
/// names of providers this deployment does not have are ignored, as in the original).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProviderNames(pub Vec<String>);

impl ProviderNames {
    pub(crate) fn check(value: Value) -> Result<Self, Refusal> {
        let refuse = || {
            Refusal::new(format!(
                "must be an array of at most {MAX_PROVIDER_NAMES} non-empty provider names (each at most \
                 {MAX_PROVIDER_NAME} characters)"
            ))
        };
        let Value::Array(items) = value else {
            return Err(refuse());
        };
        if items.len() > MAX_PROVIDER_NAMES {
            return Err(refuse());
        }
        items
            .into_iter()
            .map(|item| match item {
                Value::String(s) if !s.trim().is_empty() && s.chars().count() <= MAX_PROVIDER_NAME => {
                    Ok(s.trim().to_ascii_lowercase())
                }
                _ => Err(refuse()),
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

via_check!([] ProviderNames);

impl JsonSchema for ProviderNames {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "ProviderNames".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "array",
            "maxItems": MAX_PROVIDER_NAMES,
            "items": {"type": "string", "minLength": 1, "maxLength": MAX_PROVIDER_NAME, "pattern": "\\S"}
        })
    }
}

/// A job's own provider chain: the named providers first (in the order given, a name given twice
/// counts at its last place), the others after them in configured order; excluded ones never.
/// Stored with the job, so every step of it (on any instance) follows the same chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderPrefs {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) prefer: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) exclude: Vec<String>,
}

impl ProviderPrefs {
    /// The preferences of a request (`None` when it names none).
    pub(crate) fn of(prefer: Option<ProviderNames>, exclude: Option<ProviderNames>) -> Option<Self> {
        let prefs = Self {
            prefer: prefer.map(|p| p.0).unwrap_or_default(),
            exclude: exclude.map(|e| e.0).unwrap_or_default(),
        };
        (!prefs.prefer.is_empty() || !prefs.exclude.is_empty()).then_some(prefs)
    }

    /// The configured providers (by name, in configured order) as this job's chain: indices into
    /// `names`, preferred first.
    pub(crate) fn chain<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<usize> {
        let mut chain: Vec<(usize, usize)> = names
            .into_iter()
            .enumerate()
            .filter(|(_, name)| !self.exclude.iter().any(|e| e.eq_ignore_ascii_case(name)))
            .map(|(index, name)| {
                // The last place a name is given at; unnamed providers after every named one.
                let rank = self
                    .prefer
                    .iter()
                    .rposition(|p| p.eq_ignore_ascii_case(name))
                    .unwrap_or(usize::MAX);
                (rank, index)
            })
            .collect();
        // Stable: unnamed providers keep the configured order.
        chain.sort_by_key(|(rank, _)| *rank);
        chain.into_iter().map(|(_, index)| index).collect()
    }
}

/// The original's `errorCode` vocabulary (a failed job's `failure`, a batch item's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailureCode {
    RateLimit,
    Auth,
    Timeout,
    UpstreamUnavailable,
    InvalidResponse,
    Unknown,
}

impl FailureCode {
    /// The code of one attempt's class.
    pub(crate) fn of(class: ErrorClass) -> Self {
        match class {
            ErrorClass::RateLimited | ErrorClass::QuotaExhausted => Self::RateLimit,
            ErrorClass::AuthInvalid => Self::Auth,
            ErrorClass::Overloaded => Self::UpstreamUnavailable,
            ErrorClass::InvalidOutput => Self::InvalidResponse,
            ErrorClass::BadRequest | ErrorClass::Filtered | ErrorClass::Gone => Self::Unknown,
        }
    }

    pub(crate) fn transient(self) -> bool {
        matches!(self, Self::RateLimit | Self::Timeout | Self::UpstreamUnavailable)
    }
}

/// Why a job failed, in the original's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub code: FailureCode,
    pub message: String,
    /// Submitting the same request again may succeed.
    pub retryable: bool,
    pub retry_after_seconds: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_puts_preferred_first_and_drops_excluded() {
        let names = ["a", "b", "c", "d"];
        let prefs = ProviderPrefs {
            prefer: vec!["C".into(), "nope".into(), "a".into()],
            exclude: vec!["B".into()],
        };
        assert_eq!(prefs.chain(names), vec![2, 0, 3]);
        let twice = ProviderPrefs {
            prefer: vec!["d".into(), "c".into(), "d".into()],
            exclude: vec![],
        };
        assert_eq!(twice.chain(names), vec![2, 3, 0, 1]);
        let all = ProviderPrefs {
            prefer: vec![],
            exclude: names.iter().map(|n| n.to_string()).collect(),
        };
        assert!(all.chain(names).is_empty());
    }

    #[test]
    fn only_the_string_one_is_the_version() {
        assert!(ContractVersion::check(Value::from("1")).is_ok());
        assert!(ContractVersion::check(Value::from(1)).is_err());
        assert!(ContractVersion::check(Value::from("2")).is_err());
    }
}
