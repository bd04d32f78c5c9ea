//! Webhooks end to end: a Node receiver that verifies exactly as the real caller does accepts every
//! delivery, each exactly once; retries back off; dead letters show on poll; a restart between the
//! job's end and its delivery still delivers once.

mod common;

use std::time::{Duration, Instant};

use common::{openai_provider, Local, ALICE, BOB};
use serde_json::{json, Value};
use testkit::fake::{FakeProvider, FakeReply, Wire};
use testkit::receiver::{NodeReceiver, ReceivedWebhook};
use testkit::stack::{free_port, RedisServer, UpstashEmulator};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Non-ASCII text, emoji, a big integer and floats: the body must survive the caller's re-serialisation.
const ANSWER: &str =
    r#"{"title": "Déjà vu 🚀 naïve café", "big": 12345678901234567890, "ratio": 0.1, "whole": 2.0, "tiny": 1e-7}"#;

async fn receiver(statuses: &[u16]) -> NodeReceiver {
    NodeReceiver::start(SECRET, statuses, 0).await.expect("node receiver")
}

fn env(receiver_port: u16) -> Vec<(String, String)> {
    vec![
        ("STEPPER_WEBHOOK_SECRETS".into(), format!("alice={SECRET}")),
        (
            "CALLBACK_ALLOWED_ORIGINS".into(),
            format!("http://127.0.0.1:{receiver_port}"),
        ),
        ("WEBHOOK_BACKOFF_MS".into(), "300".into()),
        ("WEBHOOK_MAX_ATTEMPTS".into(), "3".into()),
    ]
}

async fn start(provider: &FakeProvider, extra: &[(String, String)]) -> Local {
    let pairs: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Local::start(&openai_provider("alpha", &provider.base_url()), &pairs).await
}

/// A fake provider answering [`ANSWER`], a receiver answering `statuses`, and stepper-local sending to it.
async fn answering(statuses: &[u16]) -> (FakeProvider, NodeReceiver, Local) {
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    provider.set_default(FakeReply::openai_text(ANSWER));
    let hook = receiver(statuses).await;
    let local = start(&provider, &env(hook.port)).await;
    (provider, hook, local)
}

