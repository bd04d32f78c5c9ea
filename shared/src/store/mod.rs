//! Store adapters: in-memory (the embedded default) and Upstash Redis over REST (production).

pub mod memory;
pub mod upstash;

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
}
