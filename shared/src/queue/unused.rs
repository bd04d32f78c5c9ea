//! The queue of functions that never send (poll, purge): building an SQS client there would only
//! slow their cold start.

use std::time::Duration;

use async_trait::async_trait;

use crate::message::Message;
use crate::ports::{Queue, QueueError};

pub struct NoQueue;

#[async_trait]
impl Queue for NoQueue {
    async fn send(&self, _message: &Message, _delay: Duration) -> Result<(), QueueError> {
        Err(QueueError::Unavailable(
            "this function does not send step messages".into(),
        ))
    }
}
