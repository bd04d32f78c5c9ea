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

/// Writes `<dir>/providers.toml` (making `dir`), the `STEPPER_CONFIG` file of a test: one
/// OpenAI-compatible provider named `fake` (model `m`) at `base_url`, with this timeout, and its key in
/// `api_key_env` when the test sets one. Returns the file's path.
pub fn providers_file(
    dir: &std::path::Path,
    base_url: &str,
    timeout_ms: u64,
    api_key_env: Option<&str>,
) -> std::io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("providers.toml");
    let key = api_key_env
        .map(|name| format!("api_key_env = \"{name}\"\n"))
        .unwrap_or_default();
    std::fs::write(
        &path,
        format!(
            "[[providers]]\nname = \"fake\"\nkind = \"openai\"\nbase_url = \"{base_url}\"\nmodel = \"m\"\n{key}timeout_ms = {timeout_ms}\n"
        ),
    )?;
    Ok(path)
}

/// The configuration of a test service whose one provider is `fake` (its [`providers_file`] under `dir`,
/// a one-second timeout), everything else by default.
pub fn config_calling(fake: &FakeProvider, dir: &std::path::Path) -> shared::wiring::config::Config {
    let providers = providers_file(dir, &fake.base_url(), 1000, None).expect("the providers file");
    let path = providers.display().to_string();
    shared::wiring::config::Config::from_lookup(&|name| (name == "STEPPER_CONFIG").then(|| path.clone()))
        .expect("a valid configuration")
}

/// The wire format a fake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI chat completions (`POST /v1/chat/completions`), spoken by most free providers.
    OpenAi,
    /// Gemini native (`POST /v1beta/models/{model}:generateContent`, key in `x-goog-api-key`).
    Gemini,
    /// Anthropic Messages (`POST /v1/messages`, `x-api-key`, `anthropic-version` required).
    Anthropic,
    /// Cohere v2 chat (`POST /v2/chat`, Bearer).
    Cohere,
    /// A self-hosted text-generation endpoint (`POST /generate`, Bearer), for custom `http` providers.
    Http,
}

impl Wire {
    pub const ALL: [Wire; 5] = [Wire::OpenAi, Wire::Gemini, Wire::Anthropic, Wire::Cohere, Wire::Http];

    fn path_ok(self, path: &str) -> bool {
        match self {
            Wire::OpenAi => path == "/v1/chat/completions",
            Wire::Gemini => path
                .strip_prefix("/v1beta/models/")
                .is_some_and(|m| m.ends_with(":generateContent")),
            Wire::Anthropic => path == "/v1/messages",
            Wire::Cohere => path == "/v2/chat",
            Wire::Http => path == "/generate",
        }
    }

    /// Whether the request carries `key` where this wire expects it.
    fn authorised(self, headers: &HeaderMap, key: &str) -> bool {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match self {
            Wire::Gemini => header("x-goog-api-key") == Some(key),
            Wire::Anthropic => header("x-api-key") == Some(key),
            _ => header("authorization") == Some(format!("Bearer {key}").as_str()),
        }
    }
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
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
            delay: Duration::ZERO,
        }
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
        Self::new(
            status,
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}}).to_string(),
        )
    }

    /// The 401 of a gateway that quotes the credential it was sent (some proxies echo the
    /// `Authorization` header back): use with [`FakeProvider::set_responder`].
    pub fn openai_bad_key_echoing(request: &RecordedRequest) -> Self {
        let sent = request.header("authorization").unwrap_or("nothing");
        Self::openai_error(
            401,
            "invalid_request_error",
            "invalid_api_key",
            &format!("Incorrect API key provided: {sent}. You can find your API key at https://example.invalid/keys."),
        )
        .with_header(
            "www-authenticate",
            &format!("Bearer realm=\"api\", error=\"invalid_token\", token=\"{sent}\""),
        )
    }

    /// A status with the error body OpenAI sends for it.
    pub fn openai_status(status: u16) -> Self {
        match status {
            400 => Self::openai_error(
                400,
                "invalid_request_error",
                "context_length_exceeded",
                "This model's maximum context length is 8192 tokens.",
            ),
            401 => Self::openai_error(
                401,
                "invalid_request_error",
                "invalid_api_key",
                "Incorrect API key provided.",
            ),
            404 => Self::openai_error(
                404,
                "invalid_request_error",
                "model_not_found",
                "The model `fake-model` does not exist.",
            ),
            429 => Self::openai_rate_limited(1),
            500 => Self::openai_error(
                500,
                "server_error",
                "internal_error",
                "The server had an error while processing your request.",
            ),
            503 => Self::openai_error(
                503,
                "server_error",
                "overloaded",
                "The engine is currently overloaded, please try again later.",
            ),
            other => Self::openai_error(other, "server_error", "error", "error"),
        }
    }

    /// 429 with `retry-after` seconds and the rate-limit headers OpenAI and Groq send.
    pub fn openai_rate_limited(retry_after_s: u64) -> Self {
        Self::openai_error(
            429,
            "requests",
            "rate_limit_exceeded",
            "Rate limit reached for requests. Please try again later.",
        )
        .with_header("retry-after", &retry_after_s.to_string())
        .with_header("x-ratelimit-limit-requests", "30")
        .with_header("x-ratelimit-remaining-requests", "0")
        .with_header("x-ratelimit-reset-requests", &format!("{retry_after_s}s"))
    }
}

