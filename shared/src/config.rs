//! Configuration: the environment and the `STEPPER_CONFIG` TOML file become one typed [`Config`],
//! validated once at start. The only module that reads the environment.

use std::path::Path;

use serde::Deserialize;

use std::collections::HashMap;

use crate::alert::sink::{self, AlertSettings};
use crate::api::auth::{ApiKeys, AuthError, OPEN_OWNER};
use crate::delivery::guard::UrlGuard;
use crate::delivery::sign::WebhookSecrets;
use crate::engine::StepPolicy;
use crate::ports::{Limits, RateLimit};
use crate::providers::spec::{self, ProviderEntry, ProviderSpec};
use crate::quota::BackoffPolicy;
use crate::scrub::Scrubber;
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}: {message}")]
    Invalid { name: &'static str, message: String },
    #[error("STEPPER_API_KEYS: {0}")]
    Keys(#[from] AuthError),
    #[error("STEPPER_CONFIG {path}: {message}")]
    File { path: String, message: String },
    #[error("provider {name}: {message}")]
    Provider { name: String, message: String },
}

/// Knobs of the job lifecycle (defaults in [`Settings::default`]).
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a finished result lives when nobody reads it (`RESULT_TTL_SECONDS`, 24 h: a caller that was
    /// down for an hour still finds its results; the first read shortens it to `delivery_grace_ms`).
    pub result_ttl_ms: u64,
    /// How long a failed job lives (`FAILURE_TTL_SECONDS`, 1 h).
    pub failure_ttl_ms: u64,
    /// A finished job's life after its first delivery (`DELIVERY_GRACE_SECONDS`, 10 min).
    pub delivery_grace_ms: u64,
    /// An unfinished job lives until its deadline plus this margin.
    pub unfinished_margin_ms: u64,
    /// Per-job deadline when the request names none (`JOB_DEADLINE_SECONDS`, 24 h).
    pub default_deadline_ms: u64,
    pub policy: StepPolicy,
    pub backoff: BackoffPolicy,
    /// Per-owner webhook secrets (`STEPPER_WEBHOOK_SECRETS`): current first, previous during a rotation.
    pub webhook_secrets: HashMap<String, WebhookSecrets>,
    /// Decides which callback URLs may be called (`CALLBACK_ALLOWED_ORIGINS` opens origins such as
    /// `http://127.0.0.1:8080` that the SSRF rules would refuse).
    pub url_guard: UrlGuard,
    /// The wait before each attempt of a `callbackUrl` webhook (`WEBHOOK_SCHEDULE`; Standard Webhooks'
    /// schedule by default). Empty when the older exponential knobs are set instead
    /// (`WEBHOOK_MAX_ATTEMPTS`, `WEBHOOK_BACKOFF_MS`: attempts and first back-off, doubling, at most 10 min).
    pub webhook_schedule_ms: Vec<u64>,
    pub webhook_max_attempts: u32,
    pub webhook_backoff_ms: u64,
    /// Per-owner request rate and jobs in flight, shared by every instance through the store.
    pub limits: OwnerLimits,
    /// Every configured secret, scrubbed from outside text (provider errors, receiver answers).
    pub scrubber: Scrubber,
    /// How long past its due time a step may go unclaimed before the sweeper sends it again
    /// (`SWEEP_GRACE_SECONDS`, 30 s): a lost message, a dead process, a lease that lapsed.
    pub sweep_grace_ms: u64,
    /// Waits longer than this are not queued: the job stays parked in the due-index and the sweeper
    /// wakes it (`PARK_AFTER_SECONDS`, 5 min).
    pub park_after_ms: u64,
    /// Where operational alerts go (`ALERT_WEBHOOK_URLS`, `DISCORD_WEBHOOK_URL`, `ALERT_*`).
    pub alerts: AlertSettings,
    /// How many steps run at once (`STEP_CONCURRENCY`, 5: the template's `StepMaxConcurrency`): the
    /// pace of the ETA (engine/eta.rs), never a limit. Lambda runs up to maximum concurrency × batch
    /// size; `stepper-local` runs 8 workers.
    pub step_concurrency: u32,
    /// The owner whose `GET /v1/budget` shows the whole deployment and every owner
    /// (`STEPPER_ADMIN_OWNER`; unset: every owner sees only its own).
    pub admin_owner: Option<String>,
}

/// A limit for every owner, and per-owner overrides (`None`: off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerOwner<T> {
    pub default: Option<T>,
    pub overrides: HashMap<String, Option<T>>,
}

