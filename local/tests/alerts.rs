//! Operational alerts on the real stack: two stepper-local instances on one Upstash store
//! (redis-server + the Upstash REST emulator), fake providers on loopback, and a loopback receiver
//! per sink kind. Discord- and Slack-shaped URLs are named by their `discord+` / `slack+` prefix
//! (in production the host says it: discord.com, hooks.slack.com).

mod common;

use std::time::{Duration, Instant};

use common::{openai_provider, Local, ALICE};
use serde_json::json;
use testkit::alert_sink::{AlertReceiver, ReceivedAlert};
use testkit::fake::{FakeProvider, FakeReply, Wire};
use testkit::receiver::NodeReceiver;
use testkit::stack::{RedisServer, UpstashEmulator};

/// The key the revoked provider is configured with, and which its 401 quotes back.
const PROVIDER_KEY: &str = "sk-live-echoed-alert-5e1d07c3a9";
const ALERT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Waits until `got` holds at least `n` entries (or the time is up), then a little longer so that a
/// duplicate, were there one, would have arrived too.
async fn settle<T>(mut got: impl FnMut() -> Vec<T>, n: usize, within: Duration) -> Vec<T> {
    let deadline = Instant::now() + within;
    while got().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    got()
}

fn of_kind(alerts: &[ReceivedAlert], needle: &str) -> Vec<ReceivedAlert> {
    alerts.iter().filter(|a| a.raw.contains(needle)).cloned().collect()
}

