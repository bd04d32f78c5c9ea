//! Store adapters: in-memory (the embedded default) and Upstash Redis over REST (production).

pub mod memory;
pub mod metered;
pub mod upstash;
pub mod watch;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store rejected our credentials")]
    Unauthorized,
    #[error("store command failed: {0}")]
    Command(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A write whose absolute expiry is already past by the store's own clock: the engine's clock is
    /// behind the store's (a manual clock anchored to a fixed date, a drifted host). Refused before
    /// anything is written, so the mistake shows instead of a job that vanishes as it is written.
    #[error("expiry in the past: {0}")]
    ExpiryInPast(String),
}
