//! stepper-local under hostile connections: 1,100 of them (slow headers, slow bodies, idle) against a
//! process limited to 1,024 open files (`prlimit`), while a normal client keeps calling `/health` on fresh
//! connections. Prints the normal client's latencies (p50, p99, max) and when each kind of hostile
//! connection was closed; fails if `/health` fails once or a hostile connection outlives its timeout.
//!
//! Short by default (timeouts of 2–4 s); `HOSTILE_CONNECTIONS` changes the count.

mod common;

use std::time::{Duration, Instant};

use common::{openai_provider, Local};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IDLE_S: u64 = 2;
const HEADER_S: u64 = 3;
const BODY_S: u64 = 4;
const MAX_CONNECTIONS: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Sends a request head one byte every 400 ms, never finishing it.
    SlowHeaders,
    /// Sends a whole head announcing 10,000 bytes of body, then one byte every 400 ms.
    SlowBody,
    /// Connects and sends nothing.
    Idle,
}

/// Opens one hostile connection and returns how long after connecting the server closed it (None: it
/// was still open when the test gave up).
async fn hostile(addr: String, kind: Kind, give_up: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(&addr).await.ok()?;
    let trickle: Vec<u8> = match kind {
        Kind::SlowHeaders => format!("GET /health HTTP/1.1\r\nhost: {addr}\r\nx-slow: ").into_bytes(),
        Kind::SlowBody => {
            let head = format!(
                "POST /v1/generate HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 10000\r\n\r\n{{\"prompt\": \""
            );
            stream.write_all(head.as_bytes()).await.ok()?;
            vec![b'a'; 10_000]
        }
        Kind::Idle => Vec::new(),
    };
    let mut next = 0;
    let mut buf = [0u8; 1024];
    loop {
        if started.elapsed() > give_up {
            return None;
        }
        match tokio::time::timeout(Duration::from_millis(400), stream.read(&mut buf)).await {
            // The server closed (or reset) the connection; an answer before that is read and ignored.
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => {}
        }
        if next < trickle.len() {
            if stream.write_all(&trickle[next..next + 1]).await.is_err() {
                return Some(started.elapsed());
            }
            next += 1;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// The test process itself needs more than 1,100 descriptors: raise its soft limit to its hard one.
fn raise_own_limit() {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let hard = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_string))
        .unwrap_or_default();
    if !hard.is_empty() {
        let _ = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={hard}:{hard}"))
            .status();
    }
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

    // The normal client: a fresh connection every 100 ms, as a load balancer's check would.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut latencies = Vec::new();
    let mut failures = 0;
    let checking = Instant::now();
    while checking.elapsed() < Duration::from_secs(rounds * BODY_S + 2) {
        let t = Instant::now();
        match client.get(format!("{}/health", local.base)).send().await {
            Ok(r) if r.status() == 200 => latencies.push(t.elapsed()),
            _ => failures += 1,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut closed: Vec<(Kind, Option<Duration>)> = Vec::new();
    for (kind, task) in tasks {
        closed.push((kind, task.await.unwrap_or(None)));
    }
    latencies.sort();
    println!(
        "hostile: /health under attack: {} answered, {failures} failed; p50 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
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
    assert_eq!(failures, 0, "/health failed {failures} times");
    assert!(latencies.len() >= 10, "the normal client got answers");
    // Still serving normally once the attack is over.
    let (code, _) = local.request(reqwest::Method::GET, "/health", None, None).await;
    assert_eq!(code, 200);
}
