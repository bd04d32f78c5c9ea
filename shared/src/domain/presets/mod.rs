//! Presets turn a caller's request into a job: the body as typed fields (their limits, their 400s and
//! their JSON Schema in `fields`), the request's identity (dedupe and cache key), and the prompt.
//! `commit_report` is one preset; `generic` serves any prompt / JSON-schema job the same way.

pub mod batch;
pub(crate) mod commit_report;
pub(crate) mod fields;
pub(crate) mod generic;
mod redact;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use self::fields::{Flag, Headers, Int, List, Listed, Object, Refusal, Shape, Url};
use crate::domain::contract::CacheControl;
use crate::domain::job::JobSpec;
use crate::domain::targets::{Target, TargetKind};

/// A request field that is missing or wrong. Its `Display` is the contract's 400 `error` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub(crate) struct FieldError {
    pub(crate) field: String,
    pub(crate) message: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Bumped when prompts change, so cached results of an older prompt are not served for a new one.
pub(crate) const PRESET_VERSION: &str = "2";

/// A preset: the body it reads, what the job it makes is, and where that job is polled. One submit
/// handler serves every preset (`api::routes::submit::<P>`), and the OpenAPI document describes each
/// preset's body from [`Preset::Body`].
pub(crate) trait Preset: Sized {
    /// The body as the contract reads it; its derived JSON Schema is the document's request schema.
    type Body: DeserializeOwned + JsonSchema;
    /// Where the job's status is polled: `{STATUS_PREFIX}{jobId}`.
    const STATUS_PREFIX: &'static str;

    /// The rules that span fields, and the job's parts, from a body read field by field.
    fn from_body(body: Self::Body) -> Result<Self, FieldError>;

    /// Reads a request body (a JSON object): the first field it refuses is named in the error.
    fn parse(body: Value) -> Result<Self, FieldError> {
        Self::from_body(fields::parse(body)?)
    }

    /// The job's identity: identical requests of one owner meet on one job.
    fn identity(&self) -> String;

    /// `deadlineSeconds`, when the request gave one.
    fn deadline_seconds(&self) -> Option<u64>;

    /// Whether an identical finished job may answer the request (`cacheControl`).
    fn cache_control(&self) -> CacheControl {
        CacheControl::Default
    }

    /// What the job runs and whom it tells (`spec.targets`, checked by [`Submission::check_targets`]
    /// before it is stored).
    fn spec(&self) -> JobSpec;
}

/// The request's `priority`, read as `job::Priority`; its schema an optional field (absent: `normal`).
/// Read only: a field whose type serializes gets its default (`null`) written in the document, which
/// makes it required in the generated TypeScript.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PriorityField(pub crate::domain::job::Priority);

