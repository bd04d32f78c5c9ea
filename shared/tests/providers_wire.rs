//! The OpenAI-compatible adapter against the fake provider server: request shape, JSON mode only when
//! wanted, the json_schema → json_object fallback, and classified failures with their retry hints.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use shared::config::Secret;
use shared::llm::{ChatMessage, CompletionRequest, FinishReason, ResponseFormat};
use shared::ports::Provider;
use shared::providers::openai::OpenAiProvider;
use shared::providers::{ErrorClass, RetryHint};
use shared::quota::ResetClock;
use testkit::fake::{FakeProvider, FakeReply, Wire};

fn adapter(fake: &FakeProvider) -> OpenAiProvider {
    OpenAiProvider::new(
        "fake",
        &fake.base_url(),
        "fake-model",
        Some(Secret::new("sk-test")),
        BTreeMap::from([("X-Title".to_string(), "stepper".to_string())]),
        Duration::from_millis(500),
        ResetClock::UtcMidnight,
        reqwest::Client::new(),
    )
}

fn request(format: ResponseFormat) -> CompletionRequest {
    CompletionRequest {
        messages: vec![ChatMessage::system("be brief"), ChatMessage::user("hello")],
        format,
        max_tokens: 64,
        temperature: Some(0.2),
    }
}

#[tokio::test]
async fn the_request_speaks_the_wire_format_and_asks_for_json_only_when_wanted() {
    let fake = FakeProvider::start(Wire::OpenAi).await.unwrap();
    fake.expect_key("sk-test");
    fake.set_default(FakeReply::openai_text("hi"));
    let provider = adapter(&fake);
    let report = provider.call(&request(ResponseFormat::Text)).await;
    let answer = report.result.unwrap();
    assert_eq!((answer.text.as_str(), answer.finish, answer.usage.output_tokens), ("hi", FinishReason::Stop, 80));
    let sent = &fake.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-test"));
    assert_eq!(sent.header("x-title"), Some("stepper"));
    assert_eq!(sent.body["model"], "fake-model");
    assert_eq!(sent.body["messages"][0], json!({"role": "system", "content": "be brief"}));
    assert_eq!(sent.body["max_tokens"], 64);
    assert!(sent.body.get("response_format").is_none(), "text jobs do not ask for JSON");

    provider.call(&request(ResponseFormat::Json { schema: None })).await;
    assert_eq!(fake.requests()[1].body["response_format"], json!({"type": "json_object"}));
}

#[tokio::test]
async fn a_model_that_rejects_json_schema_gets_json_object_from_then_on() {
    let fake = FakeProvider::start(Wire::OpenAi).await.unwrap();
    fake.push(FakeReply::openai_error(400, "invalid_request_error", "invalid_parameter", "response_format json_schema is not supported by this model"));
    fake.set_default(FakeReply::openai_text(r#"{"ok": true}"#));
    let provider = adapter(&fake);
    let schema = json!({"type": "object", "required": ["ok"]});
    let wants = request(ResponseFormat::Json { schema: Some(schema.clone()) });
    let report = provider.call(&wants).await;
    assert_eq!(report.result.unwrap().text, r#"{"ok": true}"#);
    let sent = fake.requests();
    assert_eq!(sent[0].body["response_format"]["json_schema"]["schema"], schema);
    assert_eq!(sent[1].body["response_format"], json!({"type": "json_object"}));
    provider.call(&wants).await;
    assert_eq!(fake.requests()[2].body["response_format"], json!({"type": "json_object"}), "remembered");
    assert_eq!(fake.hits(), 3);
}

#[tokio::test]
async fn failures_are_classified_with_their_retry_hints() {
    let fake = FakeProvider::start(Wire::OpenAi).await.unwrap();
    let provider = adapter(&fake);
    let text = request(ResponseFormat::Text);
    let cases: Vec<(FakeReply, ErrorClass)> = vec![
        (FakeReply::openai_rate_limited(7), ErrorClass::RateLimited),
        (FakeReply::openai_status(401), ErrorClass::AuthInvalid),
        (FakeReply::openai_status(400), ErrorClass::BadRequest),
        (FakeReply::openai_status(404), ErrorClass::Gone),
        (FakeReply::openai_status(503), ErrorClass::Overloaded),
        (FakeReply::openai_error(429, "insufficient_quota", "insufficient_quota", "You exceeded your current quota"), ErrorClass::QuotaExhausted),
        (FakeReply::new(402, r#"{"error":{"message":"Insufficient credits","code":402}}"#), ErrorClass::QuotaExhausted),
        (FakeReply::new(200, r#"{"error":{"message":"Provider returned error","code":502}}"#), ErrorClass::Overloaded),
        (FakeReply::new(502, "<html><body>Bad Gateway</body></html>").with_header("content-type", "text/html"), ErrorClass::Overloaded),
        (FakeReply::openai_completion("", "stop"), ErrorClass::InvalidOutput),
        (FakeReply::openai_completion("blocked", "content_filter"), ErrorClass::Filtered),
        (FakeReply::openai_text("late").with_delay(Duration::from_millis(900)), ErrorClass::Overloaded),
    ];
    for (reply, class) in cases {
        fake.push(reply);
        let report = provider.call(&text).await;
        let failure = report.result.expect_err("a failure");
        assert_eq!(failure.class, class, "{failure:?}");
        if class == ErrorClass::RateLimited {
            assert_eq!(failure.retry, Some(RetryHint::After(Duration::from_secs(7))));
            assert_eq!(report.rate.requests_remaining, Some(0));
        }
        if report.http_status.is_none() {
            assert_eq!(failure.message, "timeout after 500ms");
        }
    }
    // A truncated answer is not a provider failure: output validation decides.
    fake.push(FakeReply::openai_completion("{\"a\": ", "length"));
    assert_eq!(provider.call(&text).await.result.unwrap().finish, FinishReason::Length);
}
