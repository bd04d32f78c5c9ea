//! The launchers start real servers that answer.

use testkit::stack::{MotoServer, RedisServer, UpstashEmulator};

#[tokio::test]
async fn redis_and_the_upstash_emulator_answer_with_their_own_shapes() {
    let redis = RedisServer::start().await.unwrap();
    assert_eq!(redis.command(&["PING"]).await.unwrap(), "PONG");
    let upstash = UpstashEmulator::start(&redis).await.unwrap();
    let http = reqwest::Client::new();
    let ok: serde_json::Value = http
        .post(&upstash.url)
        .bearer_auth(&upstash.token)
        .json(&["SET", "k", "v"])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ok, serde_json::json!({"result": "OK"}));
    // The emulator's command error: HTTP 500 with a prefixed message (hosted Upstash: 400).
    let bad = http
        .post(&upstash.url)
        .bearer_auth(&upstash.token)
        .json(&["EVALSHA", "nope", "0"])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 500);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("Failed to execute Redis command: NOSCRIPT"),
        "{body}"
    );
    let denied = http
        .post(&upstash.url)
        .bearer_auth("wrong")
        .json(&["PING"])
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    assert!(redis.command_stats().await.unwrap()["set"] >= 1);
    assert_eq!(redis.dbsize().await.unwrap(), 1);
}

#[tokio::test]
async fn moto_serves_sqs() {
    let moto = MotoServer::start().await.unwrap();
    let resp = reqwest::Client::new()
        .post(&moto.endpoint)
        // moto routes by the service named in the signature's credential scope.
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0",
        )
        .form(&[
            ("Action", "CreateQueue"),
            ("QueueName", "probe"),
            ("Version", "2012-11-05"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("probe"));
}
