//! Gemini's native `generateContent` wire format: `POST {base}/models/{model}:generateContent` with the key in
//! `x-goog-api-key`. JSON is asked for natively (`responseMimeType` + `responseJsonSchema`); a model that
//! rejects the schema gets plain JSON mode from then on. Blocked prompts and safety stops arrive as HTTP 200.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::de;
use super::transport::{self, Connection, Raw, SchemaFallback, Wire};
use crate::domain::error_class::ErrorClass;
use crate::domain::llm::{CompletionRequest, FinishReason, ResponseFormat, Role};
use crate::domain::outcome::{Answer, Failure};

pub(crate) struct GeminiProvider {
    conn: Connection,
    /// Set once the model refused `responseJsonSchema`: later calls ask for JSON without it.
    json_schema: SchemaFallback,
}

impl GeminiProvider {
    /// `conn.url` is the base URL (`…/v1beta`); calls go to its `/models/{model}:generateContent`.
    pub(crate) fn new(conn: Connection, model: &str) -> Self {
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
                config.insert("responseJsonSchema".into(), Value::clone(schema));
            }
        }
        let mut body = json!({"contents": contents, "generationConfig": config});
        if !system.is_empty() {
            body["systemInstruction"] = json!({"parts": [{"text": system.join("\n\n")}]});
        }
        body
    }

    async fn post(&self, body: Value) -> Result<Raw, reqwest::Error> {
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

/// A `generateContent` answer, as far as we read it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct GenerateContent {
    /// Only the first candidate is read: we never ask for more than one.
    #[serde(rename = "candidates", deserialize_with = "de::first")]
    candidate: Option<Candidate>,
    #[serde(deserialize_with = "de::object")]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(deserialize_with = "de::object")]
    usage_metadata: Option<UsageMetadata>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Candidate {
    #[serde(deserialize_with = "de::lenient")]
    finish_reason: Option<String>,
    #[serde(deserialize_with = "de::object")]
    content: Option<Content>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Content {
    #[serde(deserialize_with = "de::list")]
    parts: Vec<Part>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Part {
    #[serde(deserialize_with = "de::lenient")]
    text: Option<String>,
    /// A thinking model's thought, not part of the answer.
    #[serde(deserialize_with = "de::lenient")]
    thought: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(deserialize_with = "de::lenient")]
    block_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(deserialize_with = "de::lenient")]
    prompt_token_count: Option<u64>,
    #[serde(deserialize_with = "de::lenient")]
    candidates_token_count: Option<u64>,
}

fn parse_success(raw: &Raw) -> Result<Answer, Failure> {
    let answer: GenerateContent = transport::answer_body(&raw.body)?;
    let Some(candidate) = answer.candidate else {
        // A blocked prompt is a 200 with no candidates and the reason in promptFeedback.
        return Err(match answer.prompt_feedback.and_then(|f| f.block_reason) {
            Some(reason) => Failure::new(ErrorClass::Filtered, format!("prompt blocked: {reason}")),
            None => Failure::new(ErrorClass::InvalidOutput, "200 without candidates"),
        });
    };
    let reason = candidate.finish_reason.as_deref().unwrap_or("STOP");
    let finish = match reason {
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            return Err(Failure::new(ErrorClass::Filtered, format!("finishReason {reason}")));
        }
        _ => FinishReason::Other,
    };
    // Thinking models may return thought parts: only the answer's own parts count.
    let text: String = candidate
        .content
        .unwrap_or_default()
        .parts
        .iter()
        .filter(|p| p.thought != Some(true))
        .filter_map(|p| p.text.as_deref())
        .collect();
    let usage = answer.usage_metadata.unwrap_or_default();
    transport::non_empty(
        text,
        finish,
        transport::usage(usage.prompt_token_count, usage.candidates_token_count),
    )
}

#[async_trait]
impl Wire for GeminiProvider {
    fn conn(&self) -> &Connection {
        &self.conn
    }

    async fn send(&self, request: &CompletionRequest) -> Result<Raw, reqwest::Error> {
        let post = |use_schema| self.post(Self::body(request, use_schema));
        self.json_schema.send(request, schema_refused, post).await
    }

    fn answer(&self, raw: &Raw) -> Result<Answer, Failure> {
        parse_success(raw)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    fn read(body: &str) -> Result<Answer, Failure> {
        parse_success(&Raw {
            status: 200,
            headers: HeaderMap::new(),
            body: body.to_string(),
        })
    }

    #[test]
    fn thoughts_and_parts_without_text_are_left_out() {
        let answer = read(
            r#"{"candidates":[{"content":{"parts":["stray",{"text":"a"},{"text":"b","thought":true},{"text":"c","thought":"no"}]}}],"usageMetadata":{"promptTokenCount":3}}"#,
        )
        .unwrap();
        assert_eq!((answer.text.as_str(), answer.finish), ("ac", FinishReason::Stop));
        assert_eq!((answer.usage.input_tokens, answer.usage.output_tokens), (3, 0));
    }

    #[test]
    fn no_usable_candidate_is_a_block_or_an_unusable_answer() {
        for body in [r#"{"candidates":[]}"#, r#"{"candidates":[null]}"#, r#"{}"#, r#"[]"#] {
            assert_eq!(read(body).unwrap_err().message, "200 without candidates", "{body}");
        }
        let blocked = read(r#"{"promptFeedback":{"blockReason":"SAFETY"}}"#).unwrap_err();
        assert_eq!(
            (blocked.class, blocked.message.as_str()),
            (ErrorClass::Filtered, "prompt blocked: SAFETY")
        );
    }
}
