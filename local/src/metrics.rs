//! `GET /metrics`: the process's metrics (`shared::ports::metrics`) in Prometheus text, rendered from the
//! recorder on each scrape, on the API's own port. Open on loopback unless `METRICS_TOKEN` is set;
//! then it wants `Authorization: Bearer <METRICS_TOKEN>` (owners' names are operator data).

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How often histograms are drained between scrapes, so memory stays bounded without one.
const UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the Prometheus recorder for the whole process; histograms get their buckets.
pub(crate) fn install() -> anyhow::Result<PrometheusHandle> {
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in shared::ports::metrics::HISTOGRAM_BUCKETS {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.to_string()), buckets)?;
    }
    let handle = builder.install_recorder()?;
    shared::ports::metrics::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// The route, with the token it wants (`None`: open).
pub(crate) fn routes(handle: PrometheusHandle, token: Option<String>) -> Router {
    let digest = token.map(|t| Sha256::digest(t.as_bytes()));
    Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let handle = handle.clone();
            async move { scrape(&handle, digest.as_ref().map(|d| d.as_slice()), &headers) }
        }),
    )
}

fn scrape(handle: &PrometheusHandle, digest: Option<&[u8]>, headers: &HeaderMap) -> Response {
    if let Some(expected) = digest {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(|t| Sha256::digest(t.as_bytes()));
        let allowed = given.is_some_and(|g| bool::from(g.as_slice().ct_eq(expected)));
        if !allowed {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(serde_json::json!({
                    "error": "Unauthorized",
                    "code": "unauthorized",
                    "message": "GET /metrics wants Authorization: Bearer <METRICS_TOKEN>",
                })),
            )
                .into_response();
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
        .into_response()
}
