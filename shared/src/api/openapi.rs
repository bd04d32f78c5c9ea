//! `GET /openapi.json`: the OpenAPI 3.1 document of every route in [`Endpoint::ALL`]. Response
//! schemas are derived from the types the handlers serialise (views.rs, errors.rs), request schemas
//! from the types the presets read bodies as ([`Preset::Body`]): the document cannot say other than
//! what the code does.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::endpoints::Endpoint;
use super::errors::{ErrorBody, RETRY_AFTER_SECONDS};
use super::views::{
    BatchQueuedView, BatchView, Budget, CachedJob, Health, ImmediateAnswer, ImmediateFailed, JobView, JobsOverview,
    Liveness, PurgedJob, PurgedReport, QueuedJob, Readiness, Redelivered, ServiceInfo,
};
use crate::adapters::outbound::send::{CallbackBody, WebhookCompleted, WebhookFailed};
use crate::adapters::outbound::sign;
use crate::domain::presets::batch::BatchBody;
use crate::domain::presets::commit_report::ReportRequest;
use crate::domain::presets::generic::GenerateRequest;
use crate::domain::presets::Preset;

#[cfg(test)]
const SCHEMAS: &str = "#/components/schemas/";

/// The whole document; `key_header` is the configured API key header (`API_KEY_HEADER`).
pub fn document(key_header: &str) -> Value {
    let settings = |s: &mut SchemaSettings| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    };
    // Answers are described as serialised, requests as read (a field with a default is optional).
    let mut generator = SchemaSettings::draft2020_12()
        .for_serialize()
        .with(settings)
        .into_generator();
    let mut requests = SchemaSettings::draft2020_12()
        .for_deserialize()
        .with(settings)
        .into_generator();
    let mut paths = Map::new();
    for endpoint in Endpoint::ALL {
        let operation = operation(endpoint, &mut generator, &mut requests);
        let item = paths.entry(endpoint.path()).or_insert_with(|| json!({}));
        item[endpoint.method().as_str().to_ascii_lowercase()] = operation;
    }
    let webhooks = webhooks(&mut generator);
    let error_body = generator.subschema_for::<ErrorBody>();
    let error_content = json!({"application/json": {"schema": error_body}});
    let mut schemas = generator.take_definitions(true);
    schemas.extend(requests.take_definitions(true));
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "stepper",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Submit an AI job, poll it (or get a webhook), save the result, purge it. \
                            Every job belongs to the owner of the API key that submitted it; other owners get 404.",
        },
        "paths": paths,
        "webhooks": webhooks,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": key_header},
                "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <API key>`"},
            },
            "headers": {
                "RateLimit": {
                    "description": "The owner's budget left in the current window (IETF draft-ietf-httpapi-ratelimit-headers), e.g. `\"default\";r=117;t=42`: `r` requests left, `t` seconds until the window resets. Sent on answers counted against the owner.",
                    "schema": {"type": "string"},
                },
                "RateLimitPolicy": {
                    "description": "The owner's quota policy, e.g. `\"default\";q=120;w=60`: `q` requests per `w` seconds.",
                    "schema": {"type": "string"},
                },
                "RetryAfter": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer", "minimum": 0, "examples": [RETRY_AFTER_SECONDS.parse::<u64>().unwrap_or(5)]},
                },
            },
            "responses": {
                "Unauthorized": {"description": "The API key is missing or unknown.", "content": error_content},
                "Unavailable": {
                    "description": "The job store or the step queue is unavailable (`code` says which): retry after `Retry-After` seconds.",
                    "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
                    "content": error_content,
                },
                "TooManyRequests": {
                    "description": "The owner's request budget for this window is spent (`rate_limited`), or it has its maximum of unfinished jobs (`too_many_jobs_in_flight`): retry after `Retry-After` seconds (also in `retryAfterSeconds`).",
                    "headers": {
                        "Retry-After": {"$ref": "#/components/headers/RetryAfter"},
                        "RateLimit": {"$ref": "#/components/headers/RateLimit"},
                        "RateLimit-Policy": {"$ref": "#/components/headers/RateLimitPolicy"},
                    },
                    "content": error_content,
                },
                "HeadersTooLarge": {
                    "description": "Too many header fields or header bytes (`headers_too_large`).",
                    "content": error_content,
                },
                "BodyNotTaken": {
                    "description": "A body too large for this route, which takes none or a small one (`payload_too_large`).",
                    "content": error_content,
                },
                "JobNotFound": {
                    "description": "No such job for this key's owner (`{\"error\":\"Job not found\"}`).",
                    "content": error_content,
                },
            },
        },
        "security": [{"apiKey": []}, {"bearer": []}],
    })
}

