//! Routes and handlers. Each handler: authenticate, parse, one call of a use case (`app/mod.rs`: one store
//! call that also counts the request against its owner's limits; two for a new job, the create and the
//! first step message), then the view of its answer (`views.rs`) or its error (`errors.rs`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::Request;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{from_fn, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::caps;
use super::dashboard;
pub use super::endpoints::{Endpoint, Function};
use super::errors::ApiError;
use super::limits::{insert_policy, with_rate};
use super::openapi;
use super::views::{self, JobView, LiveWord, PurgedJob, PurgedReport, QueuedJob};
use crate::app::{Counted, Immediate, SubmitOutcome, IMMEDIATE_WAIT};
use crate::domain::batch::is_valid_batch_id;
use crate::domain::job::is_valid_job_id;
use crate::domain::presets::batch::{self, BatchRefusal};
use crate::domain::presets::commit_report::{report_identity, ReportRequest};
use crate::domain::presets::generic::GenerateRequest;
use crate::domain::presets::{Preset, Submission};
// Up, on purpose: a router's state is the Service the wiring (service.rs) built once per process.
use crate::wiring::service::Service;

/// Largest request body accepted (a report with a large diff fits; Lambda's own cap is 6 MB).
pub(crate) const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

type AppState = Arc<Service>;

/// The handler of one route, with its body limit or its refusal of bodies.
/// Which routes a router serves, as a const parameter: `EVERY` (stepper-local) or one [`Function`]'s
/// number. Each arm of [`handler`] is guarded by a constant, so a Lambda function's binary holds only its
/// own handlers — the others are not even compiled into it (the poll function carried the submit path's
/// request types and schemas while the filter was a run-time closure).
const EVERY: u8 = u8::MAX;

const fn serves(selection: u8, endpoint: Endpoint) -> bool {
    selection == EVERY || selection == endpoint.function() as u8
}

/// The handler of `endpoint` when the router `S` serves it.
fn handler<const S: u8>(endpoint: Endpoint, service: &Service) -> Option<MethodRouter<AppState>> {
    use Endpoint as E;
    Some(match endpoint {
        E::SubmitReport if const { serves(S, E::SubmitReport) } => {
            post(submit::<ReportRequest>).layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        }
        E::SubmitGeneric if const { serves(S, E::SubmitGeneric) } => {
            post(submit::<GenerateRequest>).layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        }
        E::ReportImmediate if const { serves(S, E::ReportImmediate) } => {
            post(immediate::<ReportRequest>).layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        }
        E::GenerateImmediate if const { serves(S, E::GenerateImmediate) } => {
            post(immediate::<GenerateRequest>).layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        }
        E::GenerateBatch if const { serves(S, E::GenerateBatch) } => {
            post(submit_batch).layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        }
        E::ServiceInfo if const { serves(S, E::ServiceInfo) } => {
            // Built once, when the router is built: it reads no store and needs no key.
            let info = Bytes::from(serde_json::to_string(&service_info(service)).unwrap_or_default());
            get(move || std::future::ready(([(header::CONTENT_TYPE, "application/json")], info)))
                .layer(from_fn(caps::bodyless))
        }
        E::PollReport if const { serves(S, E::PollReport) } => get(poll).layer(from_fn(caps::bodyless)),
        E::PollJob if const { serves(S, E::PollJob) } => get(poll).layer(from_fn(caps::bodyless)),
        E::PurgeReport if const { serves(S, E::PurgeReport) } => delete(purge_report).layer(from_fn(caps::bodyless)),
        E::PurgeJob if const { serves(S, E::PurgeJob) } => delete(purge_job).layer(from_fn(caps::bodyless)),
        E::Redeliver if const { serves(S, E::Redeliver) } => post(redeliver).layer(from_fn(caps::bodyless)),
        E::Health if const { serves(S, E::Health) } => get(health).layer(from_fn(caps::bodyless)),
        E::Ready if const { serves(S, E::Ready) } => get(ready).layer(from_fn(caps::bodyless)),
        E::Providers if const { serves(S, E::Providers) } => get(providers).layer(from_fn(caps::bodyless)),
        E::Budget if const { serves(S, E::Budget) } => get(budget).layer(from_fn(caps::bodyless)),
        E::OpenApi if const { serves(S, E::OpenApi) } => {
            // Serialised once, when the router is built; every request shares the bytes.
            let document = Bytes::from(openapi::document(service.keys.header_name()).to_string());
            get(move || std::future::ready(([(header::CONTENT_TYPE, "application/json")], document)))
        }
        E::JobsOverview if const { serves(S, E::JobsOverview) } => get(jobs_overview).layer(from_fn(caps::bodyless)),
        E::Dashboard if const { serves(S, E::Dashboard) } => {
            // Rendered once, when the router is built: the page touches no store and needs no key.
            let page = dashboard::Page::render(service.keys.header_name());
            get(move || std::future::ready(page.response())).layer(from_fn(caps::bodyless))
        }
        _ => return None,
    })
}

