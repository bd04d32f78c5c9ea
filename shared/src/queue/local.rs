//! The in-process delay queue of `stepper-local`: messages come back after their delay on a channel
//! that a worker pool drains, like SQS with a visibility timeout for failed messages.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, Semaphore};
use tracing::{error, warn};

use crate::engine::{Engine, StepError};
use crate::message::Message;
use crate::ports::{Queue, QueueError};

/// A message as a worker receives it, with how often it has been received (SQS's
/// ApproximateReceiveCount). "Received" is the queue's hand-off; "delivery" is a webhook's.
#[derive(Debug, Clone)]
pub struct Received {
    pub message: Message,
    pub receive_count: u32,
}

#[derive(Clone)]
pub struct LocalQueue {
    tx: mpsc::UnboundedSender<Received>,
}

impl LocalQueue {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Received>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    fn send_later(&self, received: Received, delay: Duration) -> Result<(), QueueError> {
        if self.tx.is_closed() {
            return Err(QueueError::Unavailable("the local queue is shut down".into()));
        }
        if delay.is_zero() {
            // Due now: straight onto the channel, no timer task (one fewer task and timer per step).
            return self
                .tx
                .send(received)
                .map_err(|_| QueueError::Unavailable("the local queue is shut down".into()));
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // The receiver is gone only at shutdown; unfinished jobs are re-driven at the next start.
            let _ = tx.send(received);
        });
        Ok(())
    }
}

#[async_trait]
impl Queue for LocalQueue {
    async fn send(&self, message: &Message, delay: Duration) -> Result<(), QueueError> {
        self.send_later(
            Received {
                message: message.clone(),
                receive_count: 1,
            },
            delay,
        )
    }
}

/// How the worker pool treats failed messages.
#[derive(Debug, Clone, Copy)]
pub struct WorkerPolicy {
    pub concurrency: usize,
    /// The wait before a failed message comes back (SQS: the visibility timeout).
    pub retry_after: Duration,
    /// Receives before a message is given up (SQS: the redrive policy's maxReceiveCount).
    pub max_receive_count: u32,
}

impl Default for WorkerPolicy {
    fn default() -> Self {
        Self {
            concurrency: 8,
            retry_after: Duration::from_secs(2),
            max_receive_count: 20,
        }
    }
}

/// Drains the queue until it closes, running each message through the engine.
pub async fn run_workers(
    mut rx: mpsc::UnboundedReceiver<Received>,
    queue: LocalQueue,
    engine: Engine,
    policy: WorkerPolicy,
) {
    let permits = Arc::new(Semaphore::new(policy.concurrency.max(1)));
    while let Some(received) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (engine, queue) = (engine.clone(), queue.clone());
        tokio::spawn(async move {
            let result = engine
                .handle(&received.message, received.receive_count)
                .await
                .map(|_| ());
            drop(permit);
            if let Err(err) = result {
                retry(&queue, received, err, policy);
            }
        });
    }
}

fn retry(queue: &LocalQueue, received: Received, err: StepError, policy: WorkerPolicy) {
    if received.receive_count >= policy.max_receive_count {
        error!(error = %err, receive_count = received.receive_count, "message given up after repeated failures");
        return;
    }
    warn!(error = %err, receive_count = received.receive_count, "step failed; the message will be retried");
    let again = Received {
        message: received.message,
        receive_count: received.receive_count + 1,
    };
    if let Err(e) = queue.send_later(again, policy.retry_after) {
        error!(error = %e, "could not re-queue a failed message");
    }
}
