//! Each layer's settings, read from the environment: the engine's [`Settings`] (job lifecycle,
//! webhooks, alerts) and the owners' request limits. The types and their defaults belong to the
//! layers that receive them; this module only fills them in from the variables.

use std::collections::HashMap;

use super::env::{self, Env};
use super::ConfigError;
use crate::adapters::outbound::alert_sink::{self, AlertSettings};
use crate::adapters::outbound::guard::UrlGuard;
use crate::adapters::outbound::sign::WebhookSecrets;
use crate::app::auth::{ApiKeys, OPEN_OWNER};
use crate::engine::settings::{OwnerLimits, PerOwner, Settings};

/// The engine's settings, except what needs the API keys (the owners' limits, the admin owner) or
/// the providers (the scrubber): `Config::from_lookup` adds those.
pub(super) fn engine(env: Env) -> Result<Settings, ConfigError> {
    let defaults = Settings::default();
    let mut settings = Settings {
        result_ttl_ms: env.seconds("RESULT_TTL_SECONDS", defaults.result_ttl_ms)?,
        failure_ttl_ms: env.seconds("FAILURE_TTL_SECONDS", defaults.failure_ttl_ms)?,
        delivery_grace_ms: env.seconds("DELIVERY_GRACE_SECONDS", defaults.delivery_grace_ms)?,
        default_deadline_ms: env.seconds("JOB_DEADLINE_SECONDS", defaults.default_deadline_ms)?,
        sweep_grace_ms: env.seconds("SWEEP_GRACE_SECONDS", defaults.sweep_grace_ms)?,
        park_after_ms: env.seconds("PARK_AFTER_SECONDS", defaults.park_after_ms)?,
        ..defaults
    };
    if let Some(n) = env.number::<u32>("MAX_FAILURES_PER_PROVIDER", |n| *n > 0, "a positive integer")? {
        settings.policy.max_failures_per_provider = n;
    }
    if let Some(n) = env.number_in("STEP_CONCURRENCY", 1..=100_000)? {
        settings.step_concurrency = n;
    }
    if let Some(n) = env.number_in("WEBHOOK_MAX_ATTEMPTS", 1..=20)? {
        settings.webhook_max_attempts = n;
    }
    if let Some(n) = env.number_in("WEBHOOK_BACKOFF_MS", 100..=600_000)? {
        settings.webhook_backoff_ms = n;
    }
    let exponential = env.is_set("WEBHOOK_MAX_ATTEMPTS") || env.is_set("WEBHOOK_BACKOFF_MS");
    if exponential && env.is_set("WEBHOOK_SCHEDULE") {
        return Err(ConfigError::Invalid {
            name: "WEBHOOK_SCHEDULE",
            message: "set either WEBHOOK_SCHEDULE or WEBHOOK_MAX_ATTEMPTS/WEBHOOK_BACKOFF_MS, not both".into(),
        });
    }
    match env.parse("WEBHOOK_SCHEDULE", env::schedule)? {
        Some(schedule) => settings.webhook_schedule_ms = schedule,
        None if exponential => settings.webhook_schedule_ms = Vec::new(),
        None => {}
    }
    settings.webhook_secrets = webhook_secrets(&env.text("STEPPER_WEBHOOK_SECRETS"))?;
    settings.webhook_legacy_bearer = env.flag("WEBHOOK_LEGACY_BEARER")?;
    let origins: Vec<String> = env
        .text("CALLBACK_ALLOWED_ORIGINS")
        .split(',')
        .map(|o| o.trim().to_string())
        .filter(|o| !o.is_empty())
        .collect();
    settings.url_guard = UrlGuard::new(&origins).map_err(|e| ConfigError::Invalid {
        name: "CALLBACK_ALLOWED_ORIGINS",
        message: e.to_string(),
    })?;
    settings.alerts = alerts(env, &settings.url_guard)?;
    Ok(settings)
}

