//! `stepper-local`: every route and the step loop in one process, on the embedded default
//! (in-memory store, in-process delay queue) or on Upstash when `UPSTASH_REDIS_REST_URL` is set.
//! `stepper-local --print-openapi` prints the OpenAPI document (`GET /openapi.json`) and exits.

mod conn;
mod metrics;
mod sweeper;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use shared::adapters::queue::local::LocalQueue;
use shared::wiring::config::{Config, HttpLimits};
use shared::wiring::workers::{run_workers_until, WorkerPolicy};
use tracing::{debug, error, info, warn};

/// mimalloc, not glibc's malloc: a request allocates and frees many small blocks across the runtime's
/// threads, where glibc's arenas spent a large share of the server's CPU (README, "Capacity").
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
    if let Err(refusal) = refuse_unsafe_exposure(&config) {
        error!("{refusal}");
        eprintln!("stepper-local: {refusal}");
        return ExitCode::from(2);
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

/// Off loopback, the server is reachable from elsewhere: it refuses to start open (anyone could submit,
/// read and purge jobs) and on the in-memory store (its jobs die with the process, and several
/// instances would not share them) unless the operator says so.
fn refuse_unsafe_exposure(config: &Config) -> Result<(), String> {
    let listen = config.server.listen;
    if listen.ip().is_loopback() {
        return Ok(());
    }
    if config.keys.is_open() {
        return Err(format!(
            "refusing to listen on {listen} (off loopback) without STEPPER_API_KEYS: set STEPPER_API_KEYS=owner=key \
             (or listen on 127.0.0.1 with STEPPER_LISTEN)"
        ));
    }
    if config.upstash.is_none() && !config.server.allow_memory_store {
        return Err(format!(
            "refusing to listen on {listen} (off loopback) on the in-memory store: set UPSTASH_REDIS_REST_URL and \
             UPSTASH_REDIS_REST_TOKEN, or STEPPER_ALLOW_MEMORY_STORE=true for one instance whose jobs die with it"
        ));
    }
    Ok(())
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
    let addr = config.server.listen;
    let listener = listen(addr).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let addr = listener.local_addr()?;
    announce(&config, addr);
    // A persistent store may hold jobs whose in-process messages died with the last process.
    match service.engine.redrive_unfinished().await {
        Ok(0) => {}
        Ok(n) => info!(jobs = n, "re-drove unfinished jobs from the store"),
        Err(e) => warn!(error = %e, "could not re-drive unfinished jobs at start"),
    }
    // Set once the shutdown signal arrives: the workers and the sweeper stop taking work.
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let when_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let workers = tokio::spawn(run_workers_until(
        deliveries,
        queue,
        service.engine.clone(),
        WorkerPolicy::default(),
        when_stopped(stopped.clone()),
    ));
    let activity = Arc::new(sweeper::Activity::default());
    // On a shared store, every instance sweeps for the others (the in-memory store has one instance).
    let sweeping = config.upstash.is_some().then(|| {
        tokio::spawn(sweeper::run(
            service.engine.clone(),
            Duration::from_millis(config.server.sweep_interval_ms),
            activity.clone(),
            when_stopped(stopped.clone()),
        ))
    });
    let token = std::env::var("METRICS_TOKEN").ok().filter(|t| !t.is_empty());
    // On the shutdown signal, `GET /ready` answers 503 while what is under way finishes.
    let draining = service.clone();
    let mut signal = stopped;
    tokio::spawn(async move {
        if signal.wait_for(|s| *s).await.is_ok() {
            draining.drain();
        }
    });
    let app = metrics::routes(metrics, token).merge(shared::api::router(service));
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let until = serve_http(listener, app, config.http, activity, &stopping, grace).await;
    // The HTTP side has finished (or given up at the grace's end): the steps under way get what is left
    // of the grace. A step cut short keeps its lease; its job is in the due-index, where another
    // instance's sweep finds it when the lease lapses.
    if tokio::time::timeout_at(until, workers).await.is_err() {
        warn!(
            grace_s = grace.as_secs(),
            "steps still under way at the end of the shutdown grace; their jobs are left to the other instances"
        );
    }
    if let Some(sweeping) = sweeping {
        sweeping.abort();
    }
    info!("stepper-local stopped");
    Ok(())
}

/// At the cap, how often the accept loop looks again for a silent connection to close.
const CAP_RECHECK: Duration = Duration::from_millis(25);

/// Connections past the cap wait in the kernel's accept queue, which must hold them (the kernel caps it
/// at `net.core.somaxconn`): a connection that overflows it is left half-open by the kernel, unseen.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Which pool a connection was given.
enum Slot {
    /// One of `HTTP_MAX_CONNECTIONS`: every route.
    Full(tokio::sync::OwnedSemaphorePermit),
    /// At the cap, with every connection at work: one request, `/health` and `/ready` answered, any
    /// other a 503 "busy" at once (see [`conn::OVERFLOW_SLOTS`]).
    Overflow(tokio::sync::OwnedSemaphorePermit),
}

/// HTTP/1.1 with bounded request heads, a deadline on each head and each body, a minimum body data
/// rate, an idle timeout and a cap on open connections (past it, a few more connections are served
/// health checks only); on the shutdown signal, sends `stopping` (`/ready` answers 503, the workers
/// take no new message), stops accepting and lets in-flight requests finish within `grace`. Returns the grace's end.
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    activity: Arc<sweeper::Activity>,
    stopping: &tokio::sync::watch::Sender<bool>,
    grace: Duration,
) -> tokio::time::Instant {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_headers(MAX_HEADERS)
        .max_header_size(MAX_HEADER_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_timeout_ms));
    let mut overflow_http = hyper::server::conn::http1::Builder::new();
    overflow_http
        .max_headers(MAX_HEADERS)
        .max_header_size(MAX_HEADER_BYTES)
        .timer(TokioTimer::new())
        .keep_alive(false)
        .header_read_timeout(conn::OVERFLOW_HEADER_TIMEOUT.min(Duration::from_millis(limits.header_timeout_ms)));
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let body_timeout = Duration::from_millis(limits.body_timeout_ms);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let overflow = Arc::new(tokio::sync::Semaphore::new(conn::OVERFLOW_SLOTS));
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
        // when every one is at work, serve this one from the small overflow pool (health checks, or a
        // 503 at once), and when that is full too, wait for a slot (the next ones wait in the accept
        // queue, holding no descriptor of ours).
        let slot = loop {
            if let Ok(slot) = slots.clone().try_acquire_owned() {
                break Some(Slot::Full(slot));
            }
            if registry.evict_oldest_idle() {
                debug!("at the connection cap: closed the oldest connection without a request");
            } else if registry.all_at_work() {
                if let Ok(slot) = overflow.clone().try_acquire_owned() {
                    break Some(Slot::Overflow(slot));
                }
            }
            tokio::select! {
                slot = slots.clone().acquire_owned() => break slot.ok().map(Slot::Full),
                _ = tokio::time::sleep(CAP_RECHECK) => {}
                _ = &mut shutdown => break None,
            }
        };
        let Some(slot) = slot else { break };
        let answering = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let io = TokioIo::new(conn::IdleTimeout::new(stream, idle, answering.clone()));
        match slot {
            Slot::Full(slot) => {
                let open = registry.add(limits.max_connections);
                let service = TowerToHyperService::new(conn::with_body_deadline(
                    app.clone(),
                    body_timeout,
                    open.clone(),
                    activity.clone(),
                    answering,
                ));
                let connection = graceful.watch(http.serve_connection(io, service));
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
            Slot::Overflow(slot) => {
                let service = TowerToHyperService::new(conn::health_only(app.clone()));
                let connection = graceful.watch(overflow_http.serve_connection(io, service));
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        debug!(error = %e, "overflow connection ended with an error");
                    }
                    drop(slot);
                });
            }
        }
    }
    let until = tokio::time::Instant::now() + grace;
    // Draining: `/ready` answers 503, the workers and the sweeper take no new work.
    let _ = stopping.send(true);
    drop(listener);
    if tokio::time::timeout_at(until, graceful.shutdown()).await.is_err() {
        warn!(
            grace_s = grace.as_secs(),
            "requests still under way at the end of the shutdown grace"
        );
    }
    until
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
    info!("shutdown signal received: draining (no new connections; in-flight requests and steps finish)");
}
