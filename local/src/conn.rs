//! What one connection may hold: an idle timeout on the socket and a deadline on each request body
//! (the request head's deadline is hyper's own `header_read_timeout`), and which connection gives way
//! when the server is at its cap.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// A socket that fails with `TimedOut` once nothing has moved either way for `idle` while the server
/// waits on it: idle keep-alive connections, connections that never send a byte, stalled transfers.
pub struct IdleTimeout {
    inner: TcpStream,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    /// Requests being answered on this connection right now: while one is (an immediate route waits up
    /// to 25 s for its job), the connection is not idle, whatever the socket does.
    answering: Arc<AtomicUsize>,
}

impl IdleTimeout {
    pub fn new(inner: TcpStream, idle: Duration, answering: Arc<AtomicUsize>) -> Self {
        Self {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            answering,
        }
    }

    fn moved(&mut self) {
        self.timer.as_mut().reset(Instant::now() + self.idle);
    }

    /// Pending on the socket: fail once the idle time is up (the timer wakes this task then), unless a
    /// request is being answered (the timer starts again).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.timer.as_mut().poll(cx).is_ready() {
            return false;
        }
        if self.answering.load(Ordering::Relaxed) > 0 {
            self.moved();
            // Registers the new deadline's wake-up.
            return self.timer.as_mut().poll(cx).is_ready();
        }
        true
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long")
}

impl AsyncRead for IdleTimeout {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.moved();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for IdleTimeout {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.moved();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // A client that stops reading our answer holds the connection no longer than an idle one.
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The slowest request body served past [`MIN_RATE_GRACE`]: fewer bytes a second than this, counted from
/// the head's arrival, and the body is refused (Kestrel's default: 240 bytes/s after 5 s). A caller on a
/// real link sends a 16 KiB body in well under a second; a connection that trickles one byte now and then
/// only holds a slot.
pub const MIN_BODY_RATE: u64 = 240;
pub const MIN_RATE_GRACE: Duration = Duration::from_secs(5);

/// A request body that must be complete `timeout` after its head arrived and, past [`MIN_RATE_GRACE`],
/// arrive at [`MIN_BODY_RATE`] at least; past either, reading fails (the route answers its body error and
/// hyper closes the connection, the body unread).
pub struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
    started: Instant,
    received: u64,
    /// When the data rate is checked next: at the grace's end, then every second.
    rate_check: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        let started = Instant::now();
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            started,
            received: 0,
            rate_check: Box::pin(tokio::time::sleep_until(started + MIN_RATE_GRACE)),
        }
    }

    /// Whether the body has fallen below the minimum rate (checked on its timer; the timer is re-armed
    /// and registered with this task while the rate holds).
    fn too_slow(&mut self, cx: &mut Context<'_>) -> bool {
        while self.rate_check.as_mut().poll(cx).is_ready() {
            let elapsed = self.started.elapsed();
            if self.received * 1000 < MIN_BODY_RATE * elapsed.as_millis() as u64 {
                return true;
            }
            self.rate_check.as_mut().reset(Instant::now() + Duration::from_secs(1));
        }
        false
    }
}

#[derive(Debug)]
pub enum BodyTimeout {
    Deadline(Duration),
    TooSlow { received: u64, elapsed: Duration },
}

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyTimeout::Deadline(d) => write!(f, "the request body was not complete within {} s", d.as_secs()),
            BodyTimeout::TooSlow { received, elapsed } => write!(
                f,
                "the request body arrived too slowly: {received} bytes in {} ms (the minimum is {MIN_BODY_RATE} \
                 bytes/s after {} s)",
                elapsed.as_millis(),
                MIN_RATE_GRACE.as_secs()
            ),
        }
    }
}

impl std::error::Error for BodyTimeout {}

