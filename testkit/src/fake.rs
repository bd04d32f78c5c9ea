//! Fake AI provider servers: real HTTP on a free loopback port, answering each request from a script
//! with the status codes, headers and bodies of the provider's own wire format (../shared/providers.md).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// The wire format a fake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI chat completions (`POST /v1/chat/completions`), spoken by most free providers.
    OpenAi,
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct FakeReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl FakeReply {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self { status, headers: vec![("content-type".into(), "application/json".into())], body: body.into(), delay: Duration::ZERO }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// A chat completion whose message content is `text`.
    pub fn openai_text(text: &str) -> Self {
        Self::openai_completion(text, "stop")
    }

    /// A chat completion with a chosen `finish_reason` (`length` = truncated, `content_filter`).
    pub fn openai_completion(text: &str, finish_reason: &str) -> Self {
        Self::new(
            200,
            json!({
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 1_764_000_000,
                "model": "fake-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
                "usage": {"prompt_tokens": 120, "completion_tokens": 80, "total_tokens": 200}
            })
            .to_string(),
        )
    }

    /// OpenAI's error body `{"error":{"message","type","code"}}` with a status.
    pub fn openai_error(status: u16, kind: &str, code: &str, message: &str) -> Self {
        Self::new(status, json!({"error": {"message": message, "type": kind, "param": null, "code": code}}).to_string())
    }

    /// A status with the error body OpenAI sends for it.
    pub fn openai_status(status: u16) -> Self {
        match status {
            400 => Self::openai_error(400, "invalid_request_error", "context_length_exceeded", "This model's maximum context length is 8192 tokens."),
            401 => Self::openai_error(401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
            404 => Self::openai_error(404, "invalid_request_error", "model_not_found", "The model `fake-model` does not exist."),
            429 => Self::openai_rate_limited(1),
            500 => Self::openai_error(500, "server_error", "internal_error", "The server had an error while processing your request."),
            503 => Self::openai_error(503, "server_error", "overloaded", "The engine is currently overloaded, please try again later."),
            other => Self::openai_error(other, "server_error", "error", "error"),
        }
    }

    /// 429 with `retry-after` seconds and the rate-limit headers OpenAI and Groq send.
    pub fn openai_rate_limited(retry_after_s: u64) -> Self {
        Self::openai_error(429, "requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later.")
            .with_header("retry-after", &retry_after_s.to_string())
            .with_header("x-ratelimit-limit-requests", "30")
            .with_header("x-ratelimit-remaining-requests", "0")
            .with_header("x-ratelimit-reset-requests", &format!("{retry_after_s}s"))
    }
}

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Script {
    queue: VecDeque<FakeReply>,
    default: Option<FakeReply>,
    requests: Vec<RecordedRequest>,
    expected_key: Option<String>,
}

#[derive(Clone)]
struct Shared {
    wire: Wire,
    script: Arc<Mutex<Script>>,
}

pub struct FakeProvider {
    wire: Wire,
    port: u16,
    script: Arc<Mutex<Script>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeProvider {
    pub async fn start(wire: Wire) -> anyhow::Result<Self> {
        let script = Arc::new(Mutex::new(Script::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let app = axum::Router::new().fallback(answer).with_state(Shared { wire, script: script.clone() });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { wire, port, script, server })
    }

    /// What a provider configuration's `base_url` is for this fake.
    pub fn base_url(&self) -> String {
        match self.wire {
            Wire::OpenAi => format!("http://127.0.0.1:{}/v1", self.port),
        }
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an answer for the next request.
    pub fn push(&self, reply: FakeReply) {
        self.script().queue.push_back(reply);
    }

    /// The answer once the queue is empty (initially: a 500 saying the fake was not scripted).
    pub fn set_default(&self, reply: FakeReply) {
        self.script().default = Some(reply);
    }

    /// Requests without `Authorization: Bearer <key>` get the wire's own 401.
    pub fn expect_key(&self, key: &str) {
        self.script().expected_key = Some(key.to_string());
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.script().requests.clone()
    }

    pub fn hits(&self) -> usize {
        self.script().requests.len()
    }
}

async fn answer(State(shared): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let reply = {
        let mut script = shared.script.lock().unwrap_or_else(|p| p.into_inner());
        script.requests.push(RecordedRequest {
            method: method.to_string(),
            path: uri.path().to_string(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        let wire_path_ok = match shared.wire {
            Wire::OpenAi => method == Method::POST && uri.path() == "/v1/chat/completions",
        };
        let authorised = script.expected_key.as_ref().is_none_or(|key| {
            headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(format!("Bearer {key}").as_str())
        });
        if !wire_path_ok {
            FakeReply::openai_error(404, "invalid_request_error", "unknown_url", &format!("Unknown request URL: {method} {}", uri.path()))
        } else if !authorised {
            FakeReply::openai_status(401)
        } else {
            script.queue.pop_front().or_else(|| script.default.clone()).unwrap_or_else(|| {
                FakeReply::openai_error(500, "server_error", "unscripted", "the fake provider has no scripted answer")
            })
        }
    };
    tokio::time::sleep(reply.delay).await;
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, reply.body).into_response();
    for (name, value) in &reply.headers {
        if let (Ok(n), Ok(v)) = (http::HeaderName::try_from(name.as_str()), http::HeaderValue::try_from(value.as_str())) {
            response.headers_mut().insert(n, v);
        }
    }
    response
}
