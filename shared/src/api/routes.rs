//! Routes and handlers. Each handler: authenticate, parse, one store call that also counts the request
//! against its owner's limits (two calls for a new job: the create and the first step message), answer.

use std::sync::Arc;
use std::time::Duration;

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
use super::errors::ApiError;
use super::limits::{admitted, insert_policy, with_rate};
pub use super::endpoints::{Endpoint, Function};
use super::openapi;
use super::views::{self, JobView, LiveWord, PurgedJob, PurgedReport, QueuedJob};
use crate::job::{is_valid_job_id, job_id, new_gen, Job, JobSpec, JobState};
use crate::message::Message;
use crate::ports::{Created, OverviewBounds};
use crate::presets::commit_report::{report_identity, ReportRequest};
use crate::presets::generic::GenerateRequest;
use crate::presets::Preset;
use crate::service::Service;
use crate::targets::{self, Target, TargetKind};

/// Largest request body accepted (a report with a large diff fits; Lambda's own cap is 6 MB).
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

type AppState = Arc<Service>;

/// The handler of one route, with its body limit or its refusal of bodies.
fn handler(endpoint: Endpoint, service: &Service) -> MethodRouter<AppState> {
    match endpoint {
        Endpoint::SubmitReport => post(submit::<ReportRequest>).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        Endpoint::SubmitGeneric => post(submit::<GenerateRequest>).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        Endpoint::PollReport | Endpoint::PollJob => get(poll).layer(from_fn(caps::bodyless)),
        Endpoint::PurgeReport => delete(purge_report).layer(from_fn(caps::bodyless)),
        Endpoint::PurgeJob => delete(purge_job).layer(from_fn(caps::bodyless)),
        Endpoint::Redeliver => post(redeliver).layer(from_fn(caps::bodyless)),
        Endpoint::Health => get(health).layer(from_fn(caps::bodyless)),
        Endpoint::Providers => get(providers).layer(from_fn(caps::bodyless)),
        Endpoint::Budget => get(budget).layer(from_fn(caps::bodyless)),
        Endpoint::OpenApi => {
            // Serialised once, when the router is built; every request shares the bytes.
            let document = Bytes::from(openapi::document(service.keys.header_name()).to_string());
            get(move || std::future::ready(([(header::CONTENT_TYPE, "application/json")], document)))
        }
        Endpoint::JobsOverview => get(jobs_overview).layer(from_fn(caps::bodyless)),
        Endpoint::Dashboard => {
            // Rendered once, when the router is built: the page touches no store and needs no key.
            let page = dashboard::Page::render(service.keys.header_name());
            get(move || std::future::ready(page.response())).layer(from_fn(caps::bodyless))
        }
    }
}

/// Every route, for `stepper-local`.
pub fn router(service: Arc<Service>) -> Router {
    routes(service, |_| true)
}

/// `POST /v1/reports`, `POST /v1/generate`, `POST /v1/jobs/{jobId}/deliveries/redeliver` (the submit
/// function: every route that queues work).
pub fn submit_routes(service: Arc<Service>) -> Router {
    routes(service, |f| f == Function::Submit)
}

/// Polls, health, provider status, the budget and `/openapi.json` (the poll function).
pub fn poll_routes(service: Arc<Service>) -> Router {
    routes(service, |f| f == Function::Poll)
}

/// Purges by commit and by id (the purge function).
pub fn purge_routes(service: Arc<Service>) -> Router {
    routes(service, |f| f == Function::Purge)
}

