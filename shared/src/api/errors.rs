//! The one place where errors become HTTP responses: the edge's own refusals ([`ApiError`]) and the
//! use cases' ([`JobsError`], through `From`).
//!
//! A leaf of the HTTP layer but for `limits` (the `RateLimit` fields of a 429): the caps and
//! handlers import it, never the reverse, so a variant carries whatever its message needs.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use schemars::JsonSchema;
use serde::Serialize;

use super::limits;
use crate::app::auth::Rejection;
use crate::app::JobsError;
use crate::domain::contract::{CONTRACT_VERSION, VERSION_UNSUPPORTED};
use crate::domain::presets::FieldError;
use crate::engine::NothingToRedeliver;
use crate::ports::{QueueError, RateWindow, StoreError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("unauthorized")]
    Unauthorized { rejection: Rejection, header: String },
    #[error("{0}")]
    Field(#[from] FieldError),
    /// Batch items refused: every one, in input order (the first is the answer's `error`).
    #[error("invalid batch items")]
    BatchItems(Vec<FieldError>),
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
    /// A redelivery found nothing to send: the job is unfinished, has no deliveries, or all were delivered.
    #[error("{0}")]
    NothingToRedeliver(&'static str),
    /// The job moved on (a delivery attempt ended) between the read and the write of a redelivery.
    #[error("the job changed during the request")]
    JobChanged,
    #[error("Not found")]
    RouteNotFound,
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("rate limited")]
    RateLimited(RateWindow),
    #[error("too many jobs in flight")]
    TooManyInFlight { limit: u32, rate: Option<RateWindow> },
    /// More header fields than `max_fields`, or more than `max_bytes` of them (`seen` says what came).
    #[error("request header fields too large: {seen}")]
    HeadersTooLarge {
        seen: String,
        max_fields: usize,
        max_bytes: usize,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl From<JobsError> for ApiError {
    fn from(e: JobsError) -> Self {
        match e {
            JobsError::RateLimited(window) => ApiError::RateLimited(window),
            JobsError::TooManyInFlight { limit, rate } => ApiError::TooManyInFlight { limit, rate },
            JobsError::InvalidTarget(e) => ApiError::InvalidCallbackUrl {
                field: e.field,
                message: e.message,
            },
            JobsError::NotFound => ApiError::JobNotFound,
            JobsError::NothingToRedeliver(why) => ApiError::NothingToRedeliver(match why {
                NothingToRedeliver::Unfinished => "the job has not finished: its deliveries have not started",
                NothingToRedeliver::NoTargets => "the job has no callbackUrl or callbacks",
                NothingToRedeliver::AllDelivered => "every delivery was delivered",
            }),
            JobsError::Changed => ApiError::JobChanged,
            JobsError::Store(e) => ApiError::Store(e),
            JobsError::Queue(e) => ApiError::Queue(e),
        }
    }
}

/// Seconds an owner at its cap of jobs in flight should wait before submitting again: when a slot
/// frees up cannot be known, and a job step takes seconds.
const IN_FLIGHT_RETRY_AFTER_SECONDS: u64 = 5;
/// Seconds a client should wait before retrying when a dependency is down.
pub(crate) const RETRY_AFTER_SECONDS: &str = "5";

/// The machine-readable part of an error answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorCode {
    /// A body field is missing or wrong; `field` names it (`callbacks[0].url`, `prompt.template`).
    InvalidRequest,
    /// The body is not a JSON object.
    InvalidJson,
    /// The body is larger than the limit.
    PayloadTooLarge,
    /// A `callbackUrl` or callback `url` is refused (unsafe target, or no webhook secret for the owner).
    InvalidCallbackUrl,
    /// No such route.
    NotFound,
    /// The path exists, the method does not (`Allow` lists those that do).
    MethodNotAllowed,
    /// The owner's request budget for this window is spent: retry after `Retry-After` seconds.
    RateLimited,
    /// The owner already has its maximum of unfinished jobs: retry after `Retry-After` seconds.
    TooManyJobsInFlight,
    /// Too many header fields, or too many header bytes.
    HeadersTooLarge,
    /// The job store rejected our credentials (a deployment problem).
    StoreUnauthorized,
    /// The job store is unreachable: retry after `Retry-After` seconds.
    StoreUnavailable,
    /// The job store's clock and this server's disagree (a record would expire as it is written):
    /// nothing was written; a deployment problem that retrying does not fix.
    StoreClockSkew,
    /// The job store's plan has no requests left (Upstash's monthly quota is spent): nothing can be
    /// read or written until it resets or the plan is raised; the operator is alerted.
    StoreQuotaExhausted,
    /// The step queue is unreachable: retry after `Retry-After` seconds.
    QueueUnavailable,
    /// `POST …/deliveries/redeliver` found nothing to send (unfinished job, no deliveries, all delivered).
    NothingToRedeliver,
    /// The job changed while the request was handled (a delivery attempt ended): send it again.
    JobChanged,
}

/// Every error answer: `error` is always there (the old service's callers read only it).
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ErrorBody {
    /// A human-readable summary; for a bad field, `<field>: <message>`.
    pub(crate) error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "ErrorCode")]
    pub(crate) code: Option<ErrorCode>,
    /// The request field at fault (`body` for the body as a whole).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub(crate) field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub(crate) message: Option<String>,
    /// With `rate_limited` and `too_many_jobs_in_flight`: the same wait as `Retry-After`.
    #[serde(rename = "retryAfterSeconds", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64")]
    pub(crate) retry_after_seconds: Option<u64>,
    /// The original's code, on a `contractVersion` this server does not speak: `SCHEMA_VERSION_MISMATCH`.
    #[serde(rename = "errorCode", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "VersionMismatch")]
    pub(crate) error_code: Option<VersionMismatch>,
    /// A batch's refused items, every one in input order (`error` names the first).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<ItemError>")]
    pub(crate) errors: Vec<ItemError>,
    /// With `errorCode`: the version this server speaks.
    #[serde(rename = "supportedVersion", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub(crate) supported_version: Option<&'static str>,
}