/// The two requests stepper makes to a caller when a job finishes: the `callbackUrl` webhook and each
/// `callbacks` entry, with the headers that sign them.
fn webhooks(generator: &mut SchemaGenerator) -> Value {
    let header = |name: &str, description: &str, required: bool| json!({"name": name, "in": "header", "required": required, "description": description, "schema": {"type": "string"}});
    let signed = || {
        vec![
            header(
                sign::LEGACY_SIGNATURE_HEADER,
                "Legacy: lowercase hex HMAC-SHA256 of the body, keyed with the owner's current webhook secret \
                 as written (`STEPPER_WEBHOOK_SECRETS`). The body is its own `JSON.stringify`, so hashing \
                 the raw bytes or the re-serialised parse gives the same answer.",
                false,
            ),
            header(
                sign::LEGACY_TIMESTAMP_HEADER,
                "Legacy: when this attempt was sent, epoch milliseconds; reject it outside ±5 minutes.",
                false,
            ),
            header(
                sign::WEBHOOK_ID_HEADER,
                "Standard Webhooks: the message id, the same on every retry and redelivery of this delivery \
                 (drop duplicates by it).",
                false,
            ),
            header(
                sign::WEBHOOK_TIMESTAMP_HEADER,
                "Standard Webhooks: when this attempt was sent, epoch seconds.",
                false,
            ),
            header(
                sign::WEBHOOK_SIGNATURE_HEADER,
                "Standard Webhooks: space-separated `v1,<base64 HMAC-SHA256 of \"{webhook-id}.{webhook-timestamp}.{body}\">` \
                 entries, one per configured secret (two during a rotation). A `whsec_` secret's key is its \
                 base64-decoded part.",
                false,
            ),
        ]
    };
    let mut webhook_headers = signed();
    webhook_headers.push(header(
        sign::AUTHORIZATION_HEADER,
        "Only with `WEBHOOK_LEGACY_BEARER=true`: `Bearer <the owner's current webhook secret>`, as the original \
         sent it. Weaker than the signatures (the secret itself travels, proves nothing about the body and \
         never expires): verify a signature when you can.",
        false,
    ));
    let accepted = json!({
        "2XX": {"description": "Delivered. Any other answer (or none within 10 s) is retried on the target's schedule, then dead-lettered (see the job's `deliveries`)."},
    });
    let completed = generator.subschema_for::<WebhookCompleted<'static>>();
    let failed = generator.subschema_for::<WebhookFailed<'static>>();
    let callback = generator.subschema_for::<CallbackBody<'static>>();
    json!({
        "jobFinished": {
            "post": {
                "summary": "The `callbackUrl` webhook",
                "description": "Sent to a report's or generic job's `callbackUrl` once the job has finished: completed, or failed for good (once, not per retry). Signed when the owner has a webhook secret. Headers the job's target may not override: `Content-Type`, the signature headers.",
                "parameters": webhook_headers,
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"oneOf": [completed, failed]}}}},
                "responses": accepted.clone(),
            }
        },
        "callback": {
            "post": {
                "summary": "A `callbacks` entry",
                "description": "Sent to each `callbacks` entry in order once the job has finished, with the entry's own headers; a failure stops the rest unless the entry says `continueOnFailure`. Signed like the webhook; never carries `Authorization` from stepper (an entry may set its own).",
                "parameters": signed(),
                "requestBody": {"required": true, "content": {"application/json": {"schema": callback}}},
                "responses": accepted,
            }
        },
    })
}

fn json_response<T: JsonSchema>(generator: &mut SchemaGenerator, description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": generator.subschema_for::<T>()}}})
}

fn job_id_parameter() -> Value {
    json!({
        "name": "jobId",
        "in": "path",
        "required": true,
        "description": "The `jobId` a submit answered (48 hex digits: the record of its request, then its incarnation; every new job gets a new one), or a batch's (a UUID).",
        "schema": {"type": "string", "pattern": "^([0-9a-f]{48}|[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"},
    })
}

/// A preset's submit route: its body as the preset reads it, its answers.
fn submit_operation<P: Preset>(
    operation_id: &str,
    summary: &str,
    generator: &mut SchemaGenerator,
    requests: &mut SchemaGenerator,
) -> Value {
    json!({
        "operationId": operation_id,
        "tags": ["jobs"],
        "summary": summary,
        "requestBody": {"required": true, "content": {"application/json": {"schema": requests.subschema_for::<P::Body>()}}},
        "responses": submit_responses(generator, &format!("`{}{{jobId}}`", P::STATUS_PREFIX)),
    })
}

