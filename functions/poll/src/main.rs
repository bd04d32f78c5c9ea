//! The poll Lambda: serves its routes through the shared router on lambda_http.

use std::sync::Arc;

use shared::config::Config;
use shared::queue::unused::NoQueue;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::telemetry::init();
    // Built once per container; every request reuses the store client and its connections.
    let config = Config::from_env()?;
    let service = Arc::new(shared::service::build(&config, Arc::new(NoQueue))?);
    lambda_http::run(shared::api::poll_routes(service)).await
}
