//! Cancel: `DELETE /v1/jobs/{id}` of a job whose provider call is under way answers 200, starts no
//! further provider call for it, sends no webhook after it answered and drops the result; of a job that
//! waits (its provider cooling down) it removes the job from the due-index at once. On the in-memory
//! store and on the Upstash store over the real stack, against the `stepper-local` binary.
//!
//! `cargo test -p stepper-local --test cancel -- --nocapture`

mod common;

use std::time::{Duration, Instant};

use common::{openai_provider, Local, ALICE};
use serde_json::json;
use testkit::fake::{FakeProvider, FakeReply, Wire};
use testkit::receiver::NodeReceiver;
use testkit::stack::{RedisServer, UpstashEmulator};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The store a case runs on: memory, or the Upstash emulator over redis-server (kept alive with it).
struct Store {
    redis: Option<RedisServer>,
    _upstash: Option<UpstashEmulator>,
    env: Vec<(String, String)>,
}

async fn store(upstash: bool) -> Store {
    if !upstash {
        return Store {
            redis: None,
            _upstash: None,
            env: Vec::new(),
        };
    }
    let redis = RedisServer::start().await.expect("redis-server");
    let emulator = UpstashEmulator::start(&redis).await.expect("upstash emulator");
    let env = vec![
        ("UPSTASH_REDIS_REST_URL".to_string(), emulator.url.clone()),
        ("UPSTASH_REDIS_REST_TOKEN".to_string(), emulator.token.clone()),
    ];
    Store {
        redis: Some(redis),
        _upstash: Some(emulator),
        env,
    }
}

async fn start(store: &Store, provider: &FakeProvider, hook: &NodeReceiver) -> Local {
    let mut env: Vec<(String, String)> = store.env.clone();
    env.push(("STEPPER_WEBHOOK_SECRETS".into(), format!("alice={SECRET}")));
    env.push((
        "CALLBACK_ALLOWED_ORIGINS".into(),
        format!("http://127.0.0.1:{}", hook.port),
    ));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Local::start(&openai_provider("alpha", &provider.base_url()), &env).await
}

async fn cancel_under_way(upstash: bool) {
    let store = store(upstash).await;
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    provider.set_default(FakeReply::openai_text(r#"{"answer": "too late"}"#).with_delay(Duration::from_millis(2_000)));
    let hook = NodeReceiver::start(SECRET, &[200], 0).await.expect("node receiver");
    let local = start(&store, &provider, &hook).await;

    let body = json!({"prompt": "cancel me while you think", "callbackUrl": hook.url("/hook")});
    let (code, queued) = local.post("/v1/generate", ALICE, body).await;
    assert_eq!(code, 202, "{queued}");
    let id = queued["jobId"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while provider.hits() == 0 {
        assert!(Instant::now() < deadline, "the step never called the provider");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, purged) = local.delete(&format!("/v1/jobs/{id}"), ALICE).await;
    assert_eq!((code, purged["success"].as_bool()), (200, Some(true)), "{purged}");
    let answered = Instant::now();
    // The provider's answer lands 2 s after the call; then a lease's worth for any retry to show.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(provider.hits(), 1, "no further provider call for a cancelled job");
    let got = hook.deliveries().await.unwrap();
    assert!(got.is_empty(), "a webhook after the DELETE answered: {got:?}");
    let (code, gone) = local.get(&format!("/v1/jobs/{id}"), ALICE).await;
    assert_eq!(code, 404, "the result was dropped: {gone}");
    if let Some(redis) = &store.redis {
        let records = redis
            .command(&["EVAL", "return #redis.call('KEYS', 'st:j:*')", "0"])
            .await
            .unwrap();
        assert_eq!(records.trim(), "0", "the job left a record");
    }
    println!(
        "cancel ({}): a job cancelled mid-call: 1 provider call, 0 webhooks in the {} ms after the DELETE, 404 after",
        if upstash { "upstash" } else { "memory" },
        answered.elapsed().as_millis()
    );
}

async fn cancel_waiting(upstash: bool) {
    let store = store(upstash).await;
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    // Rate limited for 3 s, then answering: the job waits out the cooldown in the due-index.
    provider.push(FakeReply::openai_rate_limited(3));
    provider.set_default(FakeReply::openai_text(r#"{"answer": "too late"}"#));
    let hook = NodeReceiver::start(SECRET, &[200], 0).await.expect("node receiver");
    let local = start(&store, &provider, &hook).await;

    let body = json!({"prompt": "cancel me while I wait", "callbackUrl": hook.url("/hook")});
    let (code, queued) = local.post("/v1/generate", ALICE, body).await;
    assert_eq!(code, 202, "{queued}");
    let id = queued["jobId"].as_str().unwrap().to_string();
    let status_url = queued["statusUrl"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, polled) = local.get(&status_url, ALICE).await;
        if polled["rawStatus"] == "delayed" {
            break;
        }
        assert!(Instant::now() < deadline, "the job never waited: {polled}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, purged) = local.delete(&format!("/v1/jobs/{id}"), ALICE).await;
    assert_eq!((code, purged["success"].as_bool()), (200, Some(true)), "{purged}");
    if let Some(redis) = &store.redis {
        // Out of the due-index at once: no entry names a job record.
        const DUE_JOBS: &str = "local n = 0 for _, m in ipairs(redis.call('ZRANGE', 'st:due', 0, -1)) do \
            if string.find(m, 'st:j:', 1, true) then n = n + 1 end end return n";
        let due = redis.command(&["EVAL", DUE_JOBS, "0"]).await.unwrap();
        assert_eq!(due.trim(), "0", "the cancelled job is still in the due-index");
    }
    // Past the cooldown: the job's step comes back and finds nothing to do.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(provider.hits(), 1, "no provider call after the cancel");
    assert!(
        hook.deliveries().await.unwrap().is_empty(),
        "no webhook for a cancelled job"
    );
    let (code, _) = local.get(&status_url, ALICE).await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_call_on_the_memory_store() {
    cancel_under_way(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_call_on_the_upstash_store() {
    cancel_under_way(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_waiting_job_on_the_memory_store() {
    cancel_waiting(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_waiting_job_on_the_upstash_store() {
    cancel_waiting(true).await;
}
