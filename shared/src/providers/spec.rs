//! Provider configuration: the `[[providers]]` entries of the `STEPPER_CONFIG` file (or the catalog
//! providers whose key variable is set) resolved into validated specs, and the adapters built from them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::catalog::{self, CatalogEntry};
use super::openai::OpenAiProvider;
use crate::config::Secret;
use crate::ports::Provider;
use crate::quota::{ProviderLimits, ResetClock};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireKind {
    Openai,
    Gemini,
    Anthropic,
    Cohere,
    Http,
}

/// One `[[providers]]` entry; everything but `name` may come from the catalog entry of that name
/// (or of `catalog`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    pub name: String,
    pub catalog: Option<String>,
    pub kind: Option<WireKind>,
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub api_key_env: Option<String>,
    pub timeout_ms: Option<u64>,
    pub rpm: Option<u64>,
    pub rpd: Option<u64>,
    pub tpm: Option<u64>,
    pub reset: Option<ResetClock>,
    pub small_context: Option<bool>,
    pub headers: Option<BTreeMap<String, String>>,
    pub enabled: Option<bool>,
}

/// A resolved, validated provider.
#[derive(Debug, Clone)]
pub struct ProviderSpec {
    pub name: String,
    pub kind: WireKind,
    pub base_url: String,
    pub model: String,
    pub api_key: Option<Secret>,
    pub timeout_ms: u64,
    pub limits: ProviderLimits,
    pub small_context: bool,
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{0} is required (no catalog entry provides it)")]
    Missing(&'static str),
    #[error("the key variable {0} is not set")]
    KeyMissing(String),
    #[error("base_url needs the variable {0}")]
    UrlVariable(String),
    #[error("kind {0:?} has no adapter in this version; use kind = \"openai\" for OpenAI-compatible endpoints")]
    Unsupported(WireKind),
    #[error("names use letters, digits, '.', '_' and '-' (1–64 characters)")]
    BadName,
    #[error("base_url {0:?} is not an http(s) URL")]
    BadUrl(String),
}

pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// Fills `{VARIABLE}` placeholders of a base URL (Cloudflare's account id).
fn fill_url(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, SpecError> {
    let mut out = String::new();
    let mut rest = url;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').map(|c| open + c).ok_or_else(|| SpecError::BadUrl(url.to_string()))?;
        let var = &rest[open + 1..close];
        out.push_str(&rest[..open]);
        out.push_str(&env(var).ok_or_else(|| SpecError::UrlVariable(var.to_string()))?);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    if !(out.starts_with("http://") || out.starts_with("https://")) {
        return Err(SpecError::BadUrl(out));
    }
    Ok(out.trim_end_matches('/').to_string())
}

pub fn resolve(entry: ProviderEntry, env: &dyn Fn(&str) -> Option<String>) -> Result<ProviderSpec, SpecError> {
    let name_ok = (1..=64).contains(&entry.name.len())
        && entry.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !name_ok {
        return Err(SpecError::BadName);
    }
    let base: Option<&CatalogEntry> = catalog::find(entry.catalog.as_deref().unwrap_or(&entry.name));
    let kind = entry.kind.or(base.map(|b| b.kind)).ok_or(SpecError::Missing("kind"))?;
    if kind != WireKind::Openai {
        return Err(SpecError::Unsupported(kind));
    }
    let url = entry.base_url.as_deref().or(base.map(|b| b.base_url)).ok_or(SpecError::Missing("base_url"))?;
    let model = entry.model.or(base.map(|b| b.model.to_string())).ok_or(SpecError::Missing("model"))?;
    let key_env = entry.api_key_env.or(base.and_then(|b| b.key_env).map(str::to_string));
    let api_key = match key_env {
        Some(var) => Some(Secret::new(env(&var).ok_or(SpecError::KeyMissing(var))?)),
        None => None,
    };
    let mut headers: BTreeMap<String, String> =
        base.map(|b| b.headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).unwrap_or_default();
    headers.extend(entry.headers.unwrap_or_default());
    Ok(ProviderSpec {
        name: entry.name,
        kind,
        base_url: fill_url(url, env)?,
        model,
        api_key,
        timeout_ms: entry.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
        limits: ProviderLimits {
            rpm: entry.rpm.or(base.and_then(|b| b.rpm)),
            rpd: entry.rpd.or(base.and_then(|b| b.rpd)),
            tpm: entry.tpm.or(base.and_then(|b| b.tpm)),
            reset: entry.reset.or(base.map(|b| b.reset)).unwrap_or_default(),
        },
        small_context: entry.small_context.or(base.map(|b| b.small_context)).unwrap_or(false),
        headers,
    })
}

/// Every catalog provider whose key variable is set, in catalog order (no file given).
pub fn from_catalog_env(env: &dyn Fn(&str) -> Option<String>) -> Vec<ProviderSpec> {
    catalog::CATALOG
        .iter()
        .filter(|e| e.from_env && e.key_env.is_some_and(|k| env(k).is_some()))
        .filter_map(|e| {
            let entry = ProviderEntry {
                name: e.id.to_string(),
                catalog: None,
                kind: None,
                base_url: None,
                model: None,
                api_key_env: None,
                timeout_ms: None,
                rpm: None,
                rpd: None,
                tpm: None,
                reset: None,
                small_context: None,
                headers: None,
                enabled: None,
            };
            match resolve(entry, env) {
                Ok(spec) => Some(spec),
                Err(err) => {
                    tracing::warn!(provider = e.id, error = %err, "provider key set but the provider cannot be used");
                    None
                }
            }
        })
        .collect()
}

/// The adapter for a spec. `resolve` only lets through kinds that have one.
pub fn build(spec: &ProviderSpec, client: reqwest::Client) -> Arc<dyn Provider> {
    Arc::new(OpenAiProvider::new(
        &spec.name,
        &spec.base_url,
        &spec.model,
        spec.api_key.clone(),
        spec.headers.clone(),
        Duration::from_millis(spec.timeout_ms),
        spec.limits.reset,
        client,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    fn entry(toml_text: &str) -> ProviderEntry {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn catalog_defaults_fill_an_entry_and_the_file_overrides_them() {
        let spec = resolve(entry("name = \"groq\"\nrpd = 10"), &env(&[("GROQ_API_KEY", "k")])).unwrap();
        assert_eq!(spec.base_url, "https://api.groq.com/openai/v1");
        assert_eq!((spec.limits.rpm, spec.limits.rpd), (Some(30), Some(10)));
        assert_eq!(format!("{:?}", spec.api_key), "Some(***)");
    }

    #[test]
    fn a_new_openai_compatible_provider_is_configuration_only() {
        let spec = resolve(
            entry("name = \"vllm\"\nkind = \"openai\"\nbase_url = \"http://10.0.0.5:8000/v1/\"\nmodel = \"qwen\""),
            &env(&[]),
        )
        .unwrap();
        assert_eq!((spec.base_url.as_str(), spec.api_key.is_none()), ("http://10.0.0.5:8000/v1", true));
    }

    #[test]
    fn unusable_entries_say_why() {
        assert!(matches!(resolve(entry("name = \"groq\""), &env(&[])), Err(SpecError::KeyMissing(v)) if v == "GROQ_API_KEY"));
        assert!(matches!(resolve(entry("name = \"x\"\nkind = \"openai\""), &env(&[])), Err(SpecError::Missing("base_url"))));
        assert!(matches!(
            resolve(entry("name = \"cloudflare\""), &env(&[("CLOUDFLARE_API_TOKEN", "t")])),
            Err(SpecError::UrlVariable(v)) if v == "CLOUDFLARE_ACCOUNT_ID"
        ));
        assert!(toml::from_str::<ProviderEntry>("name = \"a\"\nbogus = 1").is_err(), "unknown keys are refused");
    }

    #[test]
    fn the_environment_enables_catalog_providers_in_order() {
        let specs = from_catalog_env(&env(&[("OPENROUTER_API_KEY", "o"), ("GEMINI_API_KEY", "g")]));
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["gemini", "openrouter"]);
        assert_eq!(specs[0].limits.reset, ResetClock::PacificMidnight);
    }
}
