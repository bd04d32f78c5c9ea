//! The step engine: [`decide`] is the pure decision, [`eta`] the pure estimate of when a job ends,
//! [`step`] runs one step through the ports.

mod alerts;
pub mod decide;
mod deliver;
pub(crate) mod eta;
pub mod settings;
pub mod step;
pub mod sweep;

pub use decide::{decide, Candidate, Decision, GiveUp, StepPolicy};
pub use step::{Engine, ProviderSlot, StepError, StepOutcome};
pub use sweep::due_at;
