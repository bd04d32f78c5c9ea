//! The Upstash store: job state in Upstash Redis over its REST API, one request per state change.
//!
//! Key layout (every key expires):
//! - `st:j:<owner>:<job id>` — the job record: a header line `J1 <state> <gen> <seq> <expires ms>`
//!   (then ` d` while a finished job still owes deliveries: a poll does not shorten its life) that the
//!   Lua scripts read, then the job as JSON (never parsed by Lua, so user JSON stays exact).
//!   The id is derived from the owner and the request's identity (`job::job_id`), so this key is also
//!   the dedupe index and a purge by commit needs no lookup. It expires at the job's `expires_at_ms`.
//! - `st:l:<owner>:<job id>:<gen>:<seq>` — a step's lease (`SET NX PX`). Named by the fencing token,
//!   so a lease can only ever block the step it names; it expires by itself.
//! - `st:providers` — one hash field per provider with its shared quota state (quota.rs).
//! - `st:r:<owner>:<window id>` — the owner's request count in one fixed rate window (`INCR`; the
//!   id is now / window length, so windows are aligned to the epoch and every instance agrees). It
//!   expires when its window ends.
//! - `st:f:<owner>` — the owner's jobs in flight: a sorted set of job ids scored by each job's
//!   expiry. Added by the create script, removed when the job finishes (finish.lua) or is purged.
//!   When the set looks full, the create script first prunes it by score (`ZREMRANGEBYSCORE -inf
//!   now`), so a job that expired unfinished never causes a refusal and the set never holds more
//!   than the cap. It expires with its longest-lived member.
//!
//! Requests per job that succeeds on its first attempt: submit 1 (create.lua), claim 1 (pipeline),
//! finish 1 (script), poll 1 (deliver.lua), purge 1 (purge.lua). The scripts of the routes count the
//! request against its owner's limits and refuse before doing any work, in that same request.

pub mod client;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use client::arg;
pub use client::{Script, UpstashClient};

use super::StoreError;
use crate::job::{Job, StepRef};
use crate::ports::{Admission, Claim, Clock, Created, Delivered, Limits, RateLimit, Store};
use crate::quota::{ProviderEvent, ProviderState};

const PROVIDERS_KEY: &str = "st:providers";

fn job_key(owner: &str, id: &str) -> String {
    format!("st:j:{owner}:{id}")
}

fn lease_prefix(owner: &str, id: &str) -> String {
    format!("st:l:{owner}:{id}:")
}

fn lease_key(step: &StepRef) -> String {
    format!("{}{}:{}", lease_prefix(&step.owner, &step.job_id), step.gen, step.seq)
}

fn in_flight_key(owner: &str) -> String {
    format!("st:f:{owner}")
}

/// A request's rate arguments: the owner's counter key for the current window, then the limit
/// (`0`: not limited) and the window's end, as the route scripts take them.
struct RateArgs {
    key: String,
    limit: u32,
    ends_at_ms: u64,
}

impl RateArgs {
    fn new(owner: &str, rate: Option<RateLimit>, now_ms: u64) -> Self {
        match rate {
            Some(rate) => {
                let (id, ends_at_ms) = rate.window(now_ms);
                Self {
                    key: format!("st:r:{owner}:{id}"),
                    limit: rate.limit,
                    ends_at_ms,
                }
            }
            // Not counted; the key is only there because the script declares it.
            None => Self {
                key: format!("st:r:{owner}:-"),
                limit: 0,
                ends_at_ms: 0,
            },
        }
    }
}

/// The request's number in its owner's window, as a script counted it.
fn request_count(count: &Value) -> Result<u64, StoreError> {
    count
        .as_u64()
        .ok_or_else(|| StoreError::Corrupt(format!("unexpected request count {count}")))
}

/// The stored form of a job: a header the scripts read, then the JSON.
pub fn encode(job: &Job) -> Result<String, StoreError> {
    let json = serde_json::to_string(job).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(format!(
        "J1 {} {} {} {}{}\n{json}",
        job.state.code(),
        job.gen,
        job.seq,
        job.expires_at_ms,
        if job.state.is_finished() && job.owes_deliveries() {
            " d"
        } else {
            ""
        }
    ))
}

pub fn decode(record: &str) -> Result<Job, StoreError> {
    let (header, json) = record
        .split_once('\n')
        .ok_or_else(|| StoreError::Corrupt("record without header".into()))?;
    if !header.starts_with("J1 ") {
        return Err(StoreError::Corrupt(format!(
            "unknown record version {:?}",
            header.get(..2)
        )));
    }
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode_value(v: &Value) -> Result<Option<Job>, StoreError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => decode(s).map(Some),
        other => Err(StoreError::Corrupt(format!("unexpected record {other}"))),
    }
}

