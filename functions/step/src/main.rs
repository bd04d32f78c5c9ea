//! The step Lambda: SQS batches in, one provider attempt (or delivery) per record, partial batch
//! failures out. Invoked with `{"action":"redrive"}` it re-queues every job with work left.

use std::sync::Arc;

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;
use shared::lambda::Needs;
use shared::ports::SystemClock;
use shared::queue::sqs::SqsQueue;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let config = shared::lambda::init("step", Needs::StoreAndQueue);
    let queue_url = config.step_queue_url.clone().unwrap_or_default();
    let queue = SqsQueue::from_environment(queue_url, Arc::new(SystemClock)).await;
    let engine = shared::service::build(&config, Arc::new(queue))?.engine;
    lambda_runtime::run_concurrent(service_fn(move |event: LambdaEvent<Value>| {
        let engine = engine.clone();
        async move { shared::lambda::flushed(step::handle(&engine, event.payload)).await }
    }))
    .await
}
