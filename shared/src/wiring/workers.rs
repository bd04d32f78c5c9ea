//! The in-process worker pool of `stepper-local`: it drains the local queue's channel and runs each
//! received message through the engine, giving failed messages back to the queue later (SQS's
//! visibility timeout and redrive policy, in one process). Wiring, not an adapter: it joins the queue
//! adapter to the engine.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tracing::{error, warn};

use crate::adapters::queue::local::{LocalQueue, Received};
use crate::engine::{Engine, StepError};

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
    rx: mpsc::UnboundedReceiver<Received>,
    queue: LocalQueue,
    engine: Engine,
    policy: WorkerPolicy,
) {
    run_workers_until(rx, queue, engine, policy, std::future::pending()).await
}

/// [`run_workers`] until `stop` completes: then it takes no more messages and returns once the steps
/// under way have ended (the caller bounds the wait). What is left in the queue is lost with the
/// process, but every job with work left is in the store's due-index, where a sweep finds it.
pub async fn run_workers_until(
    mut rx: mpsc::UnboundedReceiver<Received>,
    queue: LocalQueue,
    engine: Engine,
    policy: WorkerPolicy,
    stop: impl std::future::Future<Output = ()>,
) {
    let concurrency = policy.concurrency.max(1);
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut stop = std::pin::pin!(stop);
    loop {
        let received = tokio::select! {
            received = rx.recv() => match received {
                Some(received) => received,
                None => break,
            },
            _ = &mut stop => break,
        };
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
    // Every permit back: no step is under way.
    let _ = permits.acquire_many(concurrency as u32).await;
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
