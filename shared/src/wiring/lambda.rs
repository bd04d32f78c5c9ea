//! Start-up of the four Lambda functions: what they cannot run without is checked once, at init.
//!
//! `stepper-local` falls back to an in-memory store; a Lambda function must not: each container would
//! keep its own jobs, so submit would answer 202 and poll 404 with nothing in the logs to say why.
//!
//! Metrics (`crate::ports::metrics`) go out as CloudWatch Embedded Metric Format lines on stdout at the end of
//! each invocation: `buffered` flushes after each response, `flushed` after each step invocation.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::sync::OnceLock;

use axum::body::Body;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use metrics_cloudwatch_embedded::{Builder, Collector};

use crate::wiring::config::{Config, ConfigError};

/// What a function needs besides its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// poll, purge: the store only.
    Store,
    /// submit, step: the store and the step queue they send to.
    StoreAndQueue,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum InitError {
    #[error("{0} is not set: a Lambda function keeps its jobs in Upstash Redis (UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN), never in memory")]
    NoStore(&'static str),
    #[error("STEP_QUEUE_URL is not set: this function sends step messages to that SQS queue")]
    NoQueue,
    #[error("STEPPER_API_KEYS is not set: a Lambda function serving the API does not start open (anyone could submit, read and purge jobs); set STEPPER_API_KEYS=owner=key, or STEPPER_ALLOW_OPEN=true to run open on purpose")]
    Open,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl InitError {
    /// The variable to set or fix.
    pub(crate) fn variable(&self) -> String {
        match self {
            InitError::NoStore(name) => (*name).to_string(),
            InitError::NoQueue => "STEP_QUEUE_URL".to_string(),
            InitError::Open => "STEPPER_API_KEYS".to_string(),
            InitError::Config(ConfigError::Invalid { name, .. }) => (*name).to_string(),
            InitError::Config(ConfigError::Keys(_)) => "STEPPER_API_KEYS".to_string(),
            InitError::Config(ConfigError::File { .. } | ConfigError::Provider { .. }) => "STEPPER_CONFIG".to_string(),
        }
    }
}

/// The configuration of a Lambda function, refused when its store or queue is missing.
pub(crate) fn config_from_lookup(env: &dyn Fn(&str) -> Option<String>, needs: Needs) -> Result<Config, InitError> {
    let config = Config::from_lookup(env)?;
    if config.upstash.is_none() {
        // A token without a URL is as wrong as nothing at all; name the one that is missing.
        return Err(InitError::NoStore("UPSTASH_REDIS_REST_URL"));
    }
    if needs == Needs::StoreAndQueue && config.step_queue_url.is_none() {
        return Err(InitError::NoQueue);
    }
    Ok(config)
}

/// The configuration of a function that serves the API (submit, poll, purge): as [`config_from_lookup`],
/// and refused without API keys unless `STEPPER_ALLOW_OPEN=true` says running open is meant.
/// (`stepper-local` runs open on loopback; a deployed function is reachable by anyone who finds its URL.)
pub(crate) fn api_config_from_lookup(env: &dyn Fn(&str) -> Option<String>, needs: Needs) -> Result<Config, InitError> {
    let config = config_from_lookup(env, needs)?;
    if config.keys.is_open() && !allow_open(env)? {
        return Err(InitError::Open);
    }
    Ok(config)
}

/// `STEPPER_ALLOW_OPEN`: `true` (or `1`, `yes`) lets an API function start without keys.
fn allow_open(env: &dyn Fn(&str) -> Option<String>) -> Result<bool, InitError> {
    Ok(crate::wiring::config::env::Env::new(env).flag("STEPPER_ALLOW_OPEN")?)
}

/// Logging set up, then the configuration: on an error, one log line naming the variable and exit
/// status 1 (Lambda reports `Runtime.ExitError` at init; nothing is served half-configured).
pub fn init(function: &'static str, needs: Needs) -> Config {
    init_with(function, needs, config_from_lookup)
}

/// [`init`] for a function that serves the API: it also refuses to start open (see
/// [`api_config_from_lookup`]); when `STEPPER_ALLOW_OPEN=true` lets it, one warning says so.
pub fn init_api(function: &'static str, needs: Needs) -> Config {
    let config = init_with(function, needs, api_config_from_lookup);
    if config.keys.is_open() {
        tracing::warn!(
            function,
            variable = "STEPPER_ALLOW_OPEN",
            "running OPEN on purpose: no STEPPER_API_KEYS, so any caller can submit, read and purge jobs"
        );
    }
    config
}

type Loader = fn(&dyn Fn(&str) -> Option<String>, Needs) -> Result<Config, InitError>;

fn init_with(function: &'static str, needs: Needs, load: Loader) -> Config {
    crate::wiring::telemetry::init();
    init_metrics(function);
    match load(&crate::wiring::config::env::process, needs) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(function, variable = %e.variable(), "cannot start: {e}");
            std::process::exit(1);
        }
    }
}

