//! Gemini's native `generateContent` wire format: `POST {base}/models/{model}:generateContent` with the key in
//! `x-goog-api-key`. JSON is asked for natively (`responseMimeType` + `responseJsonSchema`); a model that
//! rejects the schema gets plain JSON mode from then on. Blocked prompts and safety stops arrive as HTTP 200.

use std::time::Instant;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::transport::{self, Connection, Raw, SchemaFallback};
use crate::error_class::ErrorClass;
use crate::llm::{CompletionRequest, FinishReason, ResponseFormat, Role};
use crate::outcome::{Answer, CallReport, Failure};
use crate::ports::Provider;

pub struct GeminiProvider {
    conn: Connection,
    /// Set once the model refused `responseJsonSchema`: later calls ask for JSON without it.
    json_schema: SchemaFallback,
}

impl GeminiProvider {
    /// `conn.url` is the base URL (`…/v1beta`); calls go to its `/models/{model}:generateContent`.
    pub fn new(conn: Connection, model: &str) -> Self {
        Self {
            conn: conn.at(&format!("/models/{model}:generateContent")),
            json_schema: SchemaFallback::default(),
        }
    }

    fn body(request: &CompletionRequest, use_schema: bool) -> Value {
        let system: Vec<&str> = request
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        let contents: Vec<Value> = request
            .messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(|m| {
                let role = if m.role == Role::Assistant { "model" } else { "user" };
                json!({"role": role, "parts": [{"text": m.content}]})
            })
            .collect();
        let mut config = Map::new();
        config.insert("maxOutputTokens".into(), json!(request.max_tokens));
        if let Some(t) = request.temperature {
            config.insert("temperature".into(), json!(t));
        }
        if let ResponseFormat::Json { schema } = &request.format {
            config.insert("responseMimeType".into(), json!("application/json"));
            if let (Some(schema), true) = (schema, use_schema) {
                config.insert("responseJsonSchema".into(), schema.clone());
            }
        }
        let mut body = json!({"contents": contents, "generationConfig": config});
        if !system.is_empty() {
            body["systemInstruction"] = json!({"parts": [{"text": system.join("\n\n")}]});
        }
        body
    }

    async fn send(&self, body: Value) -> Result<Raw, reqwest::Error> {
        self.conn
            .post(&self.conn.key_header("x-goog-api-key", false), &body)
            .await
    }
}

fn schema_refused(raw: &Raw) -> bool {
    let lower = raw.body.to_ascii_lowercase();
    raw.status == 400
        && !lower.contains("api_key_invalid")
        && (lower.contains("json_schema") || lower.contains("jsonschema"))
}

fn parse_success(raw: &Raw) -> Result<Answer, Failure> {
    let parsed = transport::json_body(&raw.body)?;
    let candidate = &parsed["candidates"][0];
    if candidate.is_null() {
        // A blocked prompt is a 200 with no candidates and the reason in promptFeedback.
        let reason = parsed["promptFeedback"]["blockReason"].as_str();
        return Err(match reason {
            Some(reason) => Failure::new(ErrorClass::Filtered, format!("prompt blocked: {reason}")),
            None => Failure::new(ErrorClass::InvalidOutput, "200 without candidates"),
        });
    }
    let reason = candidate["finishReason"].as_str().unwrap_or("STOP");
    let finish = match reason {
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            return Err(Failure::new(ErrorClass::Filtered, format!("finishReason {reason}")));
        }
        _ => FinishReason::Other,
    };
    // Thinking models may return thought parts: only the answer's own parts count.
    let text = transport::text_of(&candidate["content"]["parts"], |p| p["thought"].as_bool() != Some(true));
    let usage = transport::usage_at(
        &parsed,
        "/usageMetadata/promptTokenCount",
        "/usageMetadata/candidatesTokenCount",
    );
    transport::non_empty(text, finish, usage)
}

#[async_trait]
impl Provider for GeminiProvider {
    fn name(&self) -> &str {
        &self.conn.name
    }

    async fn call(&self, request: &CompletionRequest) -> CallReport {
        let started = Instant::now();
        let wants_schema = matches!(&request.format, ResponseFormat::Json { schema: Some(_) });
        let sent = self
            .json_schema
            .send(wants_schema, schema_refused, |use_schema| {
                self.send(Self::body(request, use_schema))
            })
            .await;
        self.conn.report(started, sent, parse_success)
    }
}
