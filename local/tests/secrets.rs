//! Nothing secret in any answer: a provider whose 401 quotes the key it was sent (as some gateways and
//! proxies do) must not get that key into the logs (JSON and text), the job's poll answer, its webhook,
//! `GET /v1/providers` or `GET /health`. And `/health` costs the store at most one request per 10 s.

mod common;

use std::time::{Duration, Instant};

use common::{openai_provider, Local, ALICE};
use serde_json::{json, Value};
use testkit::billing::BillingProxy;
use testkit::fake::{FakeProvider, FakeReply, Wire};
use testkit::receiver::NodeReceiver;
use testkit::stack::{RedisServer, UpstashEmulator};

const PROVIDER_KEY: &str = "sk-live-echoed-7f3a9c2b41d0e8";
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn one_run(log_format: &str) {
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    provider.set_responder(FakeReply::openai_bad_key_echoing);
    let hook = NodeReceiver::start(WEBHOOK_SECRET, &[200], 0).await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let upstash = UpstashEmulator::start(&redis).await.unwrap();
    let origin = format!("http://127.0.0.1:{}", hook.port);
    let local = Local::start(
        &openai_provider("alpha", &provider.base_url()),
        &[
            ("FAKE_KEY", PROVIDER_KEY),
            ("LOG_FORMAT", log_format),
            ("RUST_LOG", "info"),
            ("STEPPER_WEBHOOK_SECRETS", &format!("alice={WEBHOOK_SECRET}")),
            ("CALLBACK_ALLOWED_ORIGINS", &origin),
            ("UPSTASH_REDIS_REST_URL", &upstash.url),
            ("UPSTASH_REDIS_REST_TOKEN", &upstash.token),
        ],
    )
    .await;
    let (code, queued) = local
        .post(
            "/v1/generate",
            ALICE,
            json!({"prompt": "anything", "callbackUrl": hook.url("/hook")}),
        )
        .await;
    assert_eq!(code, 202, "{queued}");
    let status_url = queued["statusUrl"].as_str().unwrap();
    let polled = local.wait_finished(status_url, ALICE, Duration::from_secs(10)).await;
    assert_eq!(polled["status"], "failed", "{polled}");
    assert!(provider.hits() >= 1);
    let echoed = provider.requests()[0].header("authorization").unwrap_or("").to_string();
    assert!(echoed.contains(PROVIDER_KEY), "the fake did see the key: {echoed}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let webhook = loop {
        let got = hook.deliveries().await.unwrap();
        if let Some(first) = got.first() {
            break first.clone();
        }
        assert!(Instant::now() < deadline, "no webhook");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(webhook.legacy_ok && webhook.standard_ok, "{:?}", webhook.reasons);
    let providers = local.get("/v1/providers", ALICE).await.1;
    let (health_code, health) = local.request(reqwest::Method::GET, "/health", None, None).await;
    assert_eq!(health_code, 200, "{health}");
    assert_eq!(
        health,
        json!({"status": "healthy", "store": "reachable", "checkedAt": health["checkedAt"]})
    );
    // The run is done: let the last log lines land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = local.logs.lock().unwrap().join("\n");

    let secrets = [
        PROVIDER_KEY,
        WEBHOOK_SECRET,
        WEBHOOK_SECRET.trim_start_matches("whsec_"),
        upstash.token.as_str(),
        ALICE,
    ];
    let places: [(&str, String); 5] = [
        ("the logs", logs.clone()),
        ("the poll answer", polled.to_string()),
        ("the webhook body", webhook.body.to_string()),
        ("GET /v1/providers", providers.to_string()),
        ("GET /health", health.to_string()),
    ];
    for (place, text) in &places {
        for secret in secrets {
            assert!(!text.contains(secret), "{log_format}: {place} holds a secret: {text}");
        }
    }
    // Not vacuous: the provider's text did get through, with the key taken out.
    let error = polled["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("Incorrect API key provided: Bearer [redacted]"),
        "{error}"
    );
    assert!(
        webhook.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("[redacted]"),
        "{:?}",
        webhook.body
    );
    let reason = providers["providers"][0]["disabledReason"].as_str().unwrap_or_default();
    assert!(reason.contains("[redacted]"), "{providers}");
    assert!(
        logs.contains("[redacted]"),
        "the log names the scrubbed reason:\n{logs}"
    );
    assert!(
        !health.to_string().contains("alpha") && !health.to_string().contains("Incorrect"),
        "no provider detail on /health: {health}"
    );
    if log_format == "json" {
        assert!(
            logs.lines()
                .filter(|l| l.starts_with('{'))
                .all(|l| serde_json::from_str::<Value>(l).is_ok()),
            "JSON log lines"
        );
    }
    println!(
        "secrets ({log_format} logs): {} log lines, poll, webhook, /v1/providers and /health checked; the key appears 0 times",
        logs.lines().count()
    );
}

#[tokio::test]
async fn an_echoed_key_appears_nowhere_with_json_logs() {
    one_run("json").await;
}

#[tokio::test]
async fn an_echoed_key_appears_nowhere_with_text_logs() {
    one_run("text").await;
}

/// `/health` asks the store at most once per 10 s per instance: 200 calls cost one Upstash request,
/// what one read of the provider states executes (counted by the proxy that counts what Upstash bills).
#[tokio::test]
async fn health_is_cached_so_it_cannot_spend_the_store() {
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let upstash = UpstashEmulator::start(&redis).await.unwrap();
    let proxy = BillingProxy::start(&upstash.url, &redis).await.unwrap();
    let local = Local::start(
        &openai_provider("alpha", &provider.base_url()),
        &[
            ("UPSTASH_REDIS_REST_URL", &proxy.url),
            ("UPSTASH_REDIS_REST_TOKEN", &upstash.token),
        ],
    )
    .await;
    // Let the start-up re-drive (a SCAN) finish first, and load the provider-state script the
    // health check runs (`/v1/providers` reads the same state uncached), so the count below is the
    // checks alone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(local.get("/v1/providers", ALICE).await.0, 200);
    // What one read of the provider states executes (the script call and the commands inside it).
    let one_read = proxy.take_log().last().map_or(0, |r| r.billed());
    proxy.reset();
    let calls = 200;
    let mut tasks = Vec::new();
    for _ in 0..calls {
        let (http, base) = (local.http.clone(), local.base.clone());
        tasks.push(tokio::spawn(async move {
            http.get(format!("{base}/health"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let spent = proxy.tally();
    println!(
        "health: {calls} concurrent calls cost {spent:?}: {:?}",
        proxy.take_log()
    );
    assert!(
        spent.requests <= 1 && spent.billed <= one_read,
        "{calls} /health calls cost {spent:?}"
    );
}
