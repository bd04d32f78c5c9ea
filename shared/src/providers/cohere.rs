//! Cohere's v2 chat wire format: `POST {base}/chat`, Bearer key, OpenAI-like messages; JSON through
//! `response_format {"type":"json_object","json_schema"?}`; the text in `message.content[]`.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};

use super::transport::{self, Raw};
use super::{Answer, CallReport, ErrorClass, Failure};
use crate::config::Secret;
use crate::llm::{CompletionRequest, FinishReason, ResponseFormat, Usage};
use crate::ports::Provider;
use crate::quota::ResetClock;

pub struct CohereProvider {
    name: String,
    url: String,
    model: String,
    key: Option<Secret>,
    timeout: Duration,
    reset: ResetClock,
    client: reqwest::Client,
}

impl CohereProvider {
    pub fn new(
        name: &str,
        base_url: &str,
        model: &str,
        key: Option<Secret>,
        timeout: Duration,
        reset: ResetClock,
        client: reqwest::Client,
    ) -> Self {
        Self {
            name: name.to_string(),
            url: format!("{}/chat", base_url.trim_end_matches('/')),
            model: model.to_string(),
            key,
            timeout,
            reset,
            client,
        }
    }

    fn body(&self, request: &CompletionRequest) -> Value {
        // Cohere's roles are OpenAI's (system, user, assistant) and contents may be plain strings.
        let mut body = json!({"model": self.model, "messages": request.messages, "max_tokens": request.max_tokens});
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        if let ResponseFormat::Json { schema } = &request.format {
            body["response_format"] = match schema {
                Some(schema) => json!({"type": "json_object", "json_schema": schema}),
                None => json!({"type": "json_object"}),
            };
        }
        body
    }
}

fn parse_success(raw: &Raw) -> Result<Answer, Failure> {
    let parsed = transport::json_body(&raw.body)?;
    let reason = parsed["finish_reason"].as_str().unwrap_or("COMPLETE");
    let finish = match reason {
        "COMPLETE" | "STOP_SEQUENCE" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        // The generation failed on their side after a 200.
        "ERROR" => return Err(Failure::new(ErrorClass::Overloaded, "finish_reason ERROR")),
        r if r.contains("TOXIC") => return Err(Failure::new(ErrorClass::Filtered, format!("finish_reason {r}"))),
        _ => FinishReason::Other,
    };
    let text: String = parsed["message"]["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|part| part["type"] == "text")
        .filter_map(|part| part["text"].as_str())
        .collect();
    let tokens = &parsed["usage"]["tokens"];
    let usage = Usage {
        input_tokens: tokens["input_tokens"].as_u64().unwrap_or(0),
        output_tokens: tokens["output_tokens"].as_u64().unwrap_or(0),
    };
    transport::non_empty(text, finish, usage)
}

#[async_trait]
impl Provider for CohereProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn call(&self, request: &CompletionRequest) -> CallReport {
        let started = Instant::now();
        let headers: Vec<(String, String)> = self
            .key
            .iter()
            .map(|k| ("authorization".to_string(), format!("Bearer {}", k.expose())))
            .collect();
        let sent = transport::post_json(&self.client, &self.url, &headers, &self.body(request), self.timeout).await;
        transport::report(&self.name, started, sent, self.timeout, self.reset, parse_success)
    }
}
