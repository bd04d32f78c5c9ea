//! The one place where errors become HTTP responses.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::auth::Rejection;
use super::limits;
use crate::ports::RateWindow;
use crate::presets::FieldError;
use crate::queue::QueueError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unauthorized")]
    Unauthorized { rejection: Rejection, header: String },
    #[error("{0}")]
    Field(#[from] FieldError),
    #[error("body: {0}")]
    InvalidJson(String),
    #[error("body: larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{message}")]
    InvalidCallbackUrl { field: String, message: String },
    #[error("Missing required query parameters: userId, commitSha")]
    MissingPurgeParameters,
    #[error("Job not found")]
    JobNotFound,
    #[error("Not found")]
    RouteNotFound,
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("rate limited")]
    RateLimited(RateWindow),
    #[error("too many jobs in flight")]
    TooManyInFlight { limit: u32, rate: Option<RateWindow> },
    #[error("request header fields too large: {seen}")]
    HeadersTooLarge { seen: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Seconds a client should wait before retrying when a dependency is down.
const RETRY_AFTER_SECONDS: &str = "5";
/// Seconds an owner at its cap of jobs in flight should wait before submitting again: when a slot
/// frees up cannot be known, and a job step takes seconds.
const IN_FLIGHT_RETRY_AFTER_SECONDS: u64 = 5;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::Unauthorized {
                rejection: Rejection::Missing,
                header,
            } => (
                StatusCode::UNAUTHORIZED,
                json!({"error": "Unauthorized", "message": format!("Missing API key. Include it in the '{header}' header.")}),
            ),
            ApiError::Unauthorized {
                rejection: Rejection::Invalid,
                ..
            } => (
                StatusCode::UNAUTHORIZED,
                json!({"error": "Unauthorized", "message": "Invalid API key."}),
            ),
            ApiError::Field(e) => (
                StatusCode::BAD_REQUEST,
                json!({"error": e.to_string(), "code": "invalid_request", "field": e.field}),
            ),
            ApiError::InvalidJson(_) => (
                StatusCode::BAD_REQUEST,
                json!({"error": self.to_string(), "code": "invalid_json", "field": "body"}),
            ),
            ApiError::TooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": self.to_string(), "code": "payload_too_large", "field": "body"}),
            ),
            ApiError::InvalidCallbackUrl { field, message } => (
                StatusCode::BAD_REQUEST,
                json!({"error": format!("{field}: {message}"), "code": "invalid_callback_url", "field": field}),
            ),
            ApiError::MissingPurgeParameters => (StatusCode::BAD_REQUEST, json!({"error": self.to_string()})),
            ApiError::JobNotFound => (StatusCode::NOT_FOUND, json!({"error": "Job not found"})),
            ApiError::RouteNotFound => (
                StatusCode::NOT_FOUND,
                json!({"error": "Not found", "code": "not_found"}),
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "Method not allowed", "code": "method_not_allowed"}),
            ),
            ApiError::RateLimited(window) => {
                let wait = window.resets_in_seconds();
                let message = format!(
                    "This API key's owner made more than {} requests in {} s. Retry in {wait} s.",
                    window.limit.limit,
                    window.limit.window_ms.div_ceil(1000)
                );
                return too_many("rate_limited", message, wait, Some(window));
            }
            ApiError::TooManyInFlight { limit, rate } => {
                // Out of requests too: no point retrying before the window ends.
                let wait = match rate {
                    Some(w) if w.remaining == 0 => w.resets_in_seconds().max(IN_FLIGHT_RETRY_AFTER_SECONDS),
                    _ => IN_FLIGHT_RETRY_AFTER_SECONDS,
                };
                let message = format!(
                    "This API key's owner already has {limit} unfinished jobs. Submit again once some finish \
                     (or purge those no longer needed). Retry in {wait} s."
                );
                return too_many("too_many_jobs_in_flight", message, wait, rate.as_ref());
            }
            ApiError::HeadersTooLarge { seen } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                json!({
                    "error": "Request header fields too large",
                    "code": "headers_too_large",
                    "message": format!(
                        "At most {} header fields of {} bytes in all are accepted (got {seen}).",
                        super::caps::MAX_HEADERS,
                        super::caps::MAX_HEADER_BYTES
                    ),
                }),
            ),
            ApiError::Store(e) => {
                tracing::error!(error = %e, "store unavailable");
                let (code, message) = match e {
                    StoreError::Unauthorized => ("store_unauthorized", "The job store rejected our credentials."),
                    _ => (
                        "store_unavailable",
                        "The job store is unavailable. Please retry shortly.",
                    ),
                };
                return unavailable(code, message);
            }
            ApiError::Queue(e) => {
                tracing::error!(error = %e, "queue unavailable");
                return unavailable(
                    "queue_unavailable",
                    "The step queue is unavailable. Please retry shortly.",
                );
            }
        };
        (status, Json(body)).into_response()
    }
}

/// 429 with `Retry-After` and, when the owner is rate-limited, its `RateLimit` fields.
fn too_many(code: &str, message: String, retry_after_seconds: u64, rate: Option<&RateWindow>) -> Response {
    let body = json!({"error": "Too many requests", "code": code, "message": message, "retryAfterSeconds": retry_after_seconds});
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, retry_after_seconds.into());
    if let Some(window) = rate {
        limits::insert_headers(response.headers_mut(), window);
    }
    response
}

fn unavailable(code: &str, message: &str) -> Response {
    let body = json!({"error": "Service temporarily unavailable", "code": code, "message": message});
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, RETRY_AFTER_SECONDS)],
        Json(body),
    )
        .into_response()
}
