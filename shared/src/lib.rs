//! stepper's library. Each layer is a folder, and imports point down:
//!
//! - [`api`]: the HTTP face (routes, views, errors, the OpenAPI document, the dashboard);
//! - [`wiring`]: the edge that reads the environment and builds the service (config, service, Lambda
//!   start, logs, `stepper-local`'s worker pool);
//! - [`app`]: the use cases, one call each (submit, poll, purge, redeliver, overviews) and who is
//!   calling ([`app::auth`]);
//! - [`engine`]: the step engine (the pure decision and ETA, one step through the ports, sweeps,
//!   deliveries, alerts);
//! - [`adapters`]: what stands behind the ports (stores, queues, providers, outbound POSTs);
//! - [`ports`]: the small traits every outside call goes through, their errors, and the metrics;
//! - [`domain`]: the words (jobs, provider calls, quota, incidents, the budget, request presets),
//!   importing nothing above them.
//!
//! `docs/architecture.md` follows one job through these folders.

pub mod adapters;
pub mod api;
pub mod app;
pub mod domain;
pub mod engine;
pub mod ports;
pub mod wiring;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

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
