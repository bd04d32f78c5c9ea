//! Per-owner limits over real HTTP against the `stepper-local` binary: two processes on one Upstash
//! store share each owner's request window and cap on jobs in flight; refusals are 429 with
//! Retry-After and the RateLimit fields; other owners, `/health` and unauthenticated requests are
//! untouched by them.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{good_report_json, openai_provider, report, Answer, Local, ALICE, BOB};
use serde_json::{json, Value};
use testkit::fake::{FakeProvider, FakeReply, Wire};
use testkit::stack::{RedisServer, UpstashEmulator};

/// A well-formed job id no job has.
const UNKNOWN_JOB: &str = "/v1/jobs/0123456789abcdef0123456789abcdef";

impl Answer {
    /// `r` and `t` of `RateLimit: "default";r=<r>;t=<t>`.
    fn rate(&self) -> (u64, u64) {
        let field = self
            .header("ratelimit")
            .unwrap_or_else(|| panic!("no RateLimit field: {:?}", self.headers));
        let param = |name: &str| -> u64 {
            field
                .split(';')
                .find_map(|p| p.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {field:?}"))
        };
        assert!(field.starts_with("\"default\";"), "{field}");
        (param("r"), param("t"))
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Windows are aligned to the epoch: start a burst early enough in one that it cannot straddle two.
async fn with_room_in_window(window_ms: u64, room_ms: u64) {
    let left = window_ms - now_ms() % window_ms;
    if left < room_ms {
        tokio::time::sleep(Duration::from_millis(left + 50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_upstash_store_share_each_owners_limits() {
    let redis = RedisServer::start().await.expect("redis-server");
    let upstash = UpstashEmulator::start(&redis).await.expect("upstash emulator");
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    // Slow enough that every job is still in flight while the test counts them.
    provider.set_default(FakeReply::openai_text(&good_report_json()).with_delay(Duration::from_secs(3)));
    let env = [
        ("UPSTASH_REDIS_REST_URL", upstash.url.as_str()),
        ("UPSTASH_REDIS_REST_TOKEN", upstash.token.as_str()),
        ("STEPPER_RATE_LIMIT", "20/1h"),
        ("STEPPER_MAX_IN_FLIGHT", "3"),
        ("STEPPER_MAX_IN_FLIGHT_OVERRIDES", "alice=off"),
    ];
    let config = openai_provider("alpha", &provider.base_url());
    let (a, b) = (Local::start(&config, &env).await, Local::start(&config, &env).await);
    with_room_in_window(3_600_000, 20_000).await;

    // 60 of alice's submits at once, half on each instance: the store counts them, across instances.
    let burst = (0..60).map(|i| {
        let local = if i % 2 == 0 { &a } else { &b };
        async move {
            local
                .answer(
                    reqwest::Method::POST,
                    "/v1/reports",
                    Some(ALICE),
                    Some(report(&format!("burst-{i}"))),
                )
                .await
        }
    });
    let answers = futures::future::join_all(burst).await;
    let (refused, admitted): (Vec<&Answer>, Vec<&Answer>) = answers.iter().partition(|a| a.status == 429);
    assert_eq!(
        admitted.len(),
        20,
        "exactly the limit is admitted across both instances"
    );
    // Each admitted request saw its own place in the one shared window: 19 left, 18, ... 0.
    let remaining: BTreeSet<u64> = admitted.iter().map(|a| a.rate().0).collect();
    assert_eq!(remaining, (0..20).collect(), "one count shared by both instances");
    for answer in &admitted {
        assert_eq!(answer.status, 202, "{}", answer.body);
        assert_eq!(answer.header("ratelimit-policy"), Some("\"default\";q=20;w=3600"));
    }
    // Submits are refused everywhere now, while bob, /health and unauthenticated requests are untouched.
    let late = b
        .answer(reqwest::Method::POST, "/v1/reports", Some(ALICE), Some(report("late")))
        .await;
    assert_eq!(late.status, 429, "{}", late.body);
    // Polls and purges count in a window of their own, kept by each instance (no store command): 20
    // on instance a, then a's refuses; b still has its own 20.
    let reads = (0..21).map(|i| {
        let method = if i % 2 == 0 {
            reqwest::Method::GET
        } else {
            reqwest::Method::DELETE
        };
        a.answer(method, UNKNOWN_JOB, Some(ALICE), None)
    });
    let reads = futures::future::join_all(reads).await;
    let statuses: Vec<u16> = reads.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 404).count(), 20, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 1, "{statuses:?}");
    let on_b = b.answer(reqwest::Method::GET, UNKNOWN_JOB, Some(ALICE), None).await;
    assert_eq!((on_b.status, on_b.rate().0), (404, 19), "{}", on_b.body);
    let bobs = a.answer(reqwest::Method::GET, UNKNOWN_JOB, Some(BOB), None).await;
    assert_eq!((bobs.status, bobs.rate().0), (404, 19), "{}", bobs.body);
    let health = a.answer(reqwest::Method::GET, "/health", None, None).await;
    assert_eq!(health.status, 200);
    assert!(health.header("ratelimit").is_none(), "health is not limited");
    let anonymous = b.answer(reqwest::Method::GET, UNKNOWN_JOB, None, None).await;
    assert_eq!(anonymous.status, 401, "no key: 401 before any store call, never 429");
    assert_eq!(
        b.answer(reqwest::Method::GET, UNKNOWN_JOB, Some("wrong"), None)
            .await
            .status,
        401
    );

    // Bob's cap of 3 jobs in flight holds across both instances; an identical submit still answers.
    let submits = (0..4).map(|i| {
        let local = if i % 2 == 0 { &a } else { &b };
        async move {
            local
                .answer(
                    reqwest::Method::POST,
                    "/v1/reports",
                    Some(BOB),
                    Some(report(&format!("bob-{i}"))),
                )
                .await
        }
    });
    let answers = futures::future::join_all(submits).await;
    assert_eq!(
        answers.iter().filter(|a| a.status == 202).count(),
        3,
        "{:?}",
        answers.iter().map(|a| &a.body).collect::<Vec<_>>()
    );
    let capped = answers
        .iter()
        .find(|a| a.status == 429)
        .expect("one submit over the cap");
    assert_eq!(capped.body["code"], "too_many_jobs_in_flight", "{}", capped.body);
    assert!(
        capped.body["message"]
            .as_str()
            .unwrap()
            .contains("already has 3 unfinished jobs"),
        "{}",
        capped.body
    );
    assert_eq!(capped.header("retry-after"), Some("5"));
    let remaining: BTreeSet<u64> = answers.iter().map(|a| a.rate().0).collect();
    assert_eq!(
        remaining,
        (16..=19).collect(),
        "the refused submit is counted in bob's window too (his poll in his window of reads)"
    );
    let (index, first) = answers.iter().enumerate().find(|(_, a)| a.status == 202).unwrap();
    let again = b
        .answer(
            reqwest::Method::POST,
            "/v1/reports",
            Some(BOB),
            Some(report(&format!("bob-{index}"))),
        )
        .await;
    assert_eq!(
        (again.status, &again.body["jobId"]),
        (202, &first.body["jobId"]),
        "an identical submit meets its job"
    );

    // Purging a job in flight frees its slot for the next submit, on the other instance.
    let purged = a
        .answer(
            reqwest::Method::DELETE,
            &format!("/v1/jobs/{}", first.body["jobId"].as_str().unwrap()),
            Some(BOB),
            None,
        )
        .await;
    assert_eq!(purged.status, 200, "{}", purged.body);
    let next = b
        .answer(
            reqwest::Method::POST,
            "/v1/reports",
            Some(BOB),
            Some(report("bob-after-purge")),
        )
        .await;
    assert_eq!(next.status, 202, "{}", next.body);
}

#[tokio::test]
async fn finished_jobs_free_their_slots_and_answers_carry_the_rate_fields() {
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    provider.set_default(FakeReply::openai_text(&good_report_json()).with_delay(Duration::from_millis(700)));
    let local = Local::start(
        &openai_provider("alpha", &provider.base_url()),
        &[("STEPPER_MAX_IN_FLIGHT", "1"), ("STEPPER_RATE_LIMITS", "bob=off")],
    )
    .await;
    let first = local
        .answer(
            reqwest::Method::POST,
            "/v1/reports",
            Some(ALICE),
            Some(report("slot-1")),
        )
        .await;
    assert_eq!(first.status, 202);
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"default\";q=120;w=60"),
        "the default policy"
    );
    assert_eq!(first.rate().0, 119);
    let second = local
        .answer(
            reqwest::Method::POST,
            "/v1/reports",
            Some(ALICE),
            Some(report("slot-2")),
        )
        .await;
    assert_eq!(
        (second.status, second.body["code"].as_str()),
        (429, Some("too_many_jobs_in_flight"))
    );
    assert_eq!(second.rate().0, 118);
    let done = local
        .wait_finished(
            first.body["statusUrl"].as_str().unwrap(),
            ALICE,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(done["status"], "completed");
    let second = local
        .answer(
            reqwest::Method::POST,
            "/v1/reports",
            Some(ALICE),
            Some(report("slot-2")),
        )
        .await;
    assert_eq!(second.status, 202, "a finished job frees its slot: {}", second.body);
    // The finished one is still answered from cache while the new one holds the only slot.
    let cached = local
        .answer(
            reqwest::Method::POST,
            "/v1/reports",
            Some(ALICE),
            Some(report("slot-1")),
        )
        .await;
    assert_eq!((cached.status, cached.body["cached"].as_bool()), (200, Some(true)));
    assert!(cached.rate().0 < 118);
    // An owner without a rate limit gets no rate fields, and /v1/providers only names the policy.
    let bobs = local.answer(reqwest::Method::GET, UNKNOWN_JOB, Some(BOB), None).await;
    assert_eq!(bobs.status, 404);
    assert!(bobs.header("ratelimit").is_none() && bobs.header("ratelimit-policy").is_none());
    let providers = local
        .answer(reqwest::Method::GET, "/v1/providers", Some(ALICE), None)
        .await;
    assert_eq!(providers.header("ratelimit-policy"), Some("\"default\";q=120;w=60"));
    assert!(
        providers.header("ratelimit").is_none(),
        "not counted, so no count to tell"
    );
}

/// A raw HTTP/1.1 exchange (for requests reqwest will not send): the status and the body.
async fn raw(base: &str, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    // The server may answer and close before it has read everything: a failed write is fine.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (
        status,
        text.split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default(),
    )
}

fn head_with(extra_headers: &str) -> Vec<u8> {
    format!("GET {UNKNOWN_JOB} HTTP/1.1\r\nhost: x\r\nx-api-key: {ALICE}\r\n{extra_headers}connection: close\r\n\r\n")
        .into_bytes()
}

#[tokio::test]
async fn oversized_requests_get_a_clear_answer_and_the_server_keeps_serving() {
    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    let local = Local::start(&openai_provider("alpha", &provider.base_url()), &[]).await;

    // Too many header fields, and too many header bytes: a JSON 431 from the router's caps...
    let many: String = (0..70).map(|i| format!("x-extra-{i}: v\r\n")).collect();
    let (status, body) = raw(&local.base, &head_with(&many)).await;
    assert_eq!(status, 431);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["code"], "headers_too_large", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("At most 64 header fields of 16384 bytes"),
        "{body}"
    );
    let (status, body) = raw(&local.base, &head_with(&format!("x-big: {}\r\n", "v".repeat(20_000)))).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()["code"].as_str()),
        (431, Some("headers_too_large"))
    );
    // ... and far past them the HTTP server itself refuses (431, no body) before building a request.
    let flood: String = (0..300).map(|i| format!("x-extra-{i}: v\r\n")).collect();
    assert_eq!(raw(&local.base, &head_with(&flood)).await.0, 431);
    assert_eq!(
        raw(&local.base, &head_with(&format!("x-big: {}\r\n", "v".repeat(40_000))))
            .await
            .0,
        431
    );

