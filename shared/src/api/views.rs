//! Response bodies of the HTTP contract, built from domain types.

use serde_json::{json, Map, Value};

use crate::delivery::send::DeliveryState;
use crate::job::{Attempt, Job, JobResult, JobState};
use crate::quota::Availability;
use crate::service::Service;

pub fn iso(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The `200 cached` answer of a submit that met a finished identical job.
pub fn cached(result: &JobResult) -> Value {
    json!({
        "status": "completed",
        "cached": true,
        "data": result.output,
        "metadata": {
            "provider": result.used_provider,
            "fallback": result.fallback,
            "timings": {"totalMs": result.total_ms},
        },
    })
}

fn attempt_view(a: &Attempt) -> Value {
    let mut v = Map::new();
    v.insert("provider".into(), json!(a.provider));
    v.insert("attemptNumber".into(), json!(a.number));
    v.insert("durationMs".into(), json!(a.duration_ms));
    if let Some(class) = a.class {
        v.insert(
            "error".into(),
            json!(a.message.clone().unwrap_or_else(|| class.as_str().to_string())),
        );
        v.insert("errorCode".into(), json!(class.as_str()));
    }
    if let Some(s) = a.retry_after_s {
        v.insert("retryAfterSeconds".into(), json!(s));
    }
    if let Some(status) = a.http_status {
        v.insert("httpStatus".into(), json!(status));
    }
    v.insert("at".into(), json!(iso(a.at_ms)));
    Value::Object(v)
}

fn delivery_view(d: &DeliveryState) -> Value {
    let mut v = Map::new();
    v.insert("kind".into(), json!(d.target.kind));
    // Only the origin: a callback URL may carry the caller's token in its path or query.
    let origin = url::Url::parse(&d.target.url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    v.insert("target".into(), json!(origin));
    v.insert("status".into(), json!(d.status));
    v.insert("attempts".into(), json!(d.attempts));
    if let Some(s) = d.last_status {
        v.insert("lastStatus".into(), json!(s));
    }
    if let Some(e) = &d.last_error {
        v.insert("lastError".into(), json!(e));
    }
    if let Some(at) = d.next_at_ms {
        v.insert("nextAttemptAt".into(), json!(iso(at)));
    }
    Value::Object(v)
}

/// `GET /v1/jobs/{id}`: the contract's fields plus attempts, timing and the next attempt's time.
pub fn job_status(job: &Job, running: bool) -> Value {
    let state = if running && !job.state.is_finished() {
        JobState::Running
    } else {
        job.state
    };
    let attempts: Vec<Value> = job.attempts.iter().map(attempt_view).collect();
    let mut v = Map::new();
    v.insert("id".into(), json!(job.id));
    v.insert("status".into(), json!(state.contract_word()));
    v.insert("progress".into(), json!(if job.state.is_finished() { 100 } else { 0 }));
    if let (JobState::Succeeded, Some(result)) = (job.state, &job.result) {
        v.insert(
            "data".into(),
            json!({
                "result": result.output,
                "usedProvider": result.used_provider,
                "providersAttempted": attempts,
                "fallback": result.fallback,
                "timings": {"totalMs": result.total_ms, "providerMs": result.provider_ms},
            }),
        );
    }
    if job.state == JobState::Failed {
        v.insert(
            "error".into(),
            json!(job.error.clone().unwrap_or_else(|| "failed".into())),
        );
    }
    v.insert("attempts".into(), json!(attempts));
    v.insert("createdAt".into(), json!(iso(job.created_at_ms)));
    v.insert("deadline".into(), json!(iso(job.deadline_ms)));
    if let Some(at) = job.next_attempt_at_ms {
        v.insert("nextAttemptAt".into(), json!(iso(at)));
    }
    if let Some(at) = job.finished_at_ms {
        v.insert("finishedAt".into(), json!(iso(at)));
    }
    if !job.deliveries.is_empty() {
        let deliveries: Vec<Value> = job.deliveries.iter().map(delivery_view).collect();
        v.insert("deliveries".into(), json!(deliveries));
    }
    Value::Object(v)
}

/// Health and per-provider shared state (`GET /health`, `GET /v1/providers`).
pub async fn health(service: &Service) -> Value {
    let engine = &service.engine;
    let now = engine.clock.now_ms();
    let states = match engine.store.provider_states().await {
        Ok(states) => states,
        Err(e) => {
            tracing::error!(error = %e, "health: store unavailable");
            let providers: Vec<Value> = engine
                .providers
                .iter()
                .map(|p| json!({"name": p.name, "healthy": false}))
                .collect();
            return json!({"status": "unhealthy", "providers": providers, "timestamp": iso(now), "store": "unavailable"});
        }
    };
    let mut usable = 0;
    let providers: Vec<Value> = engine
        .providers
        .iter()
        .map(|slot| {
            let state = states.get(&slot.name).cloned().unwrap_or_default();
            let availability = state.available_at(&slot.limits, now);
            let healthy = !matches!(availability, Availability::Disabled(_)) && state.circuit_open_until_ms <= now;
            usable += usize::from(healthy);
            let (left_minute, left_day) = state.remaining(&slot.limits, now);
            let mut v = Map::new();
            v.insert("name".into(), json!(slot.name));
            v.insert("healthy".into(), json!(healthy));
            v.insert("enabled".into(), json!(state.disabled.is_none()));
            match availability {
                Availability::Disabled(reason) => {
                    v.insert("disabledReason".into(), json!(reason));
                }
                Availability::At(at) if at > now => {
                    v.insert("coolingDownUntil".into(), json!(iso(at)));
                }
                Availability::At(_) => {}
            }
            v.insert("requestsLeftMinute".into(), json!(left_minute));
            v.insert("requestsLeftDay".into(), json!(left_day));
            v.insert("lastErrorClass".into(), json!(state.last_class.filter(|c| c != "ok")));
            if state.last_at_ms > 0 {
                v.insert("lastAt".into(), json!(iso(state.last_at_ms)));
            }
            Value::Object(v)
        })
        .collect();
    let status = match (usable, providers.len()) {
        (0, _) => "unhealthy",
        (u, n) if u < n => "degraded",
        _ => "healthy",
    };
    json!({"status": status, "providers": providers, "timestamp": iso(now)})
}
