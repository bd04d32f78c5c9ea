//! Provider adapters: one module per wire format, the catalog of known providers, and the
//! classification of every answer into an [`ErrorClass`](crate::domain::error_class::ErrorClass). A provider
//! module knows its wire format and nothing about jobs; what a call produced is the domain's
//! ([`crate::domain::outcome`]), which the adapters build and the engine reads.

pub(crate) mod anthropic;
pub(crate) mod catalog;
pub mod classify;
pub(crate) mod cohere;
pub mod custom;
pub(crate) mod de;
pub(crate) mod gemini;
pub mod openai;
pub mod spec;
pub mod transport;
