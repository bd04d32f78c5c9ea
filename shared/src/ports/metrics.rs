//! Metrics: one set of names, two outputs. Everything is recorded through the `metrics`
//! facade; the process installs the recorder. `stepper-local` renders Prometheus text at `GET /metrics`
//! (`metrics-exporter-prometheus`), a Lambda function prints CloudWatch Embedded Metric Format lines at
//! the end of each invocation (`crate::wiring::lambda`, `metrics_cloudwatch_embedded`). Without a recorder (the
//! tests in process) every call is a no-op.
//!
//! Where a family means what one of the original service's meant (npm `ai-inference-stepper` 1.1.0,
//! `src/metrics/metrics.ts`) it carries that name and those labels, with the same low-cardinality
//! values; docs/operations.md ("Metrics") lists every family and the mapping.
//!
//! Labels are bounded: providers and owners are configured (API keys), kinds, classes, reasons and
//! outcomes are fixed word lists, routes come from the endpoint table and steps from the message kinds.

use std::future::Future;
use std::time::Duration;

use ::metrics::{counter, gauge, histogram, Unit};

use crate::domain::error_class::ErrorClass;
use crate::domain::job::{Job, JobKind, JobSpec, JobState};
use crate::domain::llm::ResponseFormat;
use crate::domain::quota::{Availability, LastOutcome, ProviderLimits, ProviderState};
use crate::domain::targets::{DeliveryStatus, TargetKind};

/// The original's families (same names, same labels).
pub(crate) const AI_REQUESTS_TOTAL: &str = "ai_requests_total";
pub(crate) const AI_REQUEST_DURATION_SECONDS: &str = "ai_request_duration_seconds";
pub(crate) const PROVIDER_FAILURES_TOTAL: &str = "provider_failures_total";
pub(crate) const CACHE_HITS_TOTAL: &str = "cache_hits_total";
pub(crate) const CACHE_MISSES_TOTAL: &str = "cache_misses_total";
pub(crate) const JOB_QUEUE_SIZE: &str = "job_queue_size";
pub(crate) const JOBS_PROCESSED_TOTAL: &str = "jobs_processed_total";

/// stepper's own families.
pub(crate) const JOBS_SUBMITTED_TOTAL: &str = "stepper_jobs_submitted_total";
pub(crate) const JOB_DURATION_SECONDS: &str = "stepper_job_duration_seconds";
pub(crate) const PROVIDER_ATTEMPTS_TOTAL: &str = "stepper_provider_attempts_total";
pub(crate) const WAIT_SECONDS: &str = "stepper_wait_seconds";
pub(crate) const WEBHOOK_ATTEMPTS_TOTAL: &str = "stepper_webhook_attempts_total";
pub(crate) const STORE_REQUESTS_TOTAL: &str = "stepper_store_requests_total";
pub(crate) const REDIS_COMMANDS_TOTAL: &str = "stepper_redis_commands_total";
pub(crate) const STORE_REST_REQUESTS_TOTAL: &str = "stepper_store_rest_requests_total";
pub(crate) const STORE_QUOTA_EXHAUSTED_TOTAL: &str = "stepper_store_quota_exhausted_total";

/// The original's buckets for `ai_request_duration_seconds`.
pub(crate) const AI_REQUEST_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];
/// Submit to done: seconds for a job served at once, hours for one that waited out a quota.
pub(crate) const JOB_DURATION_BUCKETS: &[f64] = &[1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0];
/// How long a job is told to wait: a rate limit's seconds up to a quota day.
pub(crate) const WAIT_BUCKETS: &[f64] = &[1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0];

/// Every histogram and its buckets, for the Prometheus exporter.
pub const HISTOGRAM_BUCKETS: [(&str, &[f64]); 3] = [
    (AI_REQUEST_DURATION_SECONDS, AI_REQUEST_BUCKETS),
    (JOB_DURATION_SECONDS, JOB_DURATION_BUCKETS),
    (WAIT_SECONDS, WAIT_BUCKETS),
];