/// One refused field of a batch item.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ItemError {
    /// `items[<i>].request.<field>`.
    pub(crate) field: String,
    /// `<field>: <message>`.
    pub(crate) error: String,
}

/// `errorCode` of a refused `contractVersion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub(crate) enum VersionMismatch {
    #[serde(rename = "SCHEMA_VERSION_MISMATCH")]
    SchemaVersionMismatch,
}

impl ErrorBody {
    fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            code: None,
            field: None,
            message: None,
            retry_after_seconds: None,
            error_code: None,
            supported_version: None,
            errors: Vec::new(),
        }
    }

    fn code(mut self, code: ErrorCode) -> Self {
        self.code = Some(code);
        self
    }

    fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::Unauthorized {
                rejection: Rejection::Missing,
                header,
            } => (
                StatusCode::UNAUTHORIZED,
                ErrorBody::new("Unauthorized")
                    .message(format!("Missing API key. Include it in the '{header}' header.")),
            ),
            ApiError::Unauthorized {
                rejection: Rejection::Invalid,
                ..
            } => (
                StatusCode::UNAUTHORIZED,
                ErrorBody::new("Unauthorized").message("Invalid API key."),
            ),
            ApiError::BatchItems(errors) => {
                let mut body = match errors.first() {
                    Some(first) => field_body(first),
                    None => field_body(&FieldError::new("items", "is invalid")),
                };
                body.errors = errors
                    .iter()
                    .map(|e| ItemError {
                        field: e.field.clone(),
                        error: field_body(e).error,
                    })
                    .collect();
                (StatusCode::BAD_REQUEST, body)
            }
            ApiError::Field(e) => (StatusCode::BAD_REQUEST, field_body(e)),
            ApiError::InvalidJson(_) => (
                StatusCode::BAD_REQUEST,
                ErrorBody::new(self.to_string())
                    .code(ErrorCode::InvalidJson)
                    .field("body"),
            ),
            ApiError::TooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorBody::new(self.to_string())
                    .code(ErrorCode::PayloadTooLarge)
                    .field("body"),
            ),
            ApiError::InvalidCallbackUrl { field, message } => (
                StatusCode::BAD_REQUEST,
                ErrorBody::new(format!("{field}: {message}"))
                    .code(ErrorCode::InvalidCallbackUrl)
                    .field(field.clone()),
            ),
            ApiError::MissingPurgeParameters => (StatusCode::BAD_REQUEST, ErrorBody::new(self.to_string())),
            ApiError::JobNotFound => (StatusCode::NOT_FOUND, ErrorBody::new("Job not found")),
            ApiError::NothingToRedeliver(why) => (
                StatusCode::CONFLICT,
                ErrorBody::new("Nothing to redeliver")
                    .code(ErrorCode::NothingToRedeliver)
                    .message(*why),
            ),
            ApiError::JobChanged => (
                StatusCode::CONFLICT,
                ErrorBody::new("Job changed")
                    .code(ErrorCode::JobChanged)
                    .message("A delivery attempt ended while this request was handled. Send it again."),
            ),
            ApiError::RouteNotFound => (
                StatusCode::NOT_FOUND,
                ErrorBody::new("Not found").code(ErrorCode::NotFound),
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorBody::new("Method not allowed").code(ErrorCode::MethodNotAllowed),
            ),
            ApiError::RateLimited(window) => {
                let wait = window.resets_in_seconds();
                let message = format!(
                    "This API key's owner made more than {} requests in {} s. Retry in {wait} s.",
                    window.limit.limit,
                    window.limit.window_ms.div_ceil(1000)
                );
                return too_many(ErrorCode::RateLimited, message, wait, Some(window));
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
                return too_many(ErrorCode::TooManyJobsInFlight, message, wait, rate.as_ref());
            }
            ApiError::HeadersTooLarge {
                seen,
                max_fields,
                max_bytes,
            } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                ErrorBody::new("Request header fields too large")
                    .code(ErrorCode::HeadersTooLarge)
                    .message(format!(
                        "At most {max_fields} header fields of {max_bytes} bytes in all are accepted (got {seen})."
                    )),
            ),
            ApiError::Store(StoreError::RequestTooLarge { bytes, limit }) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorBody::new("Payload too large")
                    .code(ErrorCode::PayloadTooLarge)
                    .field("body")
                    .message(format!(
                        "The job would take a {bytes}-byte request to store, over the store's limit of {limit} bytes \
                         (its text is escaped twice on the way: quotes and backslashes count double). Send less text."
                    )),
            ),
            ApiError::Store(e) => {
                tracing::error!(error = %e, "store unavailable");
                let (code, message) = match e {
                    StoreError::Unauthorized => {
                        (ErrorCode::StoreUnauthorized, "The job store rejected our credentials.")
                    }
                    StoreError::ExpiryInPast(_) => (
                        ErrorCode::StoreClockSkew,
                        "The job store's clock is ahead of this server's: a record would expire as it is \
                         written, so nothing was written. The operator must fix the server's clock.",
                    ),
                    StoreError::QuotaExhausted(_) => (
                        ErrorCode::StoreQuotaExhausted,
                        "The job store's request quota is spent (its plan's monthly limit): nothing can be read \
                         or written until it resets or the operator raises the plan.",
                    ),
                    _ => (
                        ErrorCode::StoreUnavailable,
                        "The job store is unavailable. Please retry shortly.",
                    ),
                };
                return unavailable(code, message);
            }
            ApiError::Queue(e) => {
                tracing::error!(error = %e, "queue unavailable");
                return unavailable(
                    ErrorCode::QueueUnavailable,
                    "The step queue is unavailable. Please retry shortly.",
                );
            }
        };
        (status, Json(body)).into_response()
    }
}

