//! What each route of the Lambda path costs on Upstash, measured on the real stack: the service
//! (the same router and engine the Lambda functions run) on the Upstash REST emulator and
//! redis-server, behind the proxy that counts what Upstash bills ([`BillingProxy`]).
//!
//! [`BILLED_PER_ROUTE`] is the one table of today's figures; a test holds every route to it, so a
//! change that adds a command to a route fails the test command until the table says so.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::Body;
use axum::http::Request;
use serde_json::{json, Value};
use shared::adapters::queue::local::{LocalQueue, Received};
use shared::adapters::store::upstash::UpstashClient;
use shared::domain::job::StepRef;
use shared::domain::message::{Hint, Message};
use shared::domain::secret::Secret;
use shared::wiring::config::Config;
use shared::wiring::service::Service;
use testkit::billing::{BilledRequest, BillingProxy};
use testkit::fake::FakeReply;
use testkit::instant::InstantProvider;
use testkit::receiver::NodeReceiver;
use testkit::stack::{RedisServer, UpstashEmulator};

use crate::{purge_uri, report_json, REPORT};
use tokio::sync::mpsc::UnboundedReceiver;
use tower::ServiceExt;

/// Upstash-billed commands of each route for one job delivered at its first provider attempt: every
/// command Redis executes for it (a script call plus every `redis.call` inside it, as Upstash bills
/// them; a pipeline per command), measured by the proxy from redis-server's `INFO commandstats`. The
/// step is two requests: the claim (claim.lua) and the finish (finish.lua). Each call's spending is
/// added to its owner's budget by the command that counts it against the owner's limits (one
/// `BITFIELD` on the owner's bucket; a claim's by the finish of its step), so the budget adds no
/// command of its own: these figures are everything. The last entry is `GET /v1/budget` (spent.lua): not a step of a job, read when the caller
/// wants it.
pub const BILLED_PER_ROUTE: [(&str, u64); 6] = [
    ("submit", 6),
    ("claim", 3),
    ("finish", 4),
    ("poll", 2),
    ("purge", 1),
    ("budget", 4),
];

/// Executed commands of the routes that are no part of a job's trip (the dashboard's reads): not in a
/// job's cost, held to the table all the same (`bench/tests/billed_per_route.rs`).
pub const BILLED_PER_READ_ROUTE: [(&str, &str, u64); 1] = [("overview", "/v1/jobs", 8)];

/// Executed commands per delivered job (submit, claim, finish, poll, purge): the sum of
/// [`BILLED_PER_ROUTE`] without the budget read.
pub const BILLED_PER_JOB: u64 = {
    let mut total = 0;
    let mut i = 0;
    while i < BILLED_PER_ROUTE.len() - 1 {
        total += BILLED_PER_ROUTE[i].1;
        i += 1;
    }
    total
};

/// Keys one purged job leaves behind: none (its lease is a field of its record's header).
pub const KEYS_LEFT_PER_PURGED_JOB: u64 = 0;

/// The per-owner limits stay on, so their cost is in the figures, far above what a run needs.
pub const RATE_LIMIT: &str = "1000000000/1h";

/// The receiver's signing secret (`webhook_job`).
const WEBHOOK_SECRET: &str = "whsec_c3RlcHBlci1iZW5jaC13ZWJob29rLXNlY3JldA==";
pub const MAX_IN_FLIGHT: &str = "10000000";

/// One phase of a job: the REST requests it made to the store and how long it took.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    pub requests: Vec<BilledRequest>,
    pub duration: Duration,
}

impl Phase {
    pub fn billed(&self) -> u64 {
        self.requests.iter().map(BilledRequest::billed).sum()
    }
}

/// One job through every route, in order.
#[derive(Debug, Clone, Default)]
pub struct JobTrace {
    pub submit: Phase,
    /// One entry per step message the job consumed.
    pub steps: Vec<Phase>,
    pub poll: Phase,
    pub purge: Phase,
    /// A `GET /v1/budget` read, when the caller made one ([`UpstashStack::budget`]); empty otherwise.
    pub budget: Phase,
    /// `MEMORY USAGE` of the job's record once finished, before it was read.
    pub held_bytes: u64,
}

