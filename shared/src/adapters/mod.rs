//! The adapters behind the ports: stores, queues, providers, and the outbound signed, guarded POSTs
//! (webhooks and alert sinks).

pub mod outbound;
pub mod providers;
pub mod queue;
pub mod store;