/// The CloudWatch namespace of every metric.
pub(crate) const METRICS_NAMESPACE: &str = "stepper";

static EMF: OnceLock<&'static Collector> = OnceLock::new();

/// Installs the CloudWatch Embedded Metric Format recorder, once per process: every metric of
/// `crate::ports::metrics` is then kept until the end of the invocation and printed as EMF log lines (no
/// API call: CloudWatch Logs extracts them). Each line carries the dimension `function`.
pub fn init_metrics(function: &'static str) {
    if EMF.get().is_some() {
        return;
    }
    let built = Builder::new()
        .cloudwatch_namespace(METRICS_NAMESPACE)
        .with_dimension("function", function)
        .init();
    match built {
        Ok(collector) => {
            let _ = EMF.set(collector);
            crate::ports::metrics::describe();
        }
        // Another recorder is installed (a test process): its metrics stay there.
        Err(e) => tracing::warn!(error = %e, "EMF metrics not installed"),
    }
}

/// Writes what was recorded since the last flush: one EMF line per label set, nothing when nothing
/// was recorded.
pub fn flush_metrics(writer: impl Write) {
    if let Some(collector) = EMF.get() {
        if let Err(e) = collector.flush(writer) {
            tracing::warn!(error = %e, "could not write the EMF metrics");
        }
    }
}

/// The SQS step queue of `submit` and `step`, from `STEP_QUEUE_URL` and the AWS variables Lambda sets;
/// when one is missing, one log line naming it and exit status 1, as [`init`] does.
#[cfg(feature = "sqs")]
pub fn step_queue(function: &'static str, config: &Config) -> crate::adapters::queue::sqs::SqsQueue {
    let queue_url = config.step_queue_url.clone().unwrap_or_default();
    let clock = std::sync::Arc::new(crate::ports::SystemClock);
    let sqs = crate::adapters::queue::sqs::SqsConfig::from_lookup(&crate::wiring::config::env::process);
    match sqs.and_then(|sqs| crate::adapters::queue::sqs::SqsQueue::new(sqs, queue_url, clock)) {
        Ok(queue) => queue,
        Err(e) => {
            tracing::error!(function, variable = %e.variable(), "cannot start: {e}");
            std::process::exit(1);
        }
    }
}

/// Runs one invocation, then prints its metrics to stdout (held locked, so log lines of other
/// threads cannot cut into them).
pub async fn flushed<F: Future>(invocation: F) -> F::Output {
    let output = invocation.await;
    flush_metrics(std::io::stdout().lock());
    output
}

/// A router whose responses are buffered into a `Sync` body, as `lambda_http::run_concurrent` needs
/// (axum's body is not `Sync`; API Gateway gets the whole body at once anyway).
pub(crate) type Buffered = tower::util::AndThen<
    axum::Router,
    fn(Response<Body>) -> BoxFuture<'static, Result<Response<Full<Bytes>>, Infallible>>,
>;

pub fn buffered(router: axum::Router) -> Buffered {
    <axum::Router as tower::ServiceExt<http::Request<Body>>>::and_then(router, buffer as fn(_) -> _)
}