async fn wait_for(receiver: &NodeReceiver, count: usize, within: Duration) -> Vec<ReceivedWebhook> {
    let deadline = Instant::now() + within;
    loop {
        let got = receiver.deliveries().await.unwrap();
        if got.len() >= count || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn generate(callback_url: &str) -> Value {
    json!({"prompt": "Give me the data", "callbackUrl": callback_url, "requestId": "req-1"})
}

/// The status word of each of the job's deliveries, in order, and the job as read.
async fn delivery_states(local: &Local, status_url: &str) -> (Vec<String>, Value) {
    let status = local.get(status_url, ALICE).await.1;
    let states = status["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap().to_string())
        .collect();
    (states, status)
}

/// The job at `status_url` once its first delivery's status is `word`, or as it is after 5 s.
async fn first_delivery(local: &Local, status_url: &str, word: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = local.get(status_url, ALICE).await.1;
        if status["deliveries"][0]["status"] == word || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_webhook_arrives_once_and_verifies_as_the_caller_checks_it() {
    let (_provider, hook, local) = answering(&[200]).await;
    let (code, queued) = local
        .post("/v1/generate", ALICE, generate(&hook.url("/hooks/stepper?token=t0")))
        .await;
    assert_eq!(code, 202, "{queued}");
    let got = wait_for(&hook, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_after = hook.deliveries().await.unwrap();
    assert_eq!(got_after.len(), 1, "exactly once: {got_after:?}");
    let w = &got[0];
    assert!(w.legacy_ok && w.standard_ok, "{:?}", w.reasons);
    assert!(!w.authorization, "the secret is not sent as a Bearer token by default");
    assert_eq!(w.path, "/hooks/stepper?token=t0");
    assert_eq!(w.body["jobId"], queued["jobId"]);
    assert_eq!(w.body["status"], "completed");
    assert_eq!(w.body["provider"], "alpha");
    assert_eq!(w.body["result"]["title"], "Déjà vu 🚀 naïve café");
    assert_eq!(w.body["result"]["ratio"], 0.1);
    let status = local.get(queued["statusUrl"].as_str().unwrap(), ALICE).await.1;
    assert_eq!(status["deliveries"][0]["status"], "delivered", "{status}");
    assert_eq!(
        status["deliveries"][0]["target"],
        format!("http://127.0.0.1:{}", hook.port),
        "no path or token on poll"
    );
}

/// `WEBHOOK_LEGACY_BEARER=true`: the `callbackUrl` webhook also carries the original's
/// `Authorization: Bearer <secret>`, which the receiver accepts; `callbacks` entries never get it.
#[tokio::test]
async fn the_legacy_bearer_comes_only_when_switched_on_and_only_on_the_webhook() {
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    provider.set_default(FakeReply::openai_text(ANSWER));
    let hook = receiver(&[200]).await;
    let mut extra = env(hook.port);
    extra.push(("WEBHOOK_LEGACY_BEARER".into(), "true".into()));
    let local = start(&provider, &extra).await;
    let mut body = generate(&hook.url("/hook"));
    body["callbacks"] = json!([{"url": hook.url("/callback")}]);
    let (code, queued) = local.post("/v1/generate", ALICE, body).await;
    assert_eq!(code, 202, "{queued}");
    let got = wait_for(&hook, 2, Duration::from_secs(10)).await;
    let by_path = |path: &str| {
        got.iter()
            .find(|w| w.path == path)
            .unwrap_or_else(|| panic!("{path}: {got:?}"))
    };
    let webhook = by_path("/hook");
    assert!(
        webhook.authorization && webhook.bearer_ok,
        "Bearer <secret> on the webhook"
    );
    assert!(
        webhook.legacy_ok && webhook.standard_ok,
        "still signed: {:?}",
        webhook.reasons
    );
    let callback = by_path("/callback");
    assert!(!callback.authorization, "a callback never carries the secret");
}

#[tokio::test]
async fn failures_are_retried_with_growing_gaps_and_a_dead_letter_shows_on_poll() {
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    provider.set_default(FakeReply::openai_text(ANSWER));
    let flaky = receiver(&[500, 500, 200]).await;
    let local = start(&provider, &env(flaky.port)).await;
    local.post("/v1/generate", ALICE, generate(&flaky.url("/flaky"))).await;
    let got = wait_for(&flaky, 3, Duration::from_secs(15)).await;
    assert_eq!(got.iter().map(|w| w.answered).collect::<Vec<_>>(), [500, 500, 200]);
    let (gap1, gap2) = (got[1].at_ms - got[0].at_ms, got[2].at_ms - got[1].at_ms);
    assert!(gap1 >= 200 && gap2 > gap1, "growing gaps: {gap1} ms then {gap2} ms");
    assert!(got.iter().all(|w| w.legacy_ok && w.standard_ok));
    assert_eq!(got[0].webhook_id, got[2].webhook_id, "one message id across retries");

    let dead = receiver(&[500]).await;
    let mut extra = env(dead.port);
    extra[1].1 = format!("http://127.0.0.1:{},http://127.0.0.1:{}", flaky.port, dead.port);
    drop(local);
    let local = start(&provider, &extra).await;
    let mut body = generate(&dead.url("/dead"));
    body["prompt"] = json!("Another prompt");
    let (_, queued) = local.post("/v1/generate", ALICE, body).await;
    wait_for(&dead, 3, Duration::from_secs(15)).await;
    let status = first_delivery(&local, queued["statusUrl"].as_str().unwrap(), "dead").await;
    assert_eq!(status["deliveries"][0]["status"], "dead", "{status}");
    assert_eq!(status["deliveries"][0]["attempts"], 3);
    assert_eq!(status["deliveries"][0]["lastStatus"], 500);
    assert_eq!(
        dead.deliveries().await.unwrap().len(),
        3,
        "no attempt after the dead letter"
    );
}

#[tokio::test]
async fn a_failed_job_sends_one_failure_webhook() {
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    provider.set_default(FakeReply::openai_status(400));
    let hook = receiver(&[200]).await;
    let local = start(&provider, &env(hook.port)).await;
    local.post("/v1/generate", ALICE, generate(&hook.url("/failed"))).await;
    wait_for(&hook, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = hook.deliveries().await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["status"], "failed");
    assert!(got[0].body["error"].as_str().unwrap().contains("every provider failed"));
    assert!(got[0].legacy_ok && got[0].standard_ok);
}

#[tokio::test]
async fn unsafe_or_unsignable_callbacks_are_refused_at_submit() {
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    let hook = receiver(&[200]).await;
    let local = start(&provider, &env(hook.port)).await;
    for url in [
        "http://169.254.169.254/latest",
        "https://10.0.0.1/x",
        "http://2130706433/",
        "https://[::1]/",
        "ftp://example.com/",
    ] {
        let (code, body) = local.post("/v1/generate", ALICE, generate(url)).await;
        assert_eq!(
            (code, body["code"].as_str()),
            (400, Some("invalid_callback_url")),
            "{url}: {body}"
        );
        assert_eq!(body["field"], "callbackUrl");
    }
    // Bob has no webhook secret: a webhook he could not verify is refused.
    let (code, body) = local.post("/v1/generate", BOB, generate(&hook.url("/bob"))).await;
    assert_eq!(
        (code, body["code"].as_str()),
        (400, Some("invalid_callback_url")),
        "{body}"
    );
    assert_eq!(provider.hits(), 0);
}

#[tokio::test]
async fn a_restart_between_the_end_of_a_job_and_its_delivery_still_delivers_once() {
    let (_redis, upstash, provider) = store_and_provider().await;
    // The receiver is down when the job ends: the delivery stays owed in the job record.
    let port = free_port().unwrap();
    let mut extra = env(port);
    extra.extend(upstash_env(&upstash));
    extra.push(("WEBHOOK_BACKOFF_MS".into(), "1500".into()));
    let mut first = start(&provider, &extra).await;
    let (_, queued) = first
        .post(
            "/v1/generate",
            ALICE,
            generate(&format!("http://127.0.0.1:{port}/late")),
        )
        .await;
    let url = queued["statusUrl"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = first.get(&url, ALICE).await.1;
        if status["deliveries"][0]["attempts"] == 1 {
            assert_eq!(status["status"], "completed");
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Kill the process: its in-process queue, with the scheduled retry, dies with it.
    first.kill();
    drop(first);
    let hook = NodeReceiver::start(SECRET, &[200], port).await.unwrap();
    let second = start(&provider, &extra).await;
    let got = wait_for(&hook, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        hook.deliveries().await.unwrap().len(),
        1,
        "delivered exactly once after the restart"
    );
    assert!(got[0].legacy_ok && got[0].standard_ok, "{:?}", got[0].reasons);
    assert_eq!(got[0].body["jobId"], queued["jobId"]);
    assert_eq!(second.get(&url, ALICE).await.1["deliveries"][0]["status"], "delivered");
    assert_eq!(provider.hits(), 1, "the job itself was not run again");
}

#[tokio::test]
async fn callbacks_go_in_order_and_a_failure_stops_them_unless_told_to_continue() {
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    provider.set_default(FakeReply::openai_text(ANSWER));
    let (failing, second, third) = (receiver(&[500]).await, receiver(&[200]).await, receiver(&[200]).await);
    let mut extra = env(failing.port);
    extra[1].1 = [&failing, &second, &third]
        .iter()
        .map(|r| format!("http://127.0.0.1:{}", r.port))
        .collect::<Vec<_>>()
        .join(",");
    let local = start(&provider, &extra).await;
    let callbacks = |continue_first: bool| {
        json!([
            {"url": failing.url("/a"), "continueOnFailure": continue_first, "retry": {"maxAttempts": 2, "backoffMs": 100}},
            {"url": second.url("/b"), "headers": {"x-team": "diary"}},
            {"url": third.url("/c")}
        ])
    };
    // The first callback fails for good and does not continue: the others are skipped.
    let (_, stopped) = local
        .post(
            "/v1/generate",
            ALICE,
            json!({"prompt": "one", "callbacks": callbacks(false)}),
        )
        .await;
    wait_for(&failing, 2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (states, status) = delivery_states(&local, stopped["statusUrl"].as_str().unwrap()).await;
    assert_eq!(states, ["dead", "skipped", "skipped"], "{status}");
    assert!(second.deliveries().await.unwrap().is_empty() && third.deliveries().await.unwrap().is_empty());

    // With continueOnFailure the rest follow, in order, with the contract's callback body.
    let (_, continued) = local
        .post(
            "/v1/generate",
            ALICE,
            json!({"prompt": "two", "callbacks": callbacks(true), "requestId": "r9"}),
        )
        .await;
    let b = wait_for(&second, 1, Duration::from_secs(10)).await;
    let c = wait_for(&third, 1, Duration::from_secs(10)).await;
    assert!(b[0].at_ms <= c[0].at_ms, "in order");
    assert_eq!(b[0].body["success"], true);
    assert_eq!(b[0].body["result"]["title"], "Déjà vu 🚀 naïve café");
    assert_eq!(b[0].body["metadata"]["jobId"], continued["jobId"]);
    assert_eq!(b[0].body["metadata"]["provider"], "alpha");
    // The original's shape: an ISO-8601 instant, as JavaScript's toISOString writes it, and recent.
    let at = b[0].body["metadata"]["timestamp"].as_str().expect("an ISO string");
    let at_ms = chrono::DateTime::parse_from_rfc3339(at)
        .expect("RFC 3339")
        .timestamp_millis();
    assert!(at.ends_with('Z') && at.len() == 24, "{at}");
    assert!(
        (at_ms - b[0].at_ms as i64).abs() < 60_000,
        "{at} vs received at {}",
        b[0].at_ms
    );
    assert!(b[0].legacy_ok, "callbacks are signed too: {:?}", b[0].reasons);
    assert!(!b[0].authorization, "no Authorization header unless asked for");
    let (states, status) = delivery_states(&local, continued["statusUrl"].as_str().unwrap()).await;
    assert_eq!(states, ["dead", "delivered", "delivered"], "{status}");
}

/// Standard Webhooks' schedule (0, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h) and a 10-minute outage on a
/// clock `WEBHOOK_TEST_SCALE` times faster (100 by default: a 6 s outage, ~25 s of test). The long form,
/// `WEBHOOK_TEST_SCALE=1`, is the real schedule and a real 10-minute outage: the webhooks arrive seconds
/// after the receiver returns (the origin's probe, `domain/origins.rs`), no longer at the 30-minute
/// attempt (about 35 min in); about 11 min of test.
fn scaled() -> (u64, String, Duration) {
    let scale: u64 = std::env::var("WEBHOOK_TEST_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or(100);
    let schedule: Vec<String> = shared::domain::targets::STANDARD_SCHEDULE_MS
        .iter()
        .map(|ms| format!("{}ms", ms / scale))
        .collect();
    (scale, schedule.join(","), Duration::from_millis(600_000 / scale))
}

/// redis-server, the Upstash emulator over it (a store instances can share), and a provider answering
/// [`ANSWER`] (each stops when dropped).
async fn store_and_provider() -> (RedisServer, UpstashEmulator, FakeProvider) {
    let redis = RedisServer::start().await.unwrap();
    let upstash = UpstashEmulator::start(&redis).await.unwrap();
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    provider.set_default(FakeReply::openai_text(ANSWER));
    (redis, upstash, provider)
}

fn upstash_env(upstash: &UpstashEmulator) -> Vec<(String, String)> {
    vec![
        ("UPSTASH_REDIS_REST_URL".into(), upstash.url.clone()),
        ("UPSTASH_REDIS_REST_TOKEN".into(), upstash.token.clone()),
    ]
}

#[tokio::test]
async fn a_receiver_down_for_ten_minutes_still_gets_every_webhook_once_in_order() {
    let (_redis, upstash, provider) = store_and_provider().await;
    let port = free_port().unwrap();
    let (scale, schedule, outage) = scaled();
    let mut extra = vec![
        ("STEPPER_WEBHOOK_SECRETS".into(), format!("alice={SECRET}")),
        ("CALLBACK_ALLOWED_ORIGINS".into(), format!("http://127.0.0.1:{port}")),
        ("WEBHOOK_SCHEDULE".into(), schedule.clone()),
        // A first read would shorten a finished job's life to 1 s, were it not owing deliveries, and a
        // finished job lives 7 s (at 1/100) unless its record is kept until its deliveries end (the
        // webhooks' last attempt comes ~21 s after the end). The TTL covers the jitter between the three
        // jobs' last attempts, so the final polls find them.
        ("DELIVERY_GRACE_SECONDS".into(), "1".into()),
        ("RESULT_TTL_SECONDS".into(), (3 + 360_u64.div_ceil(scale)).to_string()),
    ];
    extra.extend(upstash_env(&upstash));
    let local = start(&provider, &extra).await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let down_since = Instant::now();
    let mut jobs = Vec::new();
    // The callbacks' own retry policy, scaled too: 1, 2, 4, 8 min at full length (15 min > the outage).
    let backoff = (60_000 / scale).max(100);
    for n in 0..3 {
        let body = json!({
            "prompt": format!("job {n}"),
            "callbackUrl": url(&format!("/hook/{n}")),
            "callbacks": [
                {"url": url(&format!("/cb1/{n}")), "retry": {"maxAttempts": 5, "backoffMs": backoff}},
                {"url": url(&format!("/cb2/{n}")), "retry": {"maxAttempts": 5, "backoffMs": backoff}}
            ]
        });
        let (code, queued) = local.post("/v1/generate", ALICE, body).await;
        assert_eq!(code, 202, "{queued}");
        jobs.push(queued);
    }
    // Polled while the receiver is down: the jobs are finished, their records must outlive the outage.
    for job in &jobs {
        let polled = local
            .wait_finished(job["statusUrl"].as_str().unwrap(), ALICE, Duration::from_secs(10))
            .await;
        assert_eq!(polled["status"], "completed");
    }
    tokio::time::sleep(outage.saturating_sub(down_since.elapsed())).await;
    let hook = NodeReceiver::start(SECRET, &[200], port).await.unwrap();
    let up_at = Instant::now();
    let got = wait_for(
        &hook,
        9,
        Duration::from_secs(40) + Duration::from_millis(2_400_000 / scale),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_after = hook.deliveries().await.unwrap();
    assert_eq!(got_after.len(), 9, "9 deliveries, no duplicate: {got_after:?}");
    let mut ids: Vec<&str> = got.iter().filter_map(|w| w.webhook_id.as_deref()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 9, "each event id exactly once");
    assert!(got.iter().all(|w| w.legacy_ok && w.standard_ok && w.answered == 200));
    for n in 0..3 {
        let at = |prefix: &str| {
            got.iter()
                .find(|w| w.path == format!("{prefix}/{n}"))
                .map(|w| w.at_ms)
                .unwrap_or_else(|| panic!("no {prefix}/{n}"))
        };
        assert!(at("/cb1") <= at("/cb2"), "job {n}: callbacks in order");
    }
    let mut webhook_attempts = Vec::new();
    for job in &jobs {
        let status = local.get(job["statusUrl"].as_str().unwrap(), ALICE).await.1;
        let deliveries = status["deliveries"]
            .as_array()
            .unwrap_or_else(|| panic!("{status}\n{}", local.logs.lock().unwrap().join("\n")));
        assert!(
            deliveries
                .iter()
                .all(|d| d["status"] == "delivered" && d["lastStatus"] == 200),
            "{status}"
        );
        webhook_attempts.push(deliveries[0]["attempts"].as_u64().unwrap());
    }
    assert!(
        webhook_attempts.iter().all(|a| *a >= 3),
        "the webhooks retried: {webhook_attempts:?}"
    );
    println!(
        "webhooks: receiver down {} ms (10 min at 1/{scale}, schedule {schedule}): all 9 deliveries of 3 jobs \
         arrived once each, the last {} ms after it came back; webhook attempts {webhook_attempts:?}",
        outage.as_millis(),
        up_at.elapsed().as_millis()
    );
}

/// The receiver-recovery fast path, with the real schedule (0, 5 s, 5 min, …): a receiver down for
/// `outage`, 20 jobs with webhooks submitted round-robin to `instances` stepper-local processes (on
/// one shared Upstash store when `upstash` is given, else each on its memory store). Both scheduled
/// attempts fail within the outage and the next would be 5 minutes later; one delivery per store
/// probes the origin every 5 s instead, and its first success wakes every webhook waiting on it. All 20
/// arrive exactly once (counted per `webhook-id` at the receiver) within 15 s of the receiver answering
/// again. Answers that figure.
async fn every_webhook_soon_after_the_receiver_returns(
    upstash: Option<&UpstashEmulator>,
    instances: usize,
    outage: Duration,
    provider: &FakeProvider,
) -> Duration {
    let port = free_port().unwrap();
    let mut extra = vec![
        ("STEPPER_WEBHOOK_SECRETS".into(), format!("alice={SECRET}")),
        ("CALLBACK_ALLOWED_ORIGINS".into(), format!("http://127.0.0.1:{port}")),
    ];
    if let Some(upstash) = upstash {
        extra.extend(upstash_env(upstash));
    }
    let mut locals = Vec::new();
    for _ in 0..instances {
        locals.push(start(provider, &extra).await);
    }
    let down_since = Instant::now();
    let mut jobs = Vec::new();
    for n in 0..20 {
        let local = &locals[n % instances];
        let body = json!({
            "prompt": format!("fast path job {n}"),
            "callbackUrl": format!("http://127.0.0.1:{port}/hook/{n}"),
        });
        let (code, queued) = local.post("/v1/generate", ALICE, body).await;
        assert_eq!(code, 202, "{queued}");
        jobs.push((n % instances, queued));
    }
    tokio::time::sleep(outage.saturating_sub(down_since.elapsed())).await;
    let hook = NodeReceiver::start(SECRET, &[200], port).await.unwrap();
    let up_at = Instant::now();
    let got = wait_for(&hook, 20, Duration::from_secs(60)).await;
    let last = up_at.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got_after = hook.deliveries().await.unwrap();
    let mut ids: Vec<&str> = got_after.iter().filter_map(|w| w.webhook_id.as_deref()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        (got.len(), got_after.len(), ids.len()),
        (20, 20, 20),
        "every webhook once, no duplicate: {got_after:?}"
    );
    assert!(got_after.iter().all(|w| w.standard_ok && w.answered == 200));
    let mut attempts = Vec::new();
    for (instance, job) in &jobs {
        let status = locals[*instance].get(job["statusUrl"].as_str().unwrap(), ALICE).await.1;
        assert_eq!(status["deliveries"][0]["status"], "delivered", "{status}");
        attempts.push(status["deliveries"][0]["attempts"].as_u64().unwrap_or(0));
    }
    println!(
        "fast path ({}, {instances} instance(s)): receiver down {} ms, 20 webhooks of 20 jobs all delivered \
         once each, the last {} ms after the receiver came back; attempts per webhook {attempts:?}",
        if upstash.is_some() { "Upstash" } else { "memory store" },
        up_at.duration_since(down_since).as_millis(),
        last.as_millis()
    );
    assert!(
        attempts.iter().all(|a| *a >= 2),
        "each failed in the outage: {attempts:?}"
    );
    assert!(
        last <= Duration::from_secs(15),
        "all 20 within 15 s of the receiver's return, not at the 5-minute attempt: {last:?}"
    );
    last
}

/// Two instances on one Upstash store, a 30 s outage: the origin's state and its waiting deliveries
/// live in the store, so a probe on one instance wakes the other's deliveries too.
#[tokio::test]
async fn a_receiver_back_after_thirty_seconds_gets_every_webhook_within_seconds() {
    let (_redis, upstash, provider) = store_and_provider().await;
    every_webhook_soon_after_the_receiver_returns(Some(&upstash), 2, Duration::from_secs(30), &provider).await;
}

/// The same on the memory store (one instance), a 12 s outage: past both scheduled attempts.
#[tokio::test]
async fn on_the_memory_store_a_returning_receiver_gets_every_webhook_within_seconds() {
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    provider.set_default(FakeReply::openai_text(ANSWER));
    every_webhook_soon_after_the_receiver_returns(None, 1, Duration::from_secs(12), &provider).await;
}

#[tokio::test]
async fn a_dead_letter_is_redelivered_with_the_same_id_and_a_fresh_timestamp() {
    let (_redis, upstash, provider) = store_and_provider().await;
    let hook = receiver(&[500, 500, 200]).await;
    let mut extra = vec![
        ("STEPPER_WEBHOOK_SECRETS".into(), format!("alice={SECRET}")),
        (
            "CALLBACK_ALLOWED_ORIGINS".into(),
            format!("http://127.0.0.1:{}", hook.port),
        ),
        ("WEBHOOK_SCHEDULE".into(), "0s,100ms".into()),
    ];
    extra.extend(upstash_env(&upstash));
    let local = start(&provider, &extra).await;
    let (_, queued) = local.post("/v1/generate", ALICE, generate(&hook.url("/dead"))).await;
    let job_id = queued["jobId"].as_str().unwrap();
    let status_url = queued["statusUrl"].as_str().unwrap();
    wait_for(&hook, 2, Duration::from_secs(10)).await;
    let dead = first_delivery(&local, status_url, "dead").await;
    assert_eq!(dead["deliveries"][0]["status"], "dead", "{dead}");
    assert_eq!(dead["deliveries"][0]["attempts"], 2);
    assert_eq!(dead["deliveries"][0]["lastStatus"], 500);

    let path = format!("/v1/jobs/{job_id}/deliveries/redeliver");
    let (code, body) = local.request(reqwest::Method::POST, &path, Some(BOB), None).await;
    assert_eq!(
        (code, body["error"].as_str()),
        (404, Some("Job not found")),
        "owner-scoped"
    );
    let answer = local.answer(reqwest::Method::POST, &path, Some(ALICE), None).await;
    assert_eq!(answer.status, 202);
    assert!(
        answer.header("ratelimit").is_some(),
        "counted against the owner's limit"
    );
    let body = answer.body;
    assert_eq!(body["redelivered"], 1, "{body}");
    assert_eq!(body["deliveries"][0]["status"], "pending", "{body}");

    let got = wait_for(&hook, 3, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 3, "{got:?}");
    let again = &got[2];
    assert_eq!(again.answered, 200);
    assert!(
        again.legacy_ok && again.standard_ok,
        "both header sets verify: {:?}",
        again.reasons
    );
    assert_eq!(again.webhook_id, got[0].webhook_id, "the same webhook-id");
    assert_eq!(
        again.webhook_id.as_deref(),
        body["deliveries"][0]["webhookId"].as_str(),
        "poll names it"
    );
    let (first_ts, new_ts) = (
        got[0].body["timestamp"].as_u64().unwrap(),
        again.body["timestamp"].as_u64().unwrap(),
    );
    assert!(new_ts > first_ts, "a fresh timestamp: {first_ts} then {new_ts}");
    let delivered = first_delivery(&local, status_url, "delivered").await;
    let d = &delivered["deliveries"][0];
    assert_eq!(
        (
            d["status"].as_str(),
            d["attempts"].as_u64(),
            d["lastStatus"].as_u64(),
            d["redeliveries"].as_u64()
        ),
        (Some("delivered"), Some(3), Some(200), Some(1)),
        "{delivered}"
    );
    let (code, body) = local.request(reqwest::Method::POST, &path, Some(ALICE), None).await;
    assert_eq!(
        (code, body["code"].as_str()),
        (409, Some("nothing_to_redeliver")),
        "{body}"
    );
    println!(
        "redelivery: dead after 2 attempts, redelivered, verified (legacy and Standard Webhooks) with webhook-id {}",
        again.webhook_id.as_deref().unwrap_or_default()
    );
}

/// `purgeOnDelivery`: once its webhook is acknowledged the job deletes itself (seconds later), while
/// the same job without the flag stays to be polled; nothing is lost before the webhook was received.
#[tokio::test]
async fn a_job_with_purge_on_delivery_goes_once_its_webhook_is_acknowledged() {
    let (_provider, hook, local) = answering(&[200]).await;
    let mut purged = generate(&hook.url("/hooks/purged"));
    purged["purgeOnDelivery"] = json!(true);
    purged["requestId"] = json!("req-purged");
    let (code, gone) = local.post("/v1/generate", ALICE, purged).await;
    assert_eq!(code, 202, "{gone}");
    let mut kept = generate(&hook.url("/hooks/kept"));
    kept["prompt"] = json!("Give me the other data");
    let (code, kept) = local.post("/v1/generate", ALICE, kept).await;
    assert_eq!(code, 202, "{kept}");
    let got = wait_for(&hook, 2, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got
        .iter()
        .any(|w| w.body["jobId"] == gone["jobId"] && w.body["status"] == "completed"));
    let gone_url = gone["statusUrl"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = local.get(gone_url, ALICE).await;
        if code == 404 {
            break;
        }
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["deliveries"][0]["status"], "delivered", "{body}");
        assert!(
            Instant::now() < deadline,
            "the job is still there 20 s after its webhook: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (code, body) = local.get(kept["statusUrl"].as_str().unwrap(), ALICE).await;
    assert_eq!(
        (code, &body["status"]),
        (200, &json!("completed")),
        "the job without the flag stays: {body}"
    );
}
