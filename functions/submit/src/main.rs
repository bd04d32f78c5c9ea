//! The submit Lambda: `POST /v1/reports`, `POST /v1/generate` through the shared router; the first
//! step of each new job goes to SQS.

use std::sync::Arc;

use shared::wiring::lambda::Needs;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    // Built once per container; every request reuses the store and SQS clients and their connections.
    let config = shared::wiring::lambda::init_api("submit", Needs::StoreAndQueue);
    let queue = shared::wiring::lambda::step_queue("submit", &config);
    let service = Arc::new(shared::wiring::service::build_upstash::<false>(
        &config,
        Arc::new(queue),
    )?);
    lambda_http::run_concurrent(shared::wiring::lambda::buffered(shared::api::submit_routes(service))).await
}