fn decode_providers(v: &Value) -> HashMap<String, ProviderState> {
    let mut states = HashMap::new();
    if let Some(flat) = v.as_array() {
        for pair in flat.chunks(2) {
            if let [Value::String(name), Value::String(raw)] = pair {
                match serde_json::from_str(raw) {
                    Ok(state) => {
                        states.insert(name.clone(), state);
                    }
                    // One unreadable entry must not stop every job: start that provider afresh.
                    Err(e) => tracing::warn!(provider = %name, error = %e, "unreadable provider state ignored"),
                }
            }
        }
    }
    states
}

/// A route script with the clock check every absolute expiry goes through (scripts/clock.lua).
macro_rules! with_clock {
    ($file:literal) => {
        concat!(include_str!("scripts/clock.lua"), "\n", include_str!($file))
    };
}

pub struct UpstashStore {
    client: UpstashClient,
    /// Names the rate window a request falls in and the instant expired jobs are pruned at.
    clock: Arc<dyn Clock>,
    create: Script,
    finish: Script,
    deliver: Script,
    purge: Script,
}

impl UpstashStore {
    pub fn new(client: UpstashClient, clock: Arc<dyn Clock>) -> Self {
        Self {
            client,
            clock,
            create: Script::new(with_clock!("scripts/create.lua")),
            finish: Script::new(with_clock!("scripts/finish.lua")),
            deliver: Script::new(with_clock!("scripts/deliver.lua")),
            purge: Script::new(with_clock!("scripts/purge.lua")),
        }
    }
}

#[async_trait]
impl Store for UpstashStore {
    async fn create(&self, job: &Job, limits: Limits) -> Result<Admission<Created>, StoreError> {
        let now = self.clock.now_ms();
        let rate = RateArgs::new(&job.owner, limits.rate, now);
        let answer = self
            .client
            .eval(
                &self.create,
                &[&job_key(&job.owner, &job.id), &rate.key, &in_flight_key(&job.owner)],
                vec![
                    arg(encode(job)?),
                    arg(job.id.as_str()),
                    arg(job.expires_at_ms),
                    arg(now),
                    arg(rate.limit),
                    arg(rate.ends_at_ms),
                    arg(limits.in_flight.unwrap_or(0)),
                ],
            )
            .await?;
        let unexpected = || StoreError::Corrupt(format!("unexpected create answer {answer}"));
        let [verdict, count, rest @ ..] = answer.as_array().map(Vec::as_slice).ok_or_else(unexpected)? else {
            return Err(unexpected());
        };
        let count = request_count(count)?;
        let rate = match limits.rate.map(|r| r.check(count, now)).transpose() {
            Ok(rate) => rate,
            Err(window) => return Ok(Admission::RateLimited(window)),
        };
        let value = match (verdict.as_str(), rest) {
            (Some("new"), []) => Created::New,
            (Some("existing"), [record]) => Created::Existing(Box::new(
                decode_value(record)?.ok_or_else(|| StoreError::Corrupt("empty record".into()))?,
            )),
            (Some("flight"), []) => {
                return Ok(Admission::TooManyInFlight {
                    limit: limits.in_flight.unwrap_or(0),
                    rate,
                });
            }
            _ => return Err(unexpected()),
        };
        Ok(Admission::Admitted { value, rate })
    }

    async fn claim(&self, step: &StepRef, lease: Duration) -> Result<Claim, StoreError> {
        // One request: the lease (atomic SET NX, named by the fencing token), the job, the providers.
        let results = self
            .client
            .pipeline(vec![
                vec![
                    arg("SET"),
                    arg(lease_key(step)),
                    arg("1"),
                    arg("NX"),
                    arg("PX"),
                    arg(lease.as_millis() as u64),
                ],
                vec![arg("GET"), arg(job_key(&step.owner, &step.job_id))],
                vec![arg("HGETALL"), arg(PROVIDERS_KEY)],
            ])
            .await?;
        let [leased, job, providers] = <[Result<Value, String>; 3]>::try_from(results)
            .map_err(|_| StoreError::Corrupt("claim pipeline answered the wrong number of results".into()))?;
        let leased = leased.map_err(StoreError::Command)?;
        let Some(job) = decode_value(&job.map_err(StoreError::Command)?)? else {
            return Ok(Claim::Missing);
        };
        if job.gen != step.gen || job.seq != step.seq {
            return Ok(Claim::Stale(job));
        }
        if leased.is_null() {
            return Ok(Claim::Busy);
        }
        let providers = decode_providers(&providers.map_err(StoreError::Command)?);
        Ok(Claim::Acquired { job, providers })
    }

