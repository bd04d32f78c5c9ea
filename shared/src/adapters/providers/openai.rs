//! The OpenAI chat-completions wire format, spoken by most free providers (Groq, OpenRouter, Cerebras,
//! Mistral, NVIDIA, Cloudflare, Hugging Face, Together, DeepSeek, Perplexity, Gemini's OpenAI
//! endpoint, Ollama, llama.cpp). Per-provider differences are data (base URL, headers, limits).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::classify::{error_code, http_failure};
use super::de;
use super::transport::{self, Connection, Raw, SchemaFallback, Wire};
use crate::domain::error_class::ErrorClass;
use crate::domain::llm::{CompletionRequest, FinishReason, ResponseFormat};
use crate::domain::outcome::{Answer, Failure};
use crate::domain::quota::ResetClock;

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

    async fn post(&self, body: Value) -> Result<Raw, reqwest::Error> {
        let mut headers: Vec<(String, String)> = self.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        headers.extend(self.conn.key_header("authorization", true));
        self.conn.post(&headers, &body).await
    }
}

fn schema_refused(raw: &Raw) -> bool {
    let lower = raw.body.to_ascii_lowercase();
    raw.status == 400 && (lower.contains("json_schema") || lower.contains("response_format"))
}

/// A chat-completions answer, as far as we read it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatCompletion {
    /// An error put inside a 200 (OpenRouter mid-generation). Present counts, even as `null`.
    #[serde(deserialize_with = "de::lenient")]
    error: Option<Value>,
    /// Only the first choice is read: we never ask for more than one.
    #[serde(rename = "choices", deserialize_with = "de::first")]
    choice: Option<Choice>,
    #[serde(deserialize_with = "de::object")]
    usage: Option<WireUsage>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Choice {
    #[serde(deserialize_with = "de::lenient")]
    finish_reason: Option<String>,
    #[serde(deserialize_with = "de::object")]
    message: Option<Message>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Message {
    #[serde(deserialize_with = "de::lenient")]
    content: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireUsage {
    #[serde(deserialize_with = "de::lenient")]
    prompt_tokens: Option<u64>,
    #[serde(deserialize_with = "de::lenient")]
    completion_tokens: Option<u64>,
}

/// Reads a 200 answer: the message, or an error the provider put inside the 200 (OpenRouter).
fn parse_success(raw: &Raw, reset: ResetClock) -> Result<Answer, Failure> {
    let answer: ChatCompletion = transport::answer_body(&raw.body)?;
    if answer.error.is_some() {
        let status = error_code(&raw.body)
            .and_then(|code| code.parse::<u16>().ok())
            .filter(|s| (400..600).contains(s))
            .unwrap_or(502);
        return Err(http_failure(status, &raw.headers, &raw.body, reset));
    }
    let choice = answer.choice.unwrap_or_default();
    let finish = match choice.finish_reason.as_deref() {
        Some("stop") | Some("eos") | None => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        Some(_) => FinishReason::Other,
    };
    if finish == FinishReason::ContentFilter {
        return Err(Failure::new(ErrorClass::Filtered, "finish_reason content_filter"));
    }
    let text = choice.message.and_then(|m| m.content).unwrap_or_default();
    let usage = answer.usage.unwrap_or_default();
    transport::non_empty(
        text,
        finish,
        transport::usage(usage.prompt_tokens, usage.completion_tokens),
    )
}

#[async_trait]
impl Wire for OpenAiProvider {
    fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Some models reject json_schema: they get plain JSON mode (json_object) from then on.
    async fn send(&self, request: &CompletionRequest) -> Result<Raw, reqwest::Error> {
        let post = |use_schema| self.post(self.body(request, use_schema));
        self.json_schema.send(request, schema_refused, post).await
    }

    fn answer(&self, raw: &Raw) -> Result<Answer, Failure> {
        parse_success(raw, self.conn.reset)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;
    use crate::domain::llm::Usage;

    fn read(body: &str) -> Result<Answer, Failure> {
        let raw = Raw {
            status: 200,
            headers: HeaderMap::new(),
            body: body.to_string(),
        };
        parse_success(&raw, ResetClock::UtcMidnight)
    }

    #[test]
    fn fields_of_another_type_read_as_absent_not_as_a_broken_answer() {
        let answer = read(
            r#"{"choices":[{"message":{"content":"hi"},"finish_reason":7}],"usage":{"prompt_tokens":"x","completion_tokens":5}}"#,
        )
        .unwrap();
        assert_eq!((answer.text.as_str(), answer.finish), ("hi", FinishReason::Stop));
        assert_eq!(
            answer.usage,
            Usage {
                input_tokens: 0,
                output_tokens: 5
            }
        );
        for body in [
            r#"[1, 2]"#,
            r#""text""#,
            r#"{"choices":[{"message":{"content":5}}]}"#,
            r#"{"choices":{}}"#,
        ] {
            let failure = read(body).unwrap_err();
            assert_eq!(
                (failure.class, failure.message.as_str()),
                (ErrorClass::InvalidOutput, "empty answer"),
                "{body}"
            );
        }
        assert_eq!(
            read("not json").unwrap_err().message,
            "200 with a body that is not JSON"
        );
    }

    #[test]
    fn an_error_inside_a_200_is_classified_by_its_code() {
        let failure = read(r#"{"error":{"message":"Rate limit exceeded","code":429}}"#).unwrap_err();
        assert_eq!(
            (failure.class, failure.message.as_str()),
            (ErrorClass::RateLimited, "429 429: Rate limit exceeded")
        );
        // Present counts, even as null: a 502 (overloaded) with nothing more said.
        assert_eq!(read(r#"{"error":null}"#).unwrap_err().class, ErrorClass::Overloaded);
    }
}
