//! A minimal HTTP/1.1 client for the load generator: one keep-alive connection per caller, requests
//! written by hand, answers read by `content-length` (or chunked). It costs a small fraction of what
//! a general client does, so on a shared 2-core machine the server, not the generator, sets the pace.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

pub(crate) struct Conn {
    addr: SocketAddr,
    host: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    request: Vec<u8>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            host: addr.to_string(),
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            request: Vec::with_capacity(4 * 1024),
        }
    }

    /// Sends one request and reads its answer. A reused connection that the server closed in the
    /// meantime is reopened once.
    pub async fn send(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> anyhow::Result<Answer> {
        self.request.clear();
        self.request.extend_from_slice(method.as_bytes());
        self.request.push(b' ');
        self.request.extend_from_slice(path.as_bytes());
        self.request.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        self.request.extend_from_slice(self.host.as_bytes());
        self.request.extend_from_slice(b"\r\naccept: application/json\r\n");
        if let Some(body) = body {
            self.request.extend_from_slice(
                format!("content-type: application/json\r\ncontent-length: {}\r\n", body.len()).as_bytes(),
            );
        }
        self.request.extend_from_slice(b"\r\n");
        if let Some(body) = body {
            self.request.extend_from_slice(body);
        }
        let reused = self.stream.is_some();
        match self.exchange().await {
            Ok(answer) => Ok(answer),
            Err(_) if reused => {
                self.stream = None;
                self.exchange().await
            }
            Err(e) => Err(e),
        }
    }

    async fn exchange(&mut self) -> anyhow::Result<Answer> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("connect {}", self.addr))?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        let result = self.exchange_on_open().await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange_on_open(&mut self) -> anyhow::Result<Answer> {
        let Some(stream) = self.stream.as_mut() else {
            bail!("no connection");
        };
        stream.write_all(&self.request).await?;
        self.buf.clear();
        // The head.
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            if read_more(stream, &mut self.buf).await? == 0 {
                bail!("connection closed before the answer's head");
            }
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).context("answer head is not UTF-8")?;
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line in {head:?}"))?;
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().context("content-length")?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
        let body = if chunked {
            read_chunked(stream, &mut self.buf, head_end).await?
        } else {
            let length = length.unwrap_or(0);
            while self.buf.len() < head_end + length {
                if read_more(stream, &mut self.buf).await? == 0 {
                    bail!("connection closed inside the answer's body");
                }
            }
            self.buf[head_end..head_end + length].to_vec()
        };
        if close {
            self.stream = None;
        }
        Ok(Answer { status, body })
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>, mut at: usize) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(end) = find(&buf[at..], b"\r\n") {
                break at + end;
            }
            if read_more(stream, buf).await? == 0 {
                bail!("connection closed inside a chunk size");
            }
        };
        let size_text = std::str::from_utf8(&buf[at..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        at = line_end + 2;
        while buf.len() < at + size + 2 {
            if read_more(stream, buf).await? == 0 {
                bail!("connection closed inside a chunk");
            }
        }
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}
