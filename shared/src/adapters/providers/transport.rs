//! The part of a provider call every wire format shares: one POST under our own deadline, then a
//! [`CallReport`] from whatever came back (a transport failure, an error status, or a 200 the wire module
//! reads), with one log line that names the provider and never the prompt.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::HeaderMap;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::classify::{http_failure, rate_signals, transport_failure};
use super::de;
use crate::domain::error_class::ErrorClass;
use crate::domain::llm::{CompletionRequest, FinishReason, ResponseFormat, Usage};
use crate::domain::outcome::{Answer, CallReport, Failure, RateSignals};
use crate::domain::quota::ResetClock;
use crate::domain::scrub::Scrubber;
use crate::domain::secret::Secret;
use crate::ports::Provider;

/// What every wire adapter holds: where it posts, with which key, under which deadline and quota clock,
/// and the scrubber its failures' text goes through.
pub struct Connection {
    pub name: String,
    pub url: String,
    pub key: Option<Secret>,
    pub timeout: Duration,
    pub reset: ResetClock,
    pub client: reqwest::Client,
    pub scrub: Scrubber,
}

impl Connection {
    /// The same connection posting to `path` below its URL.
    pub(crate) fn at(mut self, path: &str) -> Self {
        self.url = format!("{}{path}", self.url.trim_end_matches('/'));
        self
    }

    /// POSTs `body` to the adapter's URL with its extra headers.
    pub async fn post(&self, headers: &[(String, String)], body: &Value) -> Result<Raw, reqwest::Error> {
        post_json(&self.client, &self.url, headers, body, self.timeout).await
    }

    /// The key as `name: value` (`bearer` sends `Bearer <key>`), or nothing when the provider needs none.
    pub(crate) fn key_header(&self, name: &str, bearer: bool) -> Vec<(String, String)> {
        key_header(self.key.as_ref(), name, bearer)
    }

    /// The report of one call; `success` reads a 200 in the wire's format.
    pub(crate) fn report(
        &self,
        started: Instant,
        sent: Result<Raw, reqwest::Error>,
        success: impl FnOnce(&Raw) -> Result<Answer, Failure>,
    ) -> CallReport {
        report(
            &self.name,
            started,
            sent,
            self.timeout,
            self.reset,
            &self.scrub,
            success,
        )
    }
}

/// `key` as the header `name` (`bearer` sends `Bearer <key>`), or nothing without a key.
pub(crate) fn key_header(key: Option<&Secret>, name: &str, bearer: bool) -> Vec<(String, String)> {
    let value = |k: &Secret| {
        if bearer {
            format!("Bearer {}", k.expose())
        } else {
            k.expose().to_string()
        }
    };
    key.map(|k| (name.to_string(), value(k))).into_iter().collect()
}

/// One wire format over a [`Connection`]: how a request goes out, how a 200 is read. Every wire is a
/// [`Provider`] through it, its calls timed, sent and reported the same way.
#[async_trait]
pub(crate) trait Wire: Send + Sync {
    fn conn(&self) -> &Connection;

    /// Sends `request` in the wire's format.
    async fn send(&self, request: &CompletionRequest) -> Result<Raw, reqwest::Error>;

    /// Reads a 200 answer in the wire's format.
    fn answer(&self, raw: &Raw) -> Result<Answer, Failure>;
}

#[async_trait]
impl<W: Wire> Provider for W {
    fn name(&self) -> &str {
        &self.conn().name
    }

    async fn call(&self, request: &CompletionRequest) -> CallReport {
        let started = Instant::now();
        let sent = self.send(request).await;
        self.conn().report(started, sent, |raw| self.answer(raw))
    }
}

/// Remembers that a model refused the JSON Schema we asked it to follow, so later calls do not ask again.
#[derive(Debug, Default)]
pub(crate) struct SchemaFallback {
    refused: AtomicBool,
}

impl SchemaFallback {
    /// Sends with the schema when `request` has one and the model has not refused it before; an answer
    /// that `is_refusal` is remembered and the call is sent again without the schema.
    pub(crate) async fn send<Sent>(
        &self,
        request: &CompletionRequest,
        is_refusal: impl Fn(&Raw) -> bool,
        send: impl Fn(bool) -> Sent,
    ) -> Result<Raw, reqwest::Error>
    where
        Sent: Future<Output = Result<Raw, reqwest::Error>>,
    {
        let wants_schema = matches!(&request.format, ResponseFormat::Json { schema: Some(_) });
        let use_schema = wants_schema && !self.refused.load(Ordering::Relaxed);
        let sent = send(use_schema).await;
        match &sent {
            Ok(raw) if use_schema && is_refusal(raw) => {
                self.refused.store(true, Ordering::Relaxed);
                send(false).await
            }
            _ => sent,
        }
    }
}