impl<T: Copy> PerOwner<T> {
    pub fn get(&self, owner: &str) -> Option<T> {
        self.overrides.get(owner).copied().unwrap_or(self.default)
    }
}

/// `STEPPER_RATE_LIMIT(S)` and `STEPPER_MAX_IN_FLIGHT(_OVERRIDES)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerLimits {
    pub rate: PerOwner<RateLimit>,
    pub in_flight: PerOwner<u32>,
}

impl OwnerLimits {
    /// The limits one of `owner`'s requests is held to.
    pub fn for_owner(&self, owner: &str) -> Limits {
        Limits {
            rate: self.rate.get(owner),
            in_flight: self.in_flight.get(owner),
        }
    }
}

impl Default for OwnerLimits {
    /// 120 requests a minute (two a second: room to poll a few jobs each second) and 1,000 unfinished
    /// jobs per owner. Parked jobs cost bytes, not commands (issue 14): a job's record is at most
    /// ≈ 40 KB (a commit report at its full evidence budget, 24 KB of diff plus the 8 KB compact
    /// prompt, as JSON), so an owner at its cap holds ≤ 40 MB, under a sixth of Upstash free's 256 MB;
    /// a quota outage of a day fills no caller's cap, while a runaway client is still refused.
    fn default() -> Self {
        Self {
            rate: PerOwner {
                default: Some(RateLimit {
                    limit: 120,
                    window_ms: 60_000,
                }),
                overrides: HashMap::new(),
            },
            in_flight: PerOwner {
                default: Some(1_000),
                overrides: HashMap::new(),
            },
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            result_ttl_ms: 86_400_000,
            failure_ttl_ms: 3_600_000,
            delivery_grace_ms: 600_000,
            unfinished_margin_ms: 900_000,
            default_deadline_ms: 86_400_000,
            policy: StepPolicy::default(),
            backoff: BackoffPolicy::default(),
            webhook_secrets: HashMap::new(),
            // An empty allow-list has no origin to parse, so it cannot fail.
            url_guard: UrlGuard::new(&[]).expect("an empty allow-list is valid"),
            webhook_schedule_ms: crate::domain::delivery::STANDARD_SCHEDULE_MS.to_vec(),
            webhook_max_attempts: 5,
            webhook_backoff_ms: 2_000,
            limits: OwnerLimits::default(),
            scrubber: Scrubber::default(),
            sweep_grace_ms: 30_000,
            park_after_ms: 300_000,
            alerts: AlertSettings::default(),
            step_concurrency: 5,
            admin_owner: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstashConfig {
    pub url: String,
    pub token: Secret,
    /// Per-request timeout (`UPSTASH_TIMEOUT_MS`, 5 s): a slow store must not hold a request or a step.
    pub timeout_ms: u64,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    pub keys: ApiKeys,
    pub providers: Vec<ProviderSpec>,
    /// Where the providers came from, for the start-up message.
    pub providers_source: String,
    pub upstash: Option<UpstashConfig>,
    pub step_queue_url: Option<String>,
    pub port: u16,
    /// `stepper-local`'s HTTP server limits.
    pub http: HttpLimits,
}

/// What one connection to `stepper-local` may hold (`HTTP_*` variables). The Lambda functions sit behind
/// API Gateway and do not use these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request head not complete this long after the server started waiting for it is dropped
    /// (`HTTP_HEADER_TIMEOUT_SECONDS`, 10): slow headers, and connections that never send one.
    pub header_timeout_ms: u64,
    /// A request body not complete this long after its head arrived is refused and its connection
    /// closed (`HTTP_BODY_TIMEOUT_SECONDS`, 30): slow bodies.
    pub body_timeout_ms: u64,
    /// A connection on which nothing moves either way for this long is closed
    /// (`HTTP_IDLE_TIMEOUT_SECONDS`, 15): idle keep-alive connections, stalled transfers.
    pub idle_timeout_ms: u64,
    /// Connections served at once (`HTTP_MAX_CONNECTIONS`, 512); past it, new ones wait in the
    /// listen backlog, so the process keeps file descriptors for its own outbound calls.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 15_000,
            max_connections: 512,
        }
    }
}

