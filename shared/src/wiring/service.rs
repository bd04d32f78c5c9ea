//! Wiring: builds the service once per process (or Lambda container) from the configuration.

use std::sync::Arc;
use std::time::Duration;

use crate::adapters::outbound::GuardedPosts;
use crate::adapters::providers::spec;
use crate::adapters::store::memory::MemoryStore;
use crate::adapters::store::metered::MeteredStore;
use crate::adapters::store::upstash::{UpstashClient, UpstashStore};
use crate::adapters::store::watch::WatchedStore;
use crate::app::auth::ApiKeys;
use crate::app::{HealthCache, Jobs};
use crate::domain::error_class::ErrorClass;
use crate::domain::llm::CompletionRequest;
use crate::domain::outcome::{CallReport, Failure, RateSignals};
use crate::engine::settings::Settings;
use crate::engine::{Engine, ProviderSlot};
use crate::ports::outbound::Outbound;
use crate::ports::{Clock, Provider, Queue, Store, SystemClock};
use crate::wiring::config::Config;

/// Everything a request or a step needs, built once.
pub struct Service {
    pub engine: Engine,
    pub(crate) keys: ApiKeys,
    /// `GET /health`'s cached store check.
    pub(crate) health: HealthCache,
    /// Set once the process was told to stop: `GET /ready` answers 503 while in-flight work finishes.
    pub(crate) draining: std::sync::atomic::AtomicBool,
}

impl Service {
    /// From now on `GET /ready` answers 503 `draining` (a load balancer stops sending work here); every
    /// other route keeps serving. A Lambda function never drains.
    pub fn drain(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The use cases the HTTP handlers call, over this service's engine.
    pub(crate) fn jobs(&self) -> Jobs<'_> {
        Jobs::new(&self.engine, &self.health)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("HTTP client: {0}")]
    Http(String),
    #[error("UPSTASH_REDIS_REST_URL is not set: a Lambda function keeps its jobs in Upstash Redis")]
    NoStore,
}

/// Which store backs the service, for the start-up message.
pub fn store_name(config: &Config) -> &'static str {
    if config.upstash.is_some() {
        "Upstash Redis (UPSTASH_REDIS_REST_URL)"
    } else {
        "in-memory (set UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN for Upstash)"
    }
}

pub fn build(config: &Config, queue: Arc<dyn Queue>) -> Result<Service, BuildError> {
    build_with_clock(config, queue, Arc::new(SystemClock))
}

pub fn build_with_clock(config: &Config, queue: Arc<dyn Queue>, clock: Arc<dyn Clock>) -> Result<Service, BuildError> {
    let store: Arc<dyn Store> = match &config.upstash {
        Some(upstash) => upstash_store(upstash, clock.clone())?,
        None => Arc::new(MemoryStore::new(clock.clone())),
    };
    build_on::<true>(config, store, queue, clock)
}

/// The Lambda functions' service: Upstash only. `crate::wiring::lambda::init` has already refused a
/// configuration without it; building through here rather than [`build`] keeps the in-memory store
/// (which a function never uses) out of the function's binary.
///
/// `CALLS_PROVIDERS`: whether the function calls providers (step). The HTTP functions (submit, poll,
/// purge) never do: their routes read a provider's name and limits, never call it, so their slots
/// hold [`NotCalled`] and the provider adapters (their wire types, parsing and classification) are not
/// linked into them either. A const parameter, so that the choice is made at compile time.
pub fn build_upstash<const CALLS_PROVIDERS: bool>(
    config: &Config,
    queue: Arc<dyn Queue>,
) -> Result<Service, BuildError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let upstash = config.upstash.as_ref().ok_or(BuildError::NoStore)?;
    build_on::<CALLS_PROVIDERS>(config, upstash_store(upstash, clock.clone())?, queue, clock)
}

/// A provider slot's adapter in a function that never calls providers (see [`build_upstash`]). Were
/// it ever called, the attempt fails as a transient one (the job fails over, as for a 5xx).
pub(crate) struct NotCalled(pub String);

#[async_trait::async_trait]
impl Provider for NotCalled {
    fn name(&self) -> &str {
        &self.0
    }
    async fn call(&self, _request: &CompletionRequest) -> CallReport {
        CallReport {
            result: Err(Failure::new(
                ErrorClass::Overloaded,
                "this function does not call providers",
            )),
            http_status: None,
            duration_ms: 0,
            rate: RateSignals::default(),
        }
    }
}

