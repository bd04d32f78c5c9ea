//! The SQS queue: one message per step, delayed with `DelaySeconds`. SQS delays at most 15 minutes,
//! so a longer wait is a chain of hops: the message carries `not_before_ms` and the step handler sends
//! it on until then.
//!
//! Why not the AWS SDK: the functions make one SQS call, `SendMessage`. `aws-sdk-sqs` with `aws-config`
//! (and the STS client it brings) was about 5.5 MB of the 12.5–12.9 MB arm64 submit and step bootstraps
//! (measured with `nm --size-sort` on unstripped release builds, see docs/benchmarks.md); this client is
//! SendMessage alone in SQS's AWS JSON 1.0 protocol over the workspace's reqwest + rustls (ring),
//! signed with the AWS crate `aws-sigv4`. What the SDK did for this one call it does too: credentials,
//! region and endpoint from the environment Lambda sets, and the SDK's standard retries (3 attempts,
//! full-jitter exponential back-off) for throttling, 5xx and transport errors; other errors fail at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use serde::Deserialize;
use serde_json::json;

use crate::domain::message::{Message, MAX_DELAY};
use crate::ports::{Clock, Queue, QueueError};

/// Where SQS is and who calls it.
#[derive(Clone)]
pub struct SqsConfig {
    /// The SQS endpoint requests are POSTed to, e.g. `https://sqs.us-east-1.amazonaws.com`.
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Present for temporary credentials (a Lambda function's role).
    pub session_token: Option<String>,
}

impl std::fmt::Debug for SqsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsConfig")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SqsConfigError {
    #[error("{0} is not set: the function signs its SQS requests with the credentials Lambda sets")]
    Missing(&'static str),
    #[error("the SQS HTTP client cannot be built: {0}")]
    Http(String),
}

impl SqsConfigError {
    /// The variable to set or fix.
    pub(crate) fn variable(&self) -> &'static str {
        match self {
            SqsConfigError::Missing(name) => name,
            SqsConfigError::Http(_) => "AWS_ENDPOINT_URL_SQS",
        }
    }
}

impl SqsConfig {
    /// From the variables Lambda sets (`AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`) and the SDKs' endpoint overrides (`AWS_ENDPOINT_URL_SQS`, then
    /// `AWS_ENDPOINT_URL`: moto locally). Empty values count as unset. The lookup is the
    /// configuration's (`config::env::process` in the functions): an adapter reads no variable itself.
    pub(crate) fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, SqsConfigError> {
        let get = |name: &str| env(name).filter(|v| !v.is_empty());
        let region = get("AWS_REGION")
            .or_else(|| get("AWS_DEFAULT_REGION"))
            .ok_or(SqsConfigError::Missing("AWS_REGION"))?;
        let access_key_id = get("AWS_ACCESS_KEY_ID").ok_or(SqsConfigError::Missing("AWS_ACCESS_KEY_ID"))?;
        let secret_access_key = get("AWS_SECRET_ACCESS_KEY").ok_or(SqsConfigError::Missing("AWS_SECRET_ACCESS_KEY"))?;
        let endpoint = get("AWS_ENDPOINT_URL_SQS")
            .or_else(|| get("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| default_endpoint(&region));
        Ok(Self {
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            session_token: get("AWS_SESSION_TOKEN"),
        })
    }
}

/// SQS's regional endpoint (the China regions have their own domain).
pub(crate) fn default_endpoint(region: &str) -> String {
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://sqs.{region}.{domain}")
}

/// Attempts and back-off for retryable errors. The default is the AWS SDKs' standard mode: 3 attempts,
/// the wait before attempt n+1 drawn uniformly from 0..base·2^(n-1), capped at 20 s.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16))
            .min(Duration::from_secs(20));
        ceiling.mul_f64(rand::random::<f64>())
    }
}

#[derive(Clone)]
pub struct SqsQueue {
    http: reqwest::Client,
    config: Arc<SqsConfig>,
    credentials: Credentials,
    queue_url: String,
    clock: Arc<dyn Clock>,
    retry: RetryPolicy,
}

