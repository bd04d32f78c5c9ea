//! `stepper-local`: every route and the step loop in one process, on the embedded default
//! (in-memory store, in-process delay queue) or on Upstash when `UPSTASH_REDIS_REST_URL` is set.
//! `stepper-local --print-openapi` prints the OpenAPI document (`GET /openapi.json`) and exits.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use shared::config::Config;
use shared::queue::local::{run_workers, LocalQueue, WorkerPolicy};
use tracing::{debug, error, info, warn};

/// Hard limits of the HTTP server, past which it answers a bare 431 and closes the connection.
/// They sit well above the router's own caps (`shared::api::caps`: 64 fields, 16 KiB), which answer
/// with a JSON body; these only bound what one connection can make the process hold.
const MAX_HEADERS: usize = 128;
const MAX_HEADER_BYTES: usize = 32 * 1024;
/// A client that has not sent its whole request head by then is dropped (slow-header attacks).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

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
    if std::env::args().skip(1).any(|a| a == "--print-openapi") {
        let document = shared::api::openapi::document(config.keys.header_name());
        return match serde_json::to_string_pretty(&document) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("stepper-local: {e}");
                ExitCode::FAILURE
            }
        };
    }
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
    serve_http(listener, shared::api::router(service)).await;
    workers.abort();
    info!("stepper-local stopped");
    Ok(())
}

/// HTTP/1.1 with bounded request heads; on a shutdown signal, stops accepting and lets in-flight
/// requests finish.
async fn serve_http(listener: tokio::net::TcpListener, app: axum::Router) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_headers(MAX_HEADERS)
        .max_header_size(MAX_HEADER_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
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
