//! `stepper-local`: every route and the step loop in one process, on the embedded default
//! (in-memory store, in-process delay queue) or on Upstash when `UPSTASH_REDIS_REST_URL` is set.
//! `stepper-local --print-openapi` prints the OpenAPI document (`GET /openapi.json`) and exits.

mod conn;
mod metrics;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use shared::adapters::queue::local::LocalQueue;
use shared::wiring::config::{Config, HttpLimits};
use shared::wiring::workers::{run_workers, WorkerPolicy};
use tracing::{debug, error, info, warn};

/// mimalloc, not glibc's malloc: a request allocates and frees many small blocks across the runtime's
/// threads, where glibc's arenas spent a large share of the server's CPU (docs/benchmarks.md, "The embedded stack's capacity").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hard limits of the HTTP server, past which it answers a bare 431 and closes the connection.
/// They sit well above the router's own caps (`shared::api::caps`: 64 fields, 16 KiB), which answer
/// with a JSON body; these only bound what one connection can make the process hold.
const MAX_HEADERS: usize = 128;
const MAX_HEADER_BYTES: usize = 32 * 1024;
/// The accept loop's back-off after a failed accept (out of file descriptors and the like): doubling
/// from the first to the last, reset by the next accepted connection.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

#[tokio::main]
async fn main() -> ExitCode {
    shared::wiring::telemetry::init();
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
                    (see docs/configuration.md).";
        eprintln!("{help}");
        warn!("{help}");
    }
    let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
    eprintln!("stepper-local listening on http://{addr}");
    eprintln!("  store: {}", shared::wiring::service::store_name(config));
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
    let metrics = metrics::install()?;
    let (queue, deliveries) = LocalQueue::new();
    let service = Arc::new(shared::wiring::service::build(&config, Arc::new(queue.clone()))?);
    let addr = SocketAddr::from(([127, 0, 0, 1], config.port));
    let listener = listen(addr).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
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
    let token = std::env::var("METRICS_TOKEN").ok().filter(|t| !t.is_empty());
    let app = metrics::routes(metrics, token).merge(shared::api::router(service));
    serve_http(listener, app, config.http).await;
    workers.abort();
    info!("stepper-local stopped");
    Ok(())
}

/// At the cap, how often the accept loop looks again for a silent connection to close.
const CAP_RECHECK: Duration = Duration::from_millis(25);

/// Connections past the cap wait in the kernel's accept queue, which must hold them (the kernel caps it
/// at `net.core.somaxconn`): a connection that overflows it is left half-open by the kernel, unseen.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// HTTP/1.1 with bounded request heads, a deadline on each head and each body, an idle timeout and a cap
/// on open connections; on a shutdown signal, stops accepting and lets in-flight requests finish.
async fn serve_http(listener: tokio::net::TcpListener, app: axum::Router, limits: HttpLimits) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_headers(MAX_HEADERS)
        .max_header_size(MAX_HEADER_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_timeout_ms));
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let body_timeout = Duration::from_millis(limits.body_timeout_ms);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    let mut backoff = ACCEPT_BACKOFF.0;
    let registry = conn::Registry::default();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    backoff = ACCEPT_BACKOFF.0;
                    stream
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off (doubling) instead of spinning.
                    warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // At the cap: make room by closing the oldest connection that has sent no request for a while;
        // when every one is at work, wait for one to end (the next ones wait in the accept queue, holding
        // no descriptor of ours).
        let slot = loop {
            if let Ok(slot) = slots.clone().try_acquire_owned() {
                break Some(slot);
            }
            if registry.evict_oldest_idle() {
                debug!("at the connection cap: closed the oldest connection without a request");
            }
            tokio::select! {
                slot = slots.clone().acquire_owned() => break slot.ok(),
                _ = tokio::time::sleep(CAP_RECHECK) => {}
                _ = &mut shutdown => break None,
            }
        };
        let Some(slot) = slot else { break };
        let open = registry.add(limits.max_connections);
        let service = TowerToHyperService::new(conn::with_body_deadline(app.clone(), body_timeout, open.clone()));
        let stream = conn::IdleTimeout::new(stream, idle, open.clone());
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => {
                    if let Err(e) = ended {
                        debug!(error = %e, "connection ended with an error");
                    }
                }
                _ = open.evict.notified() => {}
            }
            open.close();
            drop(slot);
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
