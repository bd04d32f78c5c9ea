//! Presets turn a caller's request into a job: validation with field-naming errors, the request's
//! identity (dedupe and cache key), and the prompt. `commit_report` is one preset; `generic` serves
//! any prompt / JSON-schema job the same way.

pub mod commit_report;
pub mod generic;
mod redact;

use serde_json::{json, Map, Value};

use crate::targets::{Target, TargetKind};

/// A request field that is missing or wrong. Its `Display` is the contract's 400 `error` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Bumped when prompts change, so cached results of an older prompt are not served for a new one.
pub const PRESET_VERSION: &str = "2";

pub(crate) fn object(v: &Value) -> Result<&Map<String, Value>, FieldError> {
    v.as_object()
        .ok_or_else(|| FieldError::new("body", "must be a JSON object"))
}

/// A string field of `min..=max` characters; `None` when absent (or null) and optional.
pub(crate) fn string(
    o: &Map<String, Value>,
    name: &str,
    min: usize,
    max: usize,
    required: bool,
) -> Result<Option<String>, FieldError> {
    match o.get(name) {
        None | Some(Value::Null) if required => Err(FieldError::new(name, "is required")),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let n = s.chars().count();
            if n < min || n > max {
                let range = if min == 0 {
                    format!("at most {max}")
                } else {
                    format!("{min} to {max}")
                };
                return Err(FieldError::new(
                    name,
                    format!("must be a string of {range} characters (got {n})"),
                ));
            }
            Ok(Some(s.clone()))
        }
        Some(_) => Err(FieldError::new(name, "must be a string")),
    }
}

pub(crate) fn string_array(
    o: &Map<String, Value>,
    name: &str,
    max_items: usize,
    max_len: usize,
) -> Result<Vec<String>, FieldError> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            if items.len() > max_items {
                return Err(FieldError::new(
                    name,
                    format!("must have at most {max_items} items (got {})", items.len()),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) if s.chars().count() <= max_len => Ok(s.clone()),
                    _ => Err(FieldError::new(
                        format!("{name}[{i}]"),
                        format!("must be a string of at most {max_len} characters"),
                    )),
                })
                .collect()
        }
        Some(_) => Err(FieldError::new(name, "must be an array of strings")),
    }
}

pub(crate) fn integer(o: &Map<String, Value>, name: &str, min: u64, max: u64) -> Result<Option<u64>, FieldError> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(FieldError::new(name, format!("must be an integer from {min} to {max}"))),
        },
    }
}

