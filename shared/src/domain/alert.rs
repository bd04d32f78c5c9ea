//! Operational alerts: the incidents worth telling an operator about, how severe they are, and what a
//! provider event carries to judge them (domain words, a leaf: the shared provider state, the queue's
//! messages, the sinks in [`sink`] and the store adapters import them, never the reverse). The rules
//! that turn a change of shared state into at most one incident are the store's
//! (`store::incidents`, and `finish.lua` on Upstash): it decides them in the same atomic change.

use serde::{Deserialize, Serialize};

/// How loud an alert is (the Discord embed's colour, the Slack emoji).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Something that changed in the shared state of the providers or of the system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Incident {
    /// A provider answered that its key is refused or its model is gone: no job will use it until
    /// its configuration is fixed.
    ProviderDisabled { provider: String, reason: String },
    /// Consecutive overloads opened the provider's circuit until `until_ms`.
    CircuitOpened {
        provider: String,
        until_ms: u64,
        failures: u32,
    },
    /// A call succeeded after the circuit had opened.
    CircuitClosed { provider: String },
    /// The provider's quota is spent until `until_ms`.
    QuotaExhausted { provider: String, until_ms: u64 },
    /// Every configured provider is disabled or cooling down; the first returns at `eta_ms` (`None`:
    /// every one of them is disabled).
    AllProvidersUnusable { eta_ms: Option<u64> },
    /// A provider answered again after every one had been unusable.
    ProvidersRecovered { provider: String },
    /// A job's webhook or callback gave up after its last attempt.
    DeliveryDeadLettered {
        job_id: String,
        target: usize,
        error: String,
    },
    /// The recovery sweep found queued or running jobs whose step was overdue by a whole grace (a
    /// lost message, a dead worker) and queued them again.
    JobsStranded { count: u64 },
    /// This instance got nothing but "unavailable" from the store since `since_ms` (per instance).
    StoreUnreachable { since_ms: u64 },
    /// The store answered again after a `StoreUnreachable` (per instance).
    StoreReachable { down_ms: u64 },
    /// The store refused a request because its plan's request quota is spent (Upstash: `ERR max
    /// requests limit exceeded`): told once per instance until the store answers again.
    StoreQuotaExhausted,
}

impl Incident {
    pub(crate) fn severity(&self) -> Severity {
        match self {
            Incident::ProviderDisabled { .. }
            | Incident::AllProvidersUnusable { .. }
            | Incident::StoreUnreachable { .. }
            | Incident::StoreQuotaExhausted => Severity::Critical,
            Incident::CircuitOpened { .. }
            | Incident::QuotaExhausted { .. }
            | Incident::DeliveryDeadLettered { .. }
            | Incident::JobsStranded { .. } => Severity::Warning,
            Incident::CircuitClosed { .. } | Incident::ProvidersRecovered { .. } | Incident::StoreReachable { .. } => {
                Severity::Info
            }
        }
    }

    /// The incident's kind, as the payloads name it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Incident::ProviderDisabled { .. } => "provider_disabled",
            Incident::CircuitOpened { .. } => "circuit_opened",
            Incident::CircuitClosed { .. } => "circuit_closed",
            Incident::QuotaExhausted { .. } => "quota_exhausted",
            Incident::AllProvidersUnusable { .. } => "all_providers_unusable",
            Incident::ProvidersRecovered { .. } => "providers_recovered",
            Incident::DeliveryDeadLettered { .. } => "delivery_dead_lettered",
            Incident::JobsStranded { .. } => "jobs_stranded",
            Incident::StoreUnreachable { .. } => "store_unreachable",
            Incident::StoreReachable { .. } => "store_reachable",
            Incident::StoreQuotaExhausted => "store_quota_exhausted",
        }
    }

    /// The provider the incident is about, when it is about one (the flap window is per provider).
    pub(crate) fn provider(&self) -> Option<&str> {
        match self {
            Incident::CircuitOpened { provider, .. }
            | Incident::CircuitClosed { provider }
            | Incident::QuotaExhausted { provider, .. } => Some(provider),
            _ => None,
        }
    }
}

/// One incident as reported by the store, with how many alerts of the same provider its flap window
/// held back before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    #[serde(flatten)]
    pub incident: Incident,
    #[serde(default)]
    pub suppressed: u32,
    pub(crate) at_ms: u64,
}

/// What the store needs, with a provider event, to decide on incidents (carried in the event).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRules {
    /// Every configured provider (for "all providers unusable"); empty: not judged.
    #[serde(default)]
    pub providers: Vec<String>,
    /// At most one provider-scoped alert per provider in this window (`ALERT_FLAP_WINDOW_SECONDS`).
    #[serde(default)]
    pub window_ms: u64,
}