impl PriorityField {
    fn check(value: Value) -> Result<Self, Refusal> {
        use crate::domain::job::Priority;
        match value.as_str() {
            Some("high") => Ok(Self(Priority::High)),
            Some("normal") => Ok(Self(Priority::Normal)),
            Some("low") => Ok(Self(Priority::Low)),
            _ => Err(Refusal::new(r#"must be "high", "normal" or "low""#)),
        }
    }
}

fields::via_check!([] PriorityField);
fields::leaf_schema!([] PriorityField, |_g| "Priority", schemars::json_schema!({"type": "string", "enum": ["high", "normal", "low"]}));

/// How long a job may take, in seconds, when the request says: a minute to a week.
pub(crate) type Deadline = Int<60, 604_800>;

/// At most five callbacks, delivered in order.
pub(crate) type Callbacks = List<Callback, 0, 5>;

/// A callback's attempts when the request does not say.
const DEFAULT_ATTEMPTS: u64 = 3;
/// The wait before a callback's first retry when the request does not say.
const DEFAULT_BACKOFF_MS: u64 = 1_000;

// One entry of `callbacks` (no description in the document: the list has it).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(inline)]
pub(crate) struct Callback {
    /// Where to POST the callback body `{success, result | error, metadata}`.
    url: Url,
    /// Headers sent with this callback only.
    #[serde(default)]
    #[schemars(with = "Headers")]
    headers: Option<Headers>,
    /// Deliver the next callbacks even when this one fails for good.
    #[serde(default)]
    #[schemars(with = "Flag", extend("default" = false))]
    continue_on_failure: Option<Flag>,
    #[serde(default)]
    #[schemars(with = "Retry")]
    retry: Option<Object<Retry>>,
}

impl Shape for Callback {
    const NOT_AN_OBJECT: &'static str = "must be an object";
}

impl Listed for Callback {
    const NOT_A_LIST: &'static str = "must be an array of at most 5 entries";
}

// A callback's retry policy.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(inline)]
pub(crate) struct Retry {
    #[serde(default)]
    #[schemars(with = "Int<1, 5>", extend("default" = DEFAULT_ATTEMPTS))]
    max_attempts: Option<Int<1, 5>>,
    #[serde(default)]
    #[schemars(with = "Int<100, 60_000>", extend("default" = DEFAULT_BACKOFF_MS))]
    backoff_ms: Option<Int<100, 60_000>>,
}

impl Shape for Retry {
    const NOT_AN_OBJECT: &'static str = "must be an object {maxAttempts, backoffMs}";
}

/// Who to tell when the job ends: the signed webhook `callbackUrl` first, then `callbacks` in order
/// (shape only here; whether a URL is safe is asked by [`Submission::check_targets`]).
pub fn targets(callback_url: Option<Url>, callbacks: Option<Callbacks>) -> Vec<Target> {
    let webhook = callback_url.map(|url| Target::webhook(url.0));
    let callbacks = callbacks.into_iter().flat_map(|list| list.0).map(|c| {
        let retry = c.retry.map(|r| r.0);
        Target {
            kind: TargetKind::Callback,
            url: c.url.0,
            headers: c.headers.map(|h| h.0).unwrap_or_default(),
            continue_on_failure: c.continue_on_failure.is_some_and(|f| f.0),
            max_attempts: retry
                .as_ref()
                .and_then(|r| r.max_attempts)
                .map_or(DEFAULT_ATTEMPTS, |n| n.0) as u32,
            backoff_ms: retry
                .as_ref()
                .and_then(|r| r.backoff_ms)
                .map_or(DEFAULT_BACKOFF_MS, |n| n.0),
            schedule_ms: Vec::new(),
        }
    });
    webhook.into_iter().chain(callbacks).collect()
}

/// A parsed job request, whichever preset it came from: what a submit hands the engine.
#[derive(Debug)]
pub(crate) struct Submission {
    /// What makes two requests the same job (with the owner: the job id).
    pub(crate) identity: String,
    pub(crate) spec: JobSpec,
    /// The caller's deadline; the configured default when absent.
    pub(crate) deadline_seconds: Option<u64>,
    /// Whether an identical finished job may answer (`cacheControl`).
    pub(crate) cache: CacheControl,
}

/// The retry policy a deployment gives every `callbackUrl` webhook (callbacks bring their own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebhookRetry {
    pub(crate) max_attempts: u32,
    pub(crate) backoff_ms: u64,
    /// When not empty, replaces the two above.
    pub(crate) schedule_ms: Vec<u64>,
}

impl Submission {
    /// The submission of a parsed request.
    pub(crate) fn of<P: Preset>(request: &P) -> Self {
        Self {
            identity: request.identity(),
            spec: request.spec(),
            deadline_seconds: request.deadline_seconds(),
            cache: request.cache_control(),
        }
    }

    /// Gives the webhook the deployment's retry policy and asks `admits` about every target (the
    /// reason it refuses one, before anything is stored); a refusal names the field that gave it:
    /// `callbackUrl`, or `callbacks[i].url`.
    pub(crate) fn check_targets(
        &mut self,
        webhook: &WebhookRetry,
        admits: impl Fn(TargetKind, &str) -> Result<(), String>,
    ) -> Result<(), FieldError> {
        let mut callbacks = 0;
        for target in &mut self.spec.targets {
            let field = match target.kind {
                TargetKind::Webhook => {
                    target.max_attempts = webhook.max_attempts;
                    target.backoff_ms = webhook.backoff_ms;
                    target.schedule_ms = webhook.schedule_ms.clone();
                    "callbackUrl".to_string()
                }
                TargetKind::Callback => {
                    callbacks += 1;
                    format!("callbacks[{}].url", callbacks - 1)
                }
            };
            admits(target.kind, &target.url).map_err(|message| FieldError::new(field, message))?;
        }
        Ok(())
    }
}

/// A stable hash of a canonical JSON value (serde_json keeps insertion order; we build it in a fixed order).
pub(crate) fn digest(v: &Value) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}
