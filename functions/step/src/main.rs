//! The step Lambda: SQS batches in, one provider attempt (or delivery) per record, partial batch
//! failures out. Invoked with `{"action":"redrive"}` it re-queues every job with work left.

use std::sync::Arc;

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;
use shared::wiring::lambda::Needs;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let config = shared::wiring::lambda::init("step", Needs::StoreAndQueue);
    let queue = shared::wiring::lambda::step_queue("step", &config);
    let engine = shared::wiring::service::build_upstash::<true>(&config, Arc::new(queue))?.engine;
    lambda_runtime::run_concurrent(service_fn(move |event: LambdaEvent<Value>| {
        let engine = engine.clone();
        async move { shared::wiring::lambda::flushed(step::handle(&engine, event.payload)).await }
    }))
    .await
}
