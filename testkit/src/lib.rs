//! Test support: faithful fake AI provider servers and launchers for the real local stack.

pub mod alert_sink;
pub mod billing;
pub mod fake;
pub mod instant;
pub mod lambda_init;
pub mod receiver;
pub mod router;
pub mod sqs;
pub mod stack;