/// The webhooks', callbacks' and alerts' POSTs as `settings` configure them.
pub fn outbound(settings: &Settings) -> Arc<dyn Outbound> {
    Arc::new(GuardedPosts::new(
        settings.url_guard.clone(),
        settings.scrubber.clone(),
        settings.webhook_secrets.clone(),
        settings.webhook_legacy_bearer,
        &settings.alerts,
    ))
}

fn upstash_store(
    upstash: &crate::wiring::config::UpstashConfig,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Store>, BuildError> {
    let client = UpstashClient::new(
        &upstash.url,
        upstash.token.clone(),
        Duration::from_millis(upstash.timeout_ms),
    )
    .map_err(|e| BuildError::Http(e.to_string()))?;
    Ok(Arc::new(UpstashStore::new(client, clock)))
}

fn build_on<const CALLS_PROVIDERS: bool>(
    config: &Config,
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    clock: Arc<dyn Clock>,
) -> Result<Service, BuildError> {
    // One pooled client for every provider: connections are reused across steps of a warm container.
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| BuildError::Http(e.to_string()))?;
    let store: Arc<dyn Store> = Arc::new(MeteredStore::new(store));
    let alerts = &config.settings.alerts;
    let store: Arc<dyn Store> = Arc::new(WatchedStore::new(
        store,
        queue.clone(),
        clock.clone(),
        alerts.sinks.len(),
        Duration::from_millis(alerts.store_down_ms),
    ));
    let providers = config
        .providers
        .iter()
        .map(|spec| ProviderSlot {
            name: spec.name.clone(),
            limits: spec.limits,
            small_context: spec.small_context,
            timeout_ms: spec.timeout_ms,
            provider: if CALLS_PROVIDERS {
                spec::build(
                    spec,
                    http.clone(),
                    &config.settings.url_guard,
                    &config.settings.scrubber,
                )
            } else {
                Arc::new(NotCalled(spec.name.clone())) as Arc<dyn Provider>
            },
        })
        .collect();
    let engine = Engine::new(
        store,
        queue,
        clock,
        outbound(&config.settings),
        providers,
        config.settings.clone(),
    );
    Ok(Service {
        engine,
        keys: config.keys.clone(),
        health: Default::default(),
        draining: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::adapters::queue::refusing::RefusingQueue;
    use crate::domain::llm::ChatMessage;

    fn config(vars: &[(&str, &str)]) -> Config {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(&|name| vars.get(name).cloned()).unwrap()
    }

    #[test]
    fn a_function_service_needs_upstash() {
        assert!(matches!(
            build_upstash::<true>(&config(&[]), Arc::new(RefusingQueue)),
            Err(BuildError::NoStore)
        ));
    }

    #[tokio::test]
    async fn the_http_functions_keep_every_provider_slot_but_never_call_one() {
        let config = config(&[
            ("UPSTASH_REDIS_REST_URL", "https://example.upstash.io"),
            ("UPSTASH_REDIS_REST_TOKEN", "t"),
            ("GEMINI_API_KEY", "g"),
            ("ANTHROPIC_API_KEY", "a"),
        ]);
        assert!(!config.providers.is_empty());
        let names = |service: &Service| -> Vec<(String, String)> {
            let slots = service.engine.providers();
            slots
                .iter()
                .map(|s| (s.name.clone(), s.provider.name().to_string()))
                .collect()
        };
        let stepping = build_upstash::<true>(&config, Arc::new(RefusingQueue)).unwrap();
        let http = build_upstash::<false>(&config, Arc::new(RefusingQueue)).unwrap();
        assert_eq!(
            names(&http),
            names(&stepping),
            "the same slots, in the same order, under the same names"
        );
        let request = CompletionRequest {
            messages: vec![ChatMessage::user("x")],
            format: crate::domain::llm::ResponseFormat::Text,
            max_tokens: 16,
            temperature: None,
        };
        let report = http.engine.providers()[0].provider.call(&request).await;
        assert_eq!(report.result.unwrap_err().class, ErrorClass::Overloaded);
        assert_eq!(report.http_status, None);
    }
}
