//! The Upstash store: job state in Upstash Redis over its REST API, one request per state change.
//!
//! Key layout (every key expires):
//! - `st:j:<owner>:<job id>` — the job record: a header line `J1 <state> <gen> <seq> <expires ms>`
//!   that the Lua scripts read, then the job as JSON (never parsed by Lua, so user JSON stays exact).
//!   The id is derived from the owner and the request's identity (`job::job_id`), so this key is also
//!   the dedupe index and a purge by commit needs no lookup. It expires at the job's `expires_at_ms`.
//! - `st:l:<owner>:<job id>:<gen>:<seq>` — a step's lease (`SET NX PX`). Named by the fencing token,
//!   so a lease can only ever block the step it names; it expires by itself.
//! - `st:providers` — one hash field per provider with its shared quota state (quota.rs).
//!
//! Requests per job that succeeds on its first attempt: submit 1 (`SET NX GET`), claim 1 (pipeline),
//! finish 1 (script), poll 1 (script), purge 1 (`DEL`).

pub mod client;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use client::arg;
pub use client::{Script, UpstashClient};

use super::StoreError;
use crate::job::{Job, JobState, StepRef};
use crate::ports::{Claim, Created, Delivered, Store};
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

/// The stored form of a job: a header the scripts read, then the JSON.
pub fn encode(job: &Job) -> Result<String, StoreError> {
    let json = serde_json::to_string(job).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(format!(
        "J1 {} {} {} {}\n{json}",
        job.state.code(),
        job.gen,
        job.seq,
        job.expires_at_ms
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

pub struct UpstashStore {
    client: UpstashClient,
    finish: Script,
    deliver: Script,
    replace_failed: Script,
}

impl UpstashStore {
    pub fn new(client: UpstashClient) -> Self {
        Self {
            client,
            finish: Script::new(include_str!("scripts/finish.lua")),
            deliver: Script::new(include_str!("scripts/deliver.lua")),
            replace_failed: Script::new(include_str!("scripts/replace_failed.lua")),
        }
    }
}

#[async_trait]
impl Store for UpstashStore {
    async fn create(&self, job: &Job) -> Result<Created, StoreError> {
        let key = job_key(&job.owner, &job.id);
        let record = encode(job)?;
        // Create and dedupe in one command: NX writes only a new id, GET returns what was there.
        let previous = self
            .client
            .command(vec![
                arg("SET"),
                arg(key.as_str()),
                arg(record.as_str()),
                arg("NX"),
                arg("GET"),
                arg("PXAT"),
                arg(job.expires_at_ms),
            ])
            .await?;
        let Some(existing) = decode_value(&previous)? else {
            return Ok(Created::New);
        };
        if existing.state != JobState::Failed {
            return Ok(Created::Existing(Box::new(existing)));
        }
        let now = self
            .client
            .eval(
                &self.replace_failed,
                &[&key],
                vec![arg(record), arg(existing.gen.as_str()), arg(job.expires_at_ms)],
            )
            .await?;
        Ok(match decode_value(&now)? {
            None => Created::New,
            Some(current) => Created::Existing(Box::new(current)),
        })
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
                &[&job_key(&step.owner, &step.job_id), PROVIDERS_KEY],
                vec![
                    arg(encode(next)?),
                    arg(step.gen.as_str()),
                    arg(step.seq.to_string()),
                    arg(next.expires_at_ms),
                    arg(event),
                ],
            )
            .await?;
        Ok(written.as_i64() == Some(1))
    }

    async fn deliver(&self, owner: &str, job_id: &str, grace: Duration) -> Result<Option<Delivered>, StoreError> {
        let answer = self
            .client
            .eval(
                &self.deliver,
                &[&job_key(owner, job_id)],
                vec![arg(grace.as_millis() as u64), arg(lease_prefix(owner, job_id))],
            )
            .await?;
        match answer.as_array().map(Vec::as_slice) {
            None if answer.is_null() => Ok(None),
            Some([record, running]) => {
                let job = decode_value(record)?.ok_or_else(|| StoreError::Corrupt("empty record".into()))?;
                Ok(Some(Delivered {
                    job,
                    running: running.as_i64() == Some(1),
                }))
            }
            _ => Err(StoreError::Corrupt(format!("unexpected deliver answer {answer}"))),
        }
    }

    async fn purge(&self, owner: &str, job_id: &str) -> Result<bool, StoreError> {
        let deleted = self
            .client
            .command(vec![arg("DEL"), arg(job_key(owner, job_id))])
            .await?;
        Ok(deleted.as_i64() == Some(1))
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