/// Gemini native answers (`generateContent`), with Google's error shape `{"error":{"code","message","status","details"}}`.
impl FakeReply {
    pub fn gemini_text(text: &str) -> Self {
        Self::gemini_candidate(text, "STOP")
    }

    /// One candidate with a chosen `finishReason` (`MAX_TOKENS`, `SAFETY`, `RECITATION`, …).
    pub fn gemini_candidate(text: &str, finish_reason: &str) -> Self {
        Self::new(
            200,
            json!({
                "candidates": [{
                    "content": {"parts": [{"text": text}], "role": "model"},
                    "finishReason": finish_reason,
                    "index": 0
                }],
                "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 80, "totalTokenCount": 200},
                "modelVersion": "gemini-2.5-flash",
                "responseId": "fake-response"
            })
            .to_string(),
        )
    }

    /// A prompt blocked before generation: HTTP 200, no candidates, `promptFeedback.blockReason`.
    pub fn gemini_blocked(reason: &str) -> Self {
        Self::new(
            200,
            json!({
                "promptFeedback": {"blockReason": reason, "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH"}]},
                "usageMetadata": {"promptTokenCount": 120, "totalTokenCount": 120},
                "modelVersion": "gemini-2.5-flash"
            })
            .to_string(),
        )
    }

    pub fn gemini_error(status: u16, google_status: &str, message: &str, details: Value) -> Self {
        Self::new(
            status,
            json!({"error": {"code": status, "message": message, "status": google_status, "details": details}})
                .to_string(),
        )
    }

    /// A 429 naming the quota that ran out (`quota_id`) and when to retry (`RetryInfo.retryDelay`), no header.
    pub fn gemini_quota(quota_id: &str, retry_delay: &str) -> Self {
        Self::gemini_error(
            429,
            "RESOURCE_EXHAUSTED",
            &format!("You exceeded your current quota, please check your plan and billing details. Please retry in {retry_delay}."),
            json!([
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
                    "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
                    "quotaValue": if quota_id.contains("PerDay") { "250" } else { "10" }
                }]},
                {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
            ]),
        )
    }

    /// The per-minute request quota (RetryInfo says when).
    pub fn gemini_rate_limited(retry_delay: &str) -> Self {
        Self::gemini_quota("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", retry_delay)
    }

    /// The per-day request quota: nothing before midnight US Pacific.
    pub fn gemini_daily_quota() -> Self {
        Self::gemini_quota("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "23s")
    }

    /// Gemini answers a bad key with 400 INVALID_ARGUMENT, reason API_KEY_INVALID.
    pub fn gemini_bad_key() -> Self {
        Self::gemini_error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            json!([
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                 "metadata": {"service": "generativelanguage.googleapis.com"}},
                {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": "API key not valid. Please pass a valid API key."}
            ]),
        )
    }

    pub fn gemini_status(status: u16) -> Self {
        match status {
            400 => Self::gemini_error(400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).", json!([])),
            403 => Self::gemini_error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.", json!([])),
            404 => Self::gemini_error(404, "NOT_FOUND", "models/fake-model is not found for API version v1beta, or is not supported for generateContent.", json!([])),
            429 => Self::gemini_rate_limited("1s"),
            500 => Self::gemini_error(500, "INTERNAL", "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting", json!([])),
            503 => Self::gemini_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.", json!([])),
            504 => Self::gemini_error(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete.", json!([])),
            other => Self::gemini_error(other, "UNKNOWN", "error", json!([])),
        }
    }
}

/// Anthropic Messages answers, with its error shape `{"type":"error","error":{"type","message"},"request_id"}`.
impl FakeReply {
    pub fn anthropic_text(text: &str) -> Self {
        Self::anthropic_message(text, "end_turn")
    }

