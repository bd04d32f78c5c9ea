//! stepper's library: the domain, the step engine, the ports and their adapters.
//!
//! Everything the four Lambda functions and `stepper-local` share lives here; see
//! `docs/architecture.md` for one job's trip through these modules. Imports point down:
//!
//! - the edge: [`lambda`], [`service`] (wiring) and [`config`], the only reader of the environment;
//! - [`api`] (HTTP only), then [`engine`] (which receives its [`engine::settings::Settings`]);
//! - the ports ([`ports`]: the traits and their errors) and their adapters ([`store`], [`queue`],
//!   [`providers`], [`delivery`]'s POST, [`alert::sink`]);
//! - the domain's words, which import no adapter: [`job`], [`llm`], [`quota`] (shared provider
//!   state), [`error_class`], [`outcome`] (what a provider call produced), [`targets`] (the deliveries
//!   a finished job owes), [`message`] (what a queue carries), [`alert`] (incidents), [`budget`],
//!   and the leaves [`secret`] and [`scrub`].

pub mod alert;
pub mod api;
pub mod budget;
pub mod config;
pub mod delivery;
pub mod engine;
pub mod error_class;
pub mod job;
pub mod jobs;
pub mod lambda;
pub mod llm;
pub mod message;
pub mod metrics;
pub mod outcome;
pub mod output;
pub mod ports;
pub mod presets;
pub mod providers;
pub mod queue;
pub mod quota;
pub mod scrub;
pub mod secret;
pub mod service;
pub mod store;
pub mod targets;
pub mod telemetry;

#[cfg(test)]
mod test_support {
    use http::HeaderMap;

    /// A header map from name/value pairs.
    pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(http::HeaderName::try_from(*k).unwrap(), v.parse().unwrap());
        }
        h
    }
}
