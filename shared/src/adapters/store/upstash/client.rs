//! A small client for Upstash's Redis REST API: one command per `POST /` (a JSON array),
//! `POST /pipeline` for batches, Lua scripts as `EVALSHA` with a fallback to `EVAL`.

use std::time::Duration;

use serde_json::Value;

use crate::domain::secret::Secret;
use crate::ports::StoreError;

/// A Lua script and its SHA-1, computed once.
pub struct Script {
    source: &'static str,
    sha1: String,
    /// The script counts its own billed commands in its last argument (scripts/budget.lua).
    counted: bool,
    /// Its body checks an expiry against the store's clock (scripts/clock.lua's check_expiry).
    checks_clock: bool,
}

impl Script {
    pub(crate) fn new(source: &'static str) -> Self {
        Self {
            source,
            sha1: hex::encode(sha1_smol::Sha1::from(source).digest().bytes()),
            counted: false,
            checks_clock: source.contains("\ncheck_expiry("),
        }
    }

    /// Whether a call of it checks the engine's clock against the store's when asked to.
    pub(crate) fn checks_clock(&self) -> bool {
        self.checks_clock
    }

    /// A script whose last argument is what its call costs itself (scripts/count.lua): 1, or 2 for the
    /// `EVAL` sent after `EVALSHA` answered `NOSCRIPT` (Upstash bills both). It answers
    /// `{executed, answer}`.
    pub(crate) fn counted(source: &'static str) -> Self {
        Self {
            counted: true,
            ..Self::new(source)
        }
    }
}

#[derive(Clone)]
pub struct UpstashClient {
    http: reqwest::Client,
    url: String,
    token: Secret,
}

impl std::fmt::Debug for UpstashClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstashClient")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A Redis argument: Upstash takes strings and numbers in the JSON array.
pub(crate) fn arg(v: impl Into<Value>) -> Value {
    v.into()
}

