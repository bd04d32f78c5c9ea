//! A loopback receiver for operational alerts: records every POST it gets (path, headers, JSON body)
//! and answers with the next scripted status (200 once the script is used up). One per sink kind in
//! the alert tests; the URL paths mimic Discord's (`/api/webhooks/<id>/<token>`) and Slack's
//! (`/services/T/B/X`), and the kind is named by the `discord+` / `slack+` prefix of the URL.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use axum::Router;
use serde_json::Value;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct ReceivedAlert {
    pub path: String,
    pub headers: HashMap<String, String>,
    /// The raw body (for signature checks and "does not contain" assertions).
    pub raw: String,
    pub body: Value,
}

#[derive(Default)]
struct Shared {
    got: Vec<ReceivedAlert>,
    statuses: VecDeque<u16>,
}

pub struct AlertReceiver {
    pub port: u16,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl AlertReceiver {
    /// Listens on a free loopback port; answers `statuses` in order, then 200 (every answer is recorded).
    pub async fn start(statuses: &[u16]) -> anyhow::Result<Self> {
        let shared = Arc::new(Mutex::new(Shared {
            got: Vec::new(),
            statuses: statuses.iter().copied().collect(),
        }));
        let app = Router::new().fallback(post(record)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { port, shared, task })
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The origin, for `CALLBACK_ALLOWED_ORIGINS`.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything received so far, in order.
    pub fn received(&self) -> Vec<ReceivedAlert> {
        self.shared.lock().map(|s| s.got.clone()).unwrap_or_default()
    }
}

impl Drop for AlertReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(State(shared): State<Arc<Mutex<Shared>>>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let raw = String::from_utf8_lossy(&body).into_owned();
    let received = ReceivedAlert {
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw,
    };
    let Ok(mut shared) = shared.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    shared.got.push(received);
    let status = shared.statuses.pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
}
