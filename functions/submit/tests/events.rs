//! Every HTTP event in `events/` (what `cargo lambda invoke --data-file` sends) converts into a request
//! that its function's router serves: the route matches and the answer is the contract's.

use std::sync::Arc;

use axum::body::Body;
use shared::adapters::queue::local::LocalQueue;
use shared::wiring::config::Config;
use tower::ServiceExt;

async fn answer(router: axum::Router, event: &str) -> (u16, serde_json::Value) {
    let (status, text) = raw_answer(router, event).await;
    (status, serde_json::from_str(&text).unwrap())
}

/// An event's answer as text (the dashboard's HTML).
async fn raw_answer(router: axum::Router, event: &str) -> (u16, String) {
    let path = format!("{}/../../events/{event}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let request = lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{event}: {e}"));
    let (parts, body) = request.into_parts();
    let request = http::Request::from_parts(parts, Body::from(body.to_vec()));
    let response = router.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn every_http_event_reaches_its_route() {
    let config = Config::from_lookup(&|name| (name == "STEPPER_API_KEYS").then(|| "dev=dev-key".to_string())).unwrap();
    let (queue, _deliveries) = LocalQueue::new();
    let service = Arc::new(shared::wiring::service::build(&config, Arc::new(queue)).unwrap());
    let submit = || shared::api::submit_routes(service.clone());
    let poll = || shared::api::poll_routes(service.clone());
    let purge = || shared::api::purge_routes(service.clone());

    let (code, body) = answer(submit(), "submit-report").await;
    assert_eq!((code, body["status"].as_str()), (202, Some("queued")), "{body}");
    let (code, body) = answer(submit(), "submit-generate").await;
    assert_eq!((code, body["status"].as_str()), (202, Some("queued")), "{body}");
    for event in ["poll-report", "poll-job"] {
        assert_eq!(
            answer(poll(), event).await,
            (404, serde_json::json!({"error": "Job not found"})),
            "{event}"
        );
    }
    let (code, body) = answer(poll(), "health").await;
    assert_eq!(
        (code, body["status"].as_str(), body["store"].as_str()),
        (200, Some("healthy"), Some("reachable")),
        "up with its store, whatever the providers: {body}"
    );
    assert_eq!(
        answer(poll(), "ready").await,
        (200, serde_json::json!({"status": "ready"})),
        "a Lambda function never drains"
    );
    let (code, body) = answer(poll(), "providers").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = answer(poll(), "budget").await;
    assert_eq!((code, body["scope"].as_str()), (200, Some("owner")), "{body}");
    let (code, body) = answer(poll(), "jobs-overview").await;
    assert_eq!(code, 200, "{body}");
    assert!(body["oldest"].is_array(), "{body}");
    let (code, page) = raw_answer(poll(), "dashboard").await;
    assert_eq!(code, 200);
    assert!(
        page.starts_with("<!doctype html>") || page.starts_with("<!DOCTYPE html>"),
        "{page:.80}"
    );
    let (code, body) = answer(poll(), "openapi").await;
    assert_eq!(
        (code, body["openapi"].as_str()),
        (200, Some("3.1.0")),
        "served without a key"
    );
    let (code, body) = answer(purge(), "purge-report").await;
    assert_eq!(
        (code, body["message"].as_str()),
        (200, Some("Cache entry deleted")),
        "{body}"
    );
    assert_eq!(
        answer(purge(), "purge-job").await,
        (404, serde_json::json!({"error": "Job not found"}))
    );
    assert_eq!(
        answer(submit(), "redeliver").await,
        (404, serde_json::json!({"error": "Job not found"}))
    );
    // A function answers only its own routes.
    assert_eq!(answer(poll(), "submit-report").await.1["code"], "not_found");
}

