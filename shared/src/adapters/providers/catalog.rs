//! Known providers and their defaults, as data. Limits here are published free-tier figures (late
//! 2026) used as defaults only: every one can be overridden in the providers file.

use serde::{Deserialize, Serialize};

use crate::domain::quota::ResetClock;

/// The wire format a provider speaks: a catalog entry's, or a `[[providers]]` entry's `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WireKind {
    Openai,
    Gemini,
    Anthropic,
    Cohere,
    Http,
}

pub(crate) struct CatalogEntry {
    pub(crate) id: &'static str,
    pub(crate) kind: WireKind,
    pub(crate) base_url: &'static str,
    pub(crate) model: &'static str,
    /// The variable holding the key; `None` for local servers that need none.
    pub(crate) key_env: Option<&'static str>,
    /// Enabled just by its key variable being set (local servers are enabled by the file only).
    pub(crate) from_env: bool,
    pub(crate) rpm: Option<u64>,
    pub(crate) rpd: Option<u64>,
    pub(crate) tpm: Option<u64>,
    pub(crate) reset: ResetClock,
    pub(crate) small_context: bool,
    pub(crate) headers: &'static [(&'static str, &'static str)],
}

const fn openai(id: &'static str, base_url: &'static str, model: &'static str, key_env: &'static str) -> CatalogEntry {
    native(WireKind::Openai, id, base_url, model, key_env)
}

const fn native(
    kind: WireKind,
    id: &'static str,
    base_url: &'static str,
    model: &'static str,
    key_env: &'static str,
) -> CatalogEntry {
    CatalogEntry {
        id,
        kind,
        base_url,
        model,
        key_env: Some(key_env),
        from_env: true,
        rpm: None,
        rpd: None,
        tpm: None,
        reset: ResetClock::UtcMidnight,
        small_context: false,
        headers: &[],
    }
}

/// In the order providers are tried when they come from the environment.
pub(crate) const CATALOG: &[CatalogEntry] = &[
    // Gemini's native API: JSON schemas asked natively, and its 429s say which quota ran out.
    CatalogEntry {
        rpm: Some(10),
        rpd: Some(250),
        tpm: Some(250_000),
        reset: ResetClock::PacificMidnight,
        ..native(
            WireKind::Gemini,
            "gemini",
            "https://generativelanguage.googleapis.com/v1beta",
            "gemini-2.5-flash",
            "GEMINI_API_KEY",
        )
    },
    // The same quota through Gemini's OpenAI endpoint: from the providers file only, never both from one key.
    CatalogEntry {
        rpm: Some(10),
        rpd: Some(250),
        tpm: Some(250_000),
        reset: ResetClock::PacificMidnight,
        from_env: false,
        ..openai(
            "gemini-openai",
            "https://generativelanguage.googleapis.com/v1beta/openai",
            "gemini-2.5-flash",
            "GEMINI_API_KEY",
        )
    },
    CatalogEntry {
        rpm: Some(30),
        rpd: Some(1_000),
        tpm: Some(12_000),
        ..openai(
            "groq",
            "https://api.groq.com/openai/v1",
            "llama-3.3-70b-versatile",
            "GROQ_API_KEY",
        )
    },
    CatalogEntry {
        rpm: Some(5),
        tpm: Some(30_000),
        ..openai(
            "cerebras",
            "https://api.cerebras.ai/v1",
            "llama-3.3-70b",
            "CEREBRAS_API_KEY",
        )
    },
    CatalogEntry {
        rpm: Some(20),
        rpd: Some(50),
        headers: &[("X-Title", "stepper")],
        ..openai(
            "openrouter",
            "https://openrouter.ai/api/v1",
            "meta-llama/llama-3.3-70b-instruct:free",
            "OPENROUTER_API_KEY",
        )
    },
    CatalogEntry {
        rpm: Some(60),
        ..openai(
            "mistral",
            "https://api.mistral.ai/v1",
            "mistral-small-latest",
            "MISTRAL_API_KEY",
        )
    },
    CatalogEntry {
        rpm: Some(40),
        ..openai(
            "nvidia",
            "https://integrate.api.nvidia.com/v1",
            "meta/llama-3.3-70b-instruct",
            "NVIDIA_API_KEY",
        )
    },
    CatalogEntry {
        rpm: Some(300),
        ..openai(
            "cloudflare",
            "https://api.cloudflare.com/client/v4/accounts/{CLOUDFLARE_ACCOUNT_ID}/ai/v1",
            "@cf/meta/llama-3.3-70b-instruct-fp8-fast",
            "CLOUDFLARE_API_TOKEN",
        )
    },
    openai(
        "huggingface",
        "https://router.huggingface.co/v1",
        "meta-llama/Llama-3.3-70B-Instruct",
        "HF_TOKEN",
    ),
    // Trial keys: 20 calls a minute per model and 1,000 a month (a monthly 429 parks it until the 1st).
    CatalogEntry {
        rpm: Some(20),
        ..native(
            WireKind::Cohere,
            "cohere",
            "https://api.cohere.com/v2",
            "command-a-03-2025",
            "COHERE_API_KEY",
        )
    },
    openai(
        "together",
        "https://api.together.xyz/v1",
        "meta-llama/Llama-3.3-70B-Instruct-Turbo-Free",
        "TOGETHER_API_KEY",
    ),
    openai(
        "deepseek",
        "https://api.deepseek.com",
        "deepseek-chat",
        "DEEPSEEK_API_KEY",
    ),
    openai("perplexity", "https://api.perplexity.ai", "sonar", "PERPLEXITY_API_KEY"),
    CatalogEntry {
        rpm: Some(50),
        ..native(
            WireKind::Anthropic,
            "anthropic",
            "https://api.anthropic.com/v1",
            "claude-haiku-4-5",
            "ANTHROPIC_API_KEY",
        )
    },
    openai("openai", "https://api.openai.com/v1", "gpt-4o-mini", "OPENAI_API_KEY"),
    CatalogEntry {
        key_env: None,
        from_env: false,
        ..openai("ollama", "http://localhost:11434/v1", "llama3.2", "")
    },
    CatalogEntry {
        key_env: None,
        from_env: false,
        ..openai("llamacpp", "http://127.0.0.1:8080/v1", "default", "")
    },
];

pub(crate) fn find(id: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|e| e.id == id)
}
