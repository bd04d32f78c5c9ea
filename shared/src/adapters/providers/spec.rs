//! Provider configuration: the `[[providers]]` entries of the `STEPPER_CONFIG` file (or the catalog
//! providers whose key variable is set) resolved into validated specs, and the adapters built from them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::anthropic::AnthropicProvider;
use super::catalog::{self, CatalogEntry, WireKind};
use super::cohere::CohereProvider;
use super::custom::{CustomHttpProvider, JsonPath};
use super::gemini::GeminiProvider;
use super::openai::OpenAiProvider;
use super::transport::Connection;
use crate::adapters::outbound::guard::UrlGuard;
use crate::domain::quota::{ProviderLimits, ResetClock};
use crate::domain::scrub::Scrubber;
use crate::domain::secret::Secret;
use crate::ports::Provider;

/// One `[[providers]]` entry; everything but `name` may come from the catalog entry of that name
/// (or of `catalog`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProviderEntry {
    pub(crate) name: String,
    pub(crate) catalog: Option<String>,
    pub(crate) kind: Option<WireKind>,
    pub(crate) base_url: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) api_key_env: Option<String>,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) rpm: Option<u64>,
    pub(crate) rpd: Option<u64>,
    pub(crate) tpm: Option<u64>,
    pub(crate) reset: Option<ResetClock>,
    pub(crate) small_context: Option<bool>,
    pub(crate) headers: Option<BTreeMap<String, String>>,
    pub(crate) enabled: Option<bool>,
    /// `kind = "http"` only: the JSON request body with `{{placeholders}}` (see `providers::custom`).
    pub(crate) body_template: Option<serde_json::Value>,
    /// `kind = "http"` only: where the text is in the answer, e.g. `[0].generated_text`.
    pub(crate) response_path: Option<String>,
    /// `kind = "http"` only: the header carrying the key (default `authorization`, sent as `Bearer <key>`).
    pub(crate) auth_header: Option<String>,
}

/// The request and answer shape of a `kind = "http"` provider.
#[derive(Debug, Clone)]
pub struct HttpShape {
    pub body_template: serde_json::Value,
    pub response_path: JsonPath,
    pub auth_header: String,
}

/// The wire format of a resolved provider, with what only that format needs.
#[derive(Debug, Clone)]
pub enum Wire {
    /// OpenAI-compatible, with extra headers (OpenRouter's `X-Title`, a gateway's own).
    OpenAi {
        headers: BTreeMap<String, String>,
    },
    Gemini,
    Anthropic,
    Cohere,
    Http(HttpShape),
}