    /// A message with a chosen `stop_reason` (`max_tokens`, `refusal`, …).
    pub fn anthropic_message(text: &str, stop_reason: &str) -> Self {
        Self::new(
            200,
            json!({
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": "claude-haiku-4-5",
                "content": [{"type": "text", "text": text}],
                "stop_reason": stop_reason,
                "stop_sequence": null,
                "usage": {"input_tokens": 120, "output_tokens": 80}
            })
            .to_string(),
        )
        .with_header("anthropic-ratelimit-requests-limit", "50")
        .with_header("anthropic-ratelimit-requests-remaining", "49")
        .with_header("anthropic-ratelimit-requests-reset", "2026-11-25T10:00:30Z")
    }

    pub fn anthropic_error(status: u16, kind: &str, message: &str) -> Self {
        Self::new(
            status,
            json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}).to_string(),
        )
        .with_header("request-id", "req_fake")
    }

    /// 429 with `retry-after` and the `anthropic-ratelimit-*` headers (reset as RFC 3339).
    pub fn anthropic_rate_limited(retry_after_s: u64) -> Self {
        Self::anthropic_error(
            429,
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50 requests per minute.",
        )
        .with_header("retry-after", &retry_after_s.to_string())
        .with_header("anthropic-ratelimit-requests-limit", "50")
        .with_header("anthropic-ratelimit-requests-remaining", "0")
        .with_header("anthropic-ratelimit-requests-reset", "2026-11-25T10:00:30Z")
    }

    pub fn anthropic_status(status: u16) -> Self {
        match status {
            400 => Self::anthropic_error(
                400,
                "invalid_request_error",
                "prompt is too long: 250000 tokens > 200000 maximum",
            ),
            401 => Self::anthropic_error(401, "authentication_error", "invalid x-api-key"),
            403 => Self::anthropic_error(
                403,
                "permission_error",
                "Your API key does not have permission to use the specified resource.",
            ),
            404 => Self::anthropic_error(404, "not_found_error", "model: claude-fake"),
            413 => Self::anthropic_error(
                413,
                "request_too_large",
                "Request exceeds the maximum allowed number of bytes.",
            ),
            429 => Self::anthropic_rate_limited(1),
            500 => Self::anthropic_error(500, "api_error", "Internal server error"),
            529 => Self::anthropic_error(529, "overloaded_error", "Overloaded"),
            other => Self::anthropic_error(other, "api_error", "error"),
        }
    }
}

/// Cohere v2 chat answers, with its error shape `{"id","message"}`.
impl FakeReply {
    pub fn cohere_text(text: &str) -> Self {
        Self::cohere_chat(text, "COMPLETE")
    }

    /// A chat answer with a chosen `finish_reason` (`MAX_TOKENS`, `ERROR`, …).
    pub fn cohere_chat(text: &str, finish_reason: &str) -> Self {
        Self::new(
            200,
            json!({
                "id": "fake-chat",
                "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
                "finish_reason": finish_reason,
                "usage": {"billed_units": {"input_tokens": 100, "output_tokens": 80}, "tokens": {"input_tokens": 120, "output_tokens": 80}}
            })
            .to_string(),
        )
    }

    pub fn cohere_error(status: u16, message: &str) -> Self {
        Self::new(status, json!({"id": "fake-error", "message": message}).to_string())
    }

    /// A trial key over its per-minute limit (no retry header).
    pub fn cohere_trial_minute() -> Self {
        Self::cohere_error(429, "You are using a Trial key, which is limited to 20 API calls / minute. You can continue to use the Trial key for free or upgrade to a Production key with higher rate limits at 'https://dashboard.cohere.com/api-keys'.")
    }

    /// A trial key over its monthly calls: nothing before the 1st.
    pub fn cohere_trial_month() -> Self {
        Self::cohere_error(429, "You are using a Trial key, which is limited to 1000 API calls / month. You can continue to use the Trial key for free or upgrade to a Production key with higher rate limits at 'https://dashboard.cohere.com/api-keys'.")
    }

    pub fn cohere_status(status: u16) -> Self {
        match status {
            400 => Self::cohere_error(400, "invalid request: message must be at least 1 token long or tool results must be specified."),
            401 => Self::cohere_error(401, "invalid api token"),
            402 => Self::cohere_error(402, "Please add a payment method to continue."),
            404 => Self::cohere_error(404, "model 'fake-model' not found, make sure the correct model ID was used and that you have access to the model."),
            422 => Self::cohere_error(422, "invalid request: max_tokens must be positive"),
            429 => Self::cohere_trial_minute(),
            500 => Self::cohere_error(500, "internal server error, this has been reported to our developers"),
            503 => Self::cohere_error(503, "service unavailable"),
            other => Self::cohere_error(other, "error"),
        }
    }
}

/// Answers of a self-hosted text-generation endpoint (a TGI-style `[{"generated_text"}]`).
impl FakeReply {
    pub fn http_text(text: &str) -> Self {
        Self::new(200, json!([{"generated_text": text}]).to_string())
    }
}