impl HttpBody for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(|f| f.data_ref())) {
                    this.received += data.map_or(0, |d| d.len() as u64);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending if this.deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Some(Err(Box::new(BodyTimeout::Deadline(this.timeout)))))
            }
            Poll::Pending if this.too_slow(cx) => Poll::Ready(Some(Err(Box::new(BodyTimeout::TooSlow {
                received: this.received,
                elapsed: this.started.elapsed(),
            })))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection is not closed to make room before it has been open this long without a request: a
/// client's head arrives within milliseconds of its connection, so only the silent ones are chosen.
pub const EVICTABLE_AFTER: Duration = Duration::from_millis(250);

/// One open connection, as the accept loop sees it when it must make room.
pub struct Open {
    since: Instant,
    /// A request head arrived on it: it is doing (or did) real work.
    started: AtomicBool,
    done: AtomicBool,
    /// Close now: the server is at its cap and this connection never sent a request.
    pub evict: tokio::sync::Notify,
}

impl Default for Open {
    fn default() -> Self {
        Self {
            since: Instant::now(),
            started: AtomicBool::new(false),
            done: AtomicBool::new(false),
            evict: tokio::sync::Notify::new(),
        }
    }
}

impl Open {
    /// The connection ended (on its own or evicted).
    pub fn close(&self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// The open connections, oldest first.
#[derive(Default)]
pub struct Registry {
    open: Mutex<VecDeque<Arc<Open>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Open>>> {
        // A panic elsewhere cannot leave the list inconsistent: every change is one push or remove.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection; ended ones are dropped from the list as it grows.
    pub fn add(&self, cap: usize) -> Arc<Open> {
        let open = Arc::new(Open::default());
        let mut list = self.lock();
        if list.len() >= 2 * cap {
            list.retain(|o| !o.done.load(Ordering::Relaxed));
        }
        list.push_back(open.clone());
        open
    }

    /// At the cap: closes the oldest connection that has not sent a request head in
    /// [`EVICTABLE_AFTER`] (idle since it connected, or trickling its head), so a new one is served
    /// instead of waiting behind it. Returns whether there was one; connections at work are never closed
    /// to make room.
    pub fn evict_oldest_idle(&self) -> bool {
        let mut list = self.lock();
        list.retain(|o| !o.done.load(Ordering::Relaxed));
        let Some(index) = list
            .iter()
            .position(|o| !o.started.load(Ordering::Relaxed) && o.since.elapsed() >= EVICTABLE_AFTER)
        else {
            return false;
        };
        if let Some(open) = list.remove(index) {
            open.close();
            open.evict.notify_one();
        }
        true
    }
}

impl Registry {
    /// Whether every open connection has sent a request (none is silent, however young): then no
    /// connection will give way to a new one, which goes to the overflow pool instead.
    pub fn all_at_work(&self) -> bool {
        let list = self.lock();
        list.iter()
            .all(|o| o.done.load(Ordering::Relaxed) || o.started.load(Ordering::Relaxed))
    }
}

/// The router, each request's body under a deadline of `timeout` from its head's arrival and the
/// minimum data rate; the first request marks the connection as started, and each is noted as activity
/// for the sweeper.
pub fn with_body_deadline(
    app: axum::Router,
    timeout: Duration,
    open: Arc<Open>,
    activity: Arc<crate::sweeper::Activity>,
    answering: Arc<AtomicUsize>,
) -> impl tower::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    use tower::ServiceExt;
    let answered = answering.clone();
    app.map_request(move |request: hyper::Request<Incoming>| {
        open.started.store(true, Ordering::Relaxed);
        answering.fetch_add(1, Ordering::Relaxed);
        activity.saw(request.uri().path());
        request.map(|inner| Body::new(DeadlineBody::new(inner, timeout)))
    })
    .map_response(move |response| {
        answered.fetch_sub(1, Ordering::Relaxed);
        response
    })
}

/// Connections served past the cap when every connection under it is at work: each gets one request,
/// answered at once (`/health` and `/ready` by the router, anything else a 503 "busy"), so a load
/// balancer's health check is answered however the cap is held.
pub const OVERFLOW_SLOTS: usize = 32;
/// An overflow connection's head must arrive this soon (a health checker sends it at once).
pub const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// The service of an overflow connection: the health routes, or 503 with `Retry-After`.
pub fn health_only(
    app: axum::Router,
) -> impl tower::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    use tower::ServiceExt;
    tower::service_fn(move |request: hyper::Request<Incoming>| {
        let app = app.clone();
        async move {
            let path = request.uri().path();
            if request.method() == hyper::Method::GET && matches!(path, "/health" | "/ready") {
                app.oneshot(request.map(Body::new)).await
            } else {
                Ok(busy())
            }
        }
    })
}

fn busy() -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1"), (header::CONNECTION, "close")],
        axum::Json(serde_json::json!({
            "error": "Service Unavailable",
            "code": "busy",
            "message": "the server is at its connection cap (HTTP_MAX_CONNECTIONS) with every connection at work; retry shortly",
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_answer_says_retry() {
        let answer = busy();
        assert_eq!(answer.status(), 503);
        assert_eq!(answer.headers()["retry-after"], "1");
    }
}
