//! Requests through a router in process, with no listener: what the tests' scenarios and the Lambda
//! functions' tests send to `shared::api`'s routers.

use axum::body::Body;
use axum::Router;
use http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

/// One request through `router`: `body` sent as JSON, `key` as `x-api-key` when given. Answers the
/// status and the body read as JSON (`Null` when it is not JSON).
pub async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let request = request
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
        .expect("a valid request");
    let response = router.clone().oneshot(request).await.expect("a router answers");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("an answer under 1 MiB");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}
