//! 1,100 connections that trickle their request bodies (one byte every 400 ms) against stepper-local
//! under a 1,024 open-file limit, at its default limits (512 connections, a 30 s body deadline): the
//! minimum body data rate (240 bytes/s after a 5 s grace) closes each trickler within the grace plus
//! 2 s, and `/health`, asked on a fresh connection every 100 ms meanwhile, always answers (p99 < 1 s)
//! although every slot under the cap is held by a connection at work. Prints the figures.

mod common;

use std::time::{Duration, Instant};

use common::{health_checks, hostile, openai_provider, percentile, raise_own_limit, Kind, Local};

const TRICKLERS: usize = 1_100;
/// The server's minimum-rate grace (local/src/conn.rs `MIN_RATE_GRACE`).
const GRACE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tricklers_are_closed_by_the_minimum_rate_and_health_keeps_answering() {
    raise_own_limit();
    let provider = testkit::fake::FakeProvider::start(testkit::fake::Wire::OpenAi)
        .await
        .unwrap();
    let local = Local::start_under(
        &["prlimit", "--nofile=1024:1024"],
        &openai_provider("alpha", &provider.base_url()),
        &[],
    )
    .await;
    let addr = local.base.trim_start_matches("http://").to_string();
    let give_up = GRACE + Duration::from_secs(20);

    let started = Instant::now();
    let tasks: Vec<_> = (0..TRICKLERS)
        .map(|_| tokio::spawn(hostile(addr.clone(), Kind::SlowBody, give_up)))
        .collect();
    println!(
        "trickle: {TRICKLERS} connections started in {} ms",
        started.elapsed().as_millis()
    );

    let (latencies, failures) = health_checks(
        &local.base,
        Duration::from_secs(10),
        started + GRACE + Duration::from_secs(3),
    )
    .await;
    let mut closed = Vec::new();
    let mut never = 0;
    for task in tasks {
        match task.await.unwrap_or(None) {
            Some(t) => closed.push(t),
            None => never += 1,
        }
    }
    closed.sort();
    println!(
        "trickle: /health {} answered, {} failed; p50 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
        failures.len(),
        percentile(&latencies, 0.5).as_millis(),
        percentile(&latencies, 0.99).as_millis(),
        percentile(&latencies, 1.0).as_millis(),
    );
    println!(
        "trickle: tricklers {} closed, {never} never; after connecting: first {} ms, median {} ms, last {} ms",
        closed.len(),
        percentile(&closed, 0.0).as_millis(),
        percentile(&closed, 0.5).as_millis(),
        percentile(&closed, 1.0).as_millis(),
    );
    assert!(failures.is_empty(), "/health failed: {failures:?}");
    assert!(latencies.len() >= 20, "the normal client got answers");
    assert!(percentile(&latencies, 0.99) < Duration::from_secs(1), "/health p99");
    assert_eq!(never, 0, "tricklers left open");
    let last = percentile(&closed, 1.0);
    assert!(
        last <= GRACE + Duration::from_secs(2),
        "the last trickler closed {last:?} after connecting"
    );
    // Still serving normally afterwards.
    let (code, _) = local.request(reqwest::Method::GET, "/health", None, None).await;
    assert_eq!(code, 200);
}
