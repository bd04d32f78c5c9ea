//! The whole job loop over real HTTP against the `stepper-local` binary, with fake OpenAI-compatible
//! providers: success, fail-over, shared cooldowns, waiting out quotas, dedupe, ownership, purge, bad input.

mod common;

use std::time::{Duration, Instant};

use common::{good_report_json, openai_provider, report, Local, ALICE, BOB};
use serde_json::json;
use testkit::fake::{FakeProvider, FakeReply, Wire};

async fn fake() -> FakeProvider {
    FakeProvider::start(Wire::OpenAi).await.expect("fake provider")
}

#[tokio::test]
async fn a_report_completes_through_the_first_provider() {
    let a = fake().await;
    a.set_default(FakeReply::openai_text(&good_report_json()));
    let local = Local::start(&openai_provider("alpha", &a.base_url()), &[]).await;

    let (code, body) = local.post("/v1/reports", ALICE, report("sha-1")).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["status"], "queued");
    let id = body["jobId"].as_str().unwrap().to_string();
    assert_eq!(body["statusUrl"], format!("/v1/reports/{id}"));

    let done = local
        .wait_finished(&format!("/v1/reports/{id}"), ALICE, Duration::from_secs(10))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"], 100);
    assert_eq!(done["data"]["usedProvider"], "alpha");
    assert_eq!(done["data"]["fallback"], false);
    assert_eq!(done["data"]["result"]["title"], "Add token refresh to the auth client");
    assert_eq!(done["data"]["providersAttempted"][0]["provider"], "alpha");
    assert_eq!(done["data"]["providersAttempted"][0]["attemptNumber"], 1);
    assert!(done["data"]["timings"]["totalMs"].is_u64());
    assert_eq!(a.hits(), 1);
    // The provider got the prompt in its own wire format, with our key.
    let sent = &a.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert!(sent.body["messages"][1]["content"]
        .as_str()
        .unwrap()
        .contains("acme/diary"));
}

#[tokio::test]
async fn a_rate_limited_provider_is_skipped_by_every_job_until_its_retry_after() {
    let (a, b) = (fake().await, fake().await);
    a.push(FakeReply::openai_rate_limited(3));
    a.set_default(FakeReply::openai_text(&good_report_json()));
    b.set_default(FakeReply::openai_text(&good_report_json()));
    let config = openai_provider("alpha", &a.base_url()) + &openai_provider("beta", &b.base_url());
    let local = Local::start(&config, &[]).await;

    let limited_at = Instant::now();
    let (_, first) = local.post("/v1/reports", ALICE, report("sha-2a")).await;
    let first = local
        .wait_finished(first["statusUrl"].as_str().unwrap(), ALICE, Duration::from_secs(10))
        .await;
    assert_eq!(first["data"]["usedProvider"], "beta", "{first}");
    let tried = &first["data"]["providersAttempted"];
    assert_eq!(
        (tried[0]["provider"].as_str(), tried[0]["errorCode"].as_str()),
        (Some("alpha"), Some("rate_limited"))
    );
    assert_eq!(tried[0]["retryAfterSeconds"], 3);

    // The next job does not touch alpha while its retry-after runs.
    let (_, second) = local.post("/v1/reports", ALICE, report("sha-2b")).await;
    let second = local
        .wait_finished(second["statusUrl"].as_str().unwrap(), ALICE, Duration::from_secs(10))
        .await;
    assert!(
        limited_at.elapsed() < Duration::from_secs(3),
        "the second job must finish inside the window"
    );
    assert_eq!(second["data"]["usedProvider"], "beta");
    assert_eq!(second["data"]["providersAttempted"].as_array().unwrap().len(), 1);
    assert_eq!(a.hits(), 1);

    // Once it has passed (it counts from the 429's arrival, a little after `limited_at`), alpha is first again.
    tokio::time::sleep(Duration::from_millis(3_500).saturating_sub(limited_at.elapsed())).await;
    let (_, third) = local.post("/v1/reports", ALICE, report("sha-2c")).await;
    let third = local
        .wait_finished(third["statusUrl"].as_str().unwrap(), ALICE, Duration::from_secs(10))
        .await;
    assert_eq!(third["data"]["usedProvider"], "alpha");
    assert_eq!(a.hits(), 2);
}

