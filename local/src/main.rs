//! `stepper-local`: every route and the step loop in one process, on the embedded default
//! (in-memory store, in-process delay queue) or on Upstash when `UPSTASH_REDIS_REST_URL` is set.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use shared::config::Config;
use shared::queue::local::{run_workers, LocalQueue, WorkerPolicy};
use tracing::{error, info, warn};

#[tokio::main]
async fn main() -> ExitCode {
    shared::telemetry::init();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("stepper-local: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "stepper-local stopped");
            eprintln!("stepper-local: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn announce(config: &Config, addr: SocketAddr) {
    if config.keys.is_open() {
        let banner = "!! stepper-local is running OPEN: no STEPPER_API_KEYS configured, so any caller can \
                      submit, read and purge jobs (all as owner \"public\"). Set STEPPER_API_KEYS=owner=key \
                      before exposing it beyond this machine. !!";
        eprintln!("{banner}");
        warn!("{banner}");
    }
    if config.providers.is_empty() {
        let help = "No AI provider is configured: jobs will fail at once (reports fall back to their template). \
                    Set a provider key such as GEMINI_API_KEY, GROQ_API_KEY, OPENROUTER_API_KEY, COHERE_API_KEY, \
                    MISTRAL_API_KEY or CEREBRAS_API_KEY, or point STEPPER_CONFIG at a TOML file with [[providers]] \
                    (see README).";
        eprintln!("{help}");
        warn!("{help}");
    }
    let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
    eprintln!("stepper-local listening on http://{addr}");
    eprintln!("  store: {}", shared::service::store_name(config));
    eprintln!(
        "  providers ({}): {}",
        config.providers_source,
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    );
    info!(%addr, providers = ?names, open = config.keys.is_open(), "stepper-local started");
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let (queue, deliveries) = LocalQueue::new();
    let service = Arc::new(shared::service::build(&config, Arc::new(queue.clone()))?);
    let addr = SocketAddr::from(([127, 0, 0, 1], config.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let addr = listener.local_addr()?;
    announce(&config, addr);
    // A persistent store may hold jobs whose in-process messages died with the last process.
    match service.engine.redrive_unfinished().await {
        Ok(0) => {}
        Ok(n) => info!(jobs = n, "re-drove unfinished jobs from the store"),
        Err(e) => warn!(error = %e, "could not re-drive unfinished jobs at start"),
    }
    let workers = tokio::spawn(run_workers(
        deliveries,
        queue,
        service.engine.clone(),
        WorkerPolicy::default(),
    ));
    axum::serve(listener, shared::api::router(service))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    workers.abort();
    info!("stepper-local stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
    info!("shutdown signal received; finishing in-flight requests");
}