impl SqsQueue {
    pub fn new(config: SqsConfig, queue_url: impl Into<String>, clock: Arc<dyn Clock>) -> Result<Self, SqsConfigError> {
        // The SDK's defaults: 3.1 s to connect; an attempt that hangs is cut at 10 s and retried.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(3_100))
            .timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| SqsConfigError::Http(e.to_string()))?;
        let credentials = Credentials::new(
            &config.access_key_id,
            &config.secret_access_key,
            config.session_token.clone(),
            None,
            "environment",
        );
        Ok(Self {
            http,
            config: Arc::new(config),
            credentials,
            queue_url: queue_url.into(),
            clock,
            retry: RetryPolicy::default(),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// One `SendMessage`, retried as the policy says.
    async fn send_message(&self, body: &str, delay_seconds: i32) -> Result<(), QueueError> {
        let payload = json!({
            "QueueUrl": self.queue_url,
            "MessageBody": body,
            "DelaySeconds": delay_seconds,
        })
        .to_string();
        let mut attempt = 1;
        loop {
            match self.attempt("SendMessage", &payload).await {
                Ok(()) => return Ok(()),
                Err(Failure { retryable, message }) => {
                    if !retryable || attempt >= self.retry.max_attempts {
                        return Err(QueueError::Unavailable(format!(
                            "SQS SendMessage failed after {attempt} attempt(s): {message}"
                        )));
                    }
                    tracing::warn!(attempt, error = %message, "SQS SendMessage failed; retrying");
                    tokio::time::sleep(self.retry.backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt(&self, operation: &str, payload: &str) -> Result<(), Failure> {
        let target = format!("AmazonSQS.{operation}");
        let headers = [
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", target.as_str()),
        ];
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.config.region)
            .name("sqs")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| Failure::permanent(format!("cannot sign the request: {e}")))?;
        let signable = SignableRequest::new(
            "POST",
            self.config.endpoint.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(payload.as_bytes()),
        )
        .map_err(|e| Failure::permanent(format!("cannot sign the request: {e}")))?;
        let (signature, _) = sign(signable, &params.into())
            .map_err(|e| Failure::permanent(format!("cannot sign the request: {e}")))?
            .into_parts();
        let mut request = self.http.post(&self.config.endpoint);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        for header in signature.headers() {
            request = request.header(header.0, header.1);
        }
        let response = request.body(payload.to_string()).send().await.map_err(|e| {
            // A request that could not be built fails the same way every time; a connection or a
            // timeout may not.
            let message = crate::adapters::error_chain(&e);
            if e.is_builder() {
                Failure::permanent(message)
            } else {
                Failure::retryable(message)
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let query_error = response
            .headers()
            .get("x-amzn-query-error")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = response.text().await.unwrap_or_default();
        Err(classify(status.as_u16(), query_error.as_deref(), &text))
    }
}

/// Why one attempt failed, and whether another may succeed.
#[derive(Debug, PartialEq)]
struct Failure {
    retryable: bool,
    message: String,
}

impl Failure {
    fn retryable(message: String) -> Self {
        Self {
            retryable: true,
            message,
        }
    }
    fn permanent(message: String) -> Self {
        Self {
            retryable: false,
            message,
        }
    }
}

/// The error codes the AWS SDKs retry as throttling or transient (their standard retry classifier).
const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "KmsThrottled",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
];

/// An error answer, as SQS's JSON protocol gives it: the status, the `__type` (`com.amazonaws.sqs#Code`)
/// and `message` of the body, and the legacy code in `x-amzn-query-error` (`Code;Sender`).
fn classify(status: u16, query_error: Option<&str>, body: &str) -> Failure {
    #[derive(Deserialize, Default)]
    struct ErrorBody {
        #[serde(rename = "__type", default)]
        kind: String,
        #[serde(default, alias = "Message")]
        message: String,
    }
    let parsed: ErrorBody = serde_json::from_str(body).unwrap_or_default();
    let code = parsed.kind.rsplit('#').next().unwrap_or_default().to_string();
    let legacy = query_error.and_then(|q| q.split(';').next()).unwrap_or_default();
    let named_retryable = [code.as_str(), legacy]
        .iter()
        .any(|c| !c.is_empty() && RETRYABLE_CODES.contains(c));
    let retryable = status >= 500 || status == 429 || named_retryable;
    let detail = if parsed.message.is_empty() {
        body.chars().take(300).collect()
    } else {
        parsed.message
    };
    let code = if code.is_empty() {
        "no error code"
    } else {
        code.as_str()
    };
    Failure {
        retryable,
        message: format!("HTTP {status} {code}: {detail}"),
    }
}

/// The message and delay SQS gets: waits beyond 15 minutes become a 15-minute hop with `not_before_ms`.
pub(crate) fn hop(message: &Message, delay: Duration, now_ms: u64) -> (Message, i32) {
    if delay <= MAX_DELAY {
        return (message.clone(), delay.as_millis().div_ceil(1000) as i32);
    }
    let Message::Step {
        step,
        not_before_ms,
        hint,
    } = message
    else {
        // A sweep re-arms itself within 15 minutes; it never waits longer.
        return (message.clone(), MAX_DELAY.as_secs() as i32);
    };
    let until = not_before_ms.unwrap_or(0).max(now_ms + delay.as_millis() as u64);
    (
        Message::Step {
            step: step.clone(),
            not_before_ms: Some(until),
            hint: hint.clone(),
        },
        MAX_DELAY.as_secs() as i32,
    )
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, message: &Message, delay: Duration) -> Result<(), QueueError> {
        let (message, delay_seconds) = hop(message, delay, self.clock.now_ms());
        let body = serde_json::to_string(&message).map_err(|e| QueueError::Unavailable(e.to_string()))?;
        self.send_message(&body, delay_seconds).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::StepRef;
    use crate::domain::message::Hint;

    #[test]
    fn long_waits_become_hops_with_not_before() {
        let step = StepRef {
            owner: "o".into(),
            job_id: "j".into(),
            gen: "g".into(),
            seq: 3,
        };
        let m = Message::Step {
            step: step.clone(),
            not_before_ms: None,
            hint: Hint {
                providers: vec!["alpha".into()],
                tenant: Some("t".into()),
            },
        };
        assert_eq!(hop(&m, Duration::from_millis(1_500), 0), (m.clone(), 2));
        assert_eq!(hop(&m, Duration::from_secs(900), 0).1, 900);
        let (hopped, delay) = hop(&m, Duration::from_secs(1_200), 10_000);
        assert_eq!(
            (hopped, delay),
            (
                Message::Step {
                    step,
                    not_before_ms: Some(1_210_000),
                    hint: Hint {
                        providers: vec!["alpha".into()],
                        tenant: Some("t".into())
                    },
                },
                900
            )
        );
    }

    #[test]
    fn throttling_and_server_errors_are_retried_others_are_not() {
        let throttled = classify(
            400,
            Some("AWS.SimpleQueueService.RequestThrottled;Sender"),
            r#"{"__type":"com.amazonaws.sqs#RequestThrottled","message":"slow down"}"#,
        );
        assert!(throttled.retryable, "{throttled:?}");
        assert_eq!(throttled.message, "HTTP 400 RequestThrottled: slow down");
        assert!(
            classify(
                400,
                None,
                r#"{"__type":"com.amazon.coral.availability#ThrottlingException"}"#
            )
            .retryable
        );
        assert!(classify(500, None, r#"{"__type":"com.amazonaws.sqs#InternalError"}"#).retryable);
        assert!(classify(503, None, "<html>bad gateway</html>").retryable);
        assert!(classify(429, None, "").retryable);
        let missing = classify(
            400,
            Some("AWS.SimpleQueueService.NonExistentQueue;Sender"),
            r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."}"#,
        );
        assert!(!missing.retryable, "{missing:?}");
        assert_eq!(
            missing.message,
            "HTTP 400 QueueDoesNotExist: The specified queue does not exist."
        );
        assert!(
            !classify(
                403,
                None,
                r#"{"__type":"com.amazon.coral.service#AccessDeniedException"}"#
            )
            .retryable
        );
        assert!(!classify(400, None, "not json").retryable);
    }

    #[test]
    fn the_environment_gives_region_credentials_and_endpoint() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let lambda = SqsConfig::from_lookup(&env(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK"),
            ("AWS_SESSION_TOKEN", "T"),
        ]))
        .unwrap();
        assert_eq!(lambda.endpoint, "https://sqs.eu-west-1.amazonaws.com");
        assert_eq!(lambda.session_token.as_deref(), Some("T"));
        let moto = SqsConfig::from_lookup(&env(&[
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_SESSION_TOKEN", ""),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
        ]))
        .unwrap();
        assert_eq!(
            (moto.endpoint.as_str(), moto.region.as_str()),
            ("http://127.0.0.1:5000", "us-east-1")
        );
        assert_eq!(moto.session_token, None);
        let sqs_only = SqsConfig::from_lookup(&env(&[
            ("AWS_REGION", "cn-north-1"),
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK"),
            ("AWS_ENDPOINT_URL", "http://other"),
            ("AWS_ENDPOINT_URL_SQS", "http://sqs-only"),
        ]))
        .unwrap();
        assert_eq!(sqs_only.endpoint, "http://sqs-only");
        assert_eq!(
            default_endpoint("cn-north-1"),
            "https://sqs.cn-north-1.amazonaws.com.cn"
        );
        let no_region = SqsConfig::from_lookup(&env(&[("AWS_ACCESS_KEY_ID", "AK"), ("AWS_SECRET_ACCESS_KEY", "SK")]));
        assert_eq!(no_region.unwrap_err().variable(), "AWS_REGION");
        let no_secret = SqsConfig::from_lookup(&env(&[("AWS_REGION", "us-east-1"), ("AWS_ACCESS_KEY_ID", "AK")]));
        assert_eq!(no_secret.unwrap_err().variable(), "AWS_SECRET_ACCESS_KEY");
    }

    #[test]
    fn back_off_is_full_jitter_under_a_doubling_ceiling() {
        let policy = RetryPolicy::default();
        for _ in 0..100 {
            assert!(policy.backoff(1) <= Duration::from_secs(1));
            assert!(policy.backoff(2) <= Duration::from_secs(2));
            assert!(policy.backoff(30) <= Duration::from_secs(20));
        }
    }
}