impl JobTrace {
    /// Billed commands per route, in [`BILLED_PER_ROUTE`]'s order. The claim is the step's first
    /// request, the finish the rest of it.
    pub fn billed_per_route(&self) -> [(&'static str, u64); 6] {
        let first_step = self.steps.first();
        let claim = first_step
            .and_then(|s| s.requests.first())
            .map_or(0, BilledRequest::billed);
        let finish = first_step.map_or(0, |s| s.requests.iter().skip(1).map(BilledRequest::billed).sum());
        [
            ("submit", self.submit.billed()),
            ("claim", claim),
            ("finish", finish),
            ("poll", self.poll.billed()),
            ("purge", self.purge.billed()),
            ("budget", self.budget.billed()),
        ]
    }

    pub fn billed(&self) -> u64 {
        self.submit.billed()
            + self.steps.iter().map(Phase::billed).sum::<u64>()
            + self.poll.billed()
            + self.purge.billed()
            + self.budget.billed()
    }

    pub fn requests(&self) -> usize {
        self.submit.requests.len()
            + self.steps.iter().map(|s| s.requests.len()).sum::<usize>()
            + self.poll.requests.len()
            + self.purge.requests.len()
            + self.budget.requests.len()
    }
}

/// The service on the real Upstash stack, in process, with its queue drained by hand so each step
/// can be counted and timed on its own.
pub struct UpstashStack {
    pub redis: RedisServer,
    pub emulator: UpstashEmulator,
    pub proxy: BillingProxy,
    pub provider: InstantProvider,
    /// Answers every webhook 200 (`webhook_job`).
    pub receiver: NodeReceiver,
    pub service: Arc<Service>,
    app: axum::Router,
    deliveries: UnboundedReceiver<Received>,
    /// Straight to the emulator, past the counting proxy: the benchmark's own inspections.
    probe: UpstashClient,
    dir: std::path::PathBuf,
}

impl Drop for UpstashStack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl UpstashStack {
    pub async fn start() -> anyhow::Result<Self> {
        let redis = RedisServer::start().await?;
        let emulator = UpstashEmulator::start(&redis).await?;
        let proxy = BillingProxy::start(&emulator.url, &redis).await?;
        let provider = InstantProvider::start(FakeReply::openai_text(REPORT)).await?;
        let dir = std::env::temp_dir().join(format!("stepper-routes-{}-{}", std::process::id(), redis.port));
        let config_path = testkit::fake::providers_file(&dir, &provider.base_url(), 5000, Some("FAKE_KEY"))?;
        let receiver = NodeReceiver::start(WEBHOOK_SECRET, &[200], 0).await?;
        let receiver_origin = format!("http://127.0.0.1:{}", receiver.port);
        let (proxy_url, token) = (proxy.url.clone(), emulator.token.clone());
        let env = |name: &str| match name {
            "UPSTASH_REDIS_REST_URL" => Some(proxy_url.clone()),
            "UPSTASH_REDIS_REST_TOKEN" => Some(token.clone()),
            "STEPPER_CONFIG" => Some(config_path.display().to_string()),
            "FAKE_KEY" => Some("sk-bench".to_string()),
            "STEPPER_RATE_LIMIT" => Some(RATE_LIMIT.to_string()),
            "STEPPER_MAX_IN_FLIGHT" => Some(MAX_IN_FLIGHT.to_string()),
            // No keys: every call is the open owner's; its budget read shows the whole deployment.
            "STEPPER_ADMIN_OWNER" => Some(shared::app::auth::OPEN_OWNER.to_string()),
            "STEPPER_WEBHOOK_SECRETS" => Some(format!("{}={WEBHOOK_SECRET}", shared::app::auth::OPEN_OWNER)),
            "CALLBACK_ALLOWED_ORIGINS" => Some(receiver_origin.clone()),
            _ => None,
        };
        let config = Config::from_lookup(&env)?;
        let (queue, deliveries) = LocalQueue::new();
        let service = Arc::new(shared::wiring::service::build(&config, Arc::new(queue))?);
        let app = shared::api::router(service.clone());
        let probe = UpstashClient::new(
            &emulator.url,
            Secret::new(emulator.token.clone()),
            Duration::from_secs(10),
        )?;
        Ok(Self {
            redis,
            emulator,
            proxy,
            provider,
            receiver,
            service,
            app,
            deliveries,
            probe,
            dir,
        })
    }

