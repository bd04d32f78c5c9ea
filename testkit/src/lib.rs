//! Test support: faithful fake AI provider servers and launchers for the real local stack.

pub mod fake;
pub mod receiver;
pub mod stack;