fn routes(service: Arc<Service>, serves: impl Fn(Function) -> bool) -> Router {
    let router = Endpoint::ALL
        .into_iter()
        .filter(|e| serves(e.function()))
        .fold(Router::new(), |router, e| {
            // Store requests and Redis commands made while serving it carry the route's label.
            let label = e.metric_route();
            let handler = handler(e, &service).layer(from_fn(move |request: Request, next: Next| {
                crate::metrics::in_route(label, next.run(request))
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
            return ApiError::Field(crate::presets::FieldError::new("body", message));
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
    let request = P::parse(parse_body(body)?)?;
    let mut spec = request.spec();
    check_targets(&service, &owner, &mut spec.targets)?;
    create_job(
        &service,
        owner,
        request.identity(),
        spec,
        request.deadline_seconds(),
        P::STATUS_PREFIX,
    )
    .await
}

/// Refuses, before anything is stored, callback URLs that are unsafe on their face, and a webhook
/// nobody could verify because its owner has no secret; gives webhooks the configured retry policy.
fn check_targets(service: &Service, owner: &str, targets: &mut [Target]) -> Result<(), ApiError> {
    let mut callback_index = 0;
    for target in targets {
        let field = match target.kind {
            TargetKind::Webhook => {
                target.max_attempts = service.engine.settings.webhook_max_attempts;
                target.backoff_ms = service.engine.settings.webhook_backoff_ms;
                target.schedule_ms = service.engine.settings.webhook_schedule_ms.clone();
                "callbackUrl".to_string()
            }
            TargetKind::Callback => {
                callback_index += 1;
                format!("callbacks[{}].url", callback_index - 1)
            }
        };
        let settings = &service.engine.settings;
        if let Err(e) = settings.url_guard.check(&target.url) {
            return Err(ApiError::InvalidCallbackUrl {
                field,
                message: e.to_string(),
            });
        }
        if target.kind == TargetKind::Webhook && !settings.webhook_secrets.contains_key(owner) {
            return Err(ApiError::InvalidCallbackUrl {
                field,
                message: "no webhook secret is configured for this key's owner (STEPPER_WEBHOOK_SECRETS), so the \
                          webhook could not be signed"
                    .into(),
            });
        }
    }
    Ok(())
}

/// Creates the job (or meets the identical one) and queues its first step.
async fn create_job(
    service: &Service,
    owner: String,
    identity: String,
    spec: JobSpec,
    deadline_seconds: Option<u64>,
    status_prefix: &str,
) -> Result<Response, ApiError> {
    let engine = &service.engine;
    let now = engine.clock.now_ms();
    let deadline_ms = now + deadline_seconds.map_or(engine.settings.default_deadline_ms, |s| s * 1000);
    let job = Job {
        id: job_id(&owner, &identity),
        owner,
        gen: new_gen(),
        seq: 1,
        state: JobState::Queued,
        spec,
        created_at_ms: now,
        deadline_ms,
        next_attempt_at_ms: None,
        attempts: Vec::new(),
        result: None,
        error: None,
        finished_at_ms: None,
        expires_at_ms: deadline_ms + engine.settings.unfinished_margin_ms,
        deliveries: Vec::new(),
    };
    let limits = engine.settings.limits.for_owner(&job.owner);
    // The create puts the job in the due-index in the same command: whatever happens next (a queue
    // error, a timeout of the answer, a crash), a job that exists is due and the sweeper runs it.
    let created = match engine.store.create(&job, &engine.enlist(), limits).await {
        Ok(created) => created,
        Err(e) => {
            // The store may have written the job (and armed a sweeper) without our hearing it: a
            // sweep that takes the sweeper over makes sure a job that exists runs.
            engine.rescue_sweeper().await;
            return Err(e.into());
        }
    };
    let (submitted, rate) = admitted(&job.owner, created)?;
    if let Some(token) = submitted.arm_sweeper {
        // Should this send fail, the armed token lapses after two grace periods and the next
        // submit arms a sweeper again.
        if let Err(e) = engine.start_sweeper(token).await {
            tracing::warn!(job_id = %job.id, error = %e, "could not start the sweeper");
        }
    }
    let eta = |job: &Job| views::Eta::of(engine.eta(job, &submitted.standing, false), engine.clock.now_ms());
    let answer = match &submitted.created {
        Created::New => {
            let first = Message::Step {
                step: job.step_ref(),
                not_before_ms: None,
            };
            if let Err(e) = engine.queue.send(&first, Duration::ZERO).await {
                // Leave no job that nothing will ever step: undo the create (uncounted: it is ours, not
                // the caller's), tell the caller to retry. Should the undo fail too, the job is due in
                // the index and the sweeper runs it.
                if let Err(undo) = engine.store.purge(&job.owner, &job.id, None).await {
                    tracing::error!(job_id = %job.id, error = %undo, "could not undo a job whose first step was not queued");
                }
                return Err(e.into());
            }
            tracing::info!(job_id = %job.id, owner = %job.owner, "job submitted");
            crate::metrics::submitted(&job.spec, &job.owner, crate::metrics::Submitted::New);
            let queued = QueuedJob::new(&job.id, status_prefix, eta(&job));
            (StatusCode::ACCEPTED, Json(queued)).into_response()
        }
        Created::Existing(existing) => {
            let met = if existing.state.is_finished() {
                crate::metrics::Submitted::Finished
            } else {
                crate::metrics::Submitted::InFlight
            };
            crate::metrics::submitted(&job.spec, &job.owner, met);
            if !existing.state.is_finished() {
                // An identical re-submit of an unfinished job (perhaps one whose first submit answered
                // 503 after the store had written it): queue its current step again. A step in flight
                // answers Busy and the duplicate comes back at its lease's end, then drops as stale;
                // a parked job stays parked.
                if let Err(e) = engine.enqueue_next(existing).await {
                    tracing::warn!(job_id = %existing.id, error = %e, "could not re-queue a re-submitted job");
                }
            }
            match (&existing.state, &existing.result) {
                (JobState::Succeeded, Some(result)) => (StatusCode::OK, Json(views::cached(result))).into_response(),
                _ => {
                    let queued = QueuedJob::new(&existing.id, status_prefix, eta(existing));
                    (StatusCode::ACCEPTED, Json(queued)).into_response()
                }
            }
        }
    };
    Ok(with_rate(answer, rate))
}

/// A path segment that does not even decode names no job: the same 404 as an unknown id.
fn job_id_in(path: Result<Path<String>, PathRejection>) -> String {
    path.map(|Path(id)| id).unwrap_or_default()
}

async fn poll(
    State(service): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let owner = authenticate(&service, &headers)?;
    let job_id = job_id_in(path);
    if !is_valid_job_id(&job_id) {
        return Err(ApiError::JobNotFound);
    }
    let settings = &service.engine.settings;
    let grace = Duration::from_millis(settings.delivery_grace_ms);
    let rate = settings.limits.for_owner(&owner).rate;
    let (delivered, rate) = admitted(
        &owner,
        service.engine.store.deliver(&owner, &job_id, grace, rate).await?,
    )?;
    let answer = match delivered {
        Some(d) => {
            let engine = &service.engine;
            let eta = views::Eta::of(engine.eta(&d.job, &d.standing, d.running), engine.clock.now_ms());
            Json::<JobView>(views::job_status(&d.job, d.running, eta)).into_response()
        }
        None => ApiError::JobNotFound.into_response(),
    };
    Ok(with_rate(answer, rate))
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
    let id = job_id(
        &owner,
        &report_identity(&user_id, &commit_sha, query.template.as_deref()),
    );
    let rate = service.engine.settings.limits.for_owner(&owner).rate;
    let (deleted, rate) = admitted(&owner, service.engine.store.purge(&owner, &id, rate).await?)?;
    let answer = Json(PurgedReport {
        success: true,
        message: "Cache entry deleted".into(),
        deleted,
    });
    Ok(with_rate(answer.into_response(), rate))
}

async fn purge_job(
    State(service): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let owner = authenticate(&service, &headers)?;
    let job_id = job_id_in(path);
    if !is_valid_job_id(&job_id) {
        return Err(ApiError::JobNotFound);
    }
    let rate = service.engine.settings.limits.for_owner(&owner).rate;
    let (deleted, rate) = admitted(&owner, service.engine.store.purge(&owner, &job_id, rate).await?)?;
    let answer = if deleted {
        Json(PurgedJob {
            success: true,
            message: "Job deleted".into(),
        })
        .into_response()
    } else {
        ApiError::JobNotFound.into_response()
    };
    Ok(with_rate(answer, rate))
}

/// A poll's read that never shortens the job's life (the grace applies to reads that deliver a result).
const READ_WITHOUT_GRACE: Duration = Duration::from_secs(10 * 365 * 86_400);

/// `POST /v1/jobs/{jobId}/deliveries/redeliver`: sends the job's dead (and failed, waiting) deliveries
/// again now, each with its own `webhook-id` and a fresh timestamp. Counted like a poll: one counted read,
/// then the write, fenced on the step the read saw (a delivery attempt that ends in between wins, and
/// the caller is told to send again), then the step message.
async fn redeliver(
    State(service): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let owner = authenticate(&service, &headers)?;
    let job_id = job_id_in(path);
    if !is_valid_job_id(&job_id) {
        return Err(ApiError::JobNotFound);
    }
    let engine = &service.engine;
    let rate = engine.settings.limits.for_owner(&owner).rate;
    let (read, rate) = admitted(
        &owner,
        engine.store.deliver(&owner, &job_id, READ_WITHOUT_GRACE, rate).await?,
    )?;
    let answer = match read {
        None => ApiError::JobNotFound.into_response(),
        Some(read) if !read.job.state.is_finished() => {
            ApiError::NothingToRedeliver("the job has not finished: its deliveries have not started").into_response()
        }
        Some(read) => {
            let job = read.job;
            let now = engine.clock.now_ms();
            let mut next = job.clone();
            next.seq += 1;
            let due = targets::redeliver(&mut next.deliveries, now);
            if due == 0 {
                let why = if job.deliveries.is_empty() {
                    "the job has no callbackUrl or callbacks"
                } else {
                    "every delivery was delivered"
                };
                return Ok(with_rate(ApiError::NothingToRedeliver(why).into_response(), rate));
            }
            next.next_attempt_at_ms = Some(now);
            next.expires_at_ms = engine.delivery_expiry(&next, now);
            let due_at = engine.due_for(&next);
            if !engine.store.finish(&job.step_ref(), &next, due_at, None).await?.written {
                return Ok(with_rate(ApiError::JobChanged.into_response(), rate));
            }
            // Written first: were the message lost, the deliveries are pending in the record, and the next
            // redelivery request (or a re-drive) queues them again.
            engine.enqueue_next(&next).await?;
            tracing::info!(job_id = %job.id, owner = %owner, deliveries = due, "deliveries redelivered");
            (StatusCode::ACCEPTED, Json(views::redelivered(&next, due))).into_response()
        }
    };
    Ok(with_rate(answer, rate))
}

/// `GET /health`: no key needed; up and the store reachable, or 503. At most one store request per
/// instance per ten seconds, however often it is called.
async fn health(State(service): State<AppState>) -> Response {
    let answer = service.health.get(&service).await;
    let status = match answer.status {
        LiveWord::Healthy => StatusCode::OK,
        LiveWord::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(answer)).into_response()
}

/// `GET /v1/providers`: the health summary plus each provider's shared quota state (scrubbed of every
/// configured secret where it came from a provider). Like `/health`, it is not counted (it reads no
/// job); it announces the owner's policy.
async fn providers(State(service): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let owner = authenticate(&service, &headers)?;
    let mut answer = Json::<views::Health>(views::health(&service).await).into_response();
    if let Some(limit) = service.engine.settings.limits.for_owner(&owner).rate {
        insert_policy(answer.headers_mut(), limit);
    }
    Ok(answer)
}

/// What `GET /v1/jobs` reads: the state of the owner's oldest 1,000 unfinished jobs (the default cap on
/// jobs in flight), 20 of them whole, and 20 dead-lettered jobs.
pub const OVERVIEW_BOUNDS: OverviewBounds = OverviewBounds {
    scan: 1000,
    oldest: 20,
    dead: 20,
};

/// `GET /v1/jobs`: the owner's jobs at a glance (the dashboard's data). One store request, counted like
/// a poll.
async fn jobs_overview(State(service): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let owner = authenticate(&service, &headers)?;
    let engine = &service.engine;
    let rate = engine.settings.limits.for_owner(&owner).rate;
    let (overview, rate) = admitted(&owner, engine.store.overview(&owner, OVERVIEW_BOUNDS, rate).await?)?;
    let now = engine.clock.now_ms();
    let answer = Json(views::jobs_overview(&overview, now, |d| {
        views::Eta::of(engine.eta(&d.job, &d.standing, d.running), now)
    }));
    Ok(with_rate(answer.into_response(), rate))
}

/// `GET /v1/budget`: what the key's owner spent on Upstash, Lambda and SQS (the whole deployment and every
/// owner for `STEPPER_ADMIN_OWNER`), and the month's projection against the free tiers (budget.rs). One
/// store request, counted in the figures it reads; not counted against the owner's rate limit (like
/// `/v1/providers`).
async fn budget(State(service): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let owner = authenticate(&service, &headers)?;
    let engine = &service.engine;
    let deployment = engine.settings.admin_owner.as_deref() == Some(owner.as_str());
    let spent = engine.store.spent(&owner, deployment).await?;
    let answer = views::budget(&owner, deployment, &spent, engine.clock.now_ms());
    Ok(Json(answer).into_response())
}