/// A resolved, validated provider.
#[derive(Debug, Clone)]
pub struct ProviderSpec {
    pub name: String,
    pub wire: Wire,
    pub base_url: String,
    pub model: String,
    pub api_key: Option<Secret>,
    pub timeout_ms: u64,
    pub limits: ProviderLimits,
    pub small_context: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SpecError {
    #[error("{0} is required (no catalog entry provides it)")]
    Missing(&'static str),
    #[error("the key variable {0} is not set")]
    KeyMissing(String),
    #[error("base_url needs the variable {0}")]
    UrlVariable(String),
    #[error("{0} is only for kind = \"http\"")]
    HttpOnly(&'static str),
    #[error("headers are only sent by kind = \"openai\" providers")]
    HeadersUnsupported,
    #[error("response_path: {0}")]
    BadPath(String),
    #[error("auth_header {0:?} is not a valid header name")]
    BadHeader(String),
    #[error("names use letters, digits, '.', '_' and '-' (1–64 characters)")]
    BadName,
    #[error("base_url {0:?} is not an http(s) URL")]
    BadUrl(String),
}

pub(crate) const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// Fills `{VARIABLE}` placeholders of a base URL (Cloudflare's account id).
fn fill_url(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, SpecError> {
    let mut out = String::new();
    let mut rest = url;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| SpecError::BadUrl(url.to_string()))?;
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

pub(crate) fn resolve(entry: ProviderEntry, env: &dyn Fn(&str) -> Option<String>) -> Result<ProviderSpec, SpecError> {
    let name_ok = (1..=64).contains(&entry.name.len())
        && entry
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !name_ok {
        return Err(SpecError::BadName);
    }
    let base: Option<&CatalogEntry> = catalog::find(entry.catalog.as_deref().unwrap_or(&entry.name));
    let kind = entry.kind.or(base.map(|b| b.kind)).ok_or(SpecError::Missing("kind"))?;
    let http = http_shape(kind, entry.body_template, entry.response_path, entry.auth_header)?;
    let url = entry
        .base_url
        .as_deref()
        .or(base.map(|b| b.base_url))
        .ok_or(SpecError::Missing("base_url"))?;
    // A custom endpoint may serve one model and not need its name.
    let model = entry
        .model
        .or(base.map(|b| b.model.to_string()))
        .or_else(|| (kind == WireKind::Http).then(String::new))
        .ok_or(SpecError::Missing("model"))?;
    let key_env = entry.api_key_env.or(base.and_then(|b| b.key_env).map(str::to_string));
    let api_key = match key_env {
        Some(var) => Some(Secret::new(env(&var).ok_or(SpecError::KeyMissing(var))?)),
        None => None,
    };
    let mut headers: BTreeMap<String, String> = base
        .map(|b| b.headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        .unwrap_or_default();
    headers.extend(entry.headers.unwrap_or_default());
    if kind != WireKind::Openai && !headers.is_empty() {
        return Err(SpecError::HeadersUnsupported);
    }
    let wire = match (kind, http) {
        (WireKind::Openai, _) => Wire::OpenAi { headers },
        (WireKind::Gemini, _) => Wire::Gemini,
        (WireKind::Anthropic, _) => Wire::Anthropic,
        (WireKind::Cohere, _) => Wire::Cohere,
        (WireKind::Http, shape) => Wire::Http(shape.ok_or(SpecError::Missing("body_template"))?),
    };
    Ok(ProviderSpec {
        name: entry.name,
        wire,
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
    })
}

fn http_shape(
    kind: WireKind,
    body_template: Option<serde_json::Value>,
    response_path: Option<String>,
    auth_header: Option<String>,
) -> Result<Option<HttpShape>, SpecError> {
    if kind != WireKind::Http {
        return match (&body_template, &response_path, &auth_header) {
            (Some(_), _, _) => Err(SpecError::HttpOnly("body_template")),
            (_, Some(_), _) => Err(SpecError::HttpOnly("response_path")),
            (_, _, Some(_)) => Err(SpecError::HttpOnly("auth_header")),
            _ => Ok(None),
        };
    }
    let auth_header = auth_header.unwrap_or_else(|| "authorization".into());
    if http::HeaderName::try_from(auth_header.as_str()).is_err() {
        return Err(SpecError::BadHeader(auth_header));
    }
    Ok(Some(HttpShape {
        body_template: body_template.ok_or(SpecError::Missing("body_template"))?,
        response_path: JsonPath::parse(&response_path.ok_or(SpecError::Missing("response_path"))?)
            .map_err(SpecError::BadPath)?,
        auth_header,
    }))
}

/// Every catalog provider whose key variable is set, in catalog order (no file given).
pub(crate) fn from_catalog_env(env: &dyn Fn(&str) -> Option<String>) -> Vec<ProviderSpec> {
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
                body_template: None,
                response_path: None,
                auth_header: None,
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

/// The adapter for a spec. `guard` vets the URL of every custom `http` provider call (SSRF); `scrub`
/// takes every configured secret out of the provider's failure texts.
pub fn build(spec: &ProviderSpec, client: reqwest::Client, guard: &UrlGuard, scrub: &Scrubber) -> Arc<dyn Provider> {
    let timeout = Duration::from_millis(spec.timeout_ms);
    let (name, url, model, key, reset) = (
        spec.name.as_str(),
        spec.base_url.as_str(),
        spec.model.as_str(),
        spec.api_key.clone(),
        spec.limits.reset,
    );
    let conn = || Connection {
        name: name.to_string(),
        url: url.to_string(),
        key: key.clone(),
        timeout,
        reset,
        client: client.clone(),
        scrub: scrub.clone(),
    };
    match &spec.wire {
        Wire::OpenAi { headers } => Arc::new(OpenAiProvider::new(conn(), model, headers.clone())),
        Wire::Gemini => Arc::new(GeminiProvider::new(conn(), model)),
        Wire::Anthropic => Arc::new(AnthropicProvider::new(conn(), model)),
        Wire::Cohere => Arc::new(CohereProvider::new(conn(), model)),
        Wire::Http(shape) => Arc::new(CustomHttpProvider {
            conn: conn(),
            model: model.to_string(),
            auth_header: shape.auth_header.clone(),
            template: shape.body_template.clone(),
            response_path: shape.response_path.clone(),
            guard: guard.clone(),
        }),
    }
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
        assert_eq!(
            (spec.base_url.as_str(), spec.api_key.is_none()),
            ("http://10.0.0.5:8000/v1", true)
        );
    }

    #[test]
    fn unusable_entries_say_why() {
        assert!(
            matches!(resolve(entry("name = \"groq\""), &env(&[])), Err(SpecError::KeyMissing(v)) if v == "GROQ_API_KEY")
        );
        assert!(matches!(
            resolve(entry("name = \"x\"\nkind = \"openai\""), &env(&[])),
            Err(SpecError::Missing("base_url"))
        ));
        assert!(matches!(
            resolve(entry("name = \"cloudflare\""), &env(&[("CLOUDFLARE_API_TOKEN", "t")])),
            Err(SpecError::UrlVariable(v)) if v == "CLOUDFLARE_ACCOUNT_ID"
        ));
        assert!(
            toml::from_str::<ProviderEntry>("name = \"a\"\nbogus = 1").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn every_wire_resolves_and_http_needs_its_shape() {
        let gemini = resolve(entry("name = \"gemini\""), &env(&[("GEMINI_API_KEY", "g")])).unwrap();
        assert!(matches!(gemini.wire, Wire::Gemini));
        assert_eq!(gemini.base_url, "https://generativelanguage.googleapis.com/v1beta");
        let compat = resolve(entry("name = \"gemini-openai\""), &env(&[("GEMINI_API_KEY", "g")])).unwrap();
        assert!(matches!(compat.wire, Wire::OpenAi { .. }));
        let anthropic = resolve(entry("name = \"anthropic\""), &env(&[("ANTHROPIC_API_KEY", "a")])).unwrap();
        assert!(matches!(anthropic.wire, Wire::Anthropic));
        let cohere = resolve(entry("name = \"cohere\""), &env(&[("COHERE_API_KEY", "c")])).unwrap();
        assert!(matches!(cohere.wire, Wire::Cohere));
        let space = "name = \"space\"\nkind = \"http\"\nbase_url = \"https://me-space.hf.space/generate\"\nresponse_path = \"[0].generated_text\"\n[body_template]\ninputs = \"{{prompt}}\"";
        let spec = resolve(entry(space), &env(&[])).unwrap();
        assert!(
            matches!(&spec.wire, Wire::Http(shape) if shape.body_template["inputs"] == "{{prompt}}" && shape.auth_header == "authorization")
        );
        let no_path = "name = \"space\"\nkind = \"http\"\nbase_url = \"https://x.example\"\n[body_template]\na = 1";
        assert!(matches!(
            resolve(entry(no_path), &env(&[])),
            Err(SpecError::Missing("response_path"))
        ));
        let stray = "name = \"groq\"\nresponse_path = \"a\"";
        assert!(matches!(
            resolve(entry(stray), &env(&[("GROQ_API_KEY", "k")])),
            Err(SpecError::HttpOnly("response_path"))
        ));
    }

    #[test]
    fn the_environment_enables_catalog_providers_in_order() {
        let specs = from_catalog_env(&env(&[("OPENROUTER_API_KEY", "o"), ("GEMINI_API_KEY", "g")]));
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["gemini", "openrouter"],
            "one key never enables two routes to the same quota"
        );
        assert_eq!(specs[0].limits.reset, ResetClock::PacificMidnight);
    }
}
