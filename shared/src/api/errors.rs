//! The one place where errors become HTTP responses.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::auth::Rejection;
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
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Seconds a client should wait before retrying when a dependency is down.
const RETRY_AFTER_SECONDS: &str = "5";

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

fn unavailable(code: &str, message: &str) -> Response {
    let body = json!({"error": "Service temporarily unavailable", "code": code, "message": message});
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, RETRY_AFTER_SECONDS)],
        Json(body),
    )
        .into_response()
}
