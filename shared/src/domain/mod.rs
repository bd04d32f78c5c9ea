//! The domain's words: what the engine, the ports and the adapters all speak of. Adapters (store,
//! queue, providers, delivery's POST) import these; nothing here imports an adapter, the engine, the
//! API or the configuration.
//!
//! - [`error_class`]: the classes of failure a provider answer falls into.
//! - [`outcome`]: what one provider call produced (answer or classified failure, retry hint, rate signals).
//! - [`delivery`]: who a finished job tells, how far each delivery got, and the retry schedule (pure).
//! - [`message`]: the messages a queue carries between steps.
//! - [`errors`]: the store's and the queue's errors, as the ports return them.
//!
//! Older domain modules stand beside this folder at the crate root and belong to the same layer: `job`
//! (the stored record), `llm` (the request a provider receives), `quota` (the shared provider state),
//! `budget` (what the deployment spends) and `alert` (incidents and alerts; its `rules` and `sink` sit
//! above `quota`).

pub mod delivery;
pub mod error_class;
pub mod errors;
pub mod message;
pub mod outcome;