    async fn finish(&self, step: &StepRef, next: &Job, event: Option<&ProviderEvent>) -> Result<bool, StoreError> {
        let event = match event {
            Some(e) => serde_json::to_string(e).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            None => String::new(),
        };
        let written = self
            .client
            .eval(
                &self.finish,
                &[
                    &job_key(&step.owner, &step.job_id),
                    PROVIDERS_KEY,
                    &in_flight_key(&step.owner),
                ],
                vec![
                    arg(encode(next)?),
                    arg(step.gen.as_str()),
                    arg(step.seq.to_string()),
                    arg(next.expires_at_ms),
                    arg(event),
                    arg(step.job_id.as_str()),
                ],
            )
            .await?;
        Ok(written.as_i64() == Some(1))
    }

    async fn deliver(
        &self,
        owner: &str,
        job_id: &str,
        grace: Duration,
        rate: Option<RateLimit>,
    ) -> Result<Admission<Option<Delivered>>, StoreError> {
        let now = self.clock.now_ms();
        let args = RateArgs::new(owner, rate, now);
        let answer = self
            .client
            .eval(
                &self.deliver,
                &[&job_key(owner, job_id), &args.key],
                vec![
                    arg(grace.as_millis() as u64),
                    arg(lease_prefix(owner, job_id)),
                    arg(args.limit),
                    arg(args.ends_at_ms),
                ],
            )
            .await?;
        let unexpected = || StoreError::Corrupt(format!("unexpected deliver answer {answer}"));
        let [count, rest @ ..] = answer.as_array().map(Vec::as_slice).ok_or_else(unexpected)? else {
            return Err(unexpected());
        };
        let count = request_count(count)?;
        let rate = match rate.map(|r| r.check(count, now)).transpose() {
            Ok(rate) => rate,
            Err(window) => return Ok(Admission::RateLimited(window)),
        };
        let value = match rest {
            [] => None,
            [record, running] => {
                let job = decode_value(record)?.ok_or_else(|| StoreError::Corrupt("empty record".into()))?;
                Some(Delivered {
                    job,
                    running: running.as_i64() == Some(1),
                })
            }
            _ => return Err(unexpected()),
        };
        Ok(Admission::Admitted { value, rate })
    }

    async fn purge(&self, owner: &str, job_id: &str, rate: Option<RateLimit>) -> Result<Admission<bool>, StoreError> {
        let now = self.clock.now_ms();
        let args = RateArgs::new(owner, rate, now);
        let answer = self
            .client
            .eval(
                &self.purge,
                &[&job_key(owner, job_id), &args.key, &in_flight_key(owner)],
                vec![arg(job_id), arg(args.limit), arg(args.ends_at_ms)],
            )
            .await?;
        let Some([count, deleted]) = answer.as_array().map(Vec::as_slice) else {
            return Err(StoreError::Corrupt(format!("unexpected purge answer {answer}")));
        };
        let count = request_count(count)?;
        Ok(match rate.map(|r| r.check(count, now)).transpose() {
            Ok(rate) => Admission::Admitted {
                value: deleted.as_i64() == Some(1),
                rate,
            },
            Err(window) => Admission::RateLimited(window),
        })
    }

    async fn provider_states(&self) -> Result<HashMap<String, ProviderState>, StoreError> {
        Ok(decode_providers(
            &self.client.command(vec![arg("HGETALL"), arg(PROVIDERS_KEY)]).await?,
        ))
    }

    async fn with_work_left(&self) -> Result<Vec<Job>, StoreError> {
        let mut cursor = "0".to_string();
        let mut jobs = Vec::new();
        loop {
            let page = self
                .client
                .command(vec![
                    arg("SCAN"),
                    arg(cursor.as_str()),
                    arg("MATCH"),
                    arg("st:j:*"),
                    arg("COUNT"),
                    arg(500),
                ])
                .await?;
            let (next, keys) = match page.as_array().map(Vec::as_slice) {
                Some([Value::String(next), Value::Array(keys)]) => (next.clone(), keys.clone()),
                _ => return Err(StoreError::Corrupt(format!("unexpected SCAN answer {page}"))),
            };
            if !keys.is_empty() {
                let mut get = vec![arg("MGET")];
                get.extend(keys);
                if let Value::Array(records) = self.client.command(get).await? {
                    for record in &records {
                        if let Some(job) = decode_value(record)? {
                            if job.has_work_left() {
                                jobs.push(job);
                            }
                        }
                    }
                }
            }
            if next == "0" {
                return Ok(jobs);
            }
            cursor = next;
        }
    }
}
