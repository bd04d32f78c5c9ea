//! Every wire adapter against the fake provider servers: request shape, JSON asked natively only when
//! wanted (with the schema fallbacks), the key where each wire carries it, and every error class each wire
//! can produce, classified with its retry hint.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use shared::adapters::outbound::guard::UrlGuard;
use shared::adapters::providers::custom::JsonPath;
use shared::adapters::providers::openai::OpenAiProvider;
use shared::adapters::providers::spec::{self, HttpShape, ProviderSpec};
use shared::adapters::providers::transport::Connection;
use shared::domain::error_class::ErrorClass;
use shared::domain::llm::{ChatMessage, CompletionRequest, FinishReason, ResponseFormat};
use shared::domain::outcome::RetryHint;
use shared::domain::quota::{ProviderLimits, ResetClock};
use shared::domain::secret::Secret;
use shared::ports::Provider;
use testkit::fake::{FakeProvider, FakeReply, Wire};

fn adapter(fake: &FakeProvider) -> OpenAiProvider {
    let conn = Connection {
        name: "fake".into(),
        url: fake.base_url(),
        key: Some(Secret::new("sk-test")),
        timeout: Duration::from_millis(500),
        reset: ResetClock::UtcMidnight,
        client: reqwest::Client::new(),
        scrub: Default::default(),
    };
    OpenAiProvider::new(
        conn,
        "fake-model",
        BTreeMap::from([("X-Title".to_string(), "stepper".to_string())]),
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
    assert_eq!(
        (answer.text.as_str(), answer.finish, answer.usage.output_tokens),
        ("hi", FinishReason::Stop, 80)
    );
    let sent = &fake.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-test"));
    assert_eq!(sent.header("x-title"), Some("stepper"));
    assert_eq!(sent.body["model"], "fake-model");
    assert_eq!(
        sent.body["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );
    assert_eq!(sent.body["max_tokens"], 64);
    assert!(
        sent.body.get("response_format").is_none(),
        "text jobs do not ask for JSON"
    );

    provider.call(&request(ResponseFormat::Json { schema: None })).await;
    assert_eq!(
        fake.requests()[1].body["response_format"],
        json!({"type": "json_object"})
    );
}

#[tokio::test]
async fn a_model_that_rejects_json_schema_gets_json_object_from_then_on() {
    let fake = FakeProvider::start(Wire::OpenAi).await.unwrap();
    fake.push(FakeReply::openai_error(
        400,
        "invalid_request_error",
        "invalid_parameter",
        "response_format json_schema is not supported by this model",
    ));
    fake.set_default(FakeReply::openai_text(r#"{"ok": true}"#));
    let provider = adapter(&fake);
    let schema = json!({"type": "object", "required": ["ok"]});
    let wants = request(ResponseFormat::Json {
        schema: Some(std::sync::Arc::new(schema.clone())),
    });
    let report = provider.call(&wants).await;
    assert_eq!(report.result.unwrap().text, r#"{"ok": true}"#);
    let sent = fake.requests();
    assert_eq!(sent[0].body["response_format"]["json_schema"]["schema"], schema);
    assert_eq!(sent[1].body["response_format"], json!({"type": "json_object"}));
    provider.call(&wants).await;
    assert_eq!(
        fake.requests()[2].body["response_format"],
        json!({"type": "json_object"}),
        "remembered"
    );
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
        (
            FakeReply::openai_error(
                429,
                "insufficient_quota",
                "insufficient_quota",
                "You exceeded your current quota",
            ),
            ErrorClass::QuotaExhausted,
        ),
        (
            FakeReply::new(402, r#"{"error":{"message":"Insufficient credits","code":402}}"#),
            ErrorClass::QuotaExhausted,
        ),
        (
            FakeReply::new(200, r#"{"error":{"message":"Provider returned error","code":502}}"#),
            ErrorClass::Overloaded,
        ),
        (
            FakeReply::new(502, "<html><body>Bad Gateway</body></html>").with_header("content-type", "text/html"),
            ErrorClass::Overloaded,
        ),
        (FakeReply::openai_completion("", "stop"), ErrorClass::InvalidOutput),
        (
            FakeReply::openai_completion("blocked", "content_filter"),
            ErrorClass::Filtered,
        ),
        (
            FakeReply::openai_text("late").with_delay(Duration::from_millis(900)),
            ErrorClass::Overloaded,
        ),
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

/// The adapter `spec::build` makes for a fake of any wire (the same path the service takes).
fn built(fake: &FakeProvider, wire: Wire, key: &str, reset: ResetClock) -> std::sync::Arc<dyn Provider> {
    let wire_spec = match wire {
        Wire::OpenAi => spec::Wire::OpenAi {
            headers: BTreeMap::new(),
        },
        Wire::Gemini => spec::Wire::Gemini,
        Wire::Anthropic => spec::Wire::Anthropic,
        Wire::Cohere => spec::Wire::Cohere,
        Wire::Http => spec::Wire::Http(HttpShape {
            body_template: json!({"inputs": "{{prompt}}", "system": "{{system}}", "parameters": {"max_new_tokens": "{{max_tokens}}", "schema": "{{json_schema}}"}}),
            response_path: JsonPath::parse("[0].generated_text").unwrap(),
            auth_header: "authorization".into(),
        }),
    };
    let spec = ProviderSpec {
        name: format!("fake-{wire:?}"),
        wire: wire_spec,
        base_url: fake.base_url(),
        model: "fake-model".into(),
        api_key: Some(Secret::new(key)),
        timeout_ms: 500,
        limits: ProviderLimits {
            reset,
            ..Default::default()
        },
        small_context: false,
    };
    let origin = url::Url::parse(&fake.base_url())
        .unwrap()
        .origin()
        .ascii_serialization();
    spec::build(
        &spec,
        reqwest::Client::new(),
        &UrlGuard::new(&[origin]).unwrap(),
        &Default::default(),
    )
}

#[tokio::test]
async fn each_wire_carries_the_key_its_own_way_and_a_wrong_key_is_auth_invalid() {
    for wire in Wire::ALL {
        let fake = FakeProvider::start(wire).await.unwrap();
        fake.expect_key("right-key");
        fake.set_default(FakeReply::text(wire, "hello there"));
        let good = built(&fake, wire, "right-key", ResetClock::UtcMidnight)
            .call(&request(ResponseFormat::Text))
            .await;
        assert_eq!(
            good.result.map(|a| a.text).ok().as_deref(),
            Some("hello there"),
            "{wire:?}"
        );
        let bad = built(&fake, wire, "wrong-key", ResetClock::UtcMidnight)
            .call(&request(ResponseFormat::Text))
            .await;
        assert_eq!(bad.result.unwrap_err().class, ErrorClass::AuthInvalid, "{wire:?}");
    }
}

#[tokio::test]
async fn gemini_native_request_asks_for_json_with_the_schema_and_falls_back_without_it() {
    let fake = FakeProvider::start(Wire::Gemini).await.unwrap();
    fake.expect_key("g-key");
    let provider = built(&fake, Wire::Gemini, "g-key", ResetClock::PacificMidnight);
    fake.push(FakeReply::gemini_text("plain"));
    assert_eq!(
        provider
            .call(&request(ResponseFormat::Text))
            .await
            .result
            .unwrap()
            .usage
            .output_tokens,
        80
    );
    let sent = &fake.requests()[0];
    assert_eq!(sent.path, "/v1beta/models/fake-model:generateContent");
    assert_eq!(sent.header("x-goog-api-key"), Some("g-key"));
    assert_eq!(sent.body["systemInstruction"], json!({"parts": [{"text": "be brief"}]}));
    assert_eq!(
        sent.body["contents"],
        json!([{"role": "user", "parts": [{"text": "hello"}]}])
    );
    assert_eq!(
        sent.body["generationConfig"],
        json!({"maxOutputTokens": 64, "temperature": 0.2f32})
    );

    let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]});
    fake.push(FakeReply::gemini_error(
        400,
        "INVALID_ARGUMENT",
        "Invalid JSON payload received. Unknown name \"responseJsonSchema\" at 'generation_config': Cannot find field.",
        json!([]),
    ));
    fake.set_default(FakeReply::gemini_text(r#"{"ok": true}"#));
    let wants = request(ResponseFormat::Json {
        schema: Some(std::sync::Arc::new(schema.clone())),
    });
    assert_eq!(provider.call(&wants).await.result.unwrap().text, r#"{"ok": true}"#);
    let sent = fake.requests();
    assert_eq!(sent[1].body["generationConfig"]["responseMimeType"], "application/json");
    assert_eq!(sent[1].body["generationConfig"]["responseJsonSchema"], schema);
    assert_eq!(sent[2].body["generationConfig"]["responseMimeType"], "application/json");
    assert!(
        sent[2].body["generationConfig"].get("responseJsonSchema").is_none(),
        "retried without the schema"
    );
    provider.call(&wants).await;
    assert!(
        fake.requests()[3].body["generationConfig"]
            .get("responseJsonSchema")
            .is_none(),
        "remembered"
    );
}

#[tokio::test]
async fn anthropic_and_cohere_requests_speak_their_formats() {
    let schema = json!({"type": "object", "required": ["ok"]});
    let wants = request(ResponseFormat::Json {
        schema: Some(std::sync::Arc::new(schema.clone())),
    });

    let fake = FakeProvider::start(Wire::Anthropic).await.unwrap();
    fake.set_default(FakeReply::anthropic_text(r#"{"ok": true}"#));
    let answer = built(&fake, Wire::Anthropic, "a-key", ResetClock::UtcMidnight)
        .call(&wants)
        .await
        .result
        .unwrap();
    assert_eq!(answer.usage.input_tokens, 120);
    let sent = &fake.requests()[0];
    assert_eq!(
        (
            sent.path.as_str(),
            sent.header("x-api-key"),
            sent.header("anthropic-version")
        ),
        ("/v1/messages", Some("a-key"), Some("2023-06-01"))
    );
    assert_eq!(sent.body["messages"], json!([{"role": "user", "content": "hello"}]));
    assert_eq!(sent.body["max_tokens"], 64);
    let system = sent.body["system"].as_str().unwrap();
    assert!(
        system.starts_with("be brief\n\n")
            && system.contains("single JSON object")
            && system.contains(&schema.to_string()),
        "{system}"
    );

    let fake = FakeProvider::start(Wire::Cohere).await.unwrap();
    fake.set_default(FakeReply::cohere_text(r#"{"ok": true}"#));
    built(&fake, Wire::Cohere, "c-key", ResetClock::UtcMidnight)
        .call(&wants)
        .await
        .result
        .unwrap();
    built(&fake, Wire::Cohere, "c-key", ResetClock::UtcMidnight)
        .call(&request(ResponseFormat::Text))
        .await
        .result
        .unwrap();
    let sent = fake.requests();
    assert_eq!(
        (sent[0].path.as_str(), sent[0].header("authorization")),
        ("/v2/chat", Some("Bearer c-key"))
    );
    assert_eq!(
        sent[0].body["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );
    assert_eq!(
        sent[0].body["response_format"],
        json!({"type": "json_object", "json_schema": schema})
    );
    assert!(
        sent[1].body.get("response_format").is_none(),
        "text jobs do not ask for JSON"
    );
}

#[tokio::test]
async fn a_custom_http_provider_fills_its_template_and_is_held_by_the_url_guard() {
    let fake = FakeProvider::start(Wire::Http).await.unwrap();
    fake.set_default(FakeReply::http_text("generated"));
    let wants = request(ResponseFormat::Json {
        schema: Some(std::sync::Arc::new(json!({"type": "object"}))),
    });
    let answer = built(&fake, Wire::Http, "h-key", ResetClock::UtcMidnight)
        .call(&wants)
        .await
        .result
        .unwrap();
    assert_eq!(answer.text, "generated");
    let sent = &fake.requests()[0];
    assert_eq!(sent.header("authorization"), Some("Bearer h-key"));
    assert_eq!(
        sent.body,
        json!({"inputs": "hello", "system": "be brief", "parameters": {"max_new_tokens": 64, "schema": {"type": "object"}}})
    );

    // Without the allow-list entry, a loopback endpoint is refused before any connection.
    let spec = ProviderSpec {
        name: "private".into(),
        wire: spec::Wire::Http(HttpShape {
            body_template: json!({}),
            response_path: JsonPath::parse("x").unwrap(),
            auth_header: "authorization".into(),
        }),
        base_url: fake.base_url(),
        model: String::new(),
        api_key: None,
        timeout_ms: 500,
        limits: ProviderLimits::default(),
        small_context: false,
    };
    let refused = spec::build(
        &spec,
        reqwest::Client::new(),
        &UrlGuard::new(&[]).unwrap(),
        &Default::default(),
    )
    .call(&wants)
    .await;
    let failure = refused.result.unwrap_err();
    assert_eq!(failure.class, ErrorClass::AuthInvalid);
    assert!(failure.message.starts_with("URL guard"), "{}", failure.message);
    assert_eq!(fake.hits(), 1, "the refused call never reached the endpoint");

    // Another header name carries the bare key; structured JSON at the path is handed on as JSON text.
    let origin = url::Url::parse(&fake.base_url())
        .unwrap()
        .origin()
        .ascii_serialization();
    let spec = ProviderSpec {
        api_key: Some(Secret::new("h-key")),
        wire: spec::Wire::Http(HttpShape {
            body_template: json!({"q": "{{prompt}}"}),
            response_path: JsonPath::parse("[0]").unwrap(),
            auth_header: "x-api-token".into(),
        }),
        ..spec
    };
    let guarded = spec::build(
        &spec,
        reqwest::Client::new(),
        &UrlGuard::new(&[origin]).unwrap(),
        &Default::default(),
    );
    fake.push(FakeReply::new(200, r#"[{"ok": true}]"#));
    assert_eq!(guarded.call(&wants).await.result.unwrap().text, r#"{"ok":true}"#);
    let sent = &fake.requests()[1];
    assert_eq!(
        (sent.header("x-api-token"), sent.header("authorization")),
        (Some("h-key"), None)
    );
}

/// One row: what the fake answers, the class it must become, and the retry hint when it carries one.
type Row = (FakeReply, ErrorClass, Option<RetryHint>);

async fn check_rows(wire: Wire, reset: ResetClock, rows: Vec<Row>) {
    let fake = FakeProvider::start(wire).await.unwrap();
    let provider = built(&fake, wire, "key", reset);
    for (reply, class, retry) in rows {
        let label = format!(
            "{wire:?} {} {}",
            reply.status,
            reply.body.chars().take(90).collect::<String>()
        );
        fake.push(reply);
        let failure = provider
            .call(&request(ResponseFormat::Text))
            .await
            .result
            .expect_err(&label);
        assert_eq!(
            (failure.class, failure.retry),
            (class, retry),
            "{label}: {}",
            failure.message
        );
    }
}

fn after(s: f64) -> Option<RetryHint> {
    Some(RetryHint::After(Duration::from_secs_f64(s)))
}

#[tokio::test]
async fn gemini_native_errors_are_classified() {
    let late = FakeReply::gemini_text("late").with_delay(Duration::from_millis(900));
    // Thinking models may return thought parts: only the answer's own parts are the text.
    let fake = FakeProvider::start(Wire::Gemini).await.unwrap();
    let thoughts = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "let me think", "thought": true}, {"text": "the answer"}]}, "finishReason": "STOP"}]});
    fake.push(FakeReply::new(200, thoughts.to_string()));
    let answer = built(&fake, Wire::Gemini, "key", ResetClock::PacificMidnight)
        .call(&request(ResponseFormat::Text))
        .await;
    assert_eq!(answer.result.unwrap().text, "the answer");

    check_rows(
        Wire::Gemini,
        ResetClock::PacificMidnight,
        vec![
            (
                FakeReply::gemini_rate_limited("47s"),
                ErrorClass::RateLimited,
                after(47.0),
            ),
            (
                FakeReply::gemini_rate_limited("45.8s"),
                ErrorClass::RateLimited,
                after(45.8),
            ),
            (
                FakeReply::gemini_daily_quota(),
                ErrorClass::QuotaExhausted,
                Some(RetryHint::NextReset(ResetClock::PacificMidnight)),
            ),
            (FakeReply::gemini_bad_key(), ErrorClass::AuthInvalid, None),
            (FakeReply::gemini_status(403), ErrorClass::AuthInvalid, None),
            (FakeReply::gemini_status(400), ErrorClass::BadRequest, None),
            (FakeReply::gemini_status(404), ErrorClass::Gone, None),
            (FakeReply::gemini_status(500), ErrorClass::Overloaded, None),
            (FakeReply::gemini_status(503), ErrorClass::Overloaded, None),
            (FakeReply::gemini_status(504), ErrorClass::Overloaded, None),
            (FakeReply::gemini_blocked("SAFETY"), ErrorClass::Filtered, None),
            (
                FakeReply::gemini_blocked("PROHIBITED_CONTENT"),
                ErrorClass::Filtered,
                None,
            ),
            (FakeReply::gemini_candidate("", "SAFETY"), ErrorClass::Filtered, None),
            (
                FakeReply::gemini_candidate("It was the best of times", "RECITATION"),
                ErrorClass::Filtered,
                None,
            ),
            (FakeReply::gemini_candidate("", "STOP"), ErrorClass::InvalidOutput, None),
            (
                FakeReply::new(200, "<html>oops</html>"),
                ErrorClass::InvalidOutput,
                None,
            ),
            (late, ErrorClass::Overloaded, None),
        ],
    )
    .await;
}

#[tokio::test]
async fn anthropic_errors_are_classified() {
    let broke = FakeReply::anthropic_error(400, "invalid_request_error", "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.");
    let spend = FakeReply::anthropic_error(
        403,
        "permission_error",
        "You have reached your specified API usage limits (enforced_spend_limit_reached).",
    );
    check_rows(
        Wire::Anthropic,
        ResetClock::UtcMidnight,
        vec![
            (
                FakeReply::anthropic_rate_limited(7),
                ErrorClass::RateLimited,
                after(7.0),
            ),
            (
                broke,
                ErrorClass::QuotaExhausted,
                Some(RetryHint::NextReset(ResetClock::UtcMidnight)),
            ),
            (
                spend,
                ErrorClass::QuotaExhausted,
                Some(RetryHint::NextReset(ResetClock::UtcMidnight)),
            ),
            (FakeReply::anthropic_status(529), ErrorClass::Overloaded, None),
            (FakeReply::anthropic_status(500), ErrorClass::Overloaded, None),
            (FakeReply::anthropic_status(401), ErrorClass::AuthInvalid, None),
            (FakeReply::anthropic_status(403), ErrorClass::AuthInvalid, None),
            (FakeReply::anthropic_status(400), ErrorClass::BadRequest, None),
            (FakeReply::anthropic_status(413), ErrorClass::BadRequest, None),
            (FakeReply::anthropic_status(404), ErrorClass::Gone, None),
            (FakeReply::anthropic_message("", "refusal"), ErrorClass::Filtered, None),
            // An error event relayed inside a 200 (proxies do this): classified as its error type says.
            (
                FakeReply::new(
                    200,
                    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                ),
                ErrorClass::Overloaded,
                None,
            ),
            (
                FakeReply::anthropic_message("", "end_turn"),
                ErrorClass::InvalidOutput,
                None,
            ),
        ],
    )
    .await;
    let fake = FakeProvider::start(Wire::Anthropic).await.unwrap();
    fake.push(FakeReply::anthropic_rate_limited(7));
    let report = built(&fake, Wire::Anthropic, "key", ResetClock::UtcMidnight)
        .call(&request(ResponseFormat::Text))
        .await;
    let reset = chrono::DateTime::parse_from_rfc3339("2026-11-25T10:00:30Z")
        .unwrap()
        .timestamp_millis() as u64;
    assert_eq!(
        (report.rate.requests_remaining, report.rate.requests_reset),
        (Some(0), Some(RetryHint::At(reset)))
    );
    fake.push(FakeReply::anthropic_message(r#"{"a": "#, "max_tokens"));
    let truncated = built(&fake, Wire::Anthropic, "key", ResetClock::UtcMidnight)
        .call(&request(ResponseFormat::Text))
        .await;
    assert_eq!(
        truncated.result.unwrap().finish,
        FinishReason::Length,
        "output validation decides on truncation"
    );
}

#[tokio::test]
async fn cohere_errors_are_classified() {
    check_rows(
        Wire::Cohere,
        ResetClock::UtcMidnight,
        vec![
            (FakeReply::cohere_trial_minute(), ErrorClass::RateLimited, None),
            (
                FakeReply::cohere_trial_minute().with_header("retry-after", "12"),
                ErrorClass::RateLimited,
                after(12.0),
            ),
            (
                FakeReply::cohere_trial_month(),
                ErrorClass::QuotaExhausted,
                Some(RetryHint::NextMonth),
            ),
            (
                FakeReply::cohere_status(402),
                ErrorClass::QuotaExhausted,
                Some(RetryHint::NextReset(ResetClock::UtcMidnight)),
            ),
            (FakeReply::cohere_status(401), ErrorClass::AuthInvalid, None),
            (FakeReply::cohere_status(400), ErrorClass::BadRequest, None),
            (FakeReply::cohere_status(422), ErrorClass::BadRequest, None),
            (FakeReply::cohere_status(404), ErrorClass::Gone, None),
            (FakeReply::cohere_status(500), ErrorClass::Overloaded, None),
            (FakeReply::cohere_status(503), ErrorClass::Overloaded, None),
            (FakeReply::cohere_chat("", "ERROR"), ErrorClass::Overloaded, None),
            (FakeReply::cohere_chat("", "COMPLETE"), ErrorClass::InvalidOutput, None),
        ],
    )
    .await;
}

#[tokio::test]
async fn custom_http_errors_are_classified() {
    check_rows(
        Wire::Http,
        ResetClock::UtcMidnight,
        vec![
            (
                FakeReply::status(Wire::Http, 429).with_header("retry-after", "3"),
                ErrorClass::RateLimited,
                after(3.0),
            ),
            (FakeReply::status(Wire::Http, 401), ErrorClass::AuthInvalid, None),
            (FakeReply::status(Wire::Http, 400), ErrorClass::BadRequest, None),
            (FakeReply::status(Wire::Http, 404), ErrorClass::Gone, None),
            (FakeReply::status(Wire::Http, 503), ErrorClass::Overloaded, None),
            (
                FakeReply::new(200, r#"{"unexpected": "shape"}"#),
                ErrorClass::InvalidOutput,
                None,
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn openai_compatible_variants_are_classified() {
    let gemini_daily = r#"[{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]}}]"#;
    let gemini_bad_key = r#"[{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT"}}]"#;
    let nvidia = r#"{"status":429,"title":"Too Many Requests","detail":"Rate limit exceeded"}"#;
    let cloudflare = r#"{"errors":[{"message":"AiError: daily free allocation of 10,000 neurons used up","code":3036}],"success":false}"#;
    let groq_tokens = r#"{"error":{"message":"Rate limit reached for model `llama-3.3-70b-versatile` on tokens per minute (TPM): Limit 12000, Used 11800. Please try again in 2m59.56s.","type":"tokens","code":"rate_limit_exceeded"}}"#;
    let daily = Some(RetryHint::NextReset(ResetClock::PacificMidnight));
    check_rows(
        Wire::OpenAi,
        ResetClock::PacificMidnight,
        vec![
            // OpenRouter's moderation refusal, Gemini's OpenAI endpoint (an error array), NVIDIA's problem details,
            // Cloudflare's daily neurons, Groq's "try again in" with a Go duration.
            (
                FakeReply::openai_error(403, "moderation", "403", "Your input was flagged by moderation"),
                ErrorClass::Filtered,
                None,
            ),
            (FakeReply::new(400, gemini_bad_key), ErrorClass::AuthInvalid, None),
            (FakeReply::new(429, gemini_daily), ErrorClass::QuotaExhausted, daily),
            (
                FakeReply::new(429, nvidia).with_header("content-type", "application/problem+json"),
                ErrorClass::RateLimited,
                None,
            ),
            (FakeReply::new(429, cloudflare), ErrorClass::QuotaExhausted, daily),
            (
                FakeReply::new(429, groq_tokens),
                ErrorClass::RateLimited,
                Some(RetryHint::After(Duration::from_millis(179_560))),
            ),
            (
                FakeReply::openai_error(
                    410,
                    "invalid_request_error",
                    "model_retired",
                    "This model has been retired",
                ),
                ErrorClass::Gone,
                None,
            ),
        ],
    )
    .await;
}
