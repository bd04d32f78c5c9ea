//! stepper-local under hostile connections: 1,100 of them (slow headers, slow bodies, idle) against a
//! process limited to 1,024 open files (`prlimit`), while a normal client keeps calling `/health` on fresh
//! connections. Prints the normal client's latencies (p50, p99, max) and when each kind of hostile
//! connection was closed; fails if `/health` fails once or a hostile connection outlives its timeout.
//!
//! Short by default (timeouts of 2–4 s); `HOSTILE_CONNECTIONS` changes the count.

mod common;

use std::time::{Duration, Instant};

use common::{health_checks, hostile, openai_provider, percentile, raise_own_limit, Kind, Local};

const IDLE_S: u64 = 2;
const HEADER_S: u64 = 3;
const BODY_S: u64 = 4;
const MAX_CONNECTIONS: usize = 512;

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_keeps_answering_under_1100_hostile_connections_at_1024_open_files() {
    raise_own_limit();
    let count: usize = std::env::var("HOSTILE_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_100);
    let provider = testkit::fake::FakeProvider::start(testkit::fake::Wire::OpenAi)
        .await
        .unwrap();
    let (idle, header, body, cap) = (
        IDLE_S.to_string(),
        HEADER_S.to_string(),
        BODY_S.to_string(),
        MAX_CONNECTIONS.to_string(),
    );
    let local = Local::start_under(
        &["prlimit", "--nofile=1024:1024"],
        &openai_provider("alpha", &provider.base_url()),
        &[
            ("HTTP_IDLE_TIMEOUT_SECONDS", &idle),
            ("HTTP_HEADER_TIMEOUT_SECONDS", &header),
            ("HTTP_BODY_TIMEOUT_SECONDS", &body),
            ("HTTP_MAX_CONNECTIONS", &cap),
        ],
    )
    .await;
    let addr = local.base.trim_start_matches("http://").to_string();
    let rounds = count.div_ceil(MAX_CONNECTIONS) as u64;
    let give_up = Duration::from_secs(rounds * BODY_S + 20);

    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..count {
        let kind = [Kind::SlowHeaders, Kind::SlowBody, Kind::Idle][i % 3];
        let addr = addr.clone();
        tasks.push((kind, tokio::spawn(hostile(addr, kind, give_up))));
    }
    println!("hostile: {count} connections opened in {} ms", ms(started.elapsed()));

    let until = Instant::now() + Duration::from_secs(rounds * BODY_S + 2);
    let (latencies, failures) = health_checks(&local.base, Duration::from_secs(30), until).await;
    let mut closed: Vec<(Kind, Option<Duration>)> = Vec::new();
    for (kind, task) in tasks {
        closed.push((kind, task.await.unwrap_or(None)));
    }
    println!(
        "hostile: /health under attack: {} answered, {} failed; p50 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
        failures.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0)),
    );
    let kinds = [
        (Kind::Idle, IDLE_S),
        (Kind::SlowHeaders, HEADER_S),
        (Kind::SlowBody, BODY_S),
    ];
    let mut report = Vec::new();
    for (kind, timeout_s) in kinds {
        let mut times: Vec<Duration> = closed
            .iter()
            .filter(|(k, _)| *k == kind)
            .filter_map(|(_, t)| *t)
            .collect();
        let open = closed.iter().filter(|(k, t)| *k == kind && t.is_none()).count();
        times.sort();
        println!(
            "hostile: {kind:?} (timeout {timeout_s} s): {} closed, {open} never; after connecting: first {} ms, median {} ms, last {} ms",
            times.len(),
            ms(percentile(&times, 0.0)),
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 1.0)),
        );
        let early = times
            .iter()
            .filter(|t| **t < Duration::from_millis(timeout_s * 1000 - 300))
            .count();
        println!("hostile: {kind:?}: {early} closed before their timeout to make room for new connections");
        report.push((kind, timeout_s, open, percentile(&times, 0.5), percentile(&times, 1.0)));
    }
    for (kind, timeout_s, open, median, last) in report {
        assert_eq!(open, 0, "{kind:?} connections left open");
        // Every one is closed within its timeout of connecting (plus scheduling slack): none waits in the
        // accept queue behind the others, since those that never sent a request make room.
        assert!(
            last <= Duration::from_millis(timeout_s * 1000 + 1500),
            "{kind:?}: the last closed {last:?} after connecting"
        );
        // A connection at work (a body under way) is never closed to make room, only by its own timeout;
        // the few whose head the server had not read yet when it was at its cap may have been.
        if kind == Kind::SlowBody {
            assert!(
                median >= Duration::from_millis(timeout_s * 1000 - 300),
                "{kind:?}: most closed before their timeout: median {median:?}"
            );
        }
    }
    assert!(failures.is_empty(), "/health failed: {failures:?}");
    assert!(latencies.len() >= 10, "the normal client got answers");
    // Still serving normally once the attack is over.
    let (code, _) = local.request(reqwest::Method::GET, "/health", None, None).await;
    assert_eq!(code, 200);
}
