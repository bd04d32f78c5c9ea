//! The provider-neutral shape of one model call: what we ask, and what came back.
//! Provider modules translate these to and from their wire formats.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub(crate) role: Role,
    pub(crate) content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
}

/// What the job wants back: JSON (optionally validated against a JSON Schema) or free text.
/// The schema is shared (`Arc`): a preset's schema is built once per process and every job, every
/// claim and every read of its job holds the same one (a clone is a reference count, not a tree).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum ResponseFormat {
    Json {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schema: Option<std::sync::Arc<serde_json::Value>>,
    },
    Text,
}

/// One model call, independent of the wire format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub messages: Vec<ChatMessage>,
    pub format: ResponseFormat,
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
}

impl CompletionRequest {
    /// A rough token estimate (≈ 4 characters a token) used for per-minute token budgets.
    pub(crate) fn estimated_tokens(&self) -> u64 {
        let chars: usize = self.messages.iter().map(|m| m.content.len()).sum();
        (chars / 4) as u64 + u64::from(self.max_tokens)
    }
}

/// Why the model stopped, normalised across wire formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// Natural end of the answer.
    Stop,
    /// Cut by the token limit: the answer is truncated.
    Length,
    /// Refused or filtered by the provider's safety system.
    ContentFilter,
    /// Anything else (tool calls, unknown values).
    Other,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}
