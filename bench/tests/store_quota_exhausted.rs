//! Hosted Upstash answers `ERR max requests limit exceeded` once the plan's request quota is spent
//! (the free plan: 500K commands a month). On the real stack (the service on the Upstash REST emulator
//! behind the counting proxy, which injects that answer as hosted Upstash gives it), every route answers
//! 503 with its own code and a message that says what happened, nothing runs in the store, and the
//! service works again as soon as the store answers.

use stepper_bench::routes::UpstashStack;

const QUOTA: &str = "ERR max requests limit exceeded. Limit: 500000, Usage: 500000";

#[tokio::test]
async fn a_spent_store_quota_is_a_503_with_its_own_code() {
    let mut stack = UpstashStack::start().await.unwrap();
    let trace = stack.one_job("quota", 0).await.unwrap();
    assert_eq!(trace.steps.len(), 1);

    stack.proxy.inject_error(QUOTA, 3);
    stack.proxy.reset();
    let (status, body) = stack
        .call("POST", "/v1/reports", Some(stepper_bench::report_json("quota", 1)))
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "store_quota_exhausted", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("quota"), "{body}");
    let (status, body, _) = stack
        .billed_call("DELETE", &stepper_bench::purge_uri("quota", 0))
        .await
        .unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("store_quota_exhausted")),
        "{body}"
    );
    let (status, body, _) = stack.billed_call("GET", "/v1/budget").await.unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("store_quota_exhausted")),
        "{body}"
    );
    assert_eq!(stack.proxy.tally().billed, 0, "a refused request runs nothing");

    // The quota back: the same submit goes through.
    let (status, body) = stack
        .call("POST", "/v1/reports", Some(stepper_bench::report_json("quota", 1)))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
}

/// The routes' caps keep a job's store request far below Upstash's request size (10 MB on the free
/// plan): a report with a 5.8 MB diff of quotes (every byte escaped) and a generate job with 5.8 MB of
/// quotes in its context are both accepted and stored (the record keeps the budgeted prompts, not the
/// raw diff). The adapter's own guard (`MAX_REQUEST_BYTES`, a 413 before sending) is tested in
/// store/upstash/client.rs.
#[tokio::test]
async fn the_largest_bodies_the_routes_take_fit_in_one_store_request() {
    let mut stack = UpstashStack::start().await.unwrap();
    stack.one_job("size", 0).await.unwrap();
    let mut report = stepper_bench::report_json("size", 1);
    report["diffSummary"] = serde_json::json!("\"".repeat(2_900_000));
    let (status, answer) = stack.call("POST", "/v1/reports", Some(report)).await.unwrap();
    assert_eq!(status, 202, "{answer}");
    let mut context = serde_json::Map::new();
    for k in 0..15 {
        context.insert(format!("k{k}"), serde_json::json!("\"".repeat(193_000)));
    }
    let generate = serde_json::json!({"prompt": "size", "context": context});
    let (status, answer) = stack.call("POST", "/v1/generate", Some(generate)).await.unwrap();
    assert_eq!(status, 202, "{answer}");
}