/// Answers every job route (submit, poll, purge) can give besides its own: each is counted against the
/// owner's limits in the store, so each may be refused with 429.
fn keyed(mut responses: Map<String, Value>) -> Value {
    responses.insert("401".into(), json!({"$ref": "#/components/responses/Unauthorized"}));
    responses
        .entry("413")
        .or_insert_with(|| json!({"$ref": "#/components/responses/BodyNotTaken"}));
    responses.insert("429".into(), json!({"$ref": "#/components/responses/TooManyRequests"}));
    responses.insert("431".into(), json!({"$ref": "#/components/responses/HeadersTooLarge"}));
    responses.insert("503".into(), json!({"$ref": "#/components/responses/Unavailable"}));
    Value::Object(responses)
}

fn submit_responses(generator: &mut SchemaGenerator, status_path: &str) -> Value {
    let mut r = Map::new();
    r.insert(
        "202".into(),
        json_response::<QueuedJob>(
            generator,
            &format!("Queued: a new job, or the identical job already in flight. Poll `statusUrl` ({status_path})."),
        ),
    );
    r.insert(
        "200".into(),
        json_response::<CachedJob>(
            generator,
            "An identical job already finished and was not purged: its result.",
        ),
    );
    r.insert(
        "400".into(),
        json_response::<ErrorBody>(
            generator,
            "Invalid body: `code` is `invalid_request` (with `field`), `invalid_json` or `invalid_callback_url`.",
        ),
    );
    r.insert(
        "413".into(),
        json_response::<ErrorBody>(generator, "The body is larger than 6 MiB (`payload_too_large`)."),
    );
    keyed(r)
}

fn poll_responses(generator: &mut SchemaGenerator) -> Value {
    let mut r = Map::new();
    r.insert(
        "200".into(),
        json!({
            "description": "The job (the first read of a finished job shortens its life to a grace period; a purge deletes it), or a batch when the id is a batch's (a UUID).",
            "content": {"application/json": {"schema": {"oneOf": [
                generator.subschema_for::<JobView>(),
                generator.subschema_for::<BatchView>(),
            ]}}},
        }),
    );
    r.insert("404".into(), json!({"$ref": "#/components/responses/JobNotFound"}));
    keyed(r)
}