/// A refused field: `<field>: <message>` with its code and field; a `contractVersion` other than ours in
/// the original's words (bare for the body's own field, `Invalid <where>: …` below it) with its
/// `errorCode` and `supportedVersion`.
fn field_body(e: &FieldError) -> ErrorBody {
    if e.message != VERSION_UNSUPPORTED {
        return ErrorBody::new(e.to_string())
            .code(ErrorCode::InvalidRequest)
            .field(e.field.clone());
    }
    let error = match e.field.strip_suffix(".contractVersion") {
        Some(parent) => format!("Invalid {parent}: {VERSION_UNSUPPORTED}"),
        None => VERSION_UNSUPPORTED.to_string(),
    };
    let mut body = ErrorBody::new(error)
        .code(ErrorCode::InvalidRequest)
        .field(e.field.clone());
    body.error_code = Some(VersionMismatch::SchemaVersionMismatch);
    body.supported_version = Some(CONTRACT_VERSION);
    body
}

/// 429 with `Retry-After` and, when the owner is rate-limited, its `RateLimit` fields.
fn too_many(code: ErrorCode, message: String, retry_after_seconds: u64, rate: Option<&RateWindow>) -> Response {
    let mut body = ErrorBody::new("Too many requests").code(code).message(message);
    body.retry_after_seconds = Some(retry_after_seconds);
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, retry_after_seconds.into());
    if let Some(window) = rate {
        limits::insert_headers(response.headers_mut(), window);
    }
    response
}

fn unavailable(code: ErrorCode, message: &str) -> Response {
    let body = ErrorBody::new("Service temporarily unavailable")
        .code(code)
        .message(message);
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, RETRY_AFTER_SECONDS)],
        Json(body),
    )
        .into_response()
}
