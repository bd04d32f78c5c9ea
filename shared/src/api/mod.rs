//! The HTTP face: one set of routes for every entry point (the three HTTP Lambdas and `stepper-local`).

pub(crate) mod caps;
mod dashboard;
pub(crate) mod endpoints;
pub(crate) mod errors;
pub(crate) mod limits;
pub mod openapi;
pub mod routes;
mod views;

pub use endpoints::{Endpoint, Function};
pub use routes::{poll_routes, purge_routes, router, submit_routes};
