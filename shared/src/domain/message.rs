//! The messages a queue carries between steps: every unit of work the engine hands to itself later
//! (a job's next step, a sweep round, one alert to one sink). Serialized as the queue's message body
//! (SQS), so its serde form is a contract between deployed versions.

use serde::{Deserialize, Serialize};

use crate::domain::alert::Alert;
use crate::domain::job::StepRef;

/// The longest delay a queue gives a message (SQS's limit; the local queue keeps to it too).
pub(crate) const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(900);

/// What a step message tells the claim about its job, for the reservation (`quota::reserve`): its
/// providers in the order its next decision ranks them, when one of them has a shared request limit, and
/// its tenant (whose turns are booked when the providers are out of the minute's requests). Both absent
/// otherwise, and from a sweep's re-drive (the engine then reserves in configuration order, for the
/// owner).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hint {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// A queued message. Every message is safe to deliver twice, late or out of order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Run one step of a job. `not_before_ms` chains waits longer than a queue's maximum delay.
    Step {
        #[serde(flatten)]
        step: StepRef,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        not_before_ms: Option<u64>,
        /// What the claim reserves for the job (absent from a sweep's re-drive).
        #[serde(flatten)]
        hint: Hint,
    },
    /// Sweep the due-index (`engine::sweep`): re-queue what is due or stranded, then send itself on
    /// while the index holds jobs. `token` and `round` name the live sweeper's next message; any
    /// other (another chain, a duplicate delivery) stops at once.
    Sweep { token: String, round: u64 },
    /// Send one alert to one configured sink (`engine::alerts`): `sink` indexes the configured
    /// sinks (the URL, which holds the sink's token, never travels in a message); `attempt` counts
    /// from 1 along `ALERT_RETRY_SCHEDULE`.
    Alert { alert: Alert, sink: usize, attempt: u32 },
}