/// `ALERT_WEBHOOK_URLS` (comma-separated), `DISCORD_WEBHOOK_URL` (the original's; added to the list),
/// `ALERT_WEBHOOK_SECRET`, `ALERT_FLAP_WINDOW_SECONDS`, `ALERT_RETRY_SCHEDULE`. Every URL passes the
/// callback guard here, at start.
fn alerts(env: Env, guard: &UrlGuard) -> Result<AlertSettings, ConfigError> {
    let defaults = AlertSettings::default();
    let mut sinks = Vec::new();
    for name in ["ALERT_WEBHOOK_URLS", "DISCORD_WEBHOOK_URL"] {
        let entries = env.text(name);
        for (index, entry) in entries.split(',').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
            let parsed = alert_sink::parse(entry, index + 1, guard).map_err(|e| ConfigError::Invalid {
                name,
                message: e.to_string(),
            })?;
            if !sinks.contains(&parsed) {
                sinks.push(parsed);
            }
        }
    }
    let secrets = env.parse("ALERT_WEBHOOK_SECRET", |secret| {
        WebhookSecrets::new(secret.trim(), None).map_err(|e| e.to_string())
    })?;
    if secrets.is_none() && sinks.iter().any(|s| s.kind == alert_sink::SinkKind::Generic) {
        return Err(ConfigError::Invalid {
            name: "ALERT_WEBHOOK_SECRET",
            message: "must be set (whsec_…) when ALERT_WEBHOOK_URLS names a generic webhook: its alerts are signed"
                .into(),
        });
    }
    let retry_ms = env
        .parse("ALERT_RETRY_SCHEDULE", env::schedule)?
        .unwrap_or(defaults.retry_ms);
    Ok(AlertSettings {
        sinks,
        secrets,
        flap_window_ms: env.seconds("ALERT_FLAP_WINDOW_SECONDS", defaults.flap_window_ms)?,
        retry_ms,
        store_down_ms: env.seconds("ALERT_STORE_DOWN_SECONDS", defaults.store_down_ms)?,
    })
}

/// `owner=secret` entries, comma-separated; an owner may appear twice during a rotation (current first).
fn webhook_secrets(text: &str) -> Result<HashMap<String, WebhookSecrets>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        name: "STEPPER_WEBHOOK_SECRETS",
        message,
    };
    let mut lists: Vec<(String, Vec<String>)> = Vec::new();
    for (_, owner, secret) in env::owner_entries(text, "owner=secret").map_err(invalid)? {
        match lists.iter_mut().find(|(o, _)| o == owner) {
            Some((_, secrets)) => secrets.push(secret.to_string()),
            None => lists.push((owner.to_string(), vec![secret.to_string()])),
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

/// Whether `owner` is one an API key belongs to (the open owner when no keys are configured).
fn is_owner(keys: &ApiKeys, owner: &str) -> bool {
    if keys.is_open() {
        owner == OPEN_OWNER
    } else {
        keys.owners().any(|o| o == owner)
    }
}

/// `STEPPER_ADMIN_OWNER`: an owner some API key belongs to (`public` when no keys are configured).
pub(super) fn admin_owner(env: Env, keys: &ApiKeys) -> Result<Option<String>, ConfigError> {
    let Some(owner) = env.get("STEPPER_ADMIN_OWNER").map(|o| o.trim().to_string()) else {
        return Ok(None);
    };
    if !is_owner(keys, &owner) {
        return Err(ConfigError::Invalid {
            name: "STEPPER_ADMIN_OWNER",
            message: format!("no API key belongs to an owner {owner:?} (STEPPER_API_KEYS)"),
        });
    }
    Ok(Some(owner))
}

/// `STEPPER_RATE_LIMIT(S)` and `STEPPER_MAX_IN_FLIGHT(_OVERRIDES)`.
pub(super) fn owner_limits(env: Env, keys: &ApiKeys, defaults: OwnerLimits) -> Result<OwnerLimits, ConfigError> {
    let rate = match env.parse("STEPPER_RATE_LIMIT", env::rate_limit)? {
        Some(rate) => rate,
        None => defaults.rate.default,
    };
    let in_flight = match env.parse("STEPPER_MAX_IN_FLIGHT", env::in_flight_cap)? {
        Some(cap) => cap,
        None => defaults.in_flight.default,
    };
    Ok(OwnerLimits {
        rate: PerOwner {
            default: rate,
            overrides: overrides(env, "STEPPER_RATE_LIMITS", keys, env::rate_limit)?,
        },
        in_flight: PerOwner {
            default: in_flight,
            overrides: overrides(env, "STEPPER_MAX_IN_FLIGHT_OVERRIDES", keys, env::in_flight_cap)?,
        },
    })
}

/// `owner=<value>` entries, comma-separated; every owner must be one a key belongs to.
fn overrides<T>(
    env: Env,
    name: &'static str,
    keys: &ApiKeys,
    parse: fn(&str) -> Result<Option<T>, String>,
) -> Result<HashMap<String, Option<T>>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { name, message };
    let mut out = HashMap::new();
    for (index, owner, value) in env::owner_entries(&env.text(name), "owner=<limit>").map_err(invalid)? {
        if !is_owner(keys, owner) {
            return Err(invalid(format!(
                "entry {index}: no API key belongs to an owner {owner:?} (STEPPER_API_KEYS)"
            )));
        }
        let value = parse(value).map_err(|e| invalid(format!("entry {index} ({owner}): {e}")))?;
        if out.insert(owner.to_string(), value).is_some() {
            return Err(invalid(format!("entry {index}: owner {owner:?} appears twice")));
        }
    }
    Ok(out)
}
