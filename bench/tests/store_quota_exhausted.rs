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