/// The same meaning in each wire's own words.
impl FakeReply {
    /// A successful answer whose text is `text`.
    pub fn text(wire: Wire, text: &str) -> Self {
        match wire {
            Wire::OpenAi => Self::openai_text(text),
            Wire::Gemini => Self::gemini_text(text),
            Wire::Anthropic => Self::anthropic_text(text),
            Wire::Cohere => Self::cohere_text(text),
            Wire::Http => Self::http_text(text),
        }
    }

    /// The error body this wire sends with `status`.
    pub fn status(wire: Wire, status: u16) -> Self {
        match wire {
            Wire::OpenAi => Self::openai_status(status),
            Wire::Gemini => Self::gemini_status(status),
            Wire::Anthropic => Self::anthropic_status(status),
            Wire::Cohere => Self::cohere_status(status),
            Wire::Http => Self::new(status, json!({"error": format!("HTTP {status}")}).to_string()),
        }
    }

    fn unknown_path(wire: Wire, method: &Method, path: &str) -> Self {
        let message = format!("Unknown request URL: {method} {path}");
        match wire {
            Wire::Gemini => Self::gemini_error(404, "NOT_FOUND", &message, json!([])),
            Wire::Anthropic => Self::anthropic_error(404, "not_found_error", &message),
            Wire::Cohere => Self::cohere_error(404, &message),
            Wire::OpenAi | Wire::Http => Self::openai_error(404, "invalid_request_error", "unknown_url", &message),
        }
    }

    fn unauthorised(wire: Wire) -> Self {
        match wire {
            Wire::Gemini => Self::gemini_bad_key(),
            Wire::Http => Self::new(401, json!({"error": "Unauthorized"}).to_string()),
            other => Self::status(other, 401),
        }
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
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Computes an answer from the request (a provider whose quota the test models over time).
pub type Responder = Arc<dyn Fn(&RecordedRequest) -> FakeReply + Send + Sync>;

#[derive(Default)]
struct Script {
    queue: VecDeque<FakeReply>,
    responder: Option<Responder>,
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
        let app = axum::Router::new().fallback(answer).with_state(Shared {
            wire,
            script: script.clone(),
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            wire,
            port,
            script,
            server,
        })
    }

    /// What a provider configuration's `base_url` is for this fake.
    pub fn base_url(&self) -> String {
        let root = format!("http://127.0.0.1:{}", self.port);
        match self.wire {
            Wire::OpenAi | Wire::Anthropic => format!("{root}/v1"),
            Wire::Gemini => format!("{root}/v1beta"),
            Wire::Cohere => format!("{root}/v2"),
            Wire::Http => format!("{root}/generate"),
        }
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an answer for the next request.
    pub fn push(&self, reply: FakeReply) {
        self.script().queue.push_back(reply);
    }

    /// Answers every request the queue does not: `responder` sees the request and picks the reply.
    pub fn set_responder(&self, responder: impl Fn(&RecordedRequest) -> FakeReply + Send + Sync + 'static) {
        self.script().responder = Some(Arc::new(responder));
    }

    /// The answer once the queue is empty (initially: a 500 saying the fake was not scripted).
    pub fn set_default(&self, reply: FakeReply) {
        self.script().default = Some(reply);
    }

    /// Requests without the key where the wire carries it get the wire's own refusal (Gemini: 400).
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
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        let wire = shared.wire;
        let authorised = script
            .expected_key
            .as_ref()
            .is_none_or(|key| wire.authorised(&headers, key));
        let version_missing = wire == Wire::Anthropic && headers.get("anthropic-version").is_none();
        if method != Method::POST || !wire.path_ok(uri.path()) {
            FakeReply::unknown_path(wire, &method, uri.path())
        } else if !authorised {
            FakeReply::unauthorised(wire)
        } else if version_missing {
            FakeReply::anthropic_error(400, "invalid_request_error", "anthropic-version: header is required")
        } else {
            let responder = script.responder.clone();
            let recorded = script.requests.last().cloned();
            let responded = || responder.zip(recorded).map(|(respond, request)| respond(&request));
            script
                .queue
                .pop_front()
                .or_else(responded)
                .or_else(|| script.default.clone())
                .unwrap_or_else(|| FakeReply::status(wire, 500).with_header("x-fake", "unscripted"))
        }
    };
    tokio::time::sleep(reply.delay).await;
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, reply.body).into_response();
    for (name, value) in &reply.headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::try_from(name.as_str()),
            http::HeaderValue::try_from(value.as_str()),
        ) {
            response.headers_mut().insert(n, v);
        }
    }
    response
}
