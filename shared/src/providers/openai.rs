//! The OpenAI chat-completions wire format, spoken by most free providers (Groq, OpenRouter, Cerebras,
//! Mistral, NVIDIA, Cloudflare, Hugging Face, Together, DeepSeek, Perplexity, Gemini's OpenAI
//! endpoint, Ollama, llama.cpp). Per-provider differences are data (base URL, headers, limits).

use std::collections::BTreeMap;
use std::time::Instant;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::classify::{error_object, http_failure};
use super::transport::{self, Connection, Raw, SchemaFallback};
use crate::error_class::ErrorClass;
use crate::llm::{CompletionRequest, FinishReason, ResponseFormat};
use crate::outcome::{Answer, CallReport, Failure};
use crate::ports::Provider;
use crate::quota::ResetClock;

pub struct OpenAiProvider {
    conn: Connection,
    model: String,
    /// Sent with every call (OpenRouter's `X-Title`, a gateway's own headers).
    headers: BTreeMap<String, String>,
    /// Set once the model refused `json_schema`: later calls ask for `json_object` straight away.
    json_schema: SchemaFallback,
}

impl OpenAiProvider {
    /// `conn.url` is the base URL (`…/v1`); calls go to its `/chat/completions`.
    pub fn new(conn: Connection, model: &str, headers: BTreeMap<String, String>) -> Self {
        Self {
            conn: conn.at("/chat/completions"),
            model: model.to_string(),
            headers,
            json_schema: SchemaFallback::default(),
        }
    }

    fn body(&self, request: &CompletionRequest, use_schema: bool) -> Value {
        let mut body = json!({
            "model": self.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
        });
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        if let ResponseFormat::Json { schema } = &request.format {
            body["response_format"] = match schema {
                Some(schema) if use_schema => {
                    json!({"type": "json_schema", "json_schema": {"name": "result", "schema": schema, "strict": false}})
                }
                _ => json!({"type": "json_object"}),
            };
        }
        body
    }

    async fn send(&self, body: Value) -> Result<Raw, reqwest::Error> {
        let mut headers: Vec<(String, String)> = self.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        headers.extend(self.conn.key_header("authorization", true));
        self.conn.post(&headers, &body).await
    }
}

fn schema_refused(raw: &Raw) -> bool {
    let lower = raw.body.to_ascii_lowercase();
    raw.status == 400 && (lower.contains("json_schema") || lower.contains("response_format"))
}

/// Reads a 200 answer: the message, or an error the provider put inside the 200 (OpenRouter).
fn parse_success(raw: &Raw, reset: ResetClock) -> Result<Answer, Failure> {
    let parsed = transport::json_body(&raw.body)?;
    if parsed.get("error").is_some() {
        let status = error_object(&parsed)
            .and_then(|(code, _)| code.parse::<u16>().ok())
            .filter(|s| (400..600).contains(s))
            .unwrap_or(502);
        return Err(http_failure(status, &raw.headers, &raw.body, reset));
    }
    let choice = &parsed["choices"][0];
    let finish = match choice["finish_reason"].as_str() {
        Some("stop") | Some("eos") | None => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        Some(_) => FinishReason::Other,
    };
    if finish == FinishReason::ContentFilter {
        return Err(Failure::new(ErrorClass::Filtered, "finish_reason content_filter"));
    }
    let text = choice["message"]["content"].as_str().unwrap_or("").to_string();
    let usage = transport::usage_at(&parsed, "/usage/prompt_tokens", "/usage/completion_tokens");
    transport::non_empty(text, finish, usage)
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.conn.name
    }

    async fn call(&self, request: &CompletionRequest) -> CallReport {
        let started = Instant::now();
        let wants_schema = matches!(&request.format, ResponseFormat::Json { schema: Some(_) });
        // Some models reject json_schema: they get plain JSON mode (json_object) from then on.
        let sent = self
            .json_schema
            .send(wants_schema, schema_refused, |use_schema| {
                self.send(self.body(request, use_schema))
            })
            .await;
        self.conn
            .report(started, sent, |raw| parse_success(raw, self.conn.reset))
    }
}
