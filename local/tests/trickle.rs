//! 1,100 connections that trickle their request bodies (one byte every 400 ms) against stepper-local
//! under a 1,024 open-file limit, at its default limits (512 connections, a 30 s body deadline): the
//! minimum body data rate (240 bytes/s after a 5 s grace) closes each trickler within the grace plus
//! 2 s, and `/health`, asked on a fresh connection every 100 ms meanwhile, always answers (p99 < 1 s)
//! although every slot under the cap is held by a connection at work. Prints the figures.

mod common;

use std::time::{Duration, Instant};

use common::{openai_provider, Local};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TRICKLERS: usize = 1_100;
/// The server's minimum-rate grace (local/src/conn.rs `MIN_RATE_GRACE`).
const GRACE: Duration = Duration::from_secs(5);

/// Sends a whole head announcing 10,000 bytes of body, then one byte every 400 ms; returns how long
/// after connecting the server closed the connection (None: still open when the test gave up).
async fn trickle(addr: String, give_up: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(&addr).await.ok()?;
    let head = format!(
        "POST /v1/generate HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 10000\r\n\r\n{{\"prompt\": \""
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    let mut buf = [0u8; 1024];
    loop {
        if started.elapsed() > give_up {
            return None;
        }
        match tokio::time::timeout(Duration::from_millis(400), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => {}
        }
        if stream.write_all(b"a").await.is_err() {
            return Some(started.elapsed());
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
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
        .map(|_| tokio::spawn(trickle(addr.clone(), give_up)))
        .collect();
    println!(
        "trickle: {TRICKLERS} connections started in {} ms",
        started.elapsed().as_millis()
    );

    // The normal client: a fresh connection every 100 ms, as a load balancer's check would.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    while started.elapsed() < GRACE + Duration::from_secs(3) {
        let t = Instant::now();
        match client.get(format!("{}/health", local.base)).send().await {
            Ok(r) if r.status() == 200 => latencies.push(t.elapsed()),
            Ok(r) => failures.push(format!("status {}", r.status())),
            Err(e) => failures.push(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut closed = Vec::new();
    let mut never = 0;
    for task in tasks {
        match task.await.unwrap_or(None) {
            Some(t) => closed.push(t),
            None => never += 1,
        }
    }
    latencies.sort();
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