impl UpstashClient {
    pub fn new(url: &str, token: Secret, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            http,
            url: url.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// One REST request. `metered`: count the commands it carries in `stepper_redis_commands_total`
    /// here (a counted script's caller counts what it executed instead, from its answer).
    async fn post(&self, path: &str, body: &Value, metered: bool) -> Result<Value, StoreError> {
        // What Upstash bills for it: each command of a pipeline, one for anything else.
        let commands = match path {
            "/pipeline" => body.as_array().map_or(1, Vec::len),
            _ => 1,
        };
        let body = serde_json::to_vec(body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if body.len() > MAX_REQUEST_BYTES {
            return Err(StoreError::RequestTooLarge {
                bytes: body.len(),
                limit: MAX_REQUEST_BYTES,
            });
        }
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(self.token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(describe(&e)))?;
        crate::ports::metrics::store_rest_request();
        if metered {
            // An answer came: Upstash counted (and bills) every command the request carried.
            crate::ports::metrics::redis_commands(commands);
        }
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(StoreError::Unauthorized);
        }
        let text = response
            .text()
            .await
            .map_err(|e| StoreError::Unavailable(describe(&e)))?;
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        // Command errors: hosted Upstash answers 400 {"error":"ERR ..."}, the local emulator
        // 500 {"error":"Failed to execute Redis command: ERR ..."}.
        if let Some(error) = parsed.as_ref().and_then(|v| v.get("error")).and_then(Value::as_str) {
            if status.is_client_error() || status == reqwest::StatusCode::INTERNAL_SERVER_ERROR || status.is_success() {
                let error = command_error(error);
                if error.contains(QUOTA_EXHAUSTED) {
                    crate::ports::metrics::store_quota_exhausted();
                    return Err(StoreError::QuotaExhausted(error));
                }
                if let Some(at) = error.find(EXPIRY_IN_PAST) {
                    return Err(StoreError::ExpiryInPast(
                        error[at + EXPIRY_IN_PAST.len()..].trim().to_string(),
                    ));
                }
                return Err(StoreError::Command(error));
            }
        }
        if !status.is_success() {
            return Err(StoreError::Unavailable(format!("HTTP {status}")));
        }
        parsed.ok_or_else(|| StoreError::Unavailable("the REST API answered with something that is not JSON".into()))
    }

    /// Runs one command.
    pub async fn command(&self, args: Vec<Value>) -> Result<Value, StoreError> {
        self.command_metered(args, true).await
    }

    async fn command_metered(&self, args: Vec<Value>, metered: bool) -> Result<Value, StoreError> {
        let body = self.post("/", &Value::Array(args), metered).await?;
        Ok(body.get("result").cloned().unwrap_or(Value::Null))
    }

    /// Runs several commands in one request (not atomic); each gets its own result or error.
    pub async fn pipeline(&self, commands: Vec<Vec<Value>>) -> Result<Vec<Result<Value, String>>, StoreError> {
        let body = self
            .post(
                "/pipeline",
                &Value::Array(commands.into_iter().map(Value::Array).collect()),
                true,
            )
            .await?;
        let items = body
            .as_array()
            .ok_or_else(|| StoreError::Corrupt("pipeline answer is not an array".into()))?;
        Ok(items
            .iter()
            .map(|item| match item.get("error").and_then(Value::as_str) {
                Some(e) => Err(command_error(e)),
                None => Ok(item.get("result").cloned().unwrap_or(Value::Null)),
            })
            .collect())
    }

    /// Runs a script by its SHA; loads it with `EVAL` the first time the server does not know it.
    pub(crate) async fn eval(&self, script: &Script, keys: &[&str], args: Vec<Value>) -> Result<Value, StoreError> {
        let tail = || {
            let mut v: Vec<Value> = vec![arg(keys.len())];
            v.extend(keys.iter().map(|k| arg(*k)));
            v.extend(args.iter().cloned());
            v
        };
        let mut by_sha = vec![arg("EVALSHA"), arg(script.sha1.as_str())];
        by_sha.extend(tail());
        // A counted script answers what it executed (the failed EVALSHA included): its caller meters that.
        let metered = !script.counted;
        match self.command_metered(by_sha, metered).await {
            Err(StoreError::Command(e)) if e.contains("NOSCRIPT") => {
                let mut by_source = vec![arg("EVAL"), arg(script.source)];
                by_source.extend(tail());
                if script.counted {
                    if let Some(last) = by_source.last_mut() {
                        *last = arg(last.as_u64().unwrap_or(1) + 1);
                    }
                }
                self.command_metered(by_source, metered).await
            }
            other => other,
        }
    }
}

/// The largest REST request the store takes: hosted Upstash's `max request size` on the free plan
/// (10 MB; larger plans take more). A job whose write would exceed it is refused before it is sent
/// (`StoreError::RequestTooLarge`, a 413): the routes' body cap (6 MB) keeps ordinary jobs far below,
/// but a record is JSON inside the request's JSON, so its quotes and backslashes are escaped twice.
pub(crate) const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;

/// Hosted Upstash's answer once the plan's request quota is spent (the free plan: 500K commands a month).
const QUOTA_EXHAUSTED: &str = "max requests limit exceeded";

/// The marker scripts/clock.lua puts in front of its refusal.
const EXPIRY_IN_PAST: &str = "STEPPER_EXPIRY_IN_PAST";

fn command_error(error: &str) -> String {
    error
        .strip_prefix("Failed to execute Redis command: ")
        .unwrap_or(error)
        .to_string()
}

/// A transport error in a few words (the token is a header, so it never appears here).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_sha_is_the_sha1_redis_computes() {
        // redis-cli SCRIPT LOAD "return 1" → e0e1f9fabfc9d4800c877a703b823ac0578ff8db
        assert_eq!(Script::new("return 1").sha1, "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }

    #[test]
    fn both_error_shapes_keep_the_redis_message() {
        assert_eq!(
            command_error("Failed to execute Redis command: ERR wrong number"),
            "ERR wrong number"
        );
        assert_eq!(command_error("ERR wrong number"), "ERR wrong number");
    }

    #[tokio::test]
    async fn a_request_over_the_store_limit_is_refused_before_it_is_sent() {
        // Nothing listens on port 9: a request that were sent would fail as Unavailable.
        let c = UpstashClient::new("http://127.0.0.1:9", Secret::new("t"), Duration::from_secs(1)).unwrap();
        let big = "\"".repeat(MAX_REQUEST_BYTES / 2 + 1);
        match c.command(vec![arg("SET"), arg("k"), arg(big)]).await {
            Err(StoreError::RequestTooLarge { bytes, limit }) => {
                assert_eq!(limit, MAX_REQUEST_BYTES);
                assert!(bytes > MAX_REQUEST_BYTES, "{bytes}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_token_never_shows_in_debug() {
        let c = UpstashClient::new("http://x", Secret::new("tok-123"), Duration::from_secs(1)).unwrap();
        assert!(!format!("{c:?}").contains("tok-123"));
    }
}
