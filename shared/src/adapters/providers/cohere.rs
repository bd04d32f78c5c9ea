//! Cohere's v2 chat wire format: `POST {base}/chat`, Bearer key, OpenAI-like messages; JSON through
//! `response_format {"type":"json_object","json_schema"?}`; the text in `message.content[]`.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::de;
use super::transport::{self, Connection, Raw, TextPart, Wire};
use crate::domain::error_class::ErrorClass;
use crate::domain::llm::{CompletionRequest, FinishReason, ResponseFormat};
use crate::domain::outcome::{Answer, Failure};

pub(crate) struct CohereProvider {
    conn: Connection,
    model: String,
}

impl CohereProvider {
    /// `conn.url` is the base URL; calls go to its `/chat`.
    pub(crate) fn new(conn: Connection, model: &str) -> Self {
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

/// A v2 chat answer, as far as we read it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatAnswer {
    #[serde(deserialize_with = "de::lenient")]
    finish_reason: Option<String>,
    #[serde(deserialize_with = "de::object")]
    message: Option<Message>,
    #[serde(deserialize_with = "de::object")]
    usage: Option<WireUsage>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Message {
    #[serde(deserialize_with = "de::list")]
    content: Vec<TextPart>,
}

/// Cohere counts under `usage.tokens` (`usage.billed_units` is what the account is charged).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireUsage {
    #[serde(deserialize_with = "de::object")]
    tokens: Option<Tokens>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Tokens {
    #[serde(deserialize_with = "de::lenient")]
    input_tokens: Option<u64>,
    #[serde(deserialize_with = "de::lenient")]
    output_tokens: Option<u64>,
}

fn parse_success(raw: &Raw) -> Result<Answer, Failure> {
    let answer: ChatAnswer = transport::answer_body(&raw.body)?;
    let finish = match answer.finish_reason.as_deref().unwrap_or("COMPLETE") {
        "COMPLETE" | "STOP_SEQUENCE" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        // The generation failed on their side after a 200.
        "ERROR" => return Err(Failure::new(ErrorClass::Overloaded, "finish_reason ERROR")),
        r if r.contains("TOXIC") => return Err(Failure::new(ErrorClass::Filtered, format!("finish_reason {r}"))),
        _ => FinishReason::Other,
    };
    let text = transport::text_blocks(&answer.message.unwrap_or_default().content);
    let tokens = answer.usage.and_then(|u| u.tokens).unwrap_or_default();
    transport::non_empty(
        text,
        finish,
        transport::usage(tokens.input_tokens, tokens.output_tokens),
    )
}

#[async_trait]
impl Wire for CohereProvider {
    fn conn(&self) -> &Connection {
        &self.conn
    }

    async fn send(&self, request: &CompletionRequest) -> Result<Raw, reqwest::Error> {
        let headers = self.conn.key_header("authorization", true);
        self.conn.post(&headers, &self.body(request)).await
    }

    fn answer(&self, raw: &Raw) -> Result<Answer, Failure> {
        parse_success(raw)
    }
}
