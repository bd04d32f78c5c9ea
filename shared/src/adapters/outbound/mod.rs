//! The outbound POSTs: webhook deliveries and alert sinks. Their building blocks: the body the caller can verify, its signatures, and the SSRF-guarded POST.
//!
//! - [`js_json`]: the body text, byte-identical to JavaScript's `JSON.stringify(JSON.parse(body))`.
//! - [`sign`]: the legacy `X-Webhook-*` headers and the Standard Webhooks `webhook-*` headers.
//! - [`guard`]: which URLs we may call, a resolve-once pinned target, and the POST itself.
//! - [`alert_sink`]: an alert's POST to a sink (Slack, Discord, JSON).
//! - [`send`]: the deliveries a finished job owes, one attempt at a time, and their retry schedule.

pub(crate) mod alert_sink;
pub mod guard;
pub mod js_json;
pub(crate) mod send;
pub mod sign;