/// Every counter's help text (their unit: a count).
const COUNTER_HELP: [(&str, &str); 12] = [
    (AI_REQUESTS_TOTAL, "Total number of AI provider requests"),
    (PROVIDER_FAILURES_TOTAL, "Total number of provider failures"),
    (CACHE_HITS_TOTAL, "Total number of cache hits"),
    (CACHE_MISSES_TOTAL, "Total number of cache misses"),
    (JOBS_PROCESSED_TOTAL, "Total number of jobs processed"),
    (JOBS_SUBMITTED_TOTAL, "New jobs written by a submit"),
    (PROVIDER_ATTEMPTS_TOTAL, "Provider attempts by outcome class"),
    (
        WEBHOOK_ATTEMPTS_TOTAL,
        "Webhook and callback delivery attempts by outcome",
    ),
    (
        STORE_REQUESTS_TOTAL,
        "Store requests (one REST request on Upstash) by route or step and operation",
    ),
    (
        REDIS_COMMANDS_TOTAL,
        "Redis commands Upstash executed and bills (a script call plus every command inside it) by route or step",
    ),
    (
        STORE_QUOTA_EXHAUSTED_TOTAL,
        "Store requests refused because the store plan's request quota is spent (Upstash: max requests limit exceeded)",
    ),
    (STORE_REST_REQUESTS_TOTAL, "REST requests to Upstash by route or step"),
];

/// Every histogram's help text (their unit: seconds).
const HISTOGRAM_HELP: [(&str, &str); 3] = [
    (
        AI_REQUEST_DURATION_SECONDS,
        "Duration of AI provider requests in seconds",
    ),
    (JOB_DURATION_SECONDS, "Time from submit to a finished job"),
    (WAIT_SECONDS, "Waits for a provider to become available, by reason"),
];

/// Registers help texts and units with the installed recorder.
pub fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    for (name, help) in COUNTER_HELP {
        describe_counter!(name, Unit::Count, help);
    }
    for (name, help) in HISTOGRAM_HELP {
        describe_histogram!(name, Unit::Seconds, help);
    }
    describe_gauge!(
        JOB_QUEUE_SIZE,
        Unit::Count,
        "Jobs with work left in the store's due-index, as the last sweep saw it"
    );
}

tokio::task_local! {
    /// What the current task serves: an HTTP route (`POST /v1/reports`) or a step kind (`step`).
    static ROUTE: &'static str;
}

/// Runs `f` with `route` as the route label of the store requests and Redis commands it makes.
pub(crate) async fn in_route<F: Future>(route: &'static str, f: F) -> F::Output {
    ROUTE.scope(route, f).await
}

/// The route label of the current task (`other` outside any scope).
pub(crate) fn route() -> &'static str {
    ROUTE.try_with(|r| *r).unwrap_or("other")
}

/// The original's `preset` label.
fn preset(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Report => "commit-report",
        JobKind::Generic => "generic",
    }
}

/// stepper's `kind` label.
fn kind(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Report => "report",
        JobKind::Generic => "generic",
    }
}

fn response_mode(format: &ResponseFormat) -> &'static str {
    match format {
        ResponseFormat::Json { .. } => "json",
        ResponseFormat::Text => "text",
    }
}

/// The original's `reason` of `provider_failures_total` (its `ProviderErrorType`), from our classes.
pub(crate) fn failure_reason(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::RateLimited | ErrorClass::QuotaExhausted => "RATE_LIMIT",
        ErrorClass::AuthInvalid => "AUTH",
        ErrorClass::Overloaded => "UPSTREAM_UNAVAILABLE",
        ErrorClass::InvalidOutput | ErrorClass::Filtered => "INVALID_RESPONSE",
        ErrorClass::BadRequest | ErrorClass::Gone => "UNKNOWN",
    }
}

/// What an admitted submit met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// A new job was written.
    New,
    /// An identical job is still in flight: the caller gets its id.
    InFlight,
    /// An identical job has finished and is not purged: the caller gets its answer.
    Finished,
}

/// A submit the store admitted: a new job is a cache miss and a submitted job, an identical one a hit.
pub(crate) fn submitted(spec: &JobSpec, owner: &str, met: Submitted) {
    let (preset, mode) = (preset(spec.kind), response_mode(&spec.format));
    match met {
        Submitted::New => {
            counter!(CACHE_MISSES_TOTAL, "preset" => preset, "response_mode" => mode).increment(1);
            counter!(JOBS_SUBMITTED_TOTAL, "kind" => kind(spec.kind), "owner" => owner.to_string()).increment(1);
        }
        Submitted::InFlight | Submitted::Finished => {
            let status = if met == Submitted::Finished {
                "fresh"
            } else {
                "in_flight"
            };
            counter!(CACHE_HITS_TOTAL, "status" => status, "preset" => preset, "response_mode" => mode).increment(1);
        }
    }
}

