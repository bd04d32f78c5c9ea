//! Configuration, the edge: the environment and the `STEPPER_CONFIG` TOML file become one typed
//! [`Config`], validated once at start. The only reader of the environment ([`env`]); each layer
//! receives its own typed settings from here ([`crate::engine::settings::Settings`] for the engine,
//! [`HttpLimits`] for `stepper-local`, [`UpstashConfig`] for the store, the provider specs) and never
//! reads a variable itself.
//!
//! - [`env`]: the lookup and the typed reads every variable goes through.
//! - `settings`: the engine's settings and the owners' limits, filled in from the variables.

pub(crate) mod env;
mod settings;

use std::path::Path;

use serde::Deserialize;

use crate::adapters::outbound::guard::UrlGuard;
use crate::adapters::providers::spec::{self, ProviderEntry, ProviderSpec};
use crate::app::auth::{ApiKeys, AuthError};
use crate::domain::scrub::Scrubber;
use crate::domain::secret::Secret;
use crate::engine::settings::Settings;
use env::{Env, Lookup};

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
    /// `stepper-local` as a server: where it listens, how it stops, how it shares a store.
    pub server: ServerSettings,
    /// `stepper-local`'s HTTP server limits.
    pub http: HttpLimits,
}

/// `stepper-local` as a long-running server (the Lambda functions do not use these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSettings {
    /// Where it listens (`STEPPER_LISTEN`, `host:port`; default `127.0.0.1:3005`). `PORT`, the variable
    /// platforms such as Render and Heroku set, replaces the port (alone it means `127.0.0.1:$PORT`).
    pub listen: std::net::SocketAddr,
    /// Off loopback, the in-memory store is refused unless this is set (`STEPPER_ALLOW_MEMORY_STORE=true`):
    /// its jobs live and die with the one process, which a reachable server rarely means.
    pub allow_memory_store: bool,
    /// After SIGTERM, how long in-flight requests and steps may take before the process exits
    /// (`SHUTDOWN_GRACE_SECONDS`, 20: within Kubernetes' default 30 s and Fly.io's/Render's kill timeouts).
    pub shutdown_grace_ms: u64,
    /// How often each instance takes the due-index's sweeper over while the store has work
    /// (`SWEEP_INTERVAL_SECONDS`, 30), so the jobs of an instance that died are re-driven by the others.
    pub sweep_interval_ms: u64,
}

/// The default address: loopback, so a server is reachable from elsewhere only when asked.
pub const DEFAULT_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 3005);

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(DEFAULT_LISTEN),
            allow_memory_store: false,
            shutdown_grace_ms: 20_000,
            sweep_interval_ms: 30_000,
        }
    }
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    providers: Vec<ProviderEntry>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&env::process)
    }

    /// Builds the configuration from any variable lookup (tests pass a map).
    pub fn from_lookup(lookup: Lookup) -> Result<Self, ConfigError> {
        let env = Env::new(lookup);
        let mut settings = settings::engine(env)?;
        let header = env.get("API_KEY_HEADER").unwrap_or_else(|| "x-api-key".to_string());
        let keys = ApiKeys::parse(&env.text("STEPPER_API_KEYS"), &header)?;
        settings.limits = settings::owner_limits(env, &keys, settings.limits)?;
        settings.admin_owner = settings::admin_owner(env, &keys)?;
        let (providers, providers_source) = match (env.get("STEPPER_CONFIG"), env.get("STEPPER_CONFIG_TOML")) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    name: "STEPPER_CONFIG_TOML",
                    message: "set either STEPPER_CONFIG (the providers file's path) or STEPPER_CONFIG_TOML (its \
                              content), not both"
                        .into(),
                })
            }
            (Some(path), None) => (
                load_file(Path::new(&path), lookup, &settings.url_guard)?,
                format!("the file {path} (STEPPER_CONFIG)"),
            ),
            // A Lambda zip carries only `bootstrap`: the file's content comes in a variable instead.
            (None, Some(text)) => (
                load_providers(&text, lookup, &settings.url_guard, |message| ConfigError::Invalid {
                    name: "STEPPER_CONFIG_TOML",
                    message,
                })?,
                "the providers file's content in STEPPER_CONFIG_TOML".to_string(),
            ),
            (None, None) => (
                spec::from_catalog_env(lookup),
                "provider key variables in the environment".to_string(),
            ),
        };
        let upstash = upstash(env)?;
        settings.scrubber = scrubber(env, &providers, upstash.as_ref());
        Ok(Self {
            settings,
            keys,
            providers,
            providers_source,
            upstash,
            step_queue_url: env.get("STEP_QUEUE_URL"),
            server: server_settings(env)?,
            http: http_limits(env)?,
        })
    }
}

