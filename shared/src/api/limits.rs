//! Per-owner limits at the HTTP edge: the rate window becomes the `RateLimit` and `RateLimit-Policy`
//! fields of draft-ietf-httpapi-ratelimit-headers (structured fields:
//! `RateLimit-Policy: "default";q=120;w=60`, `RateLimit: "default";r=17;t=42`). A leaf: the refusals
//! a store admission can end in are `app/mod.rs`'s, their answers `errors.rs`'s.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;

use crate::ports::{RateLimit, RateWindow};

pub(crate) static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub(crate) static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The policy's name in both fields: one policy applies to an owner.
const POLICY: &str = "default";

/// `RateLimit-Policy` alone: the owner's quota and window.
pub(crate) fn insert_policy(headers: &mut HeaderMap, limit: RateLimit) {
    let policy = format!("\"{POLICY}\";q={};w={}", limit.limit, limit.window_ms.div_ceil(1000));
    // Digits and quotes only: always a valid value.
    if let Ok(value) = HeaderValue::try_from(policy) {
        headers.insert(RATELIMIT_POLICY.clone(), value);
    }
}

/// Both fields for an owner's window.
pub(crate) fn insert_headers(headers: &mut HeaderMap, window: &RateWindow) {
    insert_policy(headers, window.limit);
    let state = format!("\"{POLICY}\";r={};t={}", window.remaining, window.resets_in_seconds());
    if let Ok(value) = HeaderValue::try_from(state) {
        headers.insert(RATELIMIT.clone(), value);
    }
}

/// Adds the owner's rate fields to an answer (nothing when the owner is not rate-limited).
pub(crate) fn with_rate(mut response: Response, rate: Option<RateWindow>) -> Response {
    if let Some(window) = rate {
        insert_headers(response.headers_mut(), &window);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_structured_field_items() {
        let limit = RateLimit {
            limit: 120,
            window_ms: 60_000,
        };
        let mut headers = HeaderMap::new();
        insert_headers(&mut headers, &limit.check(103, 1_700_000_000_500).unwrap());
        assert_eq!(headers["ratelimit-policy"], "\"default\";q=120;w=60");
        // 1_700_000_000_500 is 20.5 s into its minute: 39.5 s are left, announced as 40.
        assert_eq!(headers["ratelimit"], "\"default\";r=17;t=40");
        insert_headers(&mut headers, &limit.check(500, 1_700_000_000_500).unwrap_err());
        assert_eq!(
            headers["ratelimit"], "\"default\";r=0;t=40",
            "remaining never goes below zero"
        );
    }
}