fn http_limits(env: &dyn Fn(&str) -> Option<String>) -> Result<HttpLimits, ConfigError> {
    let d = HttpLimits::default();
    let count = |name: &'static str, default: usize| -> Result<usize, ConfigError> {
        match env(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .ok_or_else(|| ConfigError::Invalid {
                    name,
                    message: format!("expected 1 to 1000000, got {v:?}"),
                }),
        }
    };
    Ok(HttpLimits {
        header_timeout_ms: seconds(env, "HTTP_HEADER_TIMEOUT_SECONDS", d.header_timeout_ms)?,
        body_timeout_ms: seconds(env, "HTTP_BODY_TIMEOUT_SECONDS", d.body_timeout_ms)?,
        idle_timeout_ms: seconds(env, "HTTP_IDLE_TIMEOUT_SECONDS", d.idle_timeout_ms)?,
        max_connections: count("HTTP_MAX_CONNECTIONS", d.max_connections)?,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    providers: Vec<ProviderEntry>,
}

/// `STEPPER_ADMIN_OWNER`: an owner some API key belongs to (`public` when no keys are configured).
fn admin_owner(env: &dyn Fn(&str) -> Option<String>, keys: &ApiKeys) -> Result<Option<String>, ConfigError> {
    let Some(owner) = env("STEPPER_ADMIN_OWNER").map(|o| o.trim().to_string()) else {
        return Ok(None);
    };
    let known = if keys.is_open() {
        owner == OPEN_OWNER
    } else {
        keys.owners().any(|o| o == owner)
    };
    if !known {
        return Err(ConfigError::Invalid {
            name: "STEPPER_ADMIN_OWNER",
            message: format!("no API key belongs to an owner {owner:?} (STEPPER_API_KEYS)"),
        });
    }
    Ok(Some(owner))
}

fn seconds(env: &dyn Fn(&str) -> Option<String>, name: &'static str, default_ms: u64) -> Result<u64, ConfigError> {
    match env(name) {
        None => Ok(default_ms),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(s) if s > 0 => Ok(s * 1000),
            _ => Err(ConfigError::Invalid {
                name,
                message: format!("expected a positive number of seconds, got {v:?}"),
            }),
        },
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Builds the configuration from any variable lookup (tests pass a map).
    pub fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let defaults = Settings::default();
        let mut settings = Settings {
            result_ttl_ms: seconds(env, "RESULT_TTL_SECONDS", defaults.result_ttl_ms)?,
            failure_ttl_ms: seconds(env, "FAILURE_TTL_SECONDS", defaults.failure_ttl_ms)?,
            delivery_grace_ms: seconds(env, "DELIVERY_GRACE_SECONDS", defaults.delivery_grace_ms)?,
            default_deadline_ms: seconds(env, "JOB_DEADLINE_SECONDS", defaults.default_deadline_ms)?,
            sweep_grace_ms: seconds(env, "SWEEP_GRACE_SECONDS", defaults.sweep_grace_ms)?,
            park_after_ms: seconds(env, "PARK_AFTER_SECONDS", defaults.park_after_ms)?,
            ..defaults
        };
        if let Some(v) = env("MAX_FAILURES_PER_PROVIDER") {
            settings.policy.max_failures_per_provider =
                v.trim()
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ConfigError::Invalid {
                        name: "MAX_FAILURES_PER_PROVIDER",
                        message: format!("expected a positive integer, got {v:?}"),
                    })?;
        }
        if let Some(v) = env("STEP_CONCURRENCY") {
            settings.step_concurrency =
                v.trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=100_000).contains(n))
                    .ok_or_else(|| ConfigError::Invalid {
                        name: "STEP_CONCURRENCY",
                        message: format!("expected 1 to 100000, got {v:?}"),
                    })?;
        }
        if let Some(v) = env("WEBHOOK_MAX_ATTEMPTS") {
            settings.webhook_max_attempts =
                v.trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=20).contains(n))
                    .ok_or_else(|| ConfigError::Invalid {
                        name: "WEBHOOK_MAX_ATTEMPTS",
                        message: format!("expected 1 to 20, got {v:?}"),
                    })?;
        }
        if let Some(v) = env("WEBHOOK_BACKOFF_MS") {
            settings.webhook_backoff_ms = v
                .trim()
                .parse()
                .ok()
                .filter(|n| (100..=600_000).contains(n))
                .ok_or_else(|| ConfigError::Invalid {
                    name: "WEBHOOK_BACKOFF_MS",
                    message: format!("expected 100 to 600000, got {v:?}"),
                })?;
        }
        let exponential = env("WEBHOOK_MAX_ATTEMPTS").is_some() || env("WEBHOOK_BACKOFF_MS").is_some();
        match env("WEBHOOK_SCHEDULE") {
            Some(_) if exponential => {
                return Err(ConfigError::Invalid {
                    name: "WEBHOOK_SCHEDULE",
                    message: "set either WEBHOOK_SCHEDULE or WEBHOOK_MAX_ATTEMPTS/WEBHOOK_BACKOFF_MS, not both".into(),
                })
            }
            Some(v) => {
                settings.webhook_schedule_ms = schedule(&v).map_err(|message| ConfigError::Invalid {
                    name: "WEBHOOK_SCHEDULE",
                    message,
                })?
            }
            None if exponential => settings.webhook_schedule_ms = Vec::new(),
            None => {}
        }
        settings.webhook_secrets = webhook_secrets(env("STEPPER_WEBHOOK_SECRETS").as_deref().unwrap_or(""))?;
        let origins: Vec<String> = env("CALLBACK_ALLOWED_ORIGINS")
            .unwrap_or_default()
            .split(',')
            .map(|o| o.trim().to_string())
            .filter(|o| !o.is_empty())
            .collect();
        settings.url_guard = UrlGuard::new(&origins).map_err(|e| ConfigError::Invalid {
            name: "CALLBACK_ALLOWED_ORIGINS",
            message: e.to_string(),
        })?;
        settings.alerts = alert_settings(env, &settings.url_guard)?;
        let header = env("API_KEY_HEADER").unwrap_or_else(|| "x-api-key".to_string());
        let keys = ApiKeys::parse(env("STEPPER_API_KEYS").as_deref().unwrap_or(""), &header)?;
        settings.limits = owner_limits(env, &keys, settings.limits)?;
        settings.admin_owner = admin_owner(env, &keys)?;
        let (providers, providers_source) = match env("STEPPER_CONFIG") {
            Some(path) => (
                load_file(Path::new(&path), env, &settings.url_guard)?,
                format!("the file {path} (STEPPER_CONFIG)"),
            ),
            None => (
                spec::from_catalog_env(env),
                "provider key variables in the environment".to_string(),
            ),
        };
        let upstash = match (env("UPSTASH_REDIS_REST_URL"), env("UPSTASH_REDIS_REST_TOKEN")) {
            (Some(url), Some(token)) => Some(UpstashConfig {
                url: url.trim_end_matches('/').to_string(),
                token: Secret::new(token),
                timeout_ms: match env("UPSTASH_TIMEOUT_MS") {
                    None => 5_000,
                    Some(v) => v
                        .trim()
                        .parse()
                        .ok()
                        .filter(|ms| *ms > 0)
                        .ok_or_else(|| ConfigError::Invalid {
                            name: "UPSTASH_TIMEOUT_MS",
                            message: format!("expected a positive number of milliseconds, got {v:?}"),
                        })?,
                },
            }),
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    name: "UPSTASH_REDIS_REST_TOKEN",
                    message: "must be set when UPSTASH_REDIS_REST_URL is".into(),
                })
            }
            _ => None,
        };
        settings.scrubber = scrubber(env, &providers, upstash.as_ref());
        let port = match env("PORT") {
            None => 3005,
            Some(v) => v.trim().parse().map_err(|_| ConfigError::Invalid {
                name: "PORT",
                message: format!("not a port: {v:?}"),
            })?,
        };
        Ok(Self {
            settings,
            keys,
            providers,
            providers_source,
            upstash,
            step_queue_url: env("STEP_QUEUE_URL"),
            port,
            http: http_limits(env)?,
        })
    }
}

