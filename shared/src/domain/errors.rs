//! What can go wrong behind the `Store` and `Queue` ports, in words every adapter shares: the engine
//! and the routes match on these without knowing which adapter answered.

/// A store call that did not happen (or whose answer cannot be read).
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

/// A message that was not queued.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue unavailable: {0}")]
    Unavailable(String),
}
