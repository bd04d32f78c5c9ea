//! stepper's library: the domain, the step engine, the ports and their adapters.
//!
//! Everything the four Lambda functions and `stepper-local` share lives here; see
//! `docs/architecture.md` for one job's trip through these modules.

pub mod api;
pub mod config;
pub mod delivery;
pub mod engine;
pub mod job;
pub mod llm;
pub mod output;
pub mod ports;
pub mod presets;
pub mod providers;
pub mod quota;
pub mod queue;
pub mod service;
pub mod store;
pub mod telemetry;
