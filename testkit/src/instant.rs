//! An OpenAI-compatible provider that answers every chat completion at once with one fixed
//! [`FakeReply`], for load tests: unlike [`crate::fake::FakeProvider`] it records nothing but a hit
//! count, so its own cost stays flat however many requests it serves. It can hold its answers
//! (every request waits until released), which keeps jobs in flight on purpose.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::fake::FakeReply;

const PATH: &str = "/v1/chat/completions";

struct Prepared {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone)]
struct Shared {
    reply: Arc<Prepared>,
    hits: Arc<AtomicU64>,
    waiting: Arc<AtomicU64>,
    held: watch::Receiver<bool>,
}

async fn answer(State(shared): State<Shared>, method: Method, uri: Uri, _body: Bytes) -> Response {
    if method != Method::POST || uri.path() != PATH {
        return (StatusCode::NOT_FOUND, "unknown path").into_response();
    }
    shared.hits.fetch_add(1, Ordering::Relaxed);
    if *shared.held.borrow() {
        shared.waiting.fetch_add(1, Ordering::Relaxed);
        let mut held = shared.held.clone();
        let _ = held.wait_for(|held| !*held).await;
        shared.waiting.fetch_sub(1, Ordering::Relaxed);
    }
    let reply = &shared.reply;
    (reply.status, reply.headers.clone(), reply.body.clone()).into_response()
}

/// The provider, on a free loopback port; it stops when dropped.
pub struct InstantProvider {
    port: u16,
    hits: Arc<AtomicU64>,
    waiting: Arc<AtomicU64>,
    hold: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for InstantProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl InstantProvider {
    /// Answers `POST /v1/chat/completions` with `reply` (for example
    /// [`FakeReply::openai_text`]); any other request gets 404.
    pub async fn start(reply: FakeReply) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::new();
        for (name, value) in &reply.headers {
            headers.insert(
                HeaderName::try_from(name.as_str())?,
                HeaderValue::try_from(value.as_str())?,
            );
        }
        let prepared = Prepared {
            status: StatusCode::from_u16(reply.status)?,
            headers,
            body: Bytes::from(reply.body),
        };
        let (hold, held) = watch::channel(false);
        let hits = Arc::new(AtomicU64::new(0));
        let waiting = Arc::new(AtomicU64::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let app = axum::Router::new().fallback(answer).with_state(Shared {
            reply: Arc::new(prepared),
            hits: hits.clone(),
            waiting: waiting.clone(),
            held,
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            port,
            hits,
            waiting,
            hold,
            server,
        })
    }

    /// The `base_url` of an OpenAI-compatible provider configuration (ends in `/v1`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The origin alone (`http://127.0.0.1:<port>`), for clients that append `/v1/chat/completions`.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Chat completions received so far (held ones included).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Requests waiting for [`release`](Self::release).
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// From now on every request waits until [`release`](Self::release).
    pub fn hold(&self) {
        self.hold.send_replace(true);
    }

    /// Answers every held request and stops holding.
    pub fn release(&self) {
        self.hold.send_replace(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_at_once_and_holds_until_released() {
        let provider = InstantProvider::start(FakeReply::openai_text("{\"a\":1}"))
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let url = format!("{}/chat/completions", provider.base_url());
        let body: serde_json::Value = http.post(&url).body("{}").send().await.unwrap().json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "{\"a\":1}");
        assert_eq!(http.get(&url).send().await.unwrap().status(), 404);

        provider.hold();
        let held = tokio::spawn({
            let (http, url) = (http.clone(), url.clone());
            async move { http.post(&url).body("{}").send().await.map(|r| r.status().as_u16()) }
        });
        while provider.waiting() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(!held.is_finished());
        provider.release();
        assert_eq!(held.await.unwrap().unwrap(), 200);
        assert_eq!(provider.hits(), 2, "the 404 is not a chat completion");
    }
}
