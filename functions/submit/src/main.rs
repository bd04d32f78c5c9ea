//! The submit Lambda: `POST /v1/reports`, `POST /v1/generate` through the shared router; the first
//! step of each new job goes to SQS.

use std::sync::Arc;

use shared::lambda::Needs;
use shared::ports::SystemClock;
use shared::queue::sqs::SqsQueue;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    // Built once per container; every request reuses the store and SQS clients and their connections.
    let config = shared::lambda::init("submit", Needs::StoreAndQueue);
    let queue_url = config.step_queue_url.clone().unwrap_or_default();
    let queue = SqsQueue::from_environment(queue_url, Arc::new(SystemClock)).await;
    let service = Arc::new(shared::service::build(&config, Arc::new(queue))?);
    lambda_http::run_concurrent(shared::lambda::buffered(shared::api::submit_routes(service))).await
}