/// One route's operation. Exhaustive: a new [`Endpoint`] does not compile until it is documented.
fn operation(endpoint: Endpoint, generator: &mut SchemaGenerator, requests: &mut SchemaGenerator) -> Value {
    let mut op = match endpoint {
        Endpoint::SubmitReport => {
            submit_operation::<ReportRequest>("submitReport", "Submit a commit-report job", generator, requests)
        }
        Endpoint::SubmitGeneric => {
            submit_operation::<GenerateRequest>("submitGenerate", "Submit a generic job", generator, requests)
        }
        Endpoint::ReportImmediate => {
            immediate_operation::<ReportRequest>("generateReportImmediate", generator, requests)
        }
        Endpoint::GenerateImmediate => immediate_operation::<GenerateRequest>("generateImmediate", generator, requests),
        Endpoint::GenerateBatch => {
            let mut r = Map::new();
            r.insert(
                "202".into(),
                json_response::<BatchQueuedView>(
                    generator,
                    "Every item is a job of its own; poll the batch at `statusUrl` (progress, then every item's outcome in input order).",
                ),
            );
            r.insert(
                "400".into(),
                json_response::<ErrorBody>(
                    generator,
                    "Invalid envelope (`field` names it), or invalid items: `errors` lists every refused item in input order, `error` is the first.",
                ),
            );
            r.insert(
                "413".into(),
                json_response::<ErrorBody>(generator, "The body is larger than 6 MiB (`payload_too_large`)."),
            );
            json!({
                "operationId": "submitBatch",
                "tags": ["jobs"],
                "description": "Each item's create is counted against the owner's request budget like a submit. An item refused for the owner's limits is recorded as failed (`RATE_LIMIT`); when every item is, the batch is refused with 429.",
                "requestBody": {"required": true, "content": {"application/json": {"schema": requests.subschema_for::<BatchBody>()}}},
                "responses": keyed(r),
            })
        }
        Endpoint::ServiceInfo => json!({
            "operationId": "serviceInfo",
            "tags": ["service"],
            "responses": {"200": json_response::<ServiceInfo>(generator, "The service, its version and its routes.")},
        }),
        Endpoint::PollReport => json!({
            "operationId": "getReport",
            "tags": ["jobs"],
            "parameters": [job_id_parameter()],
            "responses": poll_responses(generator),
        }),
        Endpoint::PollJob => json!({
            "operationId": "getJob",
            "tags": ["jobs"],
            "parameters": [job_id_parameter()],
            "responses": poll_responses(generator),
        }),
        Endpoint::PurgeReport => {
            let query = |name: &str, required: bool, what: &str| json!({"name": name, "in": "query", "required": required, "description": what, "schema": {"type": "string"}});
            let mut r = Map::new();
            r.insert(
                "200".into(),
                json_response::<PurgedReport>(generator, "Deleted (or nothing was there)."),
            );
            r.insert(
                "400".into(),
                json_response::<ErrorBody>(generator, "`Missing required query parameters: userId, commitSha`."),
            );
            json!({
                "operationId": "purgeReport",
                "tags": ["jobs"],
                "parameters": [
                    query("userId", true, "As submitted."),
                    query("commitSha", true, "As submitted."),
                    query("template", false, "As submitted (absent: the empty template)."),
                ],
                "responses": keyed(r),
            })
        }
        Endpoint::PurgeJob => {
            let mut r = Map::new();
            r.insert("200".into(), json_response::<PurgedJob>(generator, "Deleted."));
            r.insert("404".into(), json!({"$ref": "#/components/responses/JobNotFound"}));
            json!({
                "operationId": "purgeJob",
                "tags": ["jobs"],
                "description": "Forgets the job at once, and cancels it when it has not finished: a waiting or \
                                delayed job leaves the due-index; of a job whose provider call is under way, no \
                                further provider call starts, its result is dropped and no webhook or callback \
                                is sent after this answer.",
                "parameters": [job_id_parameter()],
                "responses": keyed(r),
            })
        }
        Endpoint::Redeliver => {
            let mut r = Map::new();
            r.insert(
                "202".into(),
                json_response::<Redelivered>(
                    generator,
                    "Sent again now: dead deliveries (and the callbacks their death skipped) start a new round of \
                     the schedule, pending ones waiting for a retry go at once; every attempt keeps its \
                     delivery's `webhook-id` and carries a fresh timestamp.",
                ),
            );
            r.insert(
                "409".into(),
                json_response::<ErrorBody>(
                    generator,
                    "`nothing_to_redeliver` (the job is unfinished, has no deliveries, or all were delivered) or \
                     `job_changed` (a delivery attempt ended meanwhile: send again).",
                ),
            );
            r.insert("404".into(), json!({"$ref": "#/components/responses/JobNotFound"}));
            json!({
                "operationId": "redeliver",
                "tags": ["jobs"],
                "description": "Counted against the owner's request budget like a poll. No body.",
                "parameters": [job_id_parameter()],
                "responses": keyed(r),
            })
        }
        Endpoint::Health => json!({
            "operationId": "health",
            "tags": ["service"],
            "description": "No provider detail (that is `GET /v1/providers`, with a key). The store check is \
                            cached: an instance asks the store at most once every ten seconds.",
            "responses": {
                "200": json_response::<Liveness>(generator, "`healthy`: up, the store answered."),
                "503": json_response::<Liveness>(generator, "`unhealthy`: the store did not answer."),
            },
        }),
        Endpoint::Ready => json!({
            "operationId": "ready",
            "tags": ["service"],
            "description": "For a load balancer or Kubernetes' readiness probe; liveness is `GET /health`. \
                            Reads no store. On SIGTERM `stepper-local` answers 503 while it finishes the requests \
                            and steps under way (`SHUTDOWN_GRACE_SECONDS`); a Lambda function never drains.",
            "responses": {
                "200": json_response::<Readiness>(generator, "`ready`: taking work."),
                "503": json_response::<Readiness>(generator, "`draining`: stopping; send work elsewhere."),
            },
        }),
        Endpoint::Providers => {
            let mut r = Map::new();
            r.insert(
                "200".into(),
                json_response::<Health>(generator, "The health summary with each provider's shared quota state."),
            );
            r.insert("401".into(), json!({"$ref": "#/components/responses/Unauthorized"}));
            json!({
                "operationId": "providers",
                "tags": ["service"],
                "responses": r,
            })
        }
        Endpoint::JobsOverview => {
            let mut r = Map::new();
            r.insert(
                "200".into(),
                json_response::<JobsOverview>(
                    generator,
                    "The key owner's jobs at a glance: unfinished jobs by state with the oldest of them, jobs \
                     finished today, dead-lettered jobs, and today's provider attempts by outcome.",
                ),
            );
            json!({
                "operationId": "jobsOverview",
                "tags": ["jobs"],
                "description": "One store request, counted against the owner's request budget like a poll. \
                                States are counted over the oldest 1,000 unfinished jobs; 20 of them and 20 \
                                dead-lettered jobs are answered whole.",
                "responses": keyed(r),
            })
        }
        Endpoint::Dashboard => json!({
            "operationId": "dashboard",
            "tags": ["service"],
            "description": "No key needed to load the page; it keeps the key the user types in the tab's session \
                            storage and calls the API with it.",
            "responses": {"200": {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}}},
        }),
        Endpoint::Budget => {
            let mut r = Map::new();
            r.insert(
                "200".into(),
                json_response::<Budget>(
                    generator,
                    "What the key's owner (the whole deployment, for `STEPPER_ADMIN_OWNER`) spent this hour, \
                     in the last 24 hours and this month, per job, and the month's projection against the \
                     free tiers.",
                ),
            );
            r.insert("401".into(), json!({"$ref": "#/components/responses/Unauthorized"}));
            r.insert("503".into(), json!({"$ref": "#/components/responses/Unavailable"}));
            json!({
                "operationId": "budget",
                "tags": ["service"],
                "description": "Counted in the store calls every route and step makes anyway (no extra billed \
                                command); the read itself is one. Not counted against the owner's request budget.",
                "responses": r,
            })
        }
        Endpoint::OpenApi => json!({
            "operationId": "openapi",
            "tags": ["service"],
            "responses": {"200": {"description": "The OpenAPI 3.1 document.", "content": {"application/json": {"schema": {"type": "object", "additionalProperties": true}}}}},
        }),
    };
    op["summary"] = json!(endpoint.summary());
    if !endpoint.needs_key() {
        op["security"] = json!([]);
    }
    op
}

