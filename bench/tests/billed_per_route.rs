//! Every route of the Lambda path, on the real stack (the service on the Upstash REST emulator and
//! redis-server, behind the proxy that counts what Upstash bills), spends exactly what
//! `BILLED_PER_ROUTE` says. A change that adds a command to a route fails here until that table, the
//! one place the figures live, is changed with it.

use stepper_bench::routes::{UpstashStack, BILLED_PER_READ_ROUTE, BILLED_PER_ROUTE, KEYS_LEFT_PER_PURGED_JOB};

#[tokio::test]
async fn each_route_bills_what_the_table_says() {
    let mut stack = UpstashStack::start().await.unwrap();
    // The first job loads each script (NOSCRIPT, then EVAL): a one-off, not a per-job cost.
    stack.one_job("warm", 0).await.unwrap();
    stack.budget().await.unwrap();
    let jobs_before = stack.keys("st:j:").await.unwrap().len() as u64;
    stack.proxy.reset();

    let mut trace = stack.one_job("routes", 1).await.unwrap();
    trace.budget = stack.budget().await.unwrap().0;
    assert_eq!(
        trace.steps.len(),
        1,
        "a job delivered at its first attempt takes one step: {trace:#?}"
    );
    assert_eq!(
        trace.billed_per_route(),
        BILLED_PER_ROUTE,
        "billed commands per route (claim = the step's first request, finish = the rest); requests: {trace:#?}"
    );
    // Each route is one REST request; the step is two (claim, finish), the poll two (the record and
    // the provider states, then the finished job's life shortened: an unfinished job's rank instead).
    assert_eq!(trace.submit.requests.len(), 1, "{:?}", trace.submit.requests);
    assert_eq!(trace.steps[0].requests.len(), 2, "{:?}", trace.steps[0].requests);
    assert_eq!(trace.poll.requests.len(), 2, "{:?}", trace.poll.requests);
    assert_eq!(trace.purge.requests.len(), 1, "{:?}", trace.purge.requests);
    assert_eq!(trace.budget.requests.len(), 1, "{:?}", trace.budget.requests);
    let total: u64 = BILLED_PER_ROUTE.iter().map(|(_, n)| n).sum();
    assert_eq!(trace.billed(), total);
    assert_eq!(
        stack.proxy.tally().billed,
        total,
        "nothing else billed while the job ran"
    );
    assert!(trace.held_bytes > 0, "the finished job was held in the store");

    let jobs_left = stack.keys("st:j:").await.unwrap().len() as u64 - jobs_before;
    assert_eq!(jobs_left, 0, "the purge deletes the job record");
    assert_eq!(
        jobs_left, KEYS_LEFT_PER_PURGED_JOB,
        "keys one purged job leaves behind (its lease is in its record)"
    );
}

/// The dashboard's reads cost what the table says too.
#[tokio::test]
async fn each_read_route_bills_what_the_table_says() {
    let mut stack = UpstashStack::start().await.unwrap();
    stack.one_job("warm", 0).await.unwrap();
    for (name, uri, billed) in BILLED_PER_READ_ROUTE {
        // The first call loads the script (NOSCRIPT, then EVAL): a one-off.
        let (status, body, _) = stack.billed_get(uri).await.unwrap();
        assert_eq!(status, 200, "{name}: {body}");
        let (status, body, phase) = stack.billed_get(uri).await.unwrap();
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!((phase.requests.len(), phase.billed()), (1, billed), "{name}: {phase:?}");
    }
}

/// A submit within 5 s of a claim that read the provider states takes those for its ETA instead of
/// reading them: one executed command less, and the 202 still carries the estimate.
#[tokio::test]
async fn a_submit_after_a_claim_takes_the_provider_states_it_read() {
    let mut stack = UpstashStack::start().await.unwrap();
    // The first job loads the scripts and its finish writes the provider states (this process then
    // forgets what it read); the second's claim reads them, and its success writes nothing.
    stack.one_job("warm", 0).await.unwrap();
    stack.one_job("warm", 1).await.unwrap();
    stack.proxy.reset();
    let (status, body) = stack
        .call("POST", "/v1/reports", Some(stepper_bench::report_json("held", 0)))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    assert!(body["etaSeconds"].is_u64(), "{body}");
    assert_eq!(stack.proxy.tally().billed, BILLED_PER_ROUTE[0].1 - 1);
}

/// Polls and purges leave their count to the owner's next counted call; once 64 commands wait, one
/// call of their own counts them (flush.lua: the script call and its BITFIELD).
#[tokio::test]
async fn polls_count_themselves_once_64_commands_wait() {
    let mut stack = UpstashStack::start().await.unwrap();
    stack.one_job("warm", 0).await.unwrap();
    let url = stack.submit_only("polled", 0).await.unwrap();
    stack.budget().await.unwrap();
    stack.proxy.reset();
    // A waiting job's poll is two commands: 32 polls are 64. The flush is the only script (its first
    // call loads it: NOSCRIPT, then EVAL).
    for n in 1..=32 {
        let (status, body, phase) = stack.billed_call("GET", &url).await.unwrap();
        assert_eq!(status, 200, "{body}");
        let scripts = phase
            .requests
            .iter()
            .filter(|r| r.commands.iter().any(|c| c.starts_with("EVAL")))
            .count();
        assert_eq!(scripts > 0, n == 32, "poll {n}: {:?}", phase.requests);
    }
}