/// One provider attempt: its outcome class (`None`: a usable answer) and how long the call took.
pub(crate) fn provider_attempt(spec: &JobSpec, provider: &str, class: Option<ErrorClass>, duration_ms: u64) {
    let (preset, mode) = (preset(spec.kind), response_mode(&spec.format));
    let provider = provider.to_string();
    counter!(AI_REQUESTS_TOTAL, "provider" => provider.clone(), "status" => "attempted", "preset" => preset,
        "response_mode" => mode)
    .increment(1);
    let status = if class.is_none() { "success" } else { "failed" };
    counter!(AI_REQUESTS_TOTAL, "provider" => provider.clone(), "status" => status, "preset" => preset,
        "response_mode" => mode)
    .increment(1);
    counter!(PROVIDER_ATTEMPTS_TOTAL, "provider" => provider.clone(),
        "outcome" => class.map_or("ok", ErrorClass::as_str))
    .increment(1);
    match class {
        // As the original: the duration of the requests that answered.
        None => histogram!(AI_REQUEST_DURATION_SECONDS, "provider" => provider, "preset" => preset,
            "response_mode" => mode)
        .record(duration_ms as f64 / 1000.0),
        Some(class) => counter!(PROVIDER_FAILURES_TOTAL, "provider" => provider,
            "reason" => failure_reason(class), "preset" => preset, "response_mode" => mode)
        .increment(1),
    }
}

/// A job ended (its finishing write landed): completed, completed with its fallback, or failed.
pub(crate) fn job_finished(job: &Job, now_ms: u64) {
    let status = if job.state == JobState::Succeeded {
        "success"
    } else {
        "failed"
    };
    let fallback = job.result.as_ref().is_some_and(|r| r.fallback);
    let kind = kind(job.spec.kind);
    counter!(JOBS_PROCESSED_TOTAL, "status" => status, "kind" => kind, "owner" => job.owner.clone(),
        "fallback" => if fallback { "true" } else { "false" })
    .increment(1);
    let outcome = match (status, fallback) {
        ("success", true) => "fallback",
        ("success", false) => "completed",
        _ => "failed",
    };
    histogram!(JOB_DURATION_SECONDS, "kind" => kind, "outcome" => outcome)
        .record(now_ms.saturating_sub(job.created_at_ms) as f64 / 1000.0);
}

/// Why a job waits: what holds back the provider that becomes available first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitReason {
    /// A provider answered 429 with a short retry time.
    RateLimited,
    /// A provider's quota window is used up (day, month), or its headers said nothing is left.
    QuotaExhausted,
    /// A provider is backing off after overloads.
    Overloaded,
    /// Five overloads in a row opened the provider's circuit.
    CircuitOpen,
    /// Another job holds the provider's probe after its cooldown: this one waits for the outcome.
    Probe,
    /// The configured `rpm`, `tpm` or `rpd` of the provider is used up.
    ConfiguredLimit,
    /// A cooldown with no class to name (another instance wrote it, or an older state).
    Cooldown,
}

impl WaitReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WaitReason::RateLimited => "rate_limited",
            WaitReason::QuotaExhausted => "quota_exhausted",
            WaitReason::Overloaded => "overloaded",
            WaitReason::CircuitOpen => "circuit_open",
            WaitReason::Probe => "probe",
            WaitReason::ConfiguredLimit => "configured_limit",
            WaitReason::Cooldown => "cooldown",
        }
    }
}

/// Why a job waits until `until_ms`: the reason of the first provider that becomes available then
/// (`providers` as the decision saw them, probes held back).
pub(crate) fn wait_reason<'a>(
    providers: impl IntoIterator<Item = (&'a ProviderState, &'a ProviderLimits)>,
    now_ms: u64,
    until_ms: u64,
) -> WaitReason {
    let first = providers
        .into_iter()
        .find(|(state, limits)| state.available_at(limits, now_ms) == Availability::At(until_ms));
    let Some((state, _)) = first else {
        return WaitReason::Cooldown;
    };
    if state.circuit_open_until_ms >= until_ms {
        return WaitReason::CircuitOpen;
    }
    if state.cooldown_until_ms < until_ms {
        return WaitReason::ConfiguredLimit;
    }
    if state.probe_until_ms == state.cooldown_until_ms && state.probe_until_ms > now_ms {
        return WaitReason::Probe;
    }
    match state.last_class {
        Some(LastOutcome::Failed(ErrorClass::RateLimited)) => WaitReason::RateLimited,
        // A success whose rate-limit headers said nothing is left parks the provider until their reset.
        Some(LastOutcome::Failed(ErrorClass::QuotaExhausted)) | Some(LastOutcome::Ok) => WaitReason::QuotaExhausted,
        Some(LastOutcome::Failed(ErrorClass::Overloaded)) => WaitReason::Overloaded,
        _ => WaitReason::Cooldown,
    }
}