/// The immediate routes' answers: the result within the wait, the job to poll past it, a failure.
fn immediate_operation<P: Preset>(
    operation_id: &str,
    generator: &mut SchemaGenerator,
    requests: &mut SchemaGenerator,
) -> Value {
    let mut r = Map::new();
    r.insert(
        "200".into(),
        json_response::<ImmediateAnswer>(
            generator,
            "The job finished within the wait (or an identical one had): its result.",
        ),
    );
    r.insert(
        "202".into(),
        json_response::<QueuedJob>(
            generator,
            &format!(
                "Still running after {} s: the job goes on; poll `statusUrl`.",
                crate::app::IMMEDIATE_WAIT.as_secs()
            ),
        ),
    );
    r.insert(
        "502".into(),
        json_response::<ImmediateFailed>(
            generator,
            "The job failed within the wait: every provider failed for good, or none could answer before its deadline.",
        ),
    );
    r.insert(
        "400".into(),
        json_response::<ErrorBody>(
            generator,
            "Invalid body: `code` is `invalid_request` (with `field`; a `contractVersion` other than \"1\" adds `errorCode: SCHEMA_VERSION_MISMATCH`), `invalid_json` or `invalid_callback_url`.",
        ),
    );
    r.insert("404".into(), json!({"$ref": "#/components/responses/JobNotFound"}));
    json!({
        "operationId": operation_id,
        "tags": ["jobs"],
        "description": format!(
            "Submits an ordinary job (deduplicated like a submit; `cacheControl` applies) and waits for it up to \
             {} s, inside API Gateway's 30 s. Reads the job at growing intervals (0.1 s doubling to 2 s): about 16 \
             single-command reads at most.",
            crate::app::IMMEDIATE_WAIT.as_secs()
        ),
        "requestBody": {"required": true, "content": {"application/json": {"schema": requests.subschema_for::<P::Body>()}}},
        "responses": keyed(r),
    })
}