/// One HTTP answer, read whole.
pub struct Raw {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

/// POSTs a JSON body with extra headers (auth, versions) under `timeout`.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    body: &Value,
    timeout: Duration,
) -> Result<Raw, reqwest::Error> {
    let mut request = client.post(url).timeout(timeout).json(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await?;
    Ok(Raw { status, headers, body })
}

/// Parses a 200 body as JSON, or says it is unusable.
pub(crate) fn json_body(body: &str) -> Result<Value, Failure> {
    serde_json::from_str(body).map_err(|_| Failure::new(ErrorClass::InvalidOutput, "200 with a body that is not JSON"))
}

/// Reads a 200 body as the wire's answer struct `T`. A body that is JSON but not an object reads as the
/// empty answer (`T::default()`): every field absent, which the wire module then judges (an empty answer,
/// no candidates), just as a non-object answer always has been.
pub(crate) fn answer_body<T: DeserializeOwned + Default>(body: &str) -> Result<T, Failure> {
    // An object read straight into `T`, without the `Value` tree in between; anything else, or an
    // object `T` refuses, is read as before (through `Value`), which decides it alike.
    if body.trim_start().starts_with('{') {
        if let Ok(answer) = serde_json::from_str(body) {
            return Ok(answer);
        }
    }
    match json_body(body)? {
        value @ Value::Object(_) => Ok(serde_json::from_value(value).unwrap_or_default()),
        _ => Ok(T::default()),
    }
}

/// Turns what one call produced into its report; `success` reads a 200 in the wire's format. This is
/// where a provider's text enters: every failure's message passes `scrub` here, before anything logs,
/// stores or answers it.
pub(crate) fn report(
    provider: &str,
    started: Instant,
    sent: Result<Raw, reqwest::Error>,
    timeout: Duration,
    reset: ResetClock,
    scrub: &Scrubber,
    success: impl FnOnce(&Raw) -> Result<Answer, Failure>,
) -> CallReport {
    let duration_ms = started.elapsed().as_millis() as u64;
    let mut report = match sent {
        Err(e) => CallReport {
            result: Err(transport_failure(&e, timeout.as_millis() as u64)),
            http_status: None,
            duration_ms,
            rate: RateSignals::default(),
        },
        Ok(raw) => CallReport {
            result: if raw.status == 200 {
                success(&raw)
            } else {
                Err(http_failure(raw.status, &raw.headers, &raw.body, reset))
            },
            http_status: Some(raw.status),
            duration_ms,
            rate: rate_signals(&raw.headers),
        },
    };
    if let Err(failure) = &mut report.result {
        failure.message = scrub.scrub_owned(std::mem::take(&mut failure.message));
    }
    tracing::info!(
        provider = %provider, status = report.http_status, duration_ms,
        class = report.result.as_ref().err().map_or("ok", |f| f.class.as_str()), "provider call"
    );
    report
}

/// A wire's text part (a content block, a Gemini part): its `type` and its `text`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct TextPart {
    #[serde(rename = "type", deserialize_with = "de::lenient")]
    kind: Option<String>,
    #[serde(deserialize_with = "de::lenient")]
    text: Option<String>,
}

/// The concatenated `text` of the parts of an answer of `kind` `"text"` (Anthropic's content blocks,
/// Cohere's message content).
pub(crate) fn text_blocks(parts: &[TextPart]) -> String {
    parts
        .iter()
        .filter(|p| p.kind.as_deref() == Some("text"))
        .filter_map(|p| p.text.as_deref())
        .collect()
}

/// Token counts as a wire reported them (0 where absent).
pub(crate) fn usage(input: Option<u64>, output: Option<u64>) -> Usage {
    Usage {
        input_tokens: input.unwrap_or(0),
        output_tokens: output.unwrap_or(0),
    }
}

/// The answer must say something: an empty text is an unusable answer, not a success.
pub(crate) fn non_empty(text: String, finish: FinishReason, usage: Usage) -> Result<Answer, Failure> {
    if text.trim().is_empty() {
        return Err(Failure::new(ErrorClass::InvalidOutput, "empty answer"));
    }
    Ok(Answer { text, finish, usage })
}