/// Every secret the configuration holds: API keys given in clear, provider keys, webhook secrets (whole
/// and without their `whsec_` prefix), the Upstash token.
fn scrubber(
    env: &dyn Fn(&str) -> Option<String>,
    providers: &[ProviderSpec],
    upstash: Option<&UpstashConfig>,
) -> Scrubber {
    let values = |name: &str| -> Vec<String> {
        env(name)
            .unwrap_or_default()
            .split(',')
            .filter_map(|entry| entry.split_once('=').map(|(_, v)| v.trim().to_string()))
            .collect()
    };
    let mut secrets: Vec<String> = values("STEPPER_API_KEYS")
        .into_iter()
        .filter(|key| !key.starts_with("sha256:"))
        .collect();
    for secret in values("STEPPER_WEBHOOK_SECRETS") {
        if let Some(bare) = secret.strip_prefix("whsec_") {
            secrets.push(bare.to_string());
        }
        secrets.push(secret);
    }
    secrets.extend(
        providers
            .iter()
            .filter_map(|p| p.api_key.as_ref().map(|k| k.expose().to_string())),
    );
    secrets.extend(upstash.map(|u| u.token.expose().to_string()));
    if let Some(secret) = env("ALERT_WEBHOOK_SECRET") {
        if let Some(bare) = secret.trim().strip_prefix("whsec_") {
            secrets.push(bare.to_string());
        }
        secrets.push(secret.trim().to_string());
    }
    Scrubber::new(secrets)
}

