//! When the store is unreachable or slow, every route answers 503 with a JSON error and Retry-After:
//! never a misleading 404, never a half-created job.

mod common;

use common::{openai_provider, report, Local, ALICE};
use serde_json::json;

async fn assert_unavailable(local: &Local) {
    for (method, path, body) in [
        (reqwest::Method::POST, "/v1/reports", Some(report("sha-outage"))),
        (
            reqwest::Method::POST,
            "/v1/generate",
            Some(json!({"prompt": "hi", "responseMode": "text"})),
        ),
        (
            reqwest::Method::GET,
            "/v1/reports/0123456789abcdef0123456789abcdef",
            None,
        ),
        (
            reqwest::Method::DELETE,
            "/v1/jobs/0123456789abcdef0123456789abcdef",
            None,
        ),
        (reqwest::Method::DELETE, "/v1/reports?userId=u&commitSha=s", None),
    ] {
        let mut req = local
            .http
            .request(method.clone(), format!("{}{path}", local.base))
            .header("x-api-key", ALICE);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 503, "{method} {path}");
        assert_eq!(
            resp.headers().get("retry-after").and_then(|v| v.to_str().ok()),
            Some("5"),
            "{method} {path}"
        );
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "store_unavailable", "{method} {path}: {body}");
        assert_eq!(body["error"], "Service temporarily unavailable");
    }
    let (code, health) = local.request(reqwest::Method::GET, "/health", None, None).await;
    assert_eq!((code, health["status"].as_str()), (503, Some("unhealthy")));
}

#[tokio::test]
async fn an_unreachable_store_answers_503_everywhere() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let local = Local::start(
        &openai_provider("alpha", "http://127.0.0.1:9/v1"),
        &[
            ("UPSTASH_REDIS_REST_URL", url.as_str()),
            ("UPSTASH_REDIS_REST_TOKEN", "t"),
        ],
    )
    .await;
    assert_unavailable(&local).await;
}

#[tokio::test]
async fn a_store_that_never_answers_times_out_into_503() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Accept connections and hold them without a word.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let local = Local::start(
        &openai_provider("alpha", "http://127.0.0.1:9/v1"),
        &[
            ("UPSTASH_REDIS_REST_URL", url.as_str()),
            ("UPSTASH_REDIS_REST_TOKEN", "t"),
            ("UPSTASH_TIMEOUT_MS", "300"),
        ],
    )
    .await;
    assert_unavailable(&local).await;
}