/// `UPSTASH_REDIS_REST_URL` and `_TOKEN` (both or neither), `UPSTASH_TIMEOUT_MS`.
fn upstash(env: Env) -> Result<Option<UpstashConfig>, ConfigError> {
    match (env.get("UPSTASH_REDIS_REST_URL"), env.get("UPSTASH_REDIS_REST_TOKEN")) {
        (Some(url), Some(token)) => Ok(Some(UpstashConfig {
            url: url.trim_end_matches('/').to_string(),
            token: Secret::new(token),
            timeout_ms: env
                .number::<u64>("UPSTASH_TIMEOUT_MS", |ms| *ms > 0, "a positive number of milliseconds")?
                .unwrap_or(5_000),
        })),
        (Some(_), None) => Err(ConfigError::Invalid {
            name: "UPSTASH_REDIS_REST_TOKEN",
            message: "must be set when UPSTASH_REDIS_REST_URL is".into(),
        }),
        _ => Ok(None),
    }
}

/// `STEPPER_LISTEN`, `PORT`, `STEPPER_ALLOW_MEMORY_STORE`, `SHUTDOWN_GRACE_SECONDS`, `SWEEP_INTERVAL_SECONDS`.
fn server_settings(env: Env) -> Result<ServerSettings, ConfigError> {
    let d = ServerSettings::default();
    let mut listen = env
        .parse("STEPPER_LISTEN", |v| {
            v.trim().parse::<std::net::SocketAddr>().map_err(|_| {
                format!("not an address: {v:?} (want host:port with an IP address, e.g. 0.0.0.0:3005 or [::]:3005)")
            })
        })?
        .unwrap_or(d.listen);
    if let Some(port) = env.parse("PORT", |v| {
        v.trim().parse::<u16>().map_err(|_| format!("not a port: {v:?}"))
    })? {
        listen.set_port(port);
    }
    let allow_memory_store = env
        .parse("STEPPER_ALLOW_MEMORY_STORE", |v| match v.trim() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" | "" => Ok(false),
            other => Err(format!("want true or false, not {other:?}")),
        })?
        .unwrap_or(d.allow_memory_store);
    Ok(ServerSettings {
        listen,
        allow_memory_store,
        shutdown_grace_ms: env.seconds("SHUTDOWN_GRACE_SECONDS", d.shutdown_grace_ms)?,
        sweep_interval_ms: env.seconds("SWEEP_INTERVAL_SECONDS", d.sweep_interval_ms)?,
    })
}

/// `HTTP_*`: `stepper-local`'s connection limits.
fn http_limits(env: Env) -> Result<HttpLimits, ConfigError> {
    let d = HttpLimits::default();
    Ok(HttpLimits {
        header_timeout_ms: env.seconds("HTTP_HEADER_TIMEOUT_SECONDS", d.header_timeout_ms)?,
        body_timeout_ms: env.seconds("HTTP_BODY_TIMEOUT_SECONDS", d.body_timeout_ms)?,
        idle_timeout_ms: env.seconds("HTTP_IDLE_TIMEOUT_SECONDS", d.idle_timeout_ms)?,
        max_connections: env
            .number_in("HTTP_MAX_CONNECTIONS", 1..=1_000_000)?
            .unwrap_or(d.max_connections),
    })
}

