//! The queue of functions that never send (poll, purge): every send is refused. Building an SQS client
//! there would only slow their cold start, and a route that queues work is never served by them.

use std::time::Duration;

use async_trait::async_trait;

use crate::domain::message::Message;
use crate::ports::{Queue, QueueError};

pub struct RefusingQueue;

#[async_trait]
impl Queue for RefusingQueue {
    async fn send(&self, _message: &Message, _delay: Duration) -> Result<(), QueueError> {
        Err(QueueError::Unavailable(
            "this function does not send step messages".into(),
        ))
    }
}
