//! The domain's words: what a job is and owes, what a provider call produced, providers' shared
//! state, incidents, the budget, the request presets. Nothing here imports a port or an adapter.

pub(crate) mod accept;
pub mod alert;
pub mod batch;
pub mod budget;
pub mod contract;
pub mod error_class;
pub(crate) mod incidents;
pub mod job;
pub mod llm;
pub mod message;
pub mod origins;
pub mod outcome;
pub(crate) mod presets;
pub mod quota;
pub(crate) mod scrub;
pub mod secret;
pub mod targets;
