//! Configuration: the environment and the `STEPPER_CONFIG` TOML file become one typed [`Config`],
//! validated once at start. The only module that reads the environment.

use std::path::Path;

use serde::Deserialize;

use std::collections::HashMap;

use crate::api::auth::{ApiKeys, AuthError};
use crate::delivery::guard::UrlGuard;
use crate::delivery::sign::WebhookSecrets;
use crate::engine::StepPolicy;
use crate::providers::spec::{self, ProviderEntry, ProviderSpec};
use crate::quota::BackoffPolicy;

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
    /// How long a finished result lives when nobody reads it (`RESULT_TTL_SECONDS`, 1 h).
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
    /// Attempts and first back-off of `callbackUrl` webhooks (`WEBHOOK_MAX_ATTEMPTS`, `WEBHOOK_BACKOFF_MS`).
    pub webhook_max_attempts: u32,
    pub webhook_backoff_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            result_ttl_ms: 3_600_000,
            failure_ttl_ms: 3_600_000,
            delivery_grace_ms: 600_000,
            unfinished_margin_ms: 900_000,
            default_deadline_ms: 86_400_000,
            policy: StepPolicy::default(),
            backoff: BackoffPolicy::default(),
            webhook_secrets: HashMap::new(),
            // An empty allow-list has no origin to parse, so it cannot fail.
            url_guard: UrlGuard::new(&[]).expect("an empty allow-list is valid"),
            webhook_max_attempts: 5,
            webhook_backoff_ms: 2_000,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    providers: Vec<ProviderEntry>,
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
        let header = env("API_KEY_HEADER").unwrap_or_else(|| "x-api-key".to_string());
        let keys = ApiKeys::parse(env("STEPPER_API_KEYS").as_deref().unwrap_or(""), &header)?;
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
        })
    }
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
}

/// A credential. Its `Debug` never shows it, so it cannot end up in a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}