/// Validates `value` against the document's component schema `name` (tests of the views use it).
#[cfg(test)]
pub(crate) fn check(name: &str, value: &Value) -> Result<(), String> {
    let doc = document("x-api-key");
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("{SCHEMAS}{name}"),
        "components": doc["components"],
    });
    let validator = jsonschema::validator_for(&root).map_err(|e| e.to_string())?;
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{name}: {}", errors.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Method, Request};
    use tower::ServiceExt;

    use super::*;
    use crate::adapters::queue::local::LocalQueue;
    use crate::api::endpoints::Function;
    use crate::wiring::config::Config;

    const JOB: &str = "0123456789abcdef0123456789abcdef";

    /// A service on the in-memory store; its queue works while the returned receiver lives.
    fn service(env: &[(&str, &str)]) -> (Arc<crate::wiring::service::Service>, impl Sized) {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let config =
            Config::from_lookup(&|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())).expect("config");
        let (queue, deliveries) = LocalQueue::new();
        (
            Arc::new(crate::wiring::service::build(&config, Arc::new(queue)).expect("service")),
            deliveries,
        )
    }

    async fn call(router: &axum::Router, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, answer) = testkit::router::call(router, method.as_str(), path, None, body).await;
        (status.as_u16(), answer)
    }

    fn is_fallback(answer: &(u16, Value)) -> bool {
        answer.0 == 405 || (answer.0 == 404 && answer.1["code"] == "not_found")
    }

    #[tokio::test]
    async fn ready_answers_503_once_the_service_drains() {
        let (service, _queue) = service(&[]);
        let router = crate::api::router(service.clone());
        assert_eq!(
            call(&router, Method::GET, "/ready", None).await,
            (200, json!({"status": "ready"}))
        );
        service.drain();
        assert_eq!(
            call(&router, Method::GET, "/ready", None).await,
            (503, json!({"status": "draining"}))
        );
        // Only readiness changes: the other routes keep serving while in-flight work finishes.
        assert_eq!(call(&router, Method::GET, "/health", None).await.0, 200);
    }

    #[tokio::test]
    async fn the_document_lists_exactly_the_routes_the_routers_answer() {
        let doc = document("x-api-key");
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
        let mut table: Vec<(String, String)> = Endpoint::ALL
            .iter()
            .map(|e| (e.method().to_string(), e.path().to_string()))
            .collect();
        documented.sort();
        table.sort();
        assert_eq!(documented, table);

        let (service, _queue) = service(&[("STEPPER_API_KEYS", "dev=dev-key")]);
        let all = crate::api::router(service.clone());
        let functions = [
            (Function::Submit, crate::api::submit_routes(service.clone())),
            (Function::Poll, crate::api::poll_routes(service.clone())),
            (Function::Purge, crate::api::purge_routes(service.clone())),
        ];
        let methods = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];
        for endpoint in Endpoint::ALL {
            let path = endpoint.path().replace("{jobId}", JOB);
            let answer = call(&all, endpoint.method(), &path, Some(json!({}))).await;
            assert!(
                !is_fallback(&answer),
                "{endpoint:?} is documented but not routed: {answer:?}"
            );
            let operation = &doc["paths"][endpoint.path()][endpoint.method().as_str().to_ascii_lowercase()];
            assert!(
                operation["responses"].get(answer.0.to_string()).is_some(),
                "{endpoint:?} answered {} without a key, which its operation does not list",
                answer.0
            );
            for (function, router) in &functions {
                let answer = call(router, endpoint.method(), &path, Some(json!({}))).await;
                assert_eq!(
                    !is_fallback(&answer),
                    *function == endpoint.function(),
                    "{endpoint:?} on {function:?}: {answer:?}"
                );
            }
            for method in &methods {
                let documented = Endpoint::ALL
                    .iter()
                    .any(|e| e.path() == endpoint.path() && e.method() == method);
                if !documented {
                    let answer = call(&all, method.clone(), &path, None).await;
                    assert_eq!(
                        answer.0, 405,
                        "{method} {path} is not documented but answers {answer:?}"
                    );
                }
            }
        }
        for path in [
            "/v1",
            "/v1/jobs/",
            "/v1/reports/x/y",
            "/v2/reports",
            "/openapi.yaml",
            "/docs",
            "/v1/health",
        ] {
            for method in &methods {
                assert!(
                    is_fallback(&call(&all, method.clone(), path, None).await),
                    "{method} {path} answers"
                );
            }
        }
    }

    /// The bodies the webhook sender writes validate against the `webhooks` section's schemas, and the
    /// section names every header the sender signs with.
    #[test]
    fn the_webhooks_section_describes_the_bodies_and_headers_sent() {
        use crate::adapters::outbound::send::{body, example_context, examples};
        use crate::domain::targets::TargetKind;
        let context = example_context();
        let result = json!({"title": "t"});
        let [done, failed] = examples(JOB, &result, &context);
        let now = 1_796_000_000_123;
        let parse = |text: String| serde_json::from_str::<Value>(&text).expect("JSON");
        for (name, finished) in [("WebhookCompleted", &done), ("WebhookFailed", &failed)] {
            check(name, &parse(body(TargetKind::Webhook, finished, now))).unwrap();
        }
        for finished in [&done, &failed] {
            let sent = parse(body(TargetKind::Callback, finished, now));
            check("CallbackBody", &sent).unwrap();
            assert_eq!(sent["metadata"]["timestamp"], "2026-11-30T00:53:20.123Z");
        }
        let doc = document("x-api-key");
        let names = |hook: &str| -> Vec<String> {
            doc["webhooks"][hook]["post"]["parameters"]
                .as_array()
                .expect("parameters")
                .iter()
                .map(|p| p["name"].as_str().unwrap_or_default().to_string())
                .collect()
        };
        let headers = names("jobFinished");
        let secrets = sign::WebhookSecrets::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", None).unwrap();
        let sent = sign::signed_headers(&secrets, "msg_1", now, "{}")
            .into_iter()
            .chain([sign::legacy_bearer_header(&secrets)]);
        for (name, _) in sent {
            assert!(
                headers.contains(&name),
                "{name} is not in the webhooks section: {headers:?}"
            );
        }
        assert!(!names("callback").contains(&sign::AUTHORIZATION_HEADER.to_string()));
    }

    /// `docs/openapi.json` (for readers, and the TypeScript example's generated types) is this document.
    #[test]
    fn the_committed_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        let current = serde_json::to_string_pretty(&document("x-api-key")).expect("serialize") + "\n";
        assert!(
            committed == current,
            "docs/openapi.json is stale: cargo run -p stepper-local -- --print-openapi > docs/openapi.json, \
             then scripts/openapi-types.sh"
        );
    }

    #[tokio::test]
    async fn the_served_document_names_the_configured_key_header_and_is_built_once() {
        let (service, _queue) = service(&[("STEPPER_API_KEYS", "dev=dev-key"), ("API_KEY_HEADER", "X-Stepper-Key")]);
        let poll = crate::api::poll_routes(service);
        let (code, served) = call(&poll, Method::GET, "/openapi.json", None).await;
        assert_eq!(code, 200, "no key needed");
        assert_eq!(served, document("x-stepper-key"));
        assert_eq!(
            served["components"]["securitySchemes"]["apiKey"]["name"],
            "x-stepper-key"
        );
        assert_eq!(served["openapi"], "3.1.0");
    }

    /// Every answer the routers give validates against the schema its operation documents.
    #[tokio::test]
    async fn real_answers_match_their_documented_schemas() {
        let doc = document("x-api-key");
        let (working, _queue) = service(&[("STEPPER_API_KEYS", "dev=dev-key")]);
        // A queue nobody reads refuses messages: the submit answers 503 with Retry-After.
        let (broken, _) = service(&[("STEPPER_API_KEYS", "dev=dev-key")]);
        let report = json!({"userId": "u", "commitSha": "abc", "repo": "r", "message": "m", "files": ["a.rs"], "components": []});
        let routers = [crate::api::router(working), crate::api::router(broken)];
        let on = |router: usize, method: Method, path: &str, body: Option<Value>| {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .header("x-api-key", "dev-key")
                .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
                .expect("request");
            let router = routers[router].clone();
            async move {
                let response = router.oneshot(request).await.expect("infallible");
                let status = response.status().as_u16();
                let retry_after = response.headers().get("retry-after").is_some();
                let bytes = axum::body::to_bytes(response.into_body(), 1 << 24).await.expect("body");
                (
                    status,
                    serde_json::from_slice::<Value>(&bytes).expect("JSON"),
                    retry_after,
                )
            }
        };
        let keyed = |method: Method, path: &str, body: Option<Value>| on(0, method, path, body);
        let queued = keyed(Method::POST, "/v1/reports", Some(report.clone())).await;
        let status_url = queued.1["statusUrl"].as_str().expect("statusUrl").to_string();
        let cases = vec![
            (Endpoint::SubmitReport, queued),
            (
                Endpoint::SubmitReport,
                on(1, Method::POST, "/v1/reports", Some(report.clone())).await,
            ),
            (
                Endpoint::SubmitGeneric,
                keyed(Method::POST, "/v1/generate", Some(json!({"prompt": "x"}))).await,
            ),
            (
                Endpoint::SubmitGeneric,
                keyed(Method::POST, "/v1/generate", Some(json!({"prompt": 3}))).await,
            ),
            (Endpoint::SubmitGeneric, keyed(Method::POST, "/v1/generate", None).await),
            (
                Endpoint::SubmitGeneric,
                keyed(
                    Method::POST,
                    "/v1/generate",
                    Some(json!({"prompt": "x".repeat(7 << 20)})),
                )
                .await,
            ),
            (
                Endpoint::SubmitGeneric,
                keyed(
                    Method::POST,
                    "/v1/generate",
                    Some(json!({"prompt": "x", "callbackUrl": "http://127.0.0.1/x"})),
                )
                .await,
            ),
            (Endpoint::PollReport, keyed(Method::GET, &status_url, None).await),
            (
                Endpoint::PollJob,
                keyed(Method::GET, &format!("/v1/jobs/{JOB}"), None).await,
            ),
            (Endpoint::PollJob, keyed(Method::GET, "/v1/jobs/%FF%FE", None).await),
            (
                Endpoint::PurgeReport,
                keyed(Method::DELETE, "/v1/reports?userId=u&commitSha=abc", None).await,
            ),
            (
                Endpoint::PurgeReport,
                keyed(Method::DELETE, "/v1/reports?userId=u", None).await,
            ),
            (
                Endpoint::PurgeJob,
                keyed(Method::DELETE, &format!("/v1/jobs/{JOB}"), None).await,
            ),
            (
                Endpoint::Redeliver,
                keyed(Method::POST, &format!("/v1/jobs/{JOB}/deliveries/redeliver"), None).await,
            ),
            (Endpoint::Health, keyed(Method::GET, "/health", None).await),
            (Endpoint::Ready, keyed(Method::GET, "/ready", None).await),
            (Endpoint::Providers, keyed(Method::GET, "/v1/providers", None).await),
            (Endpoint::Budget, keyed(Method::GET, "/v1/budget", None).await),
            (Endpoint::OpenApi, keyed(Method::GET, "/openapi.json", None).await),
            (Endpoint::JobsOverview, keyed(Method::GET, "/v1/jobs", None).await),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (endpoint, (status, body, retry_after)) in cases {
            let operation = &doc["paths"][endpoint.path()][endpoint.method().as_str().to_ascii_lowercase()];
            let mut response = &operation["responses"][status.to_string()];
            if let Some(Value::String(reference)) = response.get("$ref") {
                let name = reference.trim_start_matches("#/components/responses/");
                response = &doc["components"]["responses"][name];
                assert_eq!(
                    retry_after,
                    response.get("headers").is_some(),
                    "{endpoint:?} {status}: Retry-After"
                );
            }
            let schema = &response["content"]["application/json"]["schema"];
            assert!(
                schema.is_object(),
                "{endpoint:?} answered {status}, undocumented: {body}"
            );
            if let Some(Value::String(reference)) = schema.get("$ref") {
                check(reference.trim_start_matches(SCHEMAS), &body)
                    .unwrap_or_else(|e| panic!("{endpoint:?} {status}: {e}"));
            }
            seen.insert((endpoint.path(), status));
        }
        for expected in [
            ("/v1/generate", 413),
            ("/v1/jobs/{jobId}", 404),
            ("/v1/reports", 503),
            ("/v1/reports", 400),
        ] {
            assert!(seen.contains(&expected), "{expected:?} not exercised: {seen:?}");
        }
    }

    #[test]
    fn every_error_code_is_documented_and_sent_by_some_error() {
        let codes = &document("x-api-key")["components"]["schemas"]["ErrorCode"]["oneOf"];
        let documented: Vec<&str> = codes
            .as_array()
            .expect("oneOf")
            .iter()
            .filter_map(|c| c["const"].as_str())
            .collect();
        assert_eq!(documented.len(), 16, "{documented:?}");
        use crate::api::errors::ErrorCode;
        for code in [
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidJson,
            ErrorCode::PayloadTooLarge,
            ErrorCode::InvalidCallbackUrl,
            ErrorCode::NotFound,
            ErrorCode::StoreUnauthorized,
            ErrorCode::StoreUnavailable,
            ErrorCode::StoreClockSkew,
            ErrorCode::StoreQuotaExhausted,
            ErrorCode::QueueUnavailable,
            ErrorCode::MethodNotAllowed,
            ErrorCode::RateLimited,
            ErrorCode::TooManyJobsInFlight,
            ErrorCode::HeadersTooLarge,
            ErrorCode::NothingToRedeliver,
            ErrorCode::JobChanged,
        ] {
            let word = serde_json::to_value(code).expect("serialize");
            assert!(documented.contains(&word.as_str().unwrap_or_default()), "{word}");
        }
    }
}
