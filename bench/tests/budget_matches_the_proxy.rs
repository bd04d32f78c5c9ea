//! `GET /v1/budget` says what the deployment spent, and its figures are what was spent. On the
//! real stack (the service on the Upstash REST emulator behind the proxy that counts what Upstash
//! bills), jobs run from a fresh store; the budget's store commands are then exactly what the proxy
//! counted on the same run (every command executed, a script's inner commands included), script
//! loads (`NOSCRIPT`, then `EVAL`) included, up to the read (which counts itself once it has read: the
//! next read shows it); its Lambda invocations and SQS requests are the route calls and step messages the run made
//! (`budget::Charge::aws`).

use serde_json::Value;
use stepper_bench::routes::{UpstashStack, BILLED_PER_ROUTE};

const JOBS: usize = 3;

fn window(body: &Value, name: &str) -> [u64; 4] {
    let w = &body["windows"][name];
    ["jobs", "storeCommands", "lambdaInvocations", "sqsRequests"].map(|k| w[k].as_u64().unwrap_or(u64::MAX))
}

#[tokio::test]
async fn the_budget_equals_what_the_counting_proxy_measured() {
    let mut stack = UpstashStack::start().await.unwrap();
    let mut steps = 0;
    for i in 0..JOBS {
        steps += stack.one_job("budget", i).await.unwrap().steps.len() as u64;
    }
    let (read, body) = stack.budget().await.unwrap();
    let billed = stack.proxy.tally().billed;
    eprintln!(
        "{JOBS} jobs, {steps} step messages: the proxy counted {billed} billed commands; the budget says month {}, per job {}",
        body["windows"]["month"], body["perJob"]
    );
    assert_eq!(
        (read.requests.len(), read.billed()),
        (2, BILLED_PER_ROUTE[5].1 + 1),
        "the first read loads its script: EVALSHA answered NOSCRIPT (billed), then EVAL"
    );
    // Each job: submit, poll and purge (one invocation each) and its steps (one invocation, and the
    // step message's send, receive and delete each); then the budget read.
    // The read counts itself once it has read the buckets: this answer holds everything before it.
    let billed = billed - read.billed();
    let expected = [JOBS as u64, billed, 3 * JOBS as u64 + steps, 3 * steps];
    assert_eq!(window(&body, "month"), expected, "{body:#}");
    assert_eq!(window(&body, "day"), expected, "{body:#}");
    assert_eq!(body["scope"], "deployment");
    let owners = body["owners"].as_array().unwrap();
    assert_eq!(owners.len(), 1, "one owner: {body:#}");
    assert_eq!(owners[0]["windows"]["month"], body["windows"]["month"]);
    assert_eq!(
        body["perJob"]["storeCommands"].as_f64(),
        Some(billed as f64 / JOBS as f64)
    );
    assert_eq!(body["projection"]["storeCommands"]["spent"].as_u64(), Some(billed));
    assert_eq!(body["projection"]["storeCommands"]["freeTier"].as_u64(), Some(500_000));

    // Once loaded, a read costs what the table says, and counts itself.
    let (read, again) = stack.budget().await.unwrap();
    assert_eq!(read.billed(), BILLED_PER_ROUTE[5].1, "{:?}", read.requests);
    let first_read = BILLED_PER_ROUTE[5].1 + 1;
    assert_eq!(window(&again, "month")[1], billed + first_read);
    assert_eq!(stack.proxy.tally().billed, billed + first_read + read.billed());
}
