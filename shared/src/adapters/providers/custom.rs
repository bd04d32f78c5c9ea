//! The custom `http` provider, for self-hosted endpoints that speak no standard wire format (a Hugging Face
//! inference endpoint, a Space behind a small API, an in-house model server): the request body is a JSON
//! template, the text is found at a path in the answer, and every call goes through the SSRF guard (resolved
//! once per call, connected to the pinned address, no redirects).
//!
//! Template placeholders: `{{model}}`, `{{prompt}}` (the non-system messages, joined), `{{system}}`,
//! `{{messages}}` (the `[{role, content}]` array), `{{max_tokens}}`, `{{temperature}}`, `{{json_schema}}`,
//! `{{response_format}}` (`json` or `text`). A string that is exactly one placeholder becomes that value
//! (a number, an array, an object); placeholders inside longer strings are replaced by their text. The
//! template is filled as JSON, never as text, so no prompt can break out of its string.

use std::time::Instant;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::transport::{self, Connection, Raw};
use crate::adapters::outbound::guard::{pinned_client, GuardError, UrlGuard};
use crate::domain::error_class::ErrorClass;
use crate::domain::llm::{CompletionRequest, FinishReason, ResponseFormat, Role, Usage};
use crate::domain::outcome::{Answer, CallReport, Failure, RateSignals};
use crate::ports::Provider;

/// A path to the text in a JSON answer: `choices[0].message.content`, `[0].generated_text`, `$.output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath(Vec<Step>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

impl JsonPath {
    pub fn parse(path: &str) -> Result<Self, String> {
        let path = path.trim();
        let path = path.strip_prefix('$').unwrap_or(path);
        let mut steps = Vec::new();
        for segment in path.split('.').filter(|s| !s.is_empty()) {
            let (key, mut rest) = segment.split_at(segment.find('[').unwrap_or(segment.len()));
            if !key.is_empty() {
                steps.push(match key.parse::<usize>() {
                    Ok(i) => Step::Index(i),
                    Err(_) => Step::Key(key.to_string()),
                });
            }
            while !rest.is_empty() {
                let close = rest.find(']').ok_or_else(|| format!("unclosed [ in {path:?}"))?;
                let index = rest[1..close]
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| format!("bad index in {path:?}"))?;
                steps.push(Step::Index(index));
                rest = &rest[close + 1..];
                if !rest.is_empty() && !rest.starts_with('[') {
                    return Err(format!("unexpected {rest:?} in {path:?}"));
                }
            }
        }
        if steps.is_empty() {
            return Err("response_path is empty".into());
        }
        Ok(Self(steps))
    }

    pub(crate) fn find<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(value, |v, step| match step {
            Step::Key(k) => v.get(k),
            Step::Index(i) => v.get(i),
        })
    }
}

pub(crate) struct CustomHttpProvider {
    /// Its name, URL, key, deadline, quota clock and scrubber (its pooled client is not used: every
    /// call connects to the address the guard pinned).
    pub(crate) conn: Connection,
    pub(crate) model: String,
    /// The header carrying the key: `authorization` sends `Bearer <key>`, any other name the bare key.
    pub(crate) auth_header: String,
    pub(crate) template: Value,
    pub(crate) response_path: JsonPath,
    pub(crate) guard: UrlGuard,
}

impl CustomHttpProvider {
    fn placeholders(&self, request: &CompletionRequest) -> Map<String, Value> {
        let joined = |system: bool| {
            let parts: Vec<&str> = request
                .messages
                .iter()
                .filter(|m| (m.role == Role::System) == system)
                .map(|m| m.content.as_str())
                .collect();
            parts.join("\n\n")
        };
        let (mode, schema) = match &request.format {
            ResponseFormat::Json { schema } => ("json", schema.as_deref().cloned().unwrap_or(Value::Null)),
            ResponseFormat::Text => ("text", Value::Null),
        };
        let mut values = Map::new();
        values.insert("model".into(), json!(self.model));
        values.insert("prompt".into(), json!(joined(false)));
        values.insert("system".into(), json!(joined(true)));
        values.insert("messages".into(), json!(request.messages));
        values.insert("max_tokens".into(), json!(request.max_tokens));
        values.insert("temperature".into(), json!(request.temperature));
        values.insert("json_schema".into(), schema);
        values.insert("response_format".into(), json!(mode));
        values
    }

    pub(crate) fn body(&self, request: &CompletionRequest) -> Value {
        fill(&self.template, &self.placeholders(request))
    }

    async fn send(&self, body: &Value) -> Result<Result<Raw, reqwest::Error>, Failure> {
        let conn = &self.conn;
        let url = self.guard.check(&conn.url).map_err(guard_failure)?;
        let target = self.guard.resolve(&url).await.map_err(guard_failure)?;
        let client = pinned_client(&target, conn.timeout, concat!("stepper/", env!("CARGO_PKG_VERSION")))
            .map_err(|e| Failure::new(ErrorClass::Overloaded, e.to_string()))?;
        let bearer = self.auth_header.eq_ignore_ascii_case("authorization");
        let headers = conn.key_header(&self.auth_header, bearer);
        Ok(transport::post_json(&client, target.url().as_str(), &headers, body, conn.timeout).await)
    }
}