#[tokio::test]
async fn when_every_provider_is_limited_the_job_waits_and_completes_after_recovery() {
    let (a, b) = (fake().await, fake().await);
    a.push(FakeReply::openai_rate_limited(2));
    b.push(FakeReply::openai_rate_limited(3));
    a.set_default(FakeReply::openai_text(&good_report_json()));
    b.set_default(FakeReply::openai_text(&good_report_json()));
    let config = openai_provider("alpha", &a.base_url()) + &openai_provider("beta", &b.base_url());
    let local = Local::start(&config, &[]).await;

    let (_, queued) = local.post("/v1/reports", ALICE, report("sha-3")).await;
    let url = queued["statusUrl"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut saw_delayed = false;
    while Instant::now() < deadline && !saw_delayed {
        let (_, status) = local.get(&url, ALICE).await;
        saw_delayed = status["rawStatus"] == "delayed";
        if saw_delayed {
            assert!(status["nextAttemptAt"].is_string(), "{status}");
            assert_eq!(status["progress"], 0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_delayed, "the job waits instead of failing");
    let done = local.wait_finished(&url, ALICE, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["data"]["usedProvider"], "alpha",
        "the earliest provider to recover serves it"
    );
    assert_eq!(a.hits() + b.hits(), 3, "no call while both were cooling down");
}

#[tokio::test]
async fn an_unusable_answer_moves_the_job_to_the_next_provider() {
    let (a, b) = (fake().await, fake().await);
    a.set_default(FakeReply::openai_text("Sure! Here is your report: it went well."));
    b.set_default(FakeReply::openai_text(&format!("```json\n{}\n```", good_report_json())));
    let config = openai_provider("alpha", &a.base_url()) + &openai_provider("beta", &b.base_url());
    let local = Local::start(&config, &[]).await;
    let (_, queued) = local.post("/v1/reports", ALICE, report("sha-4")).await;
    let done = local
        .wait_finished(queued["statusUrl"].as_str().unwrap(), ALICE, Duration::from_secs(10))
        .await;
    assert_eq!(done["data"]["usedProvider"], "beta", "{done}");
    assert_eq!(done["data"]["providersAttempted"][0]["errorCode"], "invalid_output");
}

#[tokio::test]
async fn overloads_back_off_and_the_job_finishes_elsewhere() {
    let (a, b) = (fake().await, fake().await);
    a.set_default(FakeReply::openai_status(503));
    b.set_default(FakeReply::openai_text(&good_report_json()));
    let config = openai_provider("alpha", &a.base_url()) + &openai_provider("beta", &b.base_url());
    let local = Local::start(&config, &[]).await;
    let (_, queued) = local.post("/v1/reports", ALICE, report("sha-5")).await;
    let done = local
        .wait_finished(queued["statusUrl"].as_str().unwrap(), ALICE, Duration::from_secs(10))
        .await;
    assert_eq!(done["data"]["usedProvider"], "beta");
    assert_eq!(done["data"]["providersAttempted"][0]["errorCode"], "overloaded");
    assert_eq!(done["data"]["providersAttempted"][0]["httpStatus"], 503);
}

#[tokio::test]
async fn a_generic_job_fails_when_every_provider_fails_for_good() {
    let a = fake().await;
    a.set_default(FakeReply::openai_status(400));
    let local = Local::start(&openai_provider("alpha", &a.base_url()), &[]).await;
    let (code, queued) = local
        .post(
            "/v1/generate",
            ALICE,
            json!({"prompt": "Say hi", "responseMode": "text"}),
        )
        .await;
    assert_eq!(code, 202, "{queued}");
    assert!(queued["statusUrl"].as_str().unwrap().starts_with("/v1/jobs/"));
    let done = local
        .wait_finished(queued["statusUrl"].as_str().unwrap(), ALICE, Duration::from_secs(10))
        .await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["progress"], 100);
    assert!(
        done["error"].as_str().unwrap().contains("every provider failed"),
        "{done}"
    );
    assert!(done.get("data").is_none());
    assert_eq!(a.hits(), 1, "a bad request is not retried on the same provider");
}

#[tokio::test]
async fn identical_submits_meet_on_one_job_and_a_finished_one_answers_from_cache() {
    let a = fake().await;
    a.set_default(FakeReply::openai_text(&good_report_json()).with_delay(Duration::from_millis(500)));
    let local = Local::start(&openai_provider("alpha", &a.base_url()), &[]).await;
    let (c1, first) = local.post("/v1/reports", ALICE, report("sha-6")).await;
    let (c2, second) = local.post("/v1/reports", ALICE, report("sha-6")).await;
    assert_eq!((c1, c2), (202, 202));
    assert_eq!(first["jobId"], second["jobId"]);
    // Another owner's identical request is another job.
    let (_, bobs) = local.post("/v1/reports", BOB, report("sha-6")).await;
    assert_ne!(bobs["jobId"], first["jobId"]);
    local
        .wait_finished(first["statusUrl"].as_str().unwrap(), ALICE, Duration::from_secs(10))
        .await;
    let (code, cached) = local.post("/v1/reports", ALICE, report("sha-6")).await;
    assert_eq!(code, 200, "{cached}");
    assert_eq!(cached["status"], "completed");
    assert_eq!(cached["cached"], true);
    assert_eq!(cached["data"]["title"], "Add token refresh to the auth client");
    assert_eq!(cached["metadata"]["provider"], "alpha");
    assert_eq!(cached["metadata"]["fallback"], false);
    assert!(cached["metadata"]["timings"]["totalMs"].is_u64());
}

#[tokio::test]
async fn jobs_are_visible_and_purgeable_only_by_their_owner() {
    let a = fake().await;
    a.set_default(FakeReply::openai_text(&good_report_json()));
    let local = Local::start(&openai_provider("alpha", &a.base_url()), &[]).await;
    let (_, queued) = local.post("/v1/reports", ALICE, report("sha-7")).await;
    let url = queued["statusUrl"].as_str().unwrap().to_string();
    let id = queued["jobId"].as_str().unwrap().to_string();
    local.wait_finished(&url, ALICE, Duration::from_secs(10)).await;

    assert_eq!(local.get(&url, BOB).await, (404, json!({"error": "Job not found"})));
    assert_eq!(
        local.get("/v1/reports/0123456789abcdef0123456789abcdef", ALICE).await,
        (404, json!({"error": "Job not found"}))
    );
    assert_eq!(local.get("/v1/jobs/not-an-id", ALICE).await.0, 404);
    assert_eq!(local.delete(&format!("/v1/jobs/{id}"), BOB).await.0, 404);
    assert_eq!(
        local.get(&url, ALICE).await.0,
        200,
        "bob's purge did not touch alice's job"
    );

    let (code, purged) = local.delete(&format!("/v1/jobs/{id}"), ALICE).await;
    assert_eq!((code, purged["success"].as_bool()), (200, Some(true)));
    assert_eq!(local.get(&url, ALICE).await.0, 404);
}

#[tokio::test]
async fn purge_by_commit_deletes_the_report() {
    let a = fake().await;
    a.set_default(FakeReply::openai_text(&good_report_json()));
    let local = Local::start(&openai_provider("alpha", &a.base_url()), &[]).await;
    let (_, queued) = local.post("/v1/reports", ALICE, report("sha-8")).await;
    let url = queued["statusUrl"].as_str().unwrap().to_string();
    local.wait_finished(&url, ALICE, Duration::from_secs(10)).await;

    let missing = json!({"error": "Missing required query parameters: userId, commitSha"});
    assert_eq!(
        local.delete("/v1/reports?userId=user-1", ALICE).await,
        (400, missing.clone())
    );
    assert_eq!(local.delete("/v1/reports", ALICE).await, (400, missing));
    // Bob's purge of the same commit is a no-op for alice.
    assert_eq!(
        local
            .delete("/v1/reports?userId=user-1&commitSha=sha-8&template=default", BOB)
            .await
            .0,
        200
    );
    assert_eq!(local.get(&url, ALICE).await.0, 200);
    let (code, body) = local
        .delete("/v1/reports?userId=user-1&commitSha=sha-8&template=default", ALICE)
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        (body["success"].as_bool(), body["message"].as_str()),
        (Some(true), Some("Cache entry deleted"))
    );
    assert_eq!(local.get(&url, ALICE).await.0, 404);

    // The same commit submitted again is a new job with a new id (a caller keeps ids unique); the old
    // id stays gone, and neither reads nor purges the new job.
    let old_id = queued["jobId"].as_str().unwrap().to_string();
    let (code, again) = local.post("/v1/reports", ALICE, report("sha-8")).await;
    assert_eq!(code, 202, "{again}");
    let new_id = again["jobId"].as_str().unwrap().to_string();
    assert_ne!(new_id, old_id, "a new job gets a new id");
    assert_eq!(new_id.len(), 48, "{new_id}");
    assert_eq!(local.get(&url, ALICE).await.0, 404);
    assert_eq!(local.delete(&format!("/v1/jobs/{old_id}"), ALICE).await.0, 404);
    let new_url = again["statusUrl"].as_str().unwrap().to_string();
    let done = local.wait_finished(&new_url, ALICE, Duration::from_secs(10)).await;
    assert_eq!(done["id"], new_id.as_str());
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_creates_nothing() {
    let a = fake().await;
    let local = Local::start(&openai_provider("alpha", &a.base_url()), &[]).await;
    let raw = |body: &'static str| {
        local
            .http
            .post(format!("{}/v1/reports", local.base))
            .header("x-api-key", ALICE)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let resp = raw("{not json").await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "invalid_json", "{body}");

    let mut wrong_type = report("sha-9");
    wrong_type["files"] = json!("src/a.ts");
    let (code, body) = local.post("/v1/reports", ALICE, wrong_type).await;
    assert_eq!(code, 400);
    assert!(body["error"].as_str().unwrap().starts_with("files"), "{body}");
    assert_eq!(body["field"], "files");

    let mut missing = report("sha-9");
    missing.as_object_mut().unwrap().remove("userId");
    let (code, body) = local.post("/v1/reports", ALICE, missing).await;
    assert_eq!((code, body["field"].as_str()), (400, Some("userId")), "{body}");

    // Announce a body over the cap: the answer comes before the body is read (raw HTTP, so the early
    // answer is read instead of failing on a closed pipe).
    let (status, body) = oversized_post(&local.base, "/v1/generate", 7 * 1024 * 1024).await;
    assert_eq!(status, 413);
    assert_eq!(body["code"], "payload_too_large", "{body}");

    let (code, body) = local.post("/v1/generate", ALICE, json!({"responseMode": "text"})).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(a.hits(), 0, "nothing invalid reached a provider");

    let mut empty_message = report("sha-9b");
    empty_message["message"] = json!("");
    assert_eq!(
        local.post("/v1/reports", ALICE, empty_message).await.0,
        202,
        "an empty message is accepted"
    );
}

#[tokio::test]
async fn keys_are_required_and_checked() {
    let a = fake().await;
    let local = Local::start(&openai_provider("alpha", &a.base_url()), &[]).await;
    let (code, body) = local
        .request(reqwest::Method::POST, "/v1/reports", None, Some(report("sha-10")))
        .await;
    assert_eq!(code, 401);
    assert_eq!(
        body,
        json!({"error": "Unauthorized", "message": "Missing API key. Include it in the 'x-api-key' header."})
    );
    let (code, body) = local.post("/v1/reports", "wrong", report("sha-10")).await;
    assert_eq!(
        (code, body),
        (401, json!({"error": "Unauthorized", "message": "Invalid API key."}))
    );
    let resp = local
        .http
        .get(format!("{}/v1/providers", local.base))
        .header("authorization", format!("Bearer {ALICE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let health: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        health["providers"][0],
        json!({"name": "alpha", "healthy": true, "enabled": true, "requestsLeftMinute": null, "requestsLeftDay": null, "lastErrorClass": null})
    );
}

async fn oversized_post(base: &str, path: &str, length: usize) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {ALICE}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n{{\"prompt\": \""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Stream the body until the server stops reading it (it answers once the cap is passed).
    let filler = vec![b'x'; 64 * 1024];
    let mut sent = head.len();
    while sent < length {
        if stream.write_all(&filler).await.is_err() {
            break;
        }
        sent += filler.len();
    }
    // The server answers without reading the rest; read until the announced response body is complete.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let want = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= want {
                break;
            }
        }
        match tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn a_queued_generic_job_keeps_its_output_schema_and_completes_validated() {
    let (a, b) = (fake().await, fake().await);
    // alpha answers JSON of the wrong shape; beta answers in prose around valid JSON.
    a.set_default(FakeReply::openai_text(r#"{"colours": "red, green"}"#));
    b.set_default(FakeReply::openai_text(
        "Here you go: {\"colours\": [\"red\", \"green\", \"blue\"]} Enjoy!",
    ));
    let config = openai_provider("alpha", &a.base_url()) + &openai_provider("beta", &b.base_url());
    let local = Local::start(&config, &[]).await;
    let schema = json!({"type": "object", "required": ["colours"], "properties": {"colours": {"type": "array", "items": {"type": "string"}, "minItems": 3}}});
    let (code, queued) = local
        .post(
            "/v1/generate",
            ALICE,
            json!({"prompt": "Name three colours", "outputSchema": schema, "requestId": "r-1"}),
        )
        .await;
    assert_eq!(code, 202, "{queued}");
    let done = local
        .wait_finished(queued["statusUrl"].as_str().unwrap(), ALICE, Duration::from_secs(10))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["data"]["result"], json!({"colours": ["red", "green", "blue"]}));
    assert_eq!(done["data"]["usedProvider"], "beta");
    let first = &done["data"]["providersAttempted"][0];
    assert_eq!(first["errorCode"], "invalid_output");
    assert!(
        first["error"].as_str().unwrap().contains("/colours"),
        "the schema error names the path: {first}"
    );
    // The schema reached the provider as a native JSON-schema request.
    let sent = &a.requests()[0].body;
    assert_eq!(sent["response_format"]["type"], "json_schema");
    assert_eq!(sent["response_format"]["json_schema"]["schema"], schema);
}
