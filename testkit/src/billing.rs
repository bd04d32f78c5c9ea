//! A proxy in front of the Upstash REST emulator that counts what hosted Upstash would bill: every
//! command of a request, so a `/pipeline` of N commands is N and an `EVAL`/`EVALSHA` is one however
//! many commands its script runs. It also counts the REST requests and keeps, per request, the names
//! of the commands it carried, so a test can say which route spent what.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// One REST request as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BilledRequest {
    /// `/`, `/pipeline` or `/multi-exec`.
    pub path: String,
    /// The command names it carried, upper-cased (`EVALSHA`, `SET`, …), in order.
    pub commands: Vec<String>,
}

impl BilledRequest {
    /// Commands Upstash bills for this request.
    pub fn billed(&self) -> u64 {
        self.commands.len() as u64
    }
}

/// Totals since the last [`BillingProxy::reset`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub requests: u64,
    pub billed: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    billed: AtomicU64,
    log: Mutex<Vec<BilledRequest>>,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    counters: Arc<Counters>,
}

/// The commands a REST body carries: one array for `/`, an array of arrays for `/pipeline` and
/// `/multi-exec`. A body that is neither is billed as nothing (the emulator refuses it).
pub fn commands_of(path: &str, body: &[u8]) -> Vec<String> {
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let name = |command: &Value| {
        command
            .as_array()
            .and_then(|c| c.first())
            .map(|n| match n {
                Value::String(s) => s.to_ascii_uppercase(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    match path {
        "/pipeline" | "/multi-exec" => items.iter().map(name).collect(),
        _ => vec![name(&Value::Array(items))],
    }
}

async fn forward(State(proxy): State<Proxy>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024 * 1024).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let path = parts.uri.path().to_string();
    let commands = commands_of(&path, &bytes);
    proxy.counters.requests.fetch_add(1, Ordering::SeqCst);
    proxy.counters.billed.fetch_add(commands.len() as u64, Ordering::SeqCst);
    proxy
        .counters
        .log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(BilledRequest {
            path: path.clone(),
            commands,
        });
    let mut upstream = proxy.http.post(format!("{}{path}", proxy.upstream)).body(bytes);
    for name in [http::header::AUTHORIZATION, http::header::CONTENT_TYPE] {
        if let Some(value) = parts.headers.get(&name) {
            upstream = upstream.header(name, value);
        }
    }
    match upstream.send().await {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, r.bytes().await.unwrap_or_default()).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// The counting proxy, on a free loopback port; it stops when dropped.
pub struct BillingProxy {
    pub url: String,
    counters: Arc<Counters>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for BillingProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl BillingProxy {
    /// Starts a proxy that forwards to `upstream` (the emulator's URL).
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let counters = Arc::new(Counters::default());
        let proxy = Proxy {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            counters: counters.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, counters, server })
    }

    pub fn tally(&self) -> Tally {
        Tally {
            requests: self.counters.requests.load(Ordering::SeqCst),
            billed: self.counters.billed.load(Ordering::SeqCst),
        }
    }

    /// The requests seen since the last call (or the last reset), oldest first.
    pub fn take_log(&self) -> Vec<BilledRequest> {
        std::mem::take(&mut *self.counters.log.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Zeroes the totals and forgets the log.
    pub fn reset(&self) {
        self.counters.requests.store(0, Ordering::SeqCst);
        self.counters.billed.store(0, Ordering::SeqCst);
        self.take_log();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_bills_each_command_and_a_script_once() {
        let pipeline = br#"[["SET","l","1","NX","PX","100"],["GET","j"],["HGETALL","p"]]"#;
        assert_eq!(commands_of("/pipeline", pipeline), ["SET", "GET", "HGETALL"]);
        let script = br#"["evalsha","abc",2,"k1","k2","a"]"#;
        assert_eq!(commands_of("/", script), ["EVALSHA"]);
        assert_eq!(commands_of("/", b"not json"), Vec::<String>::new());
    }
}