/// `ALERT_WEBHOOK_URLS` (comma-separated), `DISCORD_WEBHOOK_URL` (the original's; added to the list),
/// `ALERT_WEBHOOK_SECRET`, `ALERT_FLAP_WINDOW_SECONDS`, `ALERT_RETRY_SCHEDULE`. Every URL passes the
/// callback guard here, at start.
fn alert_settings(env: &dyn Fn(&str) -> Option<String>, guard: &UrlGuard) -> Result<AlertSettings, ConfigError> {
    let defaults = AlertSettings::default();
    let mut sinks = Vec::new();
    for name in ["ALERT_WEBHOOK_URLS", "DISCORD_WEBHOOK_URL"] {
        let entries = env(name).unwrap_or_default();
        for (index, entry) in entries.split(',').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
            let parsed = sink::parse(entry, index + 1, guard).map_err(|e| ConfigError::Invalid {
                name,
                message: e.to_string(),
            })?;
            if !sinks.contains(&parsed) {
                sinks.push(parsed);
            }
        }
    }
    let secrets = match env("ALERT_WEBHOOK_SECRET") {
        Some(secret) => Some(
            WebhookSecrets::new(secret.trim(), None).map_err(|e| ConfigError::Invalid {
                name: "ALERT_WEBHOOK_SECRET",
                message: e.to_string(),
            })?,
        ),
        None => None,
    };
    if secrets.is_none() && sinks.iter().any(|s| s.kind == sink::SinkKind::Generic) {
        return Err(ConfigError::Invalid {
            name: "ALERT_WEBHOOK_SECRET",
            message: "must be set (whsec_…) when ALERT_WEBHOOK_URLS names a generic webhook: its alerts are signed"
                .into(),
        });
    }
    let retry_ms = match env("ALERT_RETRY_SCHEDULE") {
        Some(v) => schedule(&v).map_err(|message| ConfigError::Invalid {
            name: "ALERT_RETRY_SCHEDULE",
            message,
        })?,
        None => defaults.retry_ms,
    };
    Ok(AlertSettings {
        sinks,
        secrets,
        flap_window_ms: seconds(env, "ALERT_FLAP_WINDOW_SECONDS", defaults.flap_window_ms)?,
        retry_ms,
        store_down_ms: seconds(env, "ALERT_STORE_DOWN_SECONDS", defaults.store_down_ms)?,
    })
}

/// `owner=secret` entries, comma-separated; an owner may appear twice during a rotation (current first).
fn webhook_secrets(spec: &str) -> Result<HashMap<String, WebhookSecrets>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        name: "STEPPER_WEBHOOK_SECRETS",
        message,
    };
    let mut lists: Vec<(String, Vec<String>)> = Vec::new();
    for (index, entry) in spec.split(',').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
        let (owner, secret) = entry
            .split_once('=')
            .ok_or_else(|| invalid(format!("entry {}: expected owner=secret", index + 1)))?;
        let (owner, secret) = (owner.trim().to_string(), secret.trim().to_string());
        match lists.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, secrets)) => secrets.push(secret),
            None => lists.push((owner, vec![secret])),
        }
    }
    lists
        .into_iter()
        .map(|(owner, secrets)| {
            let parsed = WebhookSecrets::from_list(&secrets).map_err(|e| invalid(format!("owner {owner}: {e}")))?;
            Ok((owner, parsed))
        })
        .collect()
}

/// `0s,5s,5m,30m,2h,5h,10h,10h`: the wait before each attempt (`ms`, `s`, `m` or `h`; 1 to 20 of them,
/// each at most 24 h).
fn schedule(text: &str) -> Result<Vec<u64>, String> {
    let expected = |item: &str| {
        format!("expected comma-separated waits such as 0s,5s,5m,30m,2h,5h,10h,10h (ms, s, m or h); got {item:?}")
    };
    let waits = text
        .split(',')
        .map(|item| {
            let item = item.trim();
            let (number, unit_ms) = if let Some(n) = item.strip_suffix("ms") {
                (n, 1)
            } else if let Some(n) = item.strip_suffix('s') {
                (n, 1_000)
            } else if let Some(n) = item.strip_suffix('m') {
                (n, 60_000)
            } else if let Some(n) = item.strip_suffix('h') {
                (n, 3_600_000)
            } else {
                return Err(expected(item));
            };
            let n: u64 = number.trim().parse().map_err(|_| expected(item))?;
            let ms = n.saturating_mul(unit_ms);
            if ms > 86_400_000 {
                return Err(format!("{item:?} is longer than 24 h"));
            }
            Ok(ms)
        })
        .collect::<Result<Vec<u64>, String>>()?;
    if waits.len() > 20 {
        return Err(format!("at most 20 attempts, got {}", waits.len()));
    }
    Ok(waits)
}