/// Every route, for `stepper-local`.
pub fn router(service: Arc<Service>) -> Router {
    routes::<EVERY>(service)
}

/// `POST /v1/reports`, `POST /v1/generate`, `POST /v1/jobs/{jobId}/deliveries/redeliver` (the submit
/// function: every route that queues work).
pub fn submit_routes(service: Arc<Service>) -> Router {
    routes::<{ Function::Submit as u8 }>(service)
}

/// Polls, health, provider status, the budget and `/openapi.json` (the poll function).
pub fn poll_routes(service: Arc<Service>) -> Router {
    routes::<{ Function::Poll as u8 }>(service)
}

/// Purges by commit and by id (the purge function).
pub fn purge_routes(service: Arc<Service>) -> Router {
    routes::<{ Function::Purge as u8 }>(service)
}

fn routes<const S: u8>(service: Arc<Service>) -> Router {
    let router = Endpoint::ALL.into_iter().fold(Router::new(), |router, e| {
        let Some(handler) = handler::<S>(e, &service) else {
            return router;
        };
        // Store requests and Redis commands made while serving it carry the route's label.
        let label = e.metric_route();
        let handler = handler.layer(from_fn(move |request: Request, next: Next| {
            crate::ports::metrics::in_route(label, next.run(request))
        }));
        router.route(e.path(), handler)
    });
    // Header caps cover every route and the fallbacks; a known path with another method is a JSON 405.
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn(caps::header_caps))
        .with_state(service)
}

async fn not_found() -> ApiError {
    ApiError::RouteNotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

fn authenticate(service: &Service, headers: &HeaderMap) -> Result<String, ApiError> {
    service.keys.owner(headers).map_err(|rejection| ApiError::Unauthorized {
        rejection,
        header: service.keys.header_name().to_string(),
    })
}

fn parse_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge { limit: MAX_BODY_BYTES },
        _ => ApiError::InvalidJson(rejection.body_text()),
    })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        // serde_json stops at 128 levels, before our own cap can name the path.
        if e.to_string().starts_with("recursion limit exceeded") {
            let message = format!("nests arrays and objects deeper than {} levels", caps::MAX_DEPTH);
            return ApiError::Field(crate::domain::presets::FieldError::new("body", message));
        }
        ApiError::InvalidJson(format!("malformed JSON: {e}"))
    })?;
    if !value.is_object() {
        return Err(ApiError::InvalidJson("expected a JSON object".into()));
    }
    caps::check_shape(&value)?;
    Ok(value)
}

/// `POST /v1/reports`, `POST /v1/generate`: one handler for every preset. Reads the body as the preset's
/// fields, checks its delivery targets, then creates the job.
async fn submit<P: Preset>(
    State(service): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let owner = authenticate(&service, &headers)?;
    let submission = Submission::of(&P::parse(parse_body(body)?)?);
    submit_parsed(&service, owner, submission, P::STATUS_PREFIX).await
}

/// The answer of a counted call: its view, or the refusal found after the count, with the owner's rate
/// fields either way.
fn counted<T>(counted: Counted<T>, view: impl FnOnce(T) -> Response) -> Response {
    let answer = match counted.outcome {
        Ok(value) => view(value),
        Err(e) => ApiError::from(e).into_response(),
    };
    with_rate(answer, counted.rate)
}

