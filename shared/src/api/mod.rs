//! The HTTP face: one set of routes for every entry point (the three HTTP Lambdas and `stepper-local`).

pub mod caps;
mod dashboard;
pub mod endpoints;
pub mod errors;
pub mod limits;
pub mod openapi;
pub mod routes;
mod views;

pub use endpoints::{Endpoint, Function};
pub use errors::ApiError;
pub use routes::{poll_routes, purge_routes, router, submit_routes};