/// `120/60s`, `1000/1h`, `10/s` (requests per window of whole seconds, minutes or hours), or `off`.
fn rate_limit(text: &str) -> Result<Option<RateLimit>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let expected = || format!("expected <requests>/<window> such as 120/60s, 1000/1h or 10/s, or off; got {text:?}");
    let (requests, window) = text.split_once('/').ok_or_else(expected)?;
    let limit: u32 = requests.trim().parse().map_err(|_| expected())?;
    if limit == 0 {
        return Err(format!(
            "{text:?} would refuse every request; use off to lift the limit, or remove the key"
        ));
    }
    let window = window.trim();
    let unit_ms = match window.chars().last() {
        Some('s') => 1_000,
        Some('m') => 60_000,
        Some('h') => 3_600_000,
        _ => return Err(expected()),
    };
    let count = &window[..window.len() - 1];
    let count: u64 = if count.is_empty() {
        1
    } else {
        count.parse().map_err(|_| expected())?
    };
    let window_ms = count.saturating_mul(unit_ms);
    if !(1_000..=86_400_000).contains(&window_ms) {
        return Err(format!("the window of {text:?} must be 1 second to 24 hours"));
    }
    Ok(Some(RateLimit { limit, window_ms }))
}

/// A positive number of jobs, or `off`.
fn in_flight_cap(text: &str) -> Result<Option<u32>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match text.parse::<u32>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(format!("expected a positive number of jobs, or off; got {text:?}")),
    }
}

/// `owner=<value>` entries, comma-separated; every owner must be one a key belongs to.
fn overrides<T>(
    name: &'static str,
    spec: &str,
    keys: &ApiKeys,
    parse: fn(&str) -> Result<Option<T>, String>,
) -> Result<HashMap<String, Option<T>>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { name, message };
    let mut out = HashMap::new();
    for (index, entry) in spec.split(',').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
        let (owner, value) = entry
            .split_once('=')
            .ok_or_else(|| invalid(format!("entry {}: expected owner=<limit>", index + 1)))?;
        let owner = owner.trim();
        let known = if keys.is_open() {
            owner == OPEN_OWNER
        } else {
            keys.owners().any(|o| o == owner)
        };
        if !known {
            return Err(invalid(format!(
                "entry {}: no API key belongs to an owner {owner:?} (STEPPER_API_KEYS)",
                index + 1
            )));
        }
        let value = parse(value).map_err(|e| invalid(format!("entry {} ({owner}): {e}", index + 1)))?;
        if out.insert(owner.to_string(), value).is_some() {
            return Err(invalid(format!("entry {}: owner {owner:?} appears twice", index + 1)));
        }
    }
    Ok(out)
}

fn owner_limits(
    env: &dyn Fn(&str) -> Option<String>,
    keys: &ApiKeys,
    defaults: OwnerLimits,
) -> Result<OwnerLimits, ConfigError> {
    let rate = match env("STEPPER_RATE_LIMIT") {
        Some(v) => rate_limit(&v).map_err(|message| ConfigError::Invalid {
            name: "STEPPER_RATE_LIMIT",
            message,
        })?,
        None => defaults.rate.default,
    };
    let in_flight = match env("STEPPER_MAX_IN_FLIGHT") {
        Some(v) => in_flight_cap(&v).map_err(|message| ConfigError::Invalid {
            name: "STEPPER_MAX_IN_FLIGHT",
            message,
        })?,
        None => defaults.in_flight.default,
    };
    Ok(OwnerLimits {
        rate: PerOwner {
            default: rate,
            overrides: overrides(
                "STEPPER_RATE_LIMITS",
                &env("STEPPER_RATE_LIMITS").unwrap_or_default(),
                keys,
                rate_limit,
            )?,
        },
        in_flight: PerOwner {
            default: in_flight,
            overrides: overrides(
                "STEPPER_MAX_IN_FLIGHT_OVERRIDES",
                &env("STEPPER_MAX_IN_FLIGHT_OVERRIDES").unwrap_or_default(),
                keys,
                in_flight_cap,
            )?,
        },
    })
}

