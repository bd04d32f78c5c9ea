//! The in-process delay queue of `stepper-local`: messages come back after their delay on a channel
//! that a worker pool drains, like SQS with a visibility timeout for failed messages.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::domain::message::Message;
use crate::ports::{Queue, QueueError};

/// A message as a worker receives it, with how often it has been received (SQS's
/// ApproximateReceiveCount). "Received" is the queue's hand-off; "delivery" is a webhook's.
#[derive(Debug, Clone)]
pub struct Received {
    pub message: Message,
    pub(crate) receive_count: u32,
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

    pub(crate) fn send_later(&self, received: Received, delay: Duration) -> Result<(), QueueError> {
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
