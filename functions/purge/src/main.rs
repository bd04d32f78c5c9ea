//! The purge Lambda: serves its routes through the shared router on lambda_http.

use std::sync::Arc;

use shared::adapters::queue::refusing::RefusingQueue;
use shared::wiring::lambda::Needs;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    // Built once per container; every request reuses the store client and its connections.
    let config = shared::wiring::lambda::init_api("purge", Needs::Store);
    let service = Arc::new(shared::wiring::service::build_upstash::<false>(
        &config,
        Arc::new(RefusingQueue),
    )?);
    lambda_http::run_concurrent(shared::wiring::lambda::buffered(shared::api::purge_routes(service))).await
}
