//! Request caps checked before any handler work: header fields, bodies of routes that take none, and
//! the shape of a parsed JSON body (nesting depth, string and member-name lengths).

use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::errors::ApiError;
use crate::domain::presets::FieldError;

/// Most header fields a request may carry. `stepper-local`'s HTTP server refuses far past this on its
/// own (with a bare 431); below its hard limit, the answer is this JSON one.
pub(crate) const MAX_HEADERS: usize = 64;
/// Most bytes of header names and values in all.
pub(crate) const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest body accepted by routes that take none (polls, purges, health): room for a stray `{}`.
pub(crate) const MAX_BODYLESS_BYTES: usize = 1024;
/// Deepest nesting of arrays and objects in a JSON body (the body itself is level 1).
pub(crate) const MAX_DEPTH: usize = 64;
/// Longest string anywhere in a JSON body: the longest prompt. Fields with a larger cap of their own
/// ([`OWN_CAP_FIELDS`]) are checked by their preset.
pub(crate) const MAX_STRING_BYTES: usize = 200_000;
/// Longest object member name.
pub(crate) const MAX_KEY_BYTES: usize = 256;
/// Top-level fields whose preset enforces a larger cap (`diffSummary` is budgeted, not refused).
const OWN_CAP_FIELDS: [&str; 1] = ["diffSummary"];

/// Refuses requests with too many or too large header fields (431).
pub(crate) async fn header_caps(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        let seen = format!("{} header fields of {bytes} bytes", headers.len());
        return ApiError::HeadersTooLarge {
            seen,
            max_fields: MAX_HEADERS,
            max_bytes: MAX_HEADER_BYTES,
        }
        .into_response();
    }
    next.run(request).await
}

/// For routes that take no body: refuses one larger than [`MAX_BODYLESS_BYTES`] (413) without
/// reading more than that, announced or streamed.
pub(crate) async fn bodyless(request: Request, next: Next) -> Response {
    let too_large = || {
        ApiError::TooLarge {
            limit: MAX_BODYLESS_BYTES,
        }
        .into_response()
    };
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODYLESS_BYTES as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, MAX_BODYLESS_BYTES).await {
        Ok(_) => next.run(Request::from_parts(parts, Body::empty())).await,
        Err(e) => {
            if e.into_inner().is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                // The client went away mid-body: nobody reads this answer, but it must not be a 5xx.
                ApiError::InvalidJson("the request body could not be read".into()).into_response()
            }
        }
    }
}

/// Where a shape check failed: path segments, innermost first, and what is wrong there.
struct ShapeError {
    path: Vec<String>,
    message: String,
}

impl ShapeError {
    fn new(message: String) -> Self {
        Self {
            path: Vec::new(),
            message,
        }
    }

    fn inside(mut self, segment: String) -> Self {
        self.path.push(segment);
        self
    }

    /// The contract's field name: `payload.items[3].note`.
    fn into_field_error(self) -> FieldError {
        let mut field = String::new();
        for segment in self.path.iter().rev() {
            if !field.is_empty() && !segment.starts_with('[') {
                field.push('.');
            }
            field.push_str(segment);
        }
        FieldError::new(if field.is_empty() { "body".to_string() } else { field }, self.message)
    }
}

/// Checks a parsed body against the depth and length caps; the error names the JSON path.
pub(crate) fn check_shape(body: &Value) -> Result<(), FieldError> {
    walk(body, 1, MAX_STRING_BYTES).map_err(ShapeError::into_field_error)
}

// Recursion is bounded: nothing deeper than MAX_DEPTH is entered (and serde_json refuses to parse
// more than 128 levels in the first place).
fn walk(value: &Value, depth: usize, string_cap: usize) -> Result<(), ShapeError> {
    match value {
        Value::String(s) if s.len() > string_cap => Err(ShapeError::new(format!(
            "must be a string of at most {string_cap} bytes (got {})",
            s.len()
        ))),
        Value::Array(_) | Value::Object(_) if depth > MAX_DEPTH => Err(ShapeError::new(format!(
            "nests arrays and objects deeper than {MAX_DEPTH} levels"
        ))),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| walk(item, depth + 1, MAX_STRING_BYTES).map_err(|e| e.inside(format!("[{i}]")))),
        Value::Object(members) => members.iter().try_for_each(|(name, item)| {
            if name.len() > MAX_KEY_BYTES {
                let shown: String = name.chars().take(32).collect();
                return Err(ShapeError::new(format!(
                    "has a member name of {} bytes (\"{shown}…\"); at most {MAX_KEY_BYTES} are accepted",
                    name.len()
                )));
            }
            let cap = if depth == 1 && OWN_CAP_FIELDS.contains(&name.as_str()) {
                usize::MAX
            } else {
                MAX_STRING_BYTES
            };
            walk(item, depth + 1, cap).map_err(|e| e.inside(name.clone()))
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> Value {
        (1..levels).fold(json!({}), |inner, _| json!({ "a": inner }))
    }

    #[test]
    fn depth_up_to_the_cap_passes_and_one_more_names_the_path() {
        assert!(check_shape(&nested(MAX_DEPTH)).is_ok());
        let e = check_shape(&nested(MAX_DEPTH + 1)).unwrap_err();
        assert_eq!(e.field, vec!["a"; MAX_DEPTH].join("."));
        assert!(e.message.contains("deeper than 64"), "{}", e.message);
        let e = check_shape(&json!({"payload": {"items": [1, [[{"x": nested(MAX_DEPTH)}]]]}})).unwrap_err();
        assert!(e.field.starts_with("payload.items[1][0][0].x.a.a"), "{}", e.field);
    }

    #[test]
    fn long_strings_and_member_names_are_refused_where_they_are() {
        let long = "x".repeat(MAX_STRING_BYTES + 1);
        let e = check_shape(&json!({"metadata": {"notes": ["ok", long]}})).unwrap_err();
        assert_eq!(e.field, "metadata.notes[1]");
        assert_eq!(
            e.message,
            format!(
                "must be a string of at most {MAX_STRING_BYTES} bytes (got {})",
                MAX_STRING_BYTES + 1
            )
        );
        // The diff is budgeted by its preset, not refused here; the same string elsewhere is.
        assert!(check_shape(&json!({"diffSummary": long})).is_ok());
        assert_eq!(
            check_shape(&json!({"payload": {"diffSummary": long}}))
                .unwrap_err()
                .field,
            "payload.diffSummary"
        );
        let mut members = serde_json::Map::new();
        members.insert("k".repeat(MAX_KEY_BYTES + 1), json!(1));
        let e = check_shape(&json!({"payload": members})).unwrap_err();
        assert_eq!(e.field, "payload");
        assert!(e.message.contains("member name of 257 bytes"), "{}", e.message);
        assert!(check_shape(&json!({"prompt": "x".repeat(MAX_STRING_BYTES)})).is_ok());
    }
}