/// `count` generic jobs submitted at once, alternately to each instance, each completed within `within`.
async fn complete_jobs(instances: [&Local; 2], count: usize, within: Duration) {
    let jobs = (0..count).map(|i| {
        let local = instances[i % 2];
        async move {
            let (code, queued) = local
                .post("/v1/generate", ALICE, json!({"prompt": format!("job {i}")}))
                .await;
            assert_eq!(code, 202, "{queued}");
            let url = queued["statusUrl"].as_str().unwrap().to_string();
            let done = local.wait_finished(&url, ALICE, within).await;
            assert_eq!(done["status"], "completed", "{done}");
        }
    });
    futures::future::join_all(jobs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_key_alerts_once_per_sink_across_two_instances_and_never_quotes_the_key() {
    let revoked = FakeProvider::start(Wire::OpenAi).await.unwrap();
    revoked.set_responder(FakeReply::openai_bad_key_echoing);
    let healthy = FakeProvider::start(Wire::OpenAi).await.unwrap();
    healthy.set_default(FakeReply::openai_text(r#"{"answer":"fine"}"#));
    let discord = AlertReceiver::start(&[]).await.unwrap();
    let slack = AlertReceiver::start(&[]).await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let upstash = UpstashEmulator::start(&redis).await.unwrap();
    let providers = format!(
        "{}{}",
        openai_provider("alpha", &revoked.base_url()),
        openai_provider("beta", &healthy.base_url())
    );
    let sinks = format!(
        "discord+{},slack+{}",
        discord.url("/api/webhooks/1/abc"),
        slack.url("/services/T/B/X")
    );
    let origins = format!("{},{}", discord.origin(), slack.origin());
    let env = [
        ("FAKE_KEY", PROVIDER_KEY),
        ("ALERT_WEBHOOK_URLS", sinks.as_str()),
        ("CALLBACK_ALLOWED_ORIGINS", origins.as_str()),
        ("UPSTASH_REDIS_REST_URL", upstash.url.as_str()),
        ("UPSTASH_REDIS_REST_TOKEN", upstash.token.as_str()),
    ];
    let one = Local::start(&providers, &env).await;
    let two = Local::start(&providers, &env).await;

    // Jobs on both instances at once: several may meet the revoked key before the shared state says so.
    complete_jobs([&one, &two], 8, Duration::from_secs(20)).await;
    assert!(revoked.hits() >= 1, "the revoked provider was called");

    let got_discord = settle(|| discord.received(), 1, Duration::from_secs(10)).await;
    let got_slack = settle(|| slack.received(), 1, Duration::from_secs(5)).await;
    eprintln!("revoked provider calls: {}", revoked.hits());
    eprintln!(
        "discord got: {}",
        serde_json::to_string_pretty(&got_discord.iter().map(|a| &a.body).collect::<Vec<_>>()).unwrap()
    );
    eprintln!(
        "slack got: {}",
        serde_json::to_string_pretty(&got_slack.iter().map(|a| &a.body).collect::<Vec<_>>()).unwrap()
    );

    let disabled = of_kind(&got_discord, "provider_disabled");
    assert_eq!(
        disabled.len(),
        1,
        "exactly one Discord alert for the revoked key: {got_discord:?}"
    );
    let d = &disabled[0];
    assert_eq!(d.path, "/api/webhooks/1/abc");
    assert!(
        d.body["content"].as_str().unwrap().starts_with("[CRITICAL]"),
        "{}",
        d.body
    );
    assert_eq!(d.body["embeds"][0]["title"], "Provider alpha disabled");
    assert_eq!(d.body["embeds"][0]["color"], 0xE0_1E_1E, "red for critical");

    let disabled = of_kind(&got_slack, "provider_disabled");
    assert_eq!(
        disabled.len(),
        1,
        "exactly one Slack alert for the revoked key: {got_slack:?}"
    );
    let s = &disabled[0];
    assert_eq!(s.path, "/services/T/B/X");
    assert!(
        s.body["text"]
            .as_str()
            .unwrap()
            .starts_with("[CRITICAL] Provider alpha disabled"),
        "{}",
        s.body
    );
    assert_eq!(s.body["blocks"][0]["type"], "header");
    assert!(s.body["blocks"][1]["text"]["text"]
        .as_str()
        .unwrap()
        .contains("Incorrect API key provided"));

    // The provider's 401 quoted the key; no alert does.
    for alert in got_discord.iter().chain(&got_slack) {
        assert!(
            !alert.raw.contains(PROVIDER_KEY),
            "the key leaked into an alert: {}",
            alert.raw
        );
        assert!(
            alert.raw.contains("[redacted]") || !alert.raw.contains("Incorrect API key"),
            "{}",
            alert.raw
        );
    }
    assert!(
        got_discord.iter().chain(&got_slack).all(|a| a.raw.len() < 4_000),
        "alerts are bounded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_provider_rate_limited_alerts_once_with_an_eta_then_once_on_recovery() {
    let a = FakeProvider::start(Wire::OpenAi).await.unwrap();
    let b = FakeProvider::start(Wire::OpenAi).await.unwrap();
    for fake in [&a, &b] {
        fake.set_default(FakeReply::openai_text(r#"{"answer":"fine"}"#));
        fake.push(FakeReply::openai_rate_limited(3));
    }
    let discord = AlertReceiver::start(&[]).await.unwrap();
    // The generic sink answers 500 once: the alert comes back on the retry schedule.
    let generic = NodeReceiver::start(ALERT_SECRET, &[500, 200], 0).await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let upstash = UpstashEmulator::start(&redis).await.unwrap();
    let providers = format!(
        "{}{}",
        openai_provider("alpha", &a.base_url()),
        openai_provider("beta", &b.base_url())
    );
    let sinks = format!(
        "discord+{},{}",
        discord.url("/api/webhooks/2/xyz"),
        generic.url("/alerts")
    );
    let origins = format!("{},http://127.0.0.1:{}", discord.origin(), generic.port);
    let env = [
        ("ALERT_WEBHOOK_URLS", sinks.as_str()),
        ("ALERT_WEBHOOK_SECRET", ALERT_SECRET),
        ("ALERT_RETRY_SCHEDULE", "1s,1s"),
        ("CALLBACK_ALLOWED_ORIGINS", origins.as_str()),
        ("UPSTASH_REDIS_REST_URL", upstash.url.as_str()),
        ("UPSTASH_REDIS_REST_TOKEN", upstash.token.as_str()),
    ];
    let one = Local::start(&providers, &env).await;
    let two = Local::start(&providers, &env).await;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    complete_jobs([&one, &two], 4, Duration::from_secs(30)).await;

    let got = settle(|| discord.received(), 2, Duration::from_secs(10)).await;
    eprintln!(
        "discord got: {}",
        serde_json::to_string_pretty(&got.iter().map(|a| &a.body).collect::<Vec<_>>()).unwrap()
    );
    let down = of_kind(&got, "all_providers_unusable");
    assert_eq!(down.len(), 1, "one 'all providers unusable' alert: {got:?}");
    let text = down[0].body["embeds"][0]["description"].as_str().unwrap();
    assert!(text.contains("The first returns at"), "{text}");
    let eta: u64 = text
        .split("ETA ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("an ETA in ms");
    assert!(
        eta > started && eta < started + 10_000,
        "the ETA is the first provider's return: {eta} vs {started}"
    );
    assert_eq!(
        of_kind(&got, "providers_recovered").len(),
        1,
        "one recovery alert: {got:?}"
    );

    // The generic sink: the same two incidents, signed (Standard Webhooks), the 500 retried.
    let deadline = Instant::now() + Duration::from_secs(10);
    let signed = loop {
        let got = generic.deliveries().await.unwrap();
        let delivered: Vec<_> = got.iter().filter(|d| d.answered == 200).cloned().collect();
        if delivered.len() >= 2 || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let types: Vec<&str> = signed
        .iter()
        .filter(|d| d.answered == 200)
        .filter_map(|d| d.body["type"].as_str())
        .collect();
    assert_eq!(types.len(), 2, "{signed:?}");
    assert!(
        types.contains(&"alert.all_providers_unusable") && types.contains(&"alert.providers_recovered"),
        "{types:?}"
    );
    assert!(
        signed.iter().all(|d| d.standard_ok),
        "signed like job webhooks: {signed:?}"
    );
    assert!(
        signed.iter().any(|d| d.answered == 500),
        "the first answer was a 500, retried"
    );
}

#[tokio::test]
async fn bad_alert_configuration_fails_at_start_naming_the_variable() {
    let cases = [
        (
            "ALERT_WEBHOOK_URLS",
            "http://10.0.0.7/hook",
            "refused by the callback URL guard",
        ),
        (
            "ALERT_WEBHOOK_URLS",
            "gopher://example.com/x",
            "unknown scheme `gopher`",
        ),
        (
            "ALERT_WEBHOOK_URLS",
            "teams+https://example.com/x",
            "unknown scheme `teams+https`",
        ),
        (
            "DISCORD_WEBHOOK_URL",
            "http://169.254.169.254/latest",
            "refused by the callback URL guard",
        ),
        ("ALERT_WEBHOOK_SECRET", "", "must be set"),
    ];
    for (variable, value, expected) in cases {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_stepper-local"));
        cmd.env_clear()
            .env("PORT", "0")
            .env("STEPPER_API_KEYS", format!("alice={ALICE}"));
        if variable == "ALERT_WEBHOOK_SECRET" {
            // A generic sink without the secret its alerts are signed with.
            cmd.env("ALERT_WEBHOOK_URLS", "https://alerts.example.com/in");
        } else {
            cmd.env(variable, value);
        }
        let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
            .await
            .expect("exits at once")
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{variable}={value}: {stderr}");
        assert!(
            stderr.contains(&format!("configuration error: {variable}:")) && stderr.contains(expected),
            "{variable}={value}: {stderr}"
        );
        assert!(!stderr.contains("listening"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_unreachable_past_its_threshold_alerts_once_then_once_when_it_answers_again() {
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    let discord = AlertReceiver::start(&[]).await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let upstash = UpstashEmulator::start(&redis).await.unwrap();
    let sinks = format!("discord+{}", discord.url("/api/webhooks/3/store"));
    let origin = discord.origin();
    let local = Local::start(
        &openai_provider("alpha", &provider.base_url()),
        &[
            ("ALERT_WEBHOOK_URLS", sinks.as_str()),
            ("ALERT_STORE_DOWN_SECONDS", "1"),
            ("CALLBACK_ALLOWED_ORIGINS", origin.as_str()),
            ("UPSTASH_REDIS_REST_URL", upstash.url.as_str()),
            ("UPSTASH_REDIS_REST_TOKEN", upstash.token.as_str()),
            ("UPSTASH_TIMEOUT_MS", "300"),
        ],
    )
    .await;
    let poll = "/v1/reports/0123456789abcdef0123456789abcdef";
    assert_eq!(local.get(poll, ALICE).await.0, 404, "the store answers");
    redis.signal("STOP").unwrap();
    let frozen = Instant::now();
    let mut unavailable = 0;
    while frozen.elapsed() < Duration::from_millis(2_500) {
        if local.get(poll, ALICE).await.0 == 503 {
            unavailable += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    redis.signal("CONT").unwrap();
    assert!(
        unavailable >= 3,
        "the routes answered 503 during the outage ({unavailable})"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while local.get(poll, ALICE).await.0 != 404 {
        assert!(Instant::now() < deadline, "the store never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = settle(|| discord.received(), 2, Duration::from_secs(10)).await;
    eprintln!(
        "discord got: {}",
        serde_json::to_string_pretty(&got.iter().map(|a| &a.body).collect::<Vec<_>>()).unwrap()
    );
    let down = of_kind(&got, "store_unreachable");
    assert_eq!(down.len(), 1, "{got:?}");
    assert!(down[0].body["content"]
        .as_str()
        .unwrap()
        .starts_with("[CRITICAL] Store unreachable"));
    assert_eq!(of_kind(&got, "store_reachable").len(), 1, "{got:?}");
    assert_eq!(got.len(), 2, "nothing else: {got:?}");
}