/// `callbackUrl` and `callbacks`: who to tell when the job ends (shape only; URL safety is the guard's).
pub(crate) fn delivery_targets(o: &Map<String, Value>) -> Result<Vec<Target>, FieldError> {
    let mut targets = Vec::new();
    if let Some(url) = string(o, "callbackUrl", 1, 2048, false)? {
        targets.push(Target::webhook(url));
    }
    let entries = match o.get("callbacks") {
        None | Some(Value::Null) => return Ok(targets),
        Some(Value::Array(entries)) if entries.len() <= 5 => entries,
        Some(_) => return Err(FieldError::new("callbacks", "must be an array of at most 5 entries")),
    };
    for (i, entry) in entries.iter().enumerate() {
        let field = |f: &str| format!("callbacks[{i}].{f}");
        let e = entry
            .as_object()
            .ok_or_else(|| FieldError::new(format!("callbacks[{i}]"), "must be an object"))?;
        let url = string(e, "url", 1, 2048, true)
            .map_err(|err| FieldError::new(field("url"), err.message))?
            .unwrap_or_default();
        let mut headers = std::collections::BTreeMap::new();
        match e.get("headers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(h)) if h.len() <= 20 => {
                for (k, v) in h {
                    let valid_name = !k.is_empty() && k.len() <= 256 && http::HeaderName::try_from(k.as_str()).is_ok();
                    match v.as_str() {
                        Some(s) if valid_name && s.len() <= 4096 && http::HeaderValue::try_from(s).is_ok() => {
                            headers.insert(k.clone(), s.to_string());
                        }
                        _ => {
                            return Err(FieldError::new(
                                field("headers"),
                                format!("header {k:?} must be a valid name with a string value"),
                            ))
                        }
                    }
                }
            }
            Some(_) => {
                return Err(FieldError::new(
                    field("headers"),
                    "must be an object of at most 20 string values",
                ))
            }
        }
        let continue_on_failure = match e.get("continueOnFailure") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(FieldError::new(field("continueOnFailure"), "must be a boolean")),
        };
        let (mut max_attempts, mut backoff_ms) = (3, 1_000);
        match e.get("retry") {
            None | Some(Value::Null) => {}
            Some(Value::Object(r)) => {
                let prefix = |f: &str| format!("callbacks[{i}].retry.{f}");
                max_attempts = integer(r, "maxAttempts", 1, 5)
                    .map_err(|err| FieldError::new(prefix("maxAttempts"), err.message))?
                    .unwrap_or(3) as u32;
                backoff_ms = integer(r, "backoffMs", 100, 60_000)
                    .map_err(|err| FieldError::new(prefix("backoffMs"), err.message))?
                    .unwrap_or(1_000);
            }
            Some(_) => {
                return Err(FieldError::new(
                    field("retry"),
                    "must be an object {maxAttempts, backoffMs}",
                ))
            }
        }
        targets.push(Target {
            kind: TargetKind::Callback,
            url,
            headers,
            continue_on_failure,
            max_attempts,
            backoff_ms,
            schedule_ms: Vec::new(),
        });
    }
    Ok(targets)
}

/// `deadlineSeconds`, which every job request takes: give up after this long.
pub(crate) fn deadline_seconds(o: &Map<String, Value>) -> Result<Option<u64>, FieldError> {
    integer(o, "deadlineSeconds", 60, 604_800)
}

/// The JSON Schema of what every job request takes besides its own fields: `deadlineSeconds` as
/// [`deadline_seconds`] reads it, `callbackUrl` and `callbacks` as [`delivery_targets`] reads them (the
/// API's OpenAPI document includes it; a test there holds the schemas and the parsers together).
pub(crate) fn common_schema_properties() -> Map<String, Value> {
    let url =
        |what: &str| json!({"type": "string", "minLength": 1, "maxLength": 2048, "format": "uri", "description": what});
    let callback = json!({
        "type": "object",
        "required": ["url"],
        "properties": {
            "url": url("Where to POST the callback body `{success, result | error, metadata}`."),
            "headers": {
                "type": "object",
                "description": "Headers sent with this callback only.",
                "maxProperties": 20,
                "propertyNames": {"pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$"},
                "additionalProperties": {"type": "string", "maxLength": 4096, "pattern": "^[^\\x00-\\x08\\x0a-\\x1f\\x7f]*$"}
            },
            "continueOnFailure": {
                "type": "boolean",
                "default": false,
                "description": "Deliver the next callbacks even when this one fails for good."
            },
            "retry": {
                "type": "object",
                "properties": {
                    "maxAttempts": {"type": "integer", "minimum": 1, "maximum": 5, "default": 3},
                    "backoffMs": {"type": "integer", "minimum": 100, "maximum": 60000, "default": 1000}
                }
            }
        }
    });
    let mut properties = Map::new();
    properties.insert(
        "deadlineSeconds".into(),
        json!({"type": "integer", "minimum": 60, "maximum": 604_800, "description":
            "Give up after this long (default `JOB_DEADLINE_SECONDS`)."}),
    );
    properties.insert(
        "callbackUrl".into(),
        url("The signed webhook, POSTed once when the job ends. Needs a webhook secret for the key's owner."),
    );
    properties.insert(
        "callbacks".into(),
        json!({"type": "array", "maxItems": 5, "items": callback, "description": "Delivered in order after the job ends."}),
    );
    properties
}

/// A stable hash of a canonical JSON value (serde_json keeps insertion order; we build it in a fixed order).
pub(crate) fn digest(v: &Value) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}