/// Submits a parsed job request; `status_prefix` is where its status is polled (`/v1/jobs/`).
async fn submit_parsed(
    service: &Service,
    owner: String,
    submission: Submission,
    status_prefix: &str,
) -> Result<Response, ApiError> {
    let submitted = service.jobs().submit(owner, submission).await?;
    Ok(counted(submitted, |submitted| match submitted {
        SubmitOutcome::Queued { job_id, eta } => {
            let queued = QueuedJob::new(&job_id, status_prefix, eta);
            (StatusCode::ACCEPTED, Json(queued)).into_response()
        }
        SubmitOutcome::Cached { result, .. } => (StatusCode::OK, Json(views::cached(&result))).into_response(),
    }))
}

/// `POST /v1/generate/immediate`, `POST /v1/reports/immediate`: submits the job, then waits for it up
/// to [`IMMEDIATE_WAIT`]: 200 with the result, 502 when it failed, 202 with the job to poll past the wait.
async fn immediate<P: Preset>(
    State(service): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let owner = authenticate(&service, &headers)?;
    let submission = Submission::of(&P::parse(parse_body(body)?)?);
    let waited = service
        .jobs()
        .submit_and_wait(owner, submission, IMMEDIATE_WAIT)
        .await?;
    Ok(counted(waited, |outcome| match outcome {
        Immediate::Finished { job, cached } => match views::immediate(&job, cached) {
            Ok(answer) => Json(answer).into_response(),
            Err(failed) => (StatusCode::BAD_GATEWAY, Json(failed)).into_response(),
        },
        Immediate::Pending { job_id, eta } => (
            StatusCode::ACCEPTED,
            Json(QueuedJob::new(&job_id, P::STATUS_PREFIX, eta)),
        )
            .into_response(),
    }))
}

/// `POST /v1/generate/batch`: every item a job of its own, one batch id to poll.
async fn submit_batch(
    State(service): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let owner = authenticate(&service, &headers)?;
    let batch = batch::parse(parse_body(body)?).map_err(|refusal| match refusal {
        BatchRefusal::Envelope(e) => ApiError::Field(e),
        BatchRefusal::Items(errors) => ApiError::BatchItems(errors),
    })?;
    let submitted = service.jobs().submit_batch(owner, batch).await?;
    Ok(counted(submitted, |b| {
        let view = views::batch_queued(&b.batch_id, b.item_count, b.concurrency);
        (StatusCode::ACCEPTED, Json(view)).into_response()
    }))
}

/// `GET /`'s answer: the routes from the one table, the security this deployment runs with.
fn service_info(service: &Service) -> views::ServiceInfo {
    views::ServiceInfo {
        service: "stepper".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        contract_version: views::Version::CURRENT,
        endpoints: Endpoint::ALL
            .into_iter()
            .map(|e| (format!("{} {}", e.method(), e.path()), e.summary().to_string()))
            .collect(),
        security: views::SecurityInfo {
            cors: false,
            rate_limit: service.engine.settings().limits.rate.default.is_some()
                || service
                    .engine
                    .settings()
                    .limits
                    .rate
                    .overrides
                    .values()
                    .any(Option::is_some),
            helmet: false,
            api_key_required: !service.keys.is_open(),
        },
    }
}

/// The `{jobId}` of a path, checked after the key: a segment that does not even decode, or is no job
/// id, names no job (the same 404 as an unknown id).
fn job_id_in(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.ok()
        .map(|Path(id)| id)
        .filter(|id| is_valid_job_id(id))
        .ok_or(ApiError::JobNotFound)
}

