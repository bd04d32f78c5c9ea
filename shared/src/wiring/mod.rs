//! The edge: reading the environment ([`config`]), building a service from it ([`service`]), the
//! Lambda runtime's start ([`lambda`]), logs ([`telemetry`]) and `stepper-local`'s worker pool
//! ([`workers`]).

pub mod config;
pub mod lambda;
pub mod service;
pub mod telemetry;
pub mod workers;