fn buffer(response: Response<Body>) -> BoxFuture<'static, Result<Response<Full<Bytes>>, Infallible>> {
    Box::pin(async move {
        let (parts, body) = response.into_parts();
        let response = match body.collect().await {
            Ok(collected) => Response::from_parts(parts, Full::new(collected.to_bytes())),
            Err(e) => {
                tracing::error!(error = %e, "a response body could not be read");
                let mut failed = Response::new(Full::new(Bytes::new()));
                *failed.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                failed
            }
        };
        // The invocation's work is done: its metrics go out with it.
        flush_metrics(std::io::stdout().lock());
        Ok(response)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_store_and_the_queue_are_required() {
        let none = lookup(&[]);
        let err = config_from_lookup(&none, Needs::Store).unwrap_err();
        assert_eq!(err.variable(), "UPSTASH_REDIS_REST_URL");

        let token_only = lookup(&[("UPSTASH_REDIS_REST_TOKEN", "t")]);
        let err = config_from_lookup(&token_only, Needs::Store).unwrap_err();
        assert_eq!(err.variable(), "UPSTASH_REDIS_REST_URL");

        let url_only = lookup(&[("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:1")]);
        let err = config_from_lookup(&url_only, Needs::Store).unwrap_err();
        assert_eq!(err.variable(), "UPSTASH_REDIS_REST_TOKEN");

        let store = lookup(&[
            ("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:1"),
            ("UPSTASH_REDIS_REST_TOKEN", "t"),
        ]);
        assert!(config_from_lookup(&store, Needs::Store).is_ok());
        let err = config_from_lookup(&store, Needs::StoreAndQueue).unwrap_err();
        assert_eq!(err.variable(), "STEP_QUEUE_URL");

        let both = lookup(&[
            ("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:1"),
            ("UPSTASH_REDIS_REST_TOKEN", "t"),
            ("STEP_QUEUE_URL", "http://127.0.0.1:2/000000000000/steps"),
        ]);
        let config = config_from_lookup(&both, Needs::StoreAndQueue).unwrap();
        assert_eq!(
            config.step_queue_url.as_deref(),
            Some("http://127.0.0.1:2/000000000000/steps")
        );
    }

    const STORE: [(&str, &str); 2] = [
        ("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:1"),
        ("UPSTASH_REDIS_REST_TOKEN", "t"),
    ];

    #[test]
    fn an_api_function_refuses_to_start_open_unless_told_to() {
        let open = lookup(&STORE);
        let err = api_config_from_lookup(&open, Needs::Store).unwrap_err();
        assert_eq!(err.variable(), "STEPPER_API_KEYS");
        assert!(err.to_string().contains("STEPPER_ALLOW_OPEN=true"), "{err}");
        // The worker (config_from_lookup) serves no API and needs no keys.
        assert!(config_from_lookup(&open, Needs::Store).is_ok());

        let keyed = lookup(&[STORE[0], STORE[1], ("STEPPER_API_KEYS", "ops=k1")]);
        assert!(!api_config_from_lookup(&keyed, Needs::Store).unwrap().keys.is_open());

        for yes in ["true", "TRUE", "1", "yes"] {
            let allowed = lookup(&[STORE[0], STORE[1], ("STEPPER_ALLOW_OPEN", yes)]);
            assert!(api_config_from_lookup(&allowed, Needs::Store).unwrap().keys.is_open());
        }
        let no = lookup(&[STORE[0], STORE[1], ("STEPPER_ALLOW_OPEN", "false")]);
        assert_eq!(
            api_config_from_lookup(&no, Needs::Store).unwrap_err().variable(),
            "STEPPER_API_KEYS"
        );
        let typo = lookup(&[STORE[0], STORE[1], ("STEPPER_ALLOW_OPEN", "ture")]);
        assert_eq!(
            api_config_from_lookup(&typo, Needs::Store).unwrap_err().variable(),
            "STEPPER_ALLOW_OPEN"
        );
    }
}
