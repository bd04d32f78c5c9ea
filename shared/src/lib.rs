//! stepper's library: the domain, the step engine, the ports and their adapters.
//!
//! Everything the four Lambda functions and `stepper-local` share lives here; see
//! `docs/architecture.md` for one job's trip through these modules.

pub mod alert;
pub mod api;
pub mod budget;
pub mod config;
pub mod delivery;
pub mod engine;
pub mod job;
pub mod jobs;
pub mod lambda;
pub mod llm;
pub mod metrics;
pub mod output;
pub mod ports;
pub mod presets;
pub mod providers;
pub mod queue;
pub mod quota;
pub mod scrub;
pub mod service;
pub mod store;
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