/// A refused URL is a configuration mistake (disable the provider loudly); a failed lookup may pass.
fn guard_failure(error: GuardError) -> Failure {
    let class = match error {
        GuardError::ResolutionFailed { .. } | GuardError::NoAddresses(_) => ErrorClass::Overloaded,
        _ => ErrorClass::AuthInvalid,
    };
    Failure::new(class, format!("URL guard: {error}"))
}

fn fill(template: &Value, values: &Map<String, Value>) -> Value {
    match template {
        Value::String(s) => {
            if let Some(name) = s.strip_prefix("{{").and_then(|r| r.strip_suffix("}}")) {
                if let Some(v) = values.get(name.trim()) {
                    return v.clone();
                }
            }
            let mut out = s.clone();
            for (name, value) in values {
                let needle = format!("{{{{{name}}}}}");
                if out.contains(&needle) {
                    let text = match value {
                        Value::String(t) => t.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    out = out.replace(&needle, &text);
                }
            }
            Value::String(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| fill(v, values)).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), fill(v, values))).collect()),
        other => other.clone(),
    }
}

fn parse_success(raw: &Raw, path: &JsonPath) -> Result<Answer, Failure> {
    let parsed = transport::json_body(&raw.body)?;
    let text = match path.find(&parsed) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => {
            return Err(Failure::new(
                ErrorClass::InvalidOutput,
                "nothing at response_path in the answer",
            ));
        }
        // A service that answers structured JSON: hand the JSON on, the output check reads it.
        Some(other) => other.to_string(),
    };
    transport::non_empty(text, FinishReason::Stop, Usage::default())
}

#[async_trait]
impl Provider for CustomHttpProvider {
    fn name(&self) -> &str {
        &self.conn.name
    }

    async fn call(&self, request: &CompletionRequest) -> CallReport {
        let started = Instant::now();
        match self.send(&self.body(request)).await {
            Ok(sent) => self
                .conn
                .report(started, sent, |raw| parse_success(raw, &self.response_path)),
            Err(refused) => {
                tracing::warn!(provider = %self.conn.name, class = refused.class.as_str(), reason = %refused.message, "provider call refused");
                CallReport {
                    result: Err(refused),
                    http_status: None,
                    duration_ms: started.elapsed().as_millis() as u64,
                    rate: RateSignals::default(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::llm::ChatMessage;
    use crate::domain::quota::ResetClock;

    #[test]
    fn paths_find_the_text() {
        let answer = json!({"choices": [{"message": {"content": "hi"}}], "out": [[1, {"t": "x"}]]});
        for (path, want) in [
            ("choices[0].message.content", json!("hi")),
            ("$.out[0][1].t", json!("x")),
            ("out.0.1.t", json!("x")),
        ] {
            assert_eq!(JsonPath::parse(path).unwrap().find(&answer), Some(&want), "{path}");
        }
        assert_eq!(
            JsonPath::parse("[0].generated_text")
                .unwrap()
                .find(&json!([{"generated_text": "g"}])),
            Some(&json!("g"))
        );
        assert!(JsonPath::parse("a[x]").is_err() && JsonPath::parse("a[0").is_err() && JsonPath::parse("$").is_err());
    }

    #[test]
    fn the_template_is_filled_as_json_so_prompts_cannot_break_out() {
        let template = json!({"inputs": "{{prompt}}", "parameters": {"max_new_tokens": "{{max_tokens}}"}, "note": "model {{model}}!", "history": "{{messages}}"});
        let provider = CustomHttpProvider {
            conn: Connection {
                name: "p".into(),
                url: "https://example.com/generate".into(),
                key: None,
                timeout: Duration::from_secs(1),
                reset: ResetClock::UtcMidnight,
                client: reqwest::Client::new(),
                scrub: Default::default(),
            },
            model: "m1".into(),
            auth_header: "authorization".into(),
            template,
            response_path: JsonPath::parse("generated_text").unwrap(),
            guard: UrlGuard::new(&[]).unwrap(),
        };
        let evil = "\"}, \"admin\": true, {\"";
        let request = CompletionRequest {
            messages: vec![ChatMessage::system("sys"), ChatMessage::user(evil)],
            format: ResponseFormat::Text,
            max_tokens: 99,
            temperature: None,
        };
        let body = provider.body(&request);
        assert_eq!(body["inputs"], json!(evil));
        assert_eq!(body["parameters"]["max_new_tokens"], json!(99));
        assert_eq!(body["note"], json!("model m1!"));
        assert_eq!(body["history"][1]["content"], json!(evil));
        assert!(body.get("admin").is_none());
    }
}
