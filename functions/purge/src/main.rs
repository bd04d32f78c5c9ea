//! The purge Lambda: serves its routes through the shared router on lambda_http.

use std::sync::Arc;

use shared::lambda::Needs;
use shared::queue::refusing::RefusingQueue;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    // Built once per container; every request reuses the store client and its connections.
    let config = shared::lambda::init("purge", Needs::Store);
    let service = Arc::new(shared::service::build_upstash::<false>(
        &config,
        Arc::new(RefusingQueue),
    )?);
    lambda_http::run_concurrent(shared::lambda::buffered(shared::api::purge_routes(service))).await
}