/// A job was told to wait this long.
pub(crate) fn waited(reason: WaitReason, wait: Duration) {
    histogram!(WAIT_SECONDS, "reason" => reason.as_str()).record(wait.as_secs_f64());
}

/// One delivery attempt and the delivery's state after it.
pub(crate) fn webhook_attempt(target: TargetKind, status: DeliveryStatus) {
    let target = match target {
        TargetKind::Webhook => "webhook",
        TargetKind::Callback => "callback",
    };
    let outcome = match status {
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Pending => "retry",
        DeliveryStatus::Dead => "dead",
        DeliveryStatus::Skipped => "skipped",
    };
    counter!(WEBHOOK_ATTEMPTS_TOTAL, "target" => target, "outcome" => outcome).increment(1);
}

/// One store call (`operation` is the `Store` method) and whether it answered.
pub(crate) fn store_request(operation: &'static str, ok: bool) {
    counter!(STORE_REQUESTS_TOTAL, "route" => route(), "operation" => operation,
        "outcome" => if ok { "ok" } else { "error" })
    .increment(1);
}

/// One store request refused because the plan's request quota is spent.
pub(crate) fn store_quota_exhausted() {
    counter!(STORE_QUOTA_EXHAUSTED_TOTAL, "route" => route()).increment(1);
}

/// One REST request to Upstash (whatever it carried).
pub(crate) fn store_rest_request() {
    counter!(STORE_REST_REQUESTS_TOTAL, "route" => route()).increment(1);
}

/// Redis commands Upstash executed (and bills) for one REST request: a pipeline's commands; a script
/// call and every command inside it (the script answers the count: store/upstash/scripts/count.lua).
pub(crate) fn redis_commands(count: usize) {
    counter!(REDIS_COMMANDS_TOTAL, "route" => route()).increment(count as u64);
}

/// Jobs with work left in the due-index, as a sweep counted them (no command of its own).
pub(crate) fn queue_size(jobs: u64) {
    gauge!(JOB_QUEUE_SIZE).set(jobs as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_maps_to_one_of_the_originals_reasons() {
        let original = [
            "RATE_LIMIT",
            "AUTH",
            "TIMEOUT",
            "UPSTREAM_UNAVAILABLE",
            "INVALID_RESPONSE",
            "UNKNOWN",
        ];
        for class in [
            ErrorClass::RateLimited,
            ErrorClass::QuotaExhausted,
            ErrorClass::Overloaded,
            ErrorClass::AuthInvalid,
            ErrorClass::BadRequest,
            ErrorClass::Filtered,
            ErrorClass::InvalidOutput,
            ErrorClass::Gone,
        ] {
            assert!(original.contains(&failure_reason(class)), "{class:?}");
        }
    }

    #[test]
    fn a_wait_is_named_by_the_provider_that_frees_up_first() {
        let limits = ProviderLimits::default();
        let now = 1_000_000;
        let rate_limited = ProviderState {
            cooldown_until_ms: now + 5_000,
            last_class: Some(LastOutcome::Failed(ErrorClass::RateLimited)),
            ..Default::default()
        };
        let exhausted = ProviderState {
            cooldown_until_ms: now + 60_000,
            last_class: Some(LastOutcome::Failed(ErrorClass::QuotaExhausted)),
            ..Default::default()
        };
        let both = [(&exhausted, &limits), (&rate_limited, &limits)];
        assert_eq!(wait_reason(both, now, now + 5_000), WaitReason::RateLimited);
        assert_eq!(
            wait_reason([(&exhausted, &limits)], now, now + 60_000),
            WaitReason::QuotaExhausted
        );
        let circuit = ProviderState {
            circuit_open_until_ms: now + 120_000,
            last_class: Some(LastOutcome::Failed(ErrorClass::Overloaded)),
            ..Default::default()
        };
        assert_eq!(
            wait_reason([(&circuit, &limits)], now, now + 120_000),
            WaitReason::CircuitOpen
        );
        let probed = ProviderState {
            cooldown_until_ms: now + 9_000,
            probe_until_ms: now + 9_000,
            last_class: Some(LastOutcome::Failed(ErrorClass::RateLimited)),
            ..Default::default()
        };
        assert_eq!(wait_reason([(&probed, &limits)], now, now + 9_000), WaitReason::Probe);
    }

    #[tokio::test]
    async fn the_route_label_follows_the_task() {
        assert_eq!(route(), "other");
        let inside = in_route("POST /v1/reports", async { route() }).await;
        assert_eq!(inside, "POST /v1/reports");
        assert_eq!(route(), "other");
    }
}