    /// One request to the router, as the Lambda functions' HTTP API would pass it.
    pub async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))?;
        let response = self.app.clone().oneshot(request).await?;
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024).await?;
        Ok((status, serde_json::from_slice(&bytes)?))
    }

    /// One GET to the router, with the store requests it made.
    pub async fn billed_get(&mut self, uri: &str) -> anyhow::Result<(u16, Value, Phase)> {
        self.proxy.take_log();
        let started = Instant::now();
        let (status, body) = self.call("GET", uri, None).await?;
        let phase = Phase {
            duration: started.elapsed(),
            requests: self.proxy.take_log(),
        };
        Ok((status, body, phase))
    }

    async fn next_step(&mut self) -> anyhow::Result<(StepRef, Option<u64>, Hint)> {
        loop {
            let delivery = tokio::time::timeout(Duration::from_secs(10), self.deliveries.recv())
                .await
                .context("no step message within 10 s")?
                .context("the queue closed")?;
            match delivery.message {
                Message::Step {
                    step,
                    not_before_ms,
                    hint,
                } => return Ok((step, not_before_ms, hint)),
                // The sweeper's chain (armed by the first create) and operator alerts: not a step of
                // the job under way.
                Message::Sweep { .. } | Message::Alert { .. } => continue,
            }
        }
    }

    /// Submits job `i`, runs its steps until it is finished, polls it once and purges it by commit,
    /// recording each phase's store requests and duration.
    pub async fn one_job(&mut self, run: &str, i: usize) -> anyhow::Result<JobTrace> {
        let mut trace = JobTrace::default();
        self.proxy.take_log();
        let started = Instant::now();
        let (status, body) = self.call("POST", "/v1/reports", Some(report_json(run, i))).await?;
        trace.submit = Phase {
            duration: started.elapsed(),
            requests: self.proxy.take_log(),
        };
        if status != 202 {
            bail!("submit answered {status}: {body}");
        }
        let status_url = body["statusUrl"].as_str().context("statusUrl")?.to_string();
        loop {
            let (step, not_before_ms, hint) = self.next_step().await?;
            let started = Instant::now();
            let outcome = self.service.engine.run_step(&step, not_before_ms, &hint, 1).await?;
            trace.steps.push(Phase {
                duration: started.elapsed(),
                requests: self.proxy.take_log(),
            });
            if matches!(outcome, shared::engine::StepOutcome::Finished(_)) {
                trace.held_bytes = self
                    .bytes_of(&format!(
                        "st:j:{}:{}",
                        step.owner,
                        shared::domain::job::record_id(&step.job_id)
                    ))
                    .await?;
                break;
            }
            if trace.steps.len() > 20 {
                bail!("job {i} did not finish in 20 steps (last: {outcome:?})");
            }
        }
        let started = Instant::now();
        let (status, body) = self.call("GET", &status_url, None).await?;
        trace.poll = Phase {
            duration: started.elapsed(),
            requests: self.proxy.take_log(),
        };
        if status != 200 || body["status"] != "completed" {
            bail!("poll answered {status}: {body}");
        }
        let started = Instant::now();
        let (status, body) = self.call("DELETE", &purge_uri(run, i), None).await?;
        trace.purge = Phase {
            duration: started.elapsed(),
            requests: self.proxy.take_log(),
        };
        if status != 200 {
            bail!("purge answered {status}: {body}");
        }
        Ok(trace)
    }

    /// Submits job `i` with a webhook to the receiver and `purgeOnDelivery`, and runs its steps until
    /// the receiver has the webhook: the whole trip of a caller that takes results by webhook only (no
    /// poll; no purge: the job deletes itself once delivered). Its store requests and duration.
    pub async fn webhook_job(&mut self, run: &str, i: usize) -> anyhow::Result<Phase> {
        self.proxy.take_log();
        let started = Instant::now();
        let mut body = report_json(run, i);
        body["callbackUrl"] = json!(self.receiver.url("/hook"));
        body["purgeOnDelivery"] = json!(true);
        let received = self.receiver.deliveries().await?.len();
        let (status, answer) = self.call("POST", "/v1/reports", Some(body)).await?;
        if status != 202 {
            bail!("submit answered {status}: {answer}");
        }
        // Messages queued before it (another job's, undrained) run first.
        for _ in 0..1000 {
            let (step, not_before_ms, hint) = self.next_step().await?;
            self.service.engine.run_step(&step, not_before_ms, &hint, 1).await?;
            // The step that sent the webhook has recorded its answer once run_step returns.
            if self.receiver.deliveries().await?.len() > received {
                return Ok(Phase {
                    duration: started.elapsed(),
                    requests: self.proxy.take_log(),
                });
            }
        }
        bail!("webhook job {i} was not delivered in 1000 steps")
    }

    /// Submits job `i` and nothing else (its step message waits in the queue, undrained): its status URL.
    pub async fn submit_only(&mut self, run: &str, i: usize) -> anyhow::Result<String> {
        let (status, body) = self.call("POST", "/v1/reports", Some(report_json(run, i))).await?;
        if status != 202 {
            bail!("submit answered {status}: {body}");
        }
        Ok(body["statusUrl"].as_str().context("statusUrl")?.to_string())
    }

    /// One request (a poll, a purge) with the store requests it made and its answer.
    pub async fn billed_call(&mut self, method: &str, uri: &str) -> anyhow::Result<(u16, Value, Phase)> {
        self.proxy.take_log();
        let started = Instant::now();
        let (status, body) = self.call(method, uri, None).await?;
        let phase = Phase {
            duration: started.elapsed(),
            requests: self.proxy.take_log(),
        };
        Ok((status, body, phase))
    }

    /// `GET /v1/budget` once: its store requests and its answer.
    pub async fn budget(&mut self) -> anyhow::Result<(Phase, Value)> {
        self.proxy.take_log();
        let started = Instant::now();
        let (status, body) = self.call("GET", "/v1/budget", None).await?;
        let phase = Phase {
            duration: started.elapsed(),
            requests: self.proxy.take_log(),
        };
        if status != 200 {
            bail!("budget answered {status}: {body}");
        }
        Ok((phase, body))
    }

    /// Keys in the store whose name starts with `prefix`, read past the counting proxy.
    pub async fn keys(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let mut cursor = "0".to_string();
        let mut keys = Vec::new();
        loop {
            let reply = self
                .probe
                .command(vec![
                    json!("SCAN"),
                    json!(cursor),
                    json!("MATCH"),
                    json!(format!("{prefix}*")),
                    json!("COUNT"),
                    json!(1000),
                ])
                .await?;
            cursor = match &reply[0] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            keys.extend(
                reply[1]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k.as_str().map(str::to_string)),
            );
            if cursor == "0" {
                return Ok(keys);
            }
        }
    }

    /// `MEMORY USAGE` of a key in bytes (0 when it does not exist).
    pub async fn bytes_of(&self, key: &str) -> anyhow::Result<u64> {
        Ok(self
            .probe
            .command(vec![json!("MEMORY"), json!("USAGE"), json!(key)])
            .await?
            .as_u64()
            .unwrap_or(0))
    }
}
