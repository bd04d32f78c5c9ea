//! Output acceptance: a model's text becomes the job's result, or an `InvalidOutput` reason.
//! JSON is found inside code fences or prose, truncation and HTML error pages are refused, and the
//! value is validated against the job's stored JSON Schema (the report preset's, or the caller's).

use std::sync::Arc;

use serde_json::Value;

use crate::domain::job::{JobKind, JobSpec};
use crate::domain::llm::{FinishReason, ResponseFormat};
use crate::domain::presets::commit_report;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OutputError {
    #[error("the answer was cut by the token limit")]
    Truncated,
    #[error("the answer is empty")]
    Empty,
    #[error("the answer is an HTML page, not a model answer")]
    HtmlPage,
    #[error("no JSON in the answer")]
    NoJson,
    #[error("schema violation at {path}: {message}")]
    Schema { path: String, message: String },
}

fn looks_like_html(text: &str) -> bool {
    let head = text
        .trim_start()
        .chars()
        .take(100)
        .collect::<String>()
        .to_ascii_lowercase();
    head.starts_with("<!doctype html")
        || head.starts_with("<html")
        || head.starts_with("<head")
        || head.starts_with("<body")
}

/// The first JSON object or array in the text: after a code fence if there is one, else anywhere in
/// the prose. Trailing text after the value is ignored.
pub(crate) fn extract_json(text: &str) -> Option<Value> {
    let fenced = text
        .split("```")
        .nth(1)
        .map(|block| block.trim_start_matches(|c: char| c.is_ascii_alphabetic()));
    for candidate in fenced.into_iter().chain(std::iter::once(text)) {
        for (i, c) in candidate.char_indices() {
            if c != '{' && c != '[' {
                continue;
            }
            let mut values = serde_json::Deserializer::from_str(&candidate[i..]).into_iter::<Value>();
            if let Some(Ok(v)) = values.next() {
                if v.is_object() || v.is_array() {
                    return Some(v);
                }
            }
        }
    }
    None
}

/// Compiled validators by schema. Compiling a schema (its `pattern`s become regexes) costs far more
/// than validating one answer, and most jobs share a schema (every report has the preset's), so each
/// distinct schema is compiled once per process; past `VALIDATOR_CACHE` schemas the cache starts over,
/// which bounds what callers' own schemas can make it hold. A schema is found by comparing it whole:
/// a preset's jobs hold the very same `Arc` (the comparison is then a pointer's), a job read back from
/// Upstash an equal tree (the comparison stops at its first difference from any other).
const VALIDATOR_CACHE: usize = 64;

type Validators = Vec<(Arc<Value>, Arc<jsonschema::Validator>)>;

fn validator(schema: &Arc<Value>) -> Result<Arc<jsonschema::Validator>, OutputError> {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<Validators>> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    // A poisoned lock only means another thread panicked while holding it; the list stays usable.
    let found = cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(held, _)| held == schema)
        .map(|(_, validator)| validator.clone());
    if let Some(found) = found {
        return Ok(found);
    }
    let compiled = Arc::new(jsonschema::validator_for(schema).map_err(|e| OutputError::Schema {
        path: String::new(),
        message: format!("invalid schema: {e}"),
    })?);
    let mut list = cache.lock().unwrap_or_else(|p| p.into_inner());
    if list.len() >= VALIDATOR_CACHE {
        list.clear();
    }
    list.push((schema.clone(), compiled.clone()));
    Ok(compiled)
}

fn validate(schema: &Arc<Value>, value: &Value) -> Result<(), OutputError> {
    let validator = validator(schema)?;
    let first = validator
        .iter_errors(value)
        .next()
        .map(|e| (e.instance_path().to_string(), e.to_string()));
    match first {
        None => Ok(()),
        Some((path, message)) => Err(OutputError::Schema {
            path: if path.is_empty() { "/".into() } else { path },
            message: message.chars().take(200).collect(),
        }),
    }
}