    // Routes without a body refuse one past the small cap, announced or chunked; a stray {} is fine.
    let resp = local
        .http
        .get(format!("{}{UNKNOWN_JOB}", local.base))
        .header("x-api-key", ALICE)
        .body("x".repeat(4096))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "payload_too_large");
    let resp = local
        .http
        .delete(format!("{}{UNKNOWN_JOB}", local.base))
        .header("x-api-key", ALICE)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "a small body is ignored");
    let chunk = "y".repeat(3000);
    let chunked = format!(
        "DELETE {UNKNOWN_JOB} HTTP/1.1\r\nhost: x\r\nx-api-key: {ALICE}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let (status, body) = raw(&local.base, chunked.as_bytes()).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");

    // JSON nested past the cap, or with an overlong string: 400 naming where.
    let mut deep = json!("bottom");
    for _ in 0..70 {
        deep = json!({ "k": deep });
    }
    let (code, body) = local
        .post("/v1/generate", ALICE, json!({"prompt": "hi", "metadata": deep}))
        .await;
    assert_eq!((code, body["code"].as_str()), (400, Some("invalid_request")), "{body}");
    assert!(body["field"].as_str().unwrap().starts_with("metadata.k.k.k"), "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("deeper than 64 levels"),
        "{body}"
    );
    let very_deep = format!(
        "{{\"prompt\": \"hi\", \"payload\": {}{}}}",
        "[".repeat(300),
        "]".repeat(300)
    );
    let resp = local
        .http
        .post(format!("{}/v1/generate", local.base))
        .header("x-api-key", ALICE)
        .header("content-type", "application/json")
        .body(very_deep)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["code"].as_str(), body["field"].as_str()),
        (Some("invalid_request"), Some("body")),
        "{body}"
    );
    let (code, body) = local
        .post(
            "/v1/generate",
            ALICE,
            json!({"prompt": "hi", "payload": {"doc": "z".repeat(300_000)}}),
        )
        .await;
    assert_eq!((code, body["field"].as_str()), (400, Some("payload.doc")), "{body}");
    assert_eq!(provider.hits(), 0, "nothing refused reached a provider");

    // A known path with another method: a JSON 405 that still says what is allowed.
    let resp = local
        .answer(reqwest::Method::PUT, "/v1/reports", Some(ALICE), None)
        .await;
    assert_eq!(resp.status, 405);
    let allow = resp.header("allow").unwrap_or_default();
    assert!(allow.contains("POST") && allow.contains("DELETE"), "{allow:?}");
    assert_eq!(resp.body["code"], "method_not_allowed");

    // Still serving.
    let (code, health) = local.request(reqwest::Method::GET, "/health", None, None).await;
    assert_eq!((code, health["status"].as_str()), (200, Some("healthy")));
}