/// `GET /v1/jobs/{id}`, `GET /v1/reports/{id}`: a job, or a batch when the id is a batch's (a UUID).
async fn poll(
    State(service): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let owner = authenticate(&service, &headers)?;
    if let Ok(Path(id)) = &path {
        if is_valid_batch_id(id) {
            let polled = service.jobs().poll_batch(&owner, id).await?;
            return Ok(counted(polled, |read| Json(views::batch_status(&read)).into_response()));
        }
    }
    let job_id = job_id_in(path)?;
    let polled = service.jobs().poll(&owner, &job_id).await?;
    Ok(counted(polled, |p| {
        Json::<JobView>(views::job_status(&p.job, p.running, p.eta)).into_response()
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PurgeQuery {
    user_id: Option<String>,
    commit_sha: Option<String>,
    template: Option<String>,
}

async fn purge_report(
    State(service): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<PurgeQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let owner = authenticate(&service, &headers)?;
    let Query(query) = query.map_err(|_| ApiError::MissingPurgeParameters)?;
    let (Some(user_id), Some(commit_sha)) = (
        query.user_id.filter(|s| !s.is_empty()),
        query.commit_sha.filter(|s| !s.is_empty()),
    ) else {
        return Err(ApiError::MissingPurgeParameters);
    };
    let identity = report_identity(&user_id, &commit_sha, query.template.as_deref());
    let purged = service.jobs().purge_identity(&owner, &identity).await?;
    Ok(counted(purged, |deleted| {
        Json(PurgedReport {
            success: true,
            message: "Cache entry deleted".into(),
            deleted,
        })
        .into_response()
    }))
}

async fn purge_job(
    State(service): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let owner = authenticate(&service, &headers)?;
    let job_id = job_id_in(path)?;
    let purged = service.jobs().purge(&owner, &job_id).await?;
    Ok(counted(purged, |()| {
        Json(PurgedJob {
            success: true,
            message: "Job deleted".into(),
        })
        .into_response()
    }))
}

/// `POST /v1/jobs/{jobId}/deliveries/redeliver`: sends the job's dead (and failed, waiting) deliveries
/// again now (`Jobs::redeliver`).
async fn redeliver(
    State(service): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let owner = authenticate(&service, &headers)?;
    let job_id = job_id_in(path)?;
    let redelivered = service.jobs().redeliver(&owner, &job_id).await?;
    Ok(counted(redelivered, |r| {
        (StatusCode::ACCEPTED, Json(views::redelivered(&r.job, r.due))).into_response()
    }))
}

/// `GET /health`: no key needed; up and the store reachable, or 503. At most one store request per
/// instance per ten seconds, however often it is called.
async fn health(State(service): State<AppState>) -> Response {
    let answer = views::liveness(service.jobs().store_check().await);
    let status = match answer.status {
        LiveWord::Healthy => StatusCode::OK,
        LiveWord::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(answer)).into_response()
}

/// `GET /ready`: no key needed, no store request; 503 once the instance drains before it stops.
async fn ready(State(service): State<AppState>) -> Response {
    if service.is_draining() {
        let answer = views::Readiness {
            status: views::ReadyWord::Draining,
        };
        (StatusCode::SERVICE_UNAVAILABLE, Json(answer)).into_response()
    } else {
        Json(views::Readiness {
            status: views::ReadyWord::Ready,
        })
        .into_response()
    }
}

/// `GET /v1/providers`: the health summary plus each provider's shared quota state (scrubbed of every
/// configured secret where it came from a provider). Like `/health`, it is not counted (it reads no
/// job); it announces the owner's policy.
async fn providers(State(service): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let owner = authenticate(&service, &headers)?;
    let jobs = service.jobs();
    let states = jobs.provider_states().await;
    let mut answer = Json::<views::Health>(views::health(&states)).into_response();
    if let Some(limit) = jobs.rate_limit(&owner) {
        insert_policy(answer.headers_mut(), limit);
    }
    Ok(answer)
}

/// `GET /v1/jobs`: the owner's jobs at a glance (the dashboard's data). One store request, counted like
/// a poll.
async fn jobs_overview(State(service): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let owner = authenticate(&service, &headers)?;
    let read = service.jobs().overview(&owner).await?;
    Ok(counted(read, |r| {
        Json(views::jobs_overview(&r.overview, r.now_ms, &r.etas)).into_response()
    }))
}

/// `GET /v1/budget`: what the key's owner spent on Upstash, Lambda and SQS (the whole deployment and every
/// owner for `STEPPER_ADMIN_OWNER`), and the month's projection against the free tiers (budget.rs). One
/// store request, counted in the figures it reads; not counted against the owner's rate limit (like
/// `/v1/providers`).
async fn budget(State(service): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let owner = authenticate(&service, &headers)?;
    let read = service.jobs().budget(&owner).await?;
    let answer = views::budget(&owner, read.deployment, &read.spent, read.now_ms);
    Ok(Json(answer).into_response())
}