/// Every secret the configuration holds: API keys given in clear, provider keys, webhook secrets (whole
/// and without their `whsec_` prefix), the Upstash token.
fn scrubber(env: Env, providers: &[ProviderSpec], upstash: Option<&UpstashConfig>) -> Scrubber {
    let values = |name: &str| -> Vec<String> {
        env.text(name)
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
    if let Some(secret) = env.get("ALERT_WEBHOOK_SECRET") {
        if let Some(bare) = secret.trim().strip_prefix("whsec_") {
            secrets.push(bare.to_string());
        }
        secrets.push(secret.trim().to_string());
    }
    Scrubber::new(secrets)
}

fn load_file(path: &Path, env: Lookup, guard: &UrlGuard) -> Result<Vec<ProviderSpec>, ConfigError> {
    let file_error = |message: String| ConfigError::File {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    load_providers(&text, env, guard, file_error)
}

/// The `[[providers]]` of a providers file's `text`; a TOML error goes through `syntax_error`.
fn load_providers(
    text: &str,
    env: Lookup,
    guard: &UrlGuard,
    syntax_error: impl Fn(String) -> ConfigError,
) -> Result<Vec<ProviderSpec>, ConfigError> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| syntax_error(e.to_string()))?;
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
pub(crate) fn log_format_is_text() -> bool {
    let text = |name| std::env::var(name).is_ok_and(|f| f.eq_ignore_ascii_case("text"));
    text("LOG_FORMAT") || text("AWS_LAMBDA_LOG_FORMAT")
}

/// The log filter: Lambda's `AWS_LAMBDA_LOG_LEVEL` (set from the function's `LoggingConfig`) first, as
/// the Rust runtime does, then `RUST_LOG`.
pub(crate) fn log_filter() -> Option<String> {
    std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .filter(|l| !l.is_empty())
        .map(|l| l.to_ascii_lowercase())
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|l| !l.is_empty()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::env::rate_limit;
    use super::*;
    use crate::app::auth::OPEN_OWNER;
    use crate::ports::{Limits, RateLimit};

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
    fn the_providers_file_can_come_inline_in_one_line_of_toml() {
        // One line (inline tables), as a CloudFormation parameter carries it.
        let inline = r#"providers = [{name = "groq", api_key_env = "GROQ_API_KEY"}, {name = "my-vllm", kind = "openai", base_url = "https://vllm.example.com/v1", model = "qwen", api_key_env = "VLLM_KEY"}]"#;
        let config = config(&[
            ("STEPPER_CONFIG_TOML", inline),
            ("GROQ_API_KEY", "gsk-1"),
            ("VLLM_KEY", "v-1"),
        ])
        .unwrap();
        let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["groq", "my-vllm"]);
        assert!(config.providers_source.contains("STEPPER_CONFIG_TOML"));

        let broken = config_err(&[("STEPPER_CONFIG_TOML", "providers = [")]);
        assert!(broken.starts_with("STEPPER_CONFIG_TOML: "), "{broken}");
        let both = config_err(&[("STEPPER_CONFIG_TOML", inline), ("STEPPER_CONFIG", "/etc/stepper.toml")]);
        assert!(both.contains("not both"), "{both}");
    }

    fn config_err(vars: &[(&str, &str)]) -> String {
        config(vars).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn the_legacy_bearer_is_off_unless_switched_on() {
        assert!(!config(&[]).unwrap().settings.webhook_legacy_bearer);
        assert!(
            config(&[("WEBHOOK_LEGACY_BEARER", "true")])
                .unwrap()
                .settings
                .webhook_legacy_bearer
        );
        assert!(
            !config(&[("WEBHOOK_LEGACY_BEARER", "false")])
                .unwrap()
                .settings
                .webhook_legacy_bearer
        );
        let typo = config_err(&[("WEBHOOK_LEGACY_BEARER", "on please")]);
        assert!(
            typo.starts_with("WEBHOOK_LEGACY_BEARER: expected true or false"),
            "{typo}"
        );
    }

    #[test]
    fn the_listen_address_is_loopback_unless_asked_and_port_replaces_its_port() {
        let listen = |vars: &[(&str, &str)]| config(vars).map(|c| c.server.listen.to_string());
        assert_eq!(listen(&[]).unwrap(), "127.0.0.1:3005");
        assert_eq!(listen(&[("PORT", "8080")]).unwrap(), "127.0.0.1:8080");
        assert_eq!(listen(&[("STEPPER_LISTEN", "0.0.0.0:3005")]).unwrap(), "0.0.0.0:3005");
        assert_eq!(listen(&[("STEPPER_LISTEN", "[::]:80")]).unwrap(), "[::]:80");
        assert_eq!(
            listen(&[("STEPPER_LISTEN", "0.0.0.0:3005"), ("PORT", "10000")]).unwrap(),
            "0.0.0.0:10000",
            "a platform's PORT wins over the image's default port"
        );
        for bad in ["localhost:3005", "0.0.0.0", ":3005"] {
            let e = listen(&[("STEPPER_LISTEN", bad)]).unwrap_err().to_string();
            assert!(e.starts_with("STEPPER_LISTEN: not an address"), "{bad}: {e}");
        }
        assert!(!config(&[]).unwrap().server.allow_memory_store);
        assert!(
            config(&[("STEPPER_ALLOW_MEMORY_STORE", "true")])
                .unwrap()
                .server
                .allow_memory_store
        );
        assert!(config(&[("STEPPER_ALLOW_MEMORY_STORE", "maybe")]).is_err());
        assert_eq!(
            config(&[("SHUTDOWN_GRACE_SECONDS", "5")])
                .unwrap()
                .server
                .shutdown_grace_ms,
            5_000
        );
        assert!(config(&[("SWEEP_INTERVAL_SECONDS", "0")]).is_err());
    }

    #[test]
    fn the_webhook_schedule_is_standard_webhooks_unless_configured() {
        assert_eq!(
            config(&[]).unwrap().settings.webhook_schedule_ms,
            crate::domain::targets::STANDARD_SCHEDULE_MS
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
