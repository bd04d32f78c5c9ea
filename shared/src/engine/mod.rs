//! The step engine: [`decide`] is the pure decision, [`eta`] the pure estimate of when a job ends,
//! [`step`] runs one step through the ports, `submit` creates a job and queues its first step, `delivery` the steps that send a finished job's webhook
//! and callbacks, [`sweep`] the due-index sweeps.
//!
//! One word per meaning: a job's next step is *enqueued* (`enqueue_next`: sent to the queue, or parked
//! in the due-index) and *received* by a worker (`receive_count`); a *delivery* is a webhook or callback
//! attempt; a poll *reads* a job (`Store::read`).

mod alerts;
pub(crate) mod decide;
mod delivery;
pub(crate) mod eta;
pub mod settings;
pub(crate) mod step;
mod submit;
pub(crate) mod sweep;

pub(crate) use delivery::{NothingToRedeliver, Redelivered};
pub use step::{Engine, ProviderSlot, StepError, StepOutcome};
