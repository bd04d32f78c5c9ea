//! The outbound port: signed, SSRF-guarded POSTs to addresses callers and operators gave us — a
//! finished job's webhook and callbacks, and alerts to the configured sinks. The engine asks for a
//! delivery attempt or an alert; the adapter (`adapters/outbound`) builds the body, signs it, checks and
//! pins the address, posts, and scrubs what the receiver said.

use async_trait::async_trait;

use crate::domain::alert::Alert;
use crate::domain::job::Job;
use crate::domain::targets::{AttemptReport, TargetKind};

/// What one POST of an alert came to. Reasons are scrubbed and never hold the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertSent {
    Delivered,
    /// Worth retrying (no answer, a non-2xx answer).
    Failed(String),
    /// The guard refused the address at send time: retrying cannot help.
    Refused(String),
}

#[async_trait]
pub trait Outbound: Send + Sync {
    /// Whether `owner` may be told at `url` by a target of `kind`: the address is safe on its face and,
    /// for a webhook, the owner has a secret to sign it with. The reason when not.
    fn admits(&self, owner: &str, kind: TargetKind, url: &str) -> Result<(), String>;

    /// One attempt of delivery `index` of the finished `job`, signed with its owner's secrets.
    async fn deliver(&self, job: &Job, index: usize, now_ms: u64) -> AttemptReport;

    /// The configured alert sinks' kinds (`discord`, `slack`, `webhook`), in order.
    fn sinks(&self) -> &[&'static str];

    /// One POST of `alert` to sink number `sink` (an index into [`Outbound::sinks`]).
    async fn alert(&self, alert: &Alert, sink: usize, now_ms: u64) -> AlertSent;
}