/// Turns an answer into the job's result.
pub(crate) fn accept(text: &str, finish: FinishReason, spec: &JobSpec) -> Result<Value, OutputError> {
    if text.trim().is_empty() {
        return Err(OutputError::Empty);
    }
    if looks_like_html(text) {
        return Err(OutputError::HtmlPage);
    }
    if finish == FinishReason::Length {
        return Err(OutputError::Truncated);
    }
    let ResponseFormat::Json { schema } = &spec.format else {
        return Ok(Value::String(text.to_string()));
    };
    let mut value = extract_json(text).ok_or(OutputError::NoJson)?;
    if spec.kind == JobKind::Report {
        value = commit_report::normalize(value);
    }
    if let Some(schema) = schema {
        validate(schema, &value)?;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::job::JobSpec;
    use crate::domain::llm::ChatMessage;

    fn spec(kind: JobKind, schema: Option<Value>) -> JobSpec {
        JobSpec {
            providers: None,
            kind,
            messages: vec![ChatMessage::user("x")],
            compact_messages: None,
            format: ResponseFormat::Json {
                schema: schema.map(std::sync::Arc::new),
            },
            max_tokens: 10,
            temperature: None,
            fallback: None,
            context: Default::default(),
            targets: vec![],
            purge_on_delivery: false,
            priority: Default::default(),
        }
    }

    fn report() -> Value {
        json!({
            "title": "Add token refresh to the auth client",
            "summary": "The auth client now refreshes its access token before it expires, so sessions last.",
            "changes": ["Added refresh() to src/auth.ts"],
            "rationale": "Sessions dropped after an hour.",
            "impact_and_tests": "All authenticated calls; client tests cover it.",
            "next_steps": [],
            "tags": "auth, client"
        })
    }

    #[test]
    fn realistic_answers_against_the_report_schema() {
        let r = spec(JobKind::Report, Some(Value::clone(&commit_report::report_schema())));
        let good = report().to_string();
        let mut extra = report();
        extra["confidence"] = json!(0.9);
        let mut wrong_type = report();
        wrong_type["changes"] = json!("one change");
        let mut short_title = report();
        short_title["title"] = json!("Fix");
        let cases: Vec<(String, FinishReason, Result<(), &str>)> = vec![
            (good.clone(), FinishReason::Stop, Ok(())),
            (format!("```json\n{good}\n```"), FinishReason::Stop, Ok(())),
            (
                format!("Sure! Here is the report:\n{good}\nLet me know {{if}} you need more."),
                FinishReason::Stop,
                Ok(()),
            ),
            (extra.to_string(), FinishReason::Stop, Ok(())),
            (
                good[..good.len() / 2].to_string(),
                FinishReason::Length,
                Err("truncated"),
            ),
            (good[..good.len() / 2].to_string(), FinishReason::Stop, Err("no json")),
            (wrong_type.to_string(), FinishReason::Stop, Err("/changes")),
            (short_title.to_string(), FinishReason::Stop, Err("/title")),
            (
                "<!DOCTYPE html><html><body>502 Bad Gateway</body></html>".into(),
                FinishReason::Stop,
                Err("html"),
            ),
            ("I cannot help with that.".into(), FinishReason::Stop, Err("no json")),
            ("   ".into(), FinishReason::Stop, Err("empty")),
        ];
        for (text, finish, expected) in cases {
            let got = accept(&text, finish, &r);
            match (expected, &got) {
                (Ok(()), Ok(v)) => assert!(v.get("confidence").is_none(), "unknown keys are dropped"),
                (Err("truncated"), Err(OutputError::Truncated)) | (Err("no json"), Err(OutputError::NoJson)) => {}
                (Err("html"), Err(OutputError::HtmlPage)) | (Err("empty"), Err(OutputError::Empty)) => {}
                (Err(path), Err(OutputError::Schema { path: p, .. })) if p == path => {}
                _ => panic!("{text:.60} → {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn a_caller_schema_is_enforced_with_paths_and_extra_keys_follow_the_schema() {
        let schema = json!({"type": "object", "required": ["colours"], "properties": {"colours": {"type": "array", "items": {"type": "string"}}}});
        let s = spec(JobKind::Generic, Some(schema));
        assert_eq!(
            accept(r#"{"colours": ["red"], "extra": 1}"#, FinishReason::Stop, &s).unwrap()["extra"],
            1
        );
        assert_eq!(
            accept(r#"{"colours": ["red", 2]}"#, FinishReason::Stop, &s).unwrap_err(),
            OutputError::Schema {
                path: "/colours/1".into(),
                message: "2 is not of type \"string\"".into()
            }
        );
        assert!(matches!(
            accept(r#"{"colour": "red"}"#, FinishReason::Stop, &s),
            Err(OutputError::Schema { .. })
        ));
        // Braces inside strings do not confuse the extraction.
        assert_eq!(
            accept(
                r#"Result: {"colours": ["{not} a [brace]"]} done"#,
                FinishReason::Stop,
                &s
            )
            .unwrap()["colours"][0],
            "{not} a [brace]"
        );
    }

    #[test]
    fn text_mode_returns_the_text() {
        let mut s = spec(JobKind::Generic, None);
        s.format = ResponseFormat::Text;
        assert_eq!(
            accept("Hello there", FinishReason::Stop, &s).unwrap(),
            json!("Hello there")
        );
        assert_eq!(
            accept("Hello th", FinishReason::Length, &s).unwrap_err(),
            OutputError::Truncated
        );
    }
}
