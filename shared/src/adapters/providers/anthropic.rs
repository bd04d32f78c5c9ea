//! The Anthropic Messages wire format: `POST {base}/messages` with `x-api-key` and `anthropic-version`.
//! System messages go to the top-level `system`; Messages has no JSON mode, so a JSON job asks for it in
//! the system instructions (with the schema when there is one) and the output check does the rest.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::classify::http_failure;
use super::de;
use super::transport::{self, Connection, Raw, TextPart, Wire};
use crate::domain::error_class::ErrorClass;
use crate::domain::llm::{CompletionRequest, FinishReason, ResponseFormat, Role};
use crate::domain::outcome::{Answer, Failure};
use crate::domain::quota::ResetClock;

pub(crate) const API_VERSION: &str = "2023-06-01";

pub(crate) struct AnthropicProvider {
    conn: Connection,
    model: String,
}

impl AnthropicProvider {
    /// `conn.url` is the base URL; calls go to its `/messages`.
    pub(crate) fn new(conn: Connection, model: &str) -> Self {
        Self {
            conn: conn.at("/messages"),
            model: model.to_string(),
        }
    }

    fn body(&self, request: &CompletionRequest) -> Value {
        let mut system: Vec<String> = request
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.clone())
            .collect();
        if let ResponseFormat::Json { schema } = &request.format {
            system.push(json_instructions(schema.as_deref()));
        }
        let messages: Vec<Value> = request
            .messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(|m| {
                let role = if m.role == Role::Assistant { "assistant" } else { "user" };
                json!({"role": role, "content": m.content})
            })
            .collect();
        let mut body = json!({"model": self.model, "max_tokens": request.max_tokens, "messages": messages});
        if !system.is_empty() {
            body["system"] = json!(system.join("\n\n"));
        }
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        body
    }
}

/// What a JSON job adds to the system prompt on a wire without a JSON mode.
pub(crate) fn json_instructions(schema: Option<&Value>) -> String {
    let mut text = "Reply with a single JSON object and nothing else: no prose, no code fences.".to_string();
    if let Some(schema) = schema {
        text.push_str(" The object must validate against this JSON Schema:\n");
        text.push_str(&schema.to_string());
    }
    text
}

/// A Messages answer, as far as we read it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MessagesAnswer {
    /// `"error"` when a proxy put an error inside the 200.
    #[serde(rename = "type", deserialize_with = "de::lenient")]
    kind: Option<String>,
    #[serde(deserialize_with = "de::object")]
    error: Option<ErrorType>,
    #[serde(deserialize_with = "de::lenient")]
    stop_reason: Option<String>,
    #[serde(deserialize_with = "de::list")]
    content: Vec<TextPart>,
    #[serde(deserialize_with = "de::object")]
    usage: Option<WireUsage>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorType {
    #[serde(rename = "type", deserialize_with = "de::lenient")]
    kind: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireUsage {
    #[serde(deserialize_with = "de::lenient")]
    input_tokens: Option<u64>,
    #[serde(deserialize_with = "de::lenient")]
    output_tokens: Option<u64>,
}

fn parse_success(raw: &Raw, reset: ResetClock) -> Result<Answer, Failure> {
    let answer: MessagesAnswer = transport::answer_body(&raw.body)?;
    if answer.kind.as_deref() == Some("error") {
        // 529-style overload reported inside a 200 by some proxies: classify it as its error type says.
        let status = match answer.error.and_then(|e| e.kind).as_deref() {
            Some("overloaded_error") => 529,
            Some("rate_limit_error") => 429,
            _ => 502,
        };
        return Err(http_failure(status, &raw.headers, &raw.body, reset));
    }
    let finish = match answer.stop_reason.as_deref().unwrap_or("end_turn") {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "refusal" => return Err(Failure::new(ErrorClass::Filtered, "stop_reason refusal")),
        _ => FinishReason::Other,
    };
    let text = transport::text_blocks(&answer.content);
    let usage = answer.usage.unwrap_or_default();
    transport::non_empty(text, finish, transport::usage(usage.input_tokens, usage.output_tokens))
}

#[async_trait]
impl Wire for AnthropicProvider {
    fn conn(&self) -> &Connection {
        &self.conn
    }

    async fn send(&self, request: &CompletionRequest) -> Result<Raw, reqwest::Error> {
        let mut headers = vec![("anthropic-version".to_string(), API_VERSION.to_string())];
        headers.extend(self.conn.key_header("x-api-key", false));
        self.conn.post(&headers, &self.body(request)).await
    }

    fn answer(&self, raw: &Raw) -> Result<Answer, Failure> {
        parse_success(raw, self.conn.reset)
    }
}
