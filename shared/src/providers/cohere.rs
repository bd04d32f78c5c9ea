//! Cohere's v2 chat wire format: `POST {base}/chat`, Bearer key, OpenAI-like messages; JSON through
//! `response_format {"type":"json_object","json_schema"?}`; the text in `message.content[]`.

use std::time::Instant;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::transport::{self, Connection, Raw};
use crate::error_class::ErrorClass;
use crate::llm::{CompletionRequest, FinishReason, ResponseFormat};
use crate::outcome::{Answer, CallReport, Failure};
use crate::ports::Provider;

pub struct CohereProvider {
    conn: Connection,
    model: String,
}

impl CohereProvider {
    /// `conn.url` is the base URL; calls go to its `/chat`.
    pub fn new(conn: Connection, model: &str) -> Self {
        Self {
            conn: conn.at("/chat"),
            model: model.to_string(),
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
    let text = transport::text_of(&parsed["message"]["content"], |part| part["type"] == "text");
    let usage = transport::usage_at(&parsed, "/usage/tokens/input_tokens", "/usage/tokens/output_tokens");
    transport::non_empty(text, finish, usage)
}

#[async_trait]
impl Provider for CohereProvider {
    fn name(&self) -> &str {
        &self.conn.name
    }

    async fn call(&self, request: &CompletionRequest) -> CallReport {
        let started = Instant::now();
        let sent = self
            .conn
            .post(&self.conn.key_header("authorization", true), &self.body(request))
            .await;
        self.conn.report(started, sent, parse_success)
    }
}
