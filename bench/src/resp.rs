//! A plain RESP connection to a `redis-server` under test: what is stored (`DBSIZE`, `SCAN`,
//! `MEMORY USAGE`), commands per name (`INFO commandstats`), and the commands clients send
//! (`MONITOR`, which marks the ones a script runs with `[… lua]`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub(crate) enum Reply {
    Text(String),
    Int(i64),
    Nil,
    Array(Vec<Reply>),
}

impl Reply {
    fn text(&self) -> Option<&str> {
        match self {
            Reply::Text(s) => Some(s),
            _ => None,
        }
    }
}

pub(crate) struct Resp {
    reader: BufReader<TcpStream>,
    /// The client address redis sees for this connection, to tell its commands apart in `MONITOR`.
    pub local: String,
}

impl Resp {
    pub async fn connect(port: u16) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let local = stream.local_addr()?.to_string();
        Ok(Self {
            reader: BufReader::new(stream),
            local,
        })
    }

    pub async fn call(&mut self, args: &[&str]) -> anyhow::Result<Reply> {
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.reader.get_mut().write_all(request.as_bytes()).await?;
        read_reply(&mut self.reader).await
    }

    pub async fn keys(&mut self) -> anyhow::Result<Vec<String>> {
        let mut cursor = "0".to_string();
        let mut keys = Vec::new();
        loop {
            let reply = self.call(&["SCAN", &cursor, "COUNT", "1000"]).await?;
            let Reply::Array(parts) = reply else {
                bail!("SCAN answered {reply:?}");
            };
            cursor = parts.first().and_then(Reply::text).context("SCAN cursor")?.to_string();
            if let Some(Reply::Array(batch)) = parts.get(1) {
                keys.extend(batch.iter().filter_map(Reply::text).map(str::to_string));
            }
            if cursor == "0" {
                return Ok(keys);
            }
        }
    }

    /// Every key with its `MEMORY USAGE` in bytes.
    pub async fn key_bytes(&mut self) -> anyhow::Result<HashMap<String, u64>> {
        let mut sizes = HashMap::new();
        for key in self.keys().await? {
            let bytes = match self.call(&["MEMORY", "USAGE", &key]).await? {
                Reply::Int(n) => n as u64,
                _ => 0,
            };
            sizes.insert(key, bytes);
        }
        Ok(sizes)
    }

    /// Calls per command name since the last `CONFIG RESETSTAT`, the commands scripts run included;
    /// the benchmark's own inspection commands are left out.
    pub async fn command_calls(&mut self) -> anyhow::Result<u64> {
        let Reply::Text(info) = self.call(&["INFO", "commandstats"]).await? else {
            bail!("INFO did not answer text");
        };
        let mut total = 0;
        for line in info.lines() {
            let Some((name, rest)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else {
                continue;
            };
            if ["info", "config", "dbsize", "scan", "memory", "monitor"].contains(&name) {
                continue;
            }
            total += rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|c| c.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Ok(total)
    }

    pub async fn reset_stats(&mut self) -> anyhow::Result<()> {
        self.call(&["CONFIG", "RESETSTAT"]).await.map(|_| ())
    }
}

async fn read_reply(reader: &mut BufReader<TcpStream>) -> anyhow::Result<Reply> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        bail!("redis closed the connection");
    }
    let line = line.trim_end();
    let (kind, rest) = line.split_at(1.min(line.len()));
    match kind {
        "+" => Ok(Reply::Text(rest.to_string())),
        "-" => Err(anyhow!("redis: {rest}")),
        ":" => Ok(Reply::Int(rest.parse()?)),
        "$" => {
            let len: i64 = rest.parse()?;
            if len < 0 {
                return Ok(Reply::Nil);
            }
            let mut body = vec![0u8; len as usize + 2];
            reader.read_exact(&mut body).await?;
            body.truncate(len as usize);
            Ok(Reply::Text(String::from_utf8_lossy(&body).into_owned()))
        }
        "*" => {
            let n: i64 = rest.parse()?;
            let mut items = Vec::with_capacity(n.max(0) as usize);
            for _ in 0..n.max(0) {
                items.push(Box::pin(read_reply(reader)).await?);
            }
            Ok(Reply::Array(items))
        }
        _ => bail!("unexpected redis reply {line:?}"),
    }
}

/// Counts, through `MONITOR`, the commands clients send (what a per-command bill counts: a script
/// call is one; the commands it runs, marked `lua`, are not), leaving out the connections named in
/// `ignore` (the benchmark's own).
pub(crate) struct Monitor {
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Monitor {
    pub async fn start(port: u16, ignore: Vec<String>) -> anyhow::Result<Self> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let me = stream.local_addr()?.to_string();
        stream.write_all(b"*1\r\n$7\r\nMONITOR\r\n").await?;
        let mut reader = BufReader::new(stream);
        let mut first = String::new();
        reader.read_line(&mut first).await?;
        if !first.starts_with("+OK") {
            bail!("MONITOR answered {first:?}");
        }
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let task = tokio::spawn(async move {
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                // +1764500000.123456 [0 127.0.0.1:54321] "evalsha" ...   or   [0 lua] "hget" ...
                let Some(client) = line
                    .split_once('[')
                    .and_then(|(_, r)| r.split_once(']'))
                    .map(|(c, _)| c)
                else {
                    continue;
                };
                let addr = client.split_whitespace().nth(1).unwrap_or("");
                if addr == "lua" || addr == me || ignore.iter().any(|i| i == addr) {
                    continue;
                }
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ok(Self { sent, task })
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}