/// The HTTP API in template.yaml routes exactly the documented endpoints, each to its own function.
#[test]
fn the_template_routes_every_endpoint_to_its_function() {
    use shared::api::{Endpoint, Function};
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml")).unwrap();
    let mut routed = Vec::new();
    let mut function = None;
    for line in template.lines() {
        if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix("Function:")) {
            function = match name {
                "Submit" => Some(Function::Submit),
                "Poll" => Some(Function::Poll),
                "Purge" => Some(Function::Purge),
                _ => None,
            };
        }
        if let (Some(f), Some((_, route))) = (function, line.split_once(", Method: ")) {
            let (method, path) = route.split_once(", Path: ").unwrap();
            routed.push((
                f,
                method.to_string(),
                path.trim_end_matches('}').trim_matches('"').to_string(),
            ));
        }
    }
    let mut documented: Vec<_> = Endpoint::ALL
        .iter()
        .map(|e| (e.function(), e.method().to_string(), e.path().to_string()))
        .collect();
    let key = |r: &(Function, String, String)| format!("{:?} {} {}", r.0, r.1, r.2);
    routed.sort_by_key(key);
    documented.sort_by_key(key);
    assert_eq!(routed, documented);
}

/// Every setting in docs/configuration.md's table (the first variable of each row) reaches the deployed
/// functions through a template parameter, unless it is listed here with the reason it is not one.
#[test]
fn the_template_passes_every_documented_setting() {
    const NOT_PARAMETERS: &[(&str, &str)] = &[
        ("PORT", "stepper-local's listener"),
        ("STEPPER_LISTEN", "stepper-local's listener"),
        (
            "STEPPER_ALLOW_MEMORY_STORE",
            "stepper-local only (a Lambda function refuses the memory store)",
        ),
        (
            "SHUTDOWN_GRACE_SECONDS",
            "stepper-local's drain (Lambda ends invocations itself)",
        ),
        (
            "SWEEP_INTERVAL_SECONDS",
            "stepper-local's takeover sweep (on AWS the sweeper chain rides SQS)",
        ),
        ("HTTP_BODY_TIMEOUT_SECONDS", "stepper-local's listener"),
        ("HTTP_HEADER_TIMEOUT_SECONDS", "stepper-local's listener"),
        ("HTTP_IDLE_TIMEOUT_SECONDS", "stepper-local's listener"),
        ("HTTP_MAX_CONNECTIONS", "stepper-local's listener"),
        ("LOG_FORMAT", "Lambda's LoggingConfig sets the format"),
        ("AWS_LAMBDA_LOG_LEVEL", "Lambda's LoggingConfig sets the level"),
        ("AWS_REGION", "Lambda sets it, and the credentials"),
        (
            "AWS_ENDPOINT_URL_SQS",
            "another SQS endpoint, for moto on a developer's machine",
        ),
        (
            "METRICS_TOKEN",
            "stepper-local's GET /metrics; a Lambda function writes EMF lines instead",
        ),
        ("STEPPER_CONFIG", "a file path: the zip holds the bootstrap only"),
        (
            "WEBHOOK_MAX_ATTEMPTS",
            "the older form of WEBHOOK_SCHEDULE, a parameter",
        ),
        ("API_KEY_HEADER", "engine default; set it in Globals to change it"),
        (
            "DELIVERY_GRACE_SECONDS",
            "engine default; set it in Globals to change it",
        ),
        ("FAILURE_TTL_SECONDS", "engine default; set it in Globals to change it"),
        (
            "MAX_FAILURES_PER_PROVIDER",
            "engine default; set it in Globals to change it",
        ),
        ("PARK_AFTER_SECONDS", "engine default; set it in Globals to change it"),
        ("RESULT_TTL_SECONDS", "engine default; set it in Globals to change it"),
        ("SWEEP_GRACE_SECONDS", "engine default; set it in Globals to change it"),
        ("UPSTASH_TIMEOUT_MS", "store default; set it in Globals to change it"),
    ];
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../");
    let template = std::fs::read_to_string(format!("{root}template.yaml")).unwrap();
    let readme = std::fs::read_to_string(format!("{root}docs/configuration.md")).unwrap();
    let passed: Vec<&str> = template
        .lines()
        .filter_map(|l| l.strip_prefix("        ")?.split_once(": !Ref ").map(|(name, _)| name))
        .collect();
    let documented: std::collections::BTreeSet<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split_once('`').map(|(name, _)| name))
        .filter(|n| {
            n.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    assert!(
        documented.len() > 20,
        "docs/configuration.md's table not found: {documented:?}"
    );
    let missing: Vec<&str> = documented
        .iter()
        .copied()
        .filter(|n| !passed.contains(n) && !NOT_PARAMETERS.iter().any(|(m, _)| m == n))
        .collect();
    assert!(
        missing.is_empty(),
        "documented settings template.yaml does not pass: {missing:?}"
    );
}
