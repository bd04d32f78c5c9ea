//! What one connection may hold: an idle timeout on the socket and a deadline on each request body
//! (the request head's deadline is hyper's own `header_read_timeout`), and which connection gives way
//! when the server is at its cap.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// The connection's entry: while a request is being answered (an immediate route waits up to
    /// 25 s for its job), the connection is not idle, whatever the socket does.
    open: Arc<Open>,
}

impl IdleTimeout {
    pub fn new(inner: TcpStream, idle: Duration, open: Arc<Open>) -> Self {
        Self {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            open,
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
        if self.open.answering.load(Ordering::Relaxed) > 0 {
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

/// A request body that must be complete `timeout` after its head arrived; past it, reading fails (the
/// route answers its body error and hyper closes the connection, the body unread).
pub struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
}

#[derive(Debug)]
pub struct BodyTimeout(Duration);

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body was not complete within {} s", self.0.as_secs())
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
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending if this.deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout)))))
            }
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
    /// Requests being answered right now.
    answering: std::sync::atomic::AtomicUsize,
    /// Close now: the server is at its cap and this connection never sent a request.
    pub evict: tokio::sync::Notify,
}

impl Default for Open {
    fn default() -> Self {
        Self {
            since: Instant::now(),
            started: AtomicBool::new(false),
            done: AtomicBool::new(false),
            answering: std::sync::atomic::AtomicUsize::new(0),
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

/// The router, each request's body under a deadline of `timeout` from its head's arrival; the first
/// request marks the connection as started.
pub fn with_body_deadline(
    app: axum::Router,
    timeout: Duration,
    open: Arc<Open>,
) -> impl tower::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    use tower::ServiceExt;
    let answered = open.clone();
    app.map_request(move |request: hyper::Request<Incoming>| {
        open.started.store(true, Ordering::Relaxed);
        open.answering.fetch_add(1, Ordering::Relaxed);
        request.map(|inner| {
            Body::new(DeadlineBody {
                inner,
                deadline: Box::pin(tokio::time::sleep(timeout)),
                timeout,
            })
        })
    })
    .map_response(move |response| {
        answered.answering.fetch_sub(1, Ordering::Relaxed);
        response
    })
}