fn load_file(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    guard: &UrlGuard,
) -> Result<Vec<ProviderSpec>, ConfigError> {
    let file_error = |message: String| ConfigError::File {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let file: ConfigFile = toml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
    let mut seen = std::collections::HashSet::new();
    let mut specs = Vec::new();
    for entry in file.providers {
        let name = entry.name.clone();
        if !seen.insert(name.clone()) {
            return Err(ConfigError::Provider {
                name,
                message: "appears twice".into(),
            });
        }
        if entry.enabled == Some(false) {
            continue;
        }
        let spec = spec::resolve(entry, env).map_err(|e| ConfigError::Provider {
            name: name.clone(),
            message: e.to_string(),
        })?;
        // A custom endpoint's URL passes the same SSRF rules as callbacks (allow-list it to reach a private host).
        if matches!(spec.wire, spec::Wire::Http(_)) {
            guard.check(&spec.base_url).map_err(|e| ConfigError::Provider {
                name,
                message: format!("base_url: {e}"),
            })?;
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// `LOG_FORMAT=text` switches the JSON log lines to human-readable ones (read before the rest of the
/// configuration so configuration errors are logged in the chosen format).
pub fn log_format_is_text() -> bool {
    std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("text"))
        || std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("text"))
}

/// The log filter: Lambda's `AWS_LAMBDA_LOG_LEVEL` (set from the function's `LoggingConfig`) first, as
/// the Rust runtime does, then `RUST_LOG`.
pub fn log_filter() -> Option<String> {
    std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .filter(|l| !l.is_empty())
        .map(|l| l.to_ascii_lowercase())
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|l| !l.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(&|name| vars.get(name).cloned())
    }

    #[test]
    fn a_custom_http_provider_url_passes_the_ssrf_guard_at_start() {
        let dir = std::env::temp_dir().join(format!("stepper-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("providers.toml");
        let entry = |url: &str| {
            format!("[[providers]]\nname = \"box\"\nkind = \"http\"\nbase_url = \"{url}\"\nresponse_path = \"text\"\n[providers.body_template]\nq = \"{{{{prompt}}}}\"\n")
        };
        let path = file.to_string_lossy().to_string();
        std::fs::write(&file, entry("http://10.0.0.5:8080/generate")).unwrap();
        let refused = config(&[("STEPPER_CONFIG", &path)]).unwrap_err().to_string();
        assert!(refused.starts_with("provider box: base_url:"), "{refused}");
        let allowed = config(&[
            ("STEPPER_CONFIG", &path),
            ("CALLBACK_ALLOWED_ORIGINS", "http://10.0.0.5:8080"),
        ]);
        assert_eq!(
            allowed.unwrap().providers.len(),
            1,
            "an allow-listed origin is accepted"
        );
        std::fs::write(&file, entry("https://me-space.hf.space/generate")).unwrap();
        assert!(
            config(&[("STEPPER_CONFIG", &path)]).is_ok(),
            "a public https endpoint needs no allow-list"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_webhook_schedule_is_standard_webhooks_unless_configured() {
        assert_eq!(
            config(&[]).unwrap().settings.webhook_schedule_ms,
            crate::domain::delivery::STANDARD_SCHEDULE_MS
        );
        let short = config(&[("WEBHOOK_SCHEDULE", "0s, 50ms,3s,1m,2h")]).unwrap();
        assert_eq!(short.settings.webhook_schedule_ms, [0, 50, 3_000, 60_000, 7_200_000]);
        let older = config(&[("WEBHOOK_MAX_ATTEMPTS", "3")]).unwrap();
        assert!(
            older.settings.webhook_schedule_ms.is_empty(),
            "the exponential knobs still work"
        );
        for bad in ["5x", "", "25h", "1s,,2s"] {
            let e = config(&[("WEBHOOK_SCHEDULE", bad)]).unwrap_err().to_string();
            assert!(e.starts_with("WEBHOOK_SCHEDULE: "), "{bad}: {e}");
        }
        assert!(config(&[("WEBHOOK_SCHEDULE", "1s"), ("WEBHOOK_BACKOFF_MS", "300")]).is_err());
    }

    #[test]
    fn limits_default_to_120_a_minute_and_1000_in_flight() {
        let limits = config(&[]).unwrap().settings.limits;
        assert_eq!(
            limits.for_owner(OPEN_OWNER),
            Limits {
                rate: Some(RateLimit {
                    limit: 120,
                    window_ms: 60_000
                }),
                in_flight: Some(1_000)
            }
        );
    }

    #[test]
    fn rate_limits_parse_with_overrides_per_owner() {
        let c = config(&[
            ("STEPPER_API_KEYS", "alice=a,bob=b,carol=c"),
            ("STEPPER_RATE_LIMIT", "10/s"),
            ("STEPPER_RATE_LIMITS", "alice=1000/1h, bob=off"),
            ("STEPPER_MAX_IN_FLIGHT", "off"),
            ("STEPPER_MAX_IN_FLIGHT_OVERRIDES", "carol=3"),
        ])
        .unwrap();
        let l = &c.settings.limits;
        assert_eq!(
            l.for_owner("alice").rate,
            Some(RateLimit {
                limit: 1000,
                window_ms: 3_600_000
            })
        );
        assert_eq!(l.for_owner("bob").rate, None);
        assert_eq!(
            l.for_owner("carol").rate,
            Some(RateLimit {
                limit: 10,
                window_ms: 1_000
            })
        );
        assert_eq!(
            (l.for_owner("alice").in_flight, l.for_owner("carol").in_flight),
            (None, Some(3))
        );
        assert_eq!(
            rate_limit(" 120 / 60s ").unwrap(),
            Some(RateLimit {
                limit: 120,
                window_ms: 60_000
            })
        );
        assert_eq!(
            rate_limit("5/2m").unwrap(),
            Some(RateLimit {
                limit: 5,
                window_ms: 120_000
            })
        );
    }

    #[test]
    fn the_admin_owner_must_be_an_owner_of_a_key() {
        let keys = ("STEPPER_API_KEYS", "alice=a,ops=o");
        let c = config(&[keys, ("STEPPER_ADMIN_OWNER", "ops")]).unwrap();
        assert_eq!(c.settings.admin_owner.as_deref(), Some("ops"));
        assert_eq!(config(&[keys]).unwrap().settings.admin_owner, None);
        assert_eq!(
            config(&[keys, ("STEPPER_ADMIN_OWNER", "opz")]).unwrap_err().to_string(),
            "STEPPER_ADMIN_OWNER: no API key belongs to an owner \"opz\" (STEPPER_API_KEYS)"
        );
        let open = config(&[("STEPPER_ADMIN_OWNER", "public")]).unwrap();
        assert_eq!(open.settings.admin_owner.as_deref(), Some("public"));
    }

    #[test]
    fn bad_limits_are_refused_with_the_variable_and_the_entry() {
        let error = |vars: &[(&str, &str)]| config(vars).unwrap_err().to_string();
        for bad in [
            "120", "120/60", "x/60s", "0/60s", "120/0s", "120/2d", "120/25h", "-1/60s",
        ] {
            let e = error(&[("STEPPER_RATE_LIMIT", bad)]);
            assert!(e.starts_with("STEPPER_RATE_LIMIT: "), "{bad}: {e}");
        }
        assert!(error(&[("STEPPER_RATE_LIMIT", "0/60s")]).contains("use off"));
        assert!(
            error(&[("STEPPER_MAX_IN_FLIGHT", "0")]).starts_with("STEPPER_MAX_IN_FLIGHT: expected a positive number")
        );
        let keys = ("STEPPER_API_KEYS", "alice=a");
        assert_eq!(
            error(&[keys, ("STEPPER_RATE_LIMITS", "alice=5/s,alcie=5/s")]),
            "STEPPER_RATE_LIMITS: entry 2: no API key belongs to an owner \"alcie\" (STEPPER_API_KEYS)"
        );
        assert_eq!(
            error(&[keys, ("STEPPER_RATE_LIMITS", "alice=5/s,alice=off")]),
            "STEPPER_RATE_LIMITS: entry 2: owner \"alice\" appears twice"
        );
        assert!(
            error(&[keys, ("STEPPER_MAX_IN_FLIGHT_OVERRIDES", "alice")]).contains("entry 1: expected owner=<limit>")
        );
        assert!(error(&[keys, ("STEPPER_MAX_IN_FLIGHT_OVERRIDES", "alice=many")])
            .contains("entry 1 (alice): expected a positive"));
        // Without keys every job belongs to the open owner, which may have its own limits.
        assert_eq!(
            config(&[("STEPPER_RATE_LIMITS", "public=off")])
                .unwrap()
                .settings
                .limits
                .for_owner("public")
                .rate,
            None
        );
    }
}
