//! The adapters behind the ports: stores, queues, providers, and the outbound signed, guarded POSTs
//! (webhooks and alert sinks).

pub mod outbound;
pub mod providers;
pub mod queue;
pub mod store;

/// An error and its sources on one line: reqwest's own message alone ("error sending request") hides
/// the cause.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
