//! Property tests over the HTTP handlers, in process (the shared router on the in-memory store): any bytes,
//! any JSON, any headers, on every route. Never a 5xx, never a panic, every refusal a JSON error with a code,
//! and no owner ever sees or deletes another owner's job. Case counts are bounded so this runs in the normal
//! test command; the long schema-driven run against a real `stepper-local` is `stepper-fuzz`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use shared::adapters::providers::spec::{ProviderSpec, Wire};
use shared::app::auth::ApiKeys;
use shared::domain::message::Message;
use shared::domain::quota::ProviderLimits;
use shared::domain::secret::Secret;
use shared::engine::settings::Settings;
use shared::ports::{Queue, QueueError};
use shared::wiring::config::Config;
use tower::ServiceExt;

/// Accepts step messages and drops them: these tests are about the HTTP face, not the steps.
struct DroppingQueue;

#[async_trait]
impl Queue for DroppingQueue {
    async fn send(&self, _message: &Message, _delay: Duration) -> Result<(), QueueError> {
        Ok(())
    }
}

const ALICE: &str = "alice-key";
const BOB: &str = "bob-key";

fn router() -> Router {
    let provider = ProviderSpec {
        name: "nowhere".into(),
        wire: Wire::OpenAi {
            headers: Default::default(),
        },
        base_url: "http://127.0.0.1:9/v1".into(),
        model: "m".into(),
        api_key: Some(Secret::new("k")),
        timeout_ms: 1_000,
        limits: ProviderLimits::default(),
        small_context: false,
    };
    let config = Config {
        settings: Settings::default(),
        keys: ApiKeys::parse(&format!("alice={ALICE},bob={BOB}"), "x-api-key").unwrap(),
        providers: vec![provider],
        providers_source: "the fuzz tests".into(),
        upstash: None,
        step_queue_url: None,
        server: Default::default(),
        http: Default::default(),
    };
    let service = shared::wiring::service::build(&config, Arc::new(DroppingQueue)).unwrap();
    shared::api::routes::router(Arc::new(service))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 8 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Every answer is below 500, and every refusal says why in JSON.
fn check_answer(status: StatusCode, body: &Value) -> Result<(), TestCaseError> {
    prop_assert!(status.as_u16() < 500, "server error {status}: {body}");
    if status.is_client_error() {
        let code = body
            .pointer("/error/code")
            .or_else(|| body.get("code"))
            .or_else(|| body.get("error"));
        prop_assert!(code.is_some(), "{status} without an error code: {body}");
    }
    Ok(())
}

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/reports"),
    ("POST", "/v1/generate"),
    ("GET", "/v1/reports/0123456789abcdef0123456789abcdef"),
    ("GET", "/v1/jobs/0123456789abcdef0123456789abcdef"),
    ("DELETE", "/v1/reports?userId=u&commitSha=abc"),
    ("DELETE", "/v1/jobs/0123456789abcdef0123456789abcdef"),
    ("GET", "/health"),
    ("GET", "/v1/providers"),
    ("PUT", "/v1/reports"),
    ("GET", "/v1/nothing-here"),
];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("[a-zA-Z]{1,12}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

const REPORT_FIELDS: &[&str] = &[
    "userId",
    "commitSha",
    "repo",
    "message",
    "files",
    "components",
    "diffSummary",
    "template",
    "deadlineSeconds",
    "callbackUrl",
    "callbacks",
];
const GENERATE_FIELDS: &[&str] = &[
    "prompt",
    "messages",
    "responseMode",
    "outputSchema",
    "maxTokens",
    "temperature",
    "cacheKey",
    "payload",
    "metadata",
    "deadlineSeconds",
    "callbackUrl",
];

fn valid_report() -> Map<String, Value> {
    json!({"userId": "u1", "commitSha": "abc123", "repo": "r", "message": "fix", "files": ["a.rs"], "components": []})
        .as_object()
        .cloned()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_on_any_route(route in 0..ROUTES.len(), body in prop::collection::vec(any::<u8>(), 0..512), key in prop_oneof![Just(ALICE), Just(BOB), Just("wrong"), Just("")]) {
        let rt = runtime();
        let app = router();
        let (method, uri) = ROUTES[route];
        let request = Request::builder().method(method).uri(uri).header("x-api-key", key)
            .header("content-type", "application/json").body(Body::from(body)).unwrap();
        let (status, answer) = rt.block_on(send(&app, request));
        check_answer(status, &answer)?;
    }

    #[test]
    fn any_json_in_a_submit(body in any_json(), generic in any::<bool>()) {
        let rt = runtime();
        let app = router();
        let uri = if generic { "/v1/generate" } else { "/v1/reports" };
        let request = Request::post(uri).header("x-api-key", ALICE).header("content-type", "application/json")
            .body(Body::from(body.to_string())).unwrap();
        let (status, answer) = rt.block_on(send(&app, request));
        check_answer(status, &answer)?;
    }

    /// A valid request with one field replaced by anything: the parser's every branch, never a 5xx.
    #[test]
    fn one_field_of_a_valid_request_set_to_anything(field in 0..REPORT_FIELDS.len().max(GENERATE_FIELDS.len()), value in any_json(), generic in any::<bool>()) {
        let rt = runtime();
        let app = router();
        let (uri, mut body) = if generic {
            let mut b = Map::new();
            b.insert("prompt".into(), json!("summarise this"));
            ("/v1/generate", (b, GENERATE_FIELDS[field % GENERATE_FIELDS.len()]))
        } else {
            ("/v1/reports", (valid_report(), REPORT_FIELDS[field % REPORT_FIELDS.len()]))
        };
        body.0.insert(body.1.to_string(), value);
        let request = Request::post(uri).header("x-api-key", ALICE).header("content-type", "application/json")
            .body(Body::from(Value::Object(body.0).to_string())).unwrap();
        let (status, answer) = rt.block_on(send(&app, request));
        check_answer(status, &answer)?;
    }

    #[test]
    fn any_headers(headers in prop::collection::vec(("[a-zA-Z][a-zA-Z0-9-]{0,30}", "[ -~]{0,200}"), 0..40), route in 0..ROUTES.len()) {
        let rt = runtime();
        let app = router();
        let (method, uri) = ROUTES[route];
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in &headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let body = if method == "POST" { valid_report_body() } else { String::new() };
        let (status, answer) = rt.block_on(send(&app, request.body(Body::from(body)).unwrap()));
        check_answer(status, &answer)?;
    }

    /// Bob, with any request naming Alice's job, neither reads nor deletes it.
    #[test]
    fn another_owner_never_sees_or_deletes_a_job(route in 0..4usize, via_bearer in any::<bool>()) {
        let rt = runtime();
        let app = router();
        rt.block_on(async {
            let submit = Request::post("/v1/reports").header("x-api-key", ALICE).header("content-type", "application/json")
                .body(Body::from(valid_report_body())).unwrap();
            let (status, created) = send(&app, submit).await;
            prop_assert_eq!(status, StatusCode::ACCEPTED);
            let id = created["jobId"].as_str().unwrap().to_string();
            let (method, uri) = [
                ("GET", format!("/v1/reports/{id}")),
                ("GET", format!("/v1/jobs/{id}")),
                ("DELETE", format!("/v1/jobs/{id}")),
                ("DELETE", "/v1/reports?userId=u1&commitSha=abc123".to_string()),
            ][route].clone();
            let request = Request::builder().method(method).uri(&uri);
            let request = if via_bearer { request.header("authorization", format!("Bearer {BOB}")) } else { request.header("x-api-key", BOB) };
            let (status, answer) = send(&app, request.body(Body::empty()).unwrap()).await;
            if route == 3 {
                // Purge by commit answers as the contract says, deleting nothing of another owner's.
                prop_assert_eq!((status, &answer["deleted"]), (StatusCode::OK, &json!(false)), "{}", answer);
            } else {
                prop_assert_eq!(status, StatusCode::NOT_FOUND, "{} {} as bob: {}", method, uri, answer);
            }
            let mine = Request::get(format!("/v1/jobs/{id}")).header("x-api-key", ALICE).body(Body::empty()).unwrap();
            let (status, _) = send(&app, mine).await;
            prop_assert_eq!(status, StatusCode::OK, "alice's job survived");
            Ok(())
        })?;
    }
}

fn valid_report_body() -> String {
    Value::Object(valid_report()).to_string()
}
