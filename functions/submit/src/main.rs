//! The submit Lambda: `POST /v1/reports`, `POST /v1/generate` through the shared router; the first
//! step of each new job goes to SQS.

use std::sync::Arc;

use shared::config::Config;
use shared::ports::SystemClock;
use shared::queue::sqs::SqsQueue;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    // Built once per container; every request reuses the store and SQS clients and their connections.
    let config = Config::from_env()?;
    let queue_url = config.step_queue_url.clone().ok_or("STEP_QUEUE_URL is not set")?;
    let queue = SqsQueue::from_environment(queue_url, Arc::new(SystemClock)).await;
    let service = Arc::new(shared::service::build(&config, Arc::new(queue))?);
    lambda_http::run(shared::api::submit_routes(service)).await
}
