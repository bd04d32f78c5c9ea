//! A proxy in front of the Upstash REST emulator that counts what hosted Upstash bills: every command
//! Redis **executes** for a request. A `/pipeline` of N commands is N; an `EVAL`/`EVALSHA` is the call
//! plus every `redis.call` its script ran (Upstash's own cost tables bill a rate-limit script of two
//! `redis.call`s as 3). The count comes from the redis-server behind the emulator, not from our scripts:
//! the proxy reads `INFO commandstats` before and after each request (requests are forwarded one at a
//! time for that), so a script that under-reports itself is caught. It also counts the REST requests and
//! keeps, per request, the names of the commands it carried and what they executed, so a test can say
//! which route spent what.

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
    /// Commands redis-server executed for it (a script's inner commands included).
    pub executed: u64,
}

impl BilledRequest {
    /// Commands Upstash bills for this request: every command executed.
    pub fn billed(&self) -> u64 {
        self.executed
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
    /// Answers to inject instead of forwarding (`ERR max requests limit exceeded`, …): the next
    /// `n` requests get this error body, as hosted Upstash answers it.
    inject: Mutex<Option<(u64, String)>>,
}

impl Counters {
    /// Keeps one request's bill in the log.
    fn record(&self, request: BilledRequest) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).push(request);
    }
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    counters: Arc<Counters>,
    /// The redis-server behind the emulator, whose `INFO commandstats` says what ran.
    redis_port: u16,
    /// One request at a time, so the commandstats delta is that request's.
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
}

/// Commands redis-server has executed so far, from `INFO commandstats`: every command but `info`
/// itself (the proxy's own reads) and the emulator's connection set-up (`hello`, `client`, `auth`,
/// `select`, `ping`), which hosted Upstash does not bill.
pub async fn executed_so_far(redis_port: u16) -> anyhow::Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", redis_port)).await?;
    stream.write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n").await?;
    // $<len>\r\n<body>\r\n
    let mut reply = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            anyhow::bail!("redis closed the connection");
        }
        reply.extend_from_slice(&chunk[..n]);
        if let Some(eol) = reply.windows(2).position(|w| w == b"\r\n") {
            let len: usize = std::str::from_utf8(&reply[1..eol])?.parse()?;
            if reply.len() >= eol + 2 + len {
                let body = std::str::from_utf8(&reply[eol + 2..eol + 2 + len])?;
                return Ok(sum_commandstats(body));
            }
        }
    }
}

/// The calls of `INFO commandstats`' lines, but those of the commands nobody bills.
fn sum_commandstats(info: &str) -> u64 {
    const UNBILLED: [&str; 6] = ["info", "hello", "client", "auth", "select", "ping"];
    info.lines()
        .filter_map(|line| line.strip_prefix("cmdstat_")?.split_once(':'))
        // cmdstat_client|setinfo: a subcommand of an unbilled command
        .filter(|(name, _)| !UNBILLED.contains(&name.split('|').next().unwrap_or(name)))
        .filter_map(|(_, rest)| {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse::<u64>()
                .ok()
        })
        .sum()
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
    {
        let mut inject = proxy.counters.inject.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((left, error)) = inject.as_mut() {
            let body = serde_json::json!({ "error": error.clone() }).to_string();
            *left -= 1;
            if *left == 0 {
                *inject = None;
            }
            // Hosted Upstash refuses the request whole: nothing runs, nothing is billed.
            proxy.counters.record(BilledRequest {
                path,
                commands,
                executed: 0,
            });
            return (
                StatusCode::BAD_REQUEST,
                [(http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
        }
    }
    let mut upstream = proxy.http.post(format!("{}{path}", proxy.upstream)).body(bytes);
    for name in [http::header::AUTHORIZATION, http::header::CONTENT_TYPE] {
        if let Some(value) = parts.headers.get(&name) {
            upstream = upstream.header(name, value);
        }
    }
    let turn = proxy.one_at_a_time.lock().await;
    let before = executed_so_far(proxy.redis_port).await;
    let answer = match upstream.send().await {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, r.bytes().await.unwrap_or_default()).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    };
    let after = executed_so_far(proxy.redis_port).await;
    drop(turn);
    let executed = match (before, after) {
        (Ok(before), Ok(after)) => after.saturating_sub(before),
        // redis-server unreachable: what the request carried is the least it cost.
        _ => commands.len() as u64,
    };
    proxy.counters.billed.fetch_add(executed, Ordering::SeqCst);
    proxy.counters.record(BilledRequest {
        path,
        commands,
        executed,
    });
    answer
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
    /// Starts a proxy that forwards to `upstream` (the emulator's URL), which serves `redis` (whose
    /// `INFO commandstats` says what each request executed).
    pub async fn start(upstream: &str, redis: &crate::stack::RedisServer) -> anyhow::Result<Self> {
        let counters = Arc::new(Counters::default());
        let proxy = Proxy {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            counters: counters.clone(),
            redis_port: redis.port,
            one_at_a_time: Arc::new(tokio::sync::Mutex::new(())),
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

    /// The next `requests` requests are answered with `error` as hosted Upstash answers a refused
    /// request (HTTP 400, `{"error": ...}`), without reaching the store: `ERR max requests limit
    /// exceeded` when the plan's monthly quota is spent, `ERR max request size exceeded`.
    pub fn inject_error(&self, error: &str, requests: u64) {
        *self.counters.inject.lock().unwrap_or_else(|p| p.into_inner()) =
            (requests > 0).then(|| (requests, error.to_string()));
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

    #[test]
    fn commandstats_sum_leaves_out_what_nobody_bills() {
        let info = "# Commandstats\r\ncmdstat_get:calls=3,usec=12,usec_per_call=4.00\r\n\
cmdstat_evalsha:calls=2,usec=50\r\ncmdstat_info:calls=9,usec=1\r\ncmdstat_client|setinfo:calls=2,usec=1\r\n";
        assert_eq!(sum_commandstats(info), 5);
    }
}
