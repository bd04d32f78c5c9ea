//! The SQS queue: one message per step, delayed with `DelaySeconds`. SQS delays at most 15 minutes,
//! so a longer wait is a chain of hops: the message carries `not_before_ms` and the step handler sends
//! it on until then.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Message, QueueError};
use crate::ports::{Clock, Queue};

pub use super::MAX_DELAY;

#[derive(Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    clock: Arc<dyn Clock>,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            clock,
        }
    }

    /// From the Lambda environment (region, credentials, and `AWS_ENDPOINT_URL` when set).
    pub async fn from_environment(queue_url: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http_client())
            .load()
            .await;
        Self::new(aws_sdk_sqs::Client::new(&config), queue_url, clock)
    }
}

/// The AWS SDK's HTTP client on rustls with ring, the one crypto provider of the workspace (reqwest's).
pub fn http_client() -> aws_sdk_sqs::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// The message and delay SQS gets: waits beyond 15 minutes become a 15-minute hop with `not_before_ms`.
pub fn hop(message: &Message, delay: Duration, now_ms: u64) -> (Message, i32) {
    if delay <= MAX_DELAY {
        return (message.clone(), delay.as_millis().div_ceil(1000) as i32);
    }
    let Message::Step { step, not_before_ms } = message else {
        // A sweep re-arms itself within 15 minutes; it never waits longer.
        return (message.clone(), MAX_DELAY.as_secs() as i32);
    };
    let until = not_before_ms.unwrap_or(0).max(now_ms + delay.as_millis() as u64);
    (
        Message::Step {
            step: step.clone(),
            not_before_ms: Some(until),
        },
        MAX_DELAY.as_secs() as i32,
    )
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, message: &Message, delay: Duration) -> Result<(), QueueError> {
        let (message, delay_seconds) = hop(message, delay, self.clock.now_ms());
        let body = serde_json::to_string(&message).map_err(|e| QueueError::Unavailable(e.to_string()))?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .delay_seconds(delay_seconds)
            .send()
            .await
            .map_err(|e| QueueError::Unavailable(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::StepRef;

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
        };
        assert_eq!(hop(&m, Duration::from_millis(1_500), 0), (m.clone(), 2));
        assert_eq!(hop(&m, Duration::from_secs(900), 0).1, 900);
        let (hopped, delay) = hop(&m, Duration::from_secs(1_200), 10_000);
        assert_eq!(
            (hopped, delay),
            (
                Message::Step {
                    step,
                    not_before_ms: Some(1_210_000)
                },
                900
            )
        );
    }
}
