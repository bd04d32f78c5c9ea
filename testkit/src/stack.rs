//! The real local stack for tests and the benchmark: `redis-server`, the Upstash REST emulator
//! (`@humanwhocodes/upstash-redis-server`) in front of it, and moto's SQS server. Each starts on a
//! free loopback port and is killed when dropped. Tools come from `scripts/install-tools.sh`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// `$STEPPER_TOOLS_DIR`, or `<workspace>/.tools`.
pub fn tools_dir() -> PathBuf {
    match std::env::var_os("STEPPER_TOOLS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(".tools"),
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_for_port(port: u16, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut stderr).await;
            }
            let tail: String = stderr
                .lines()
                .rev()
                .take(10)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            bail!("{what} exited with {status} before listening:\n{tail}");
        }
        if Instant::now() > deadline {
            bail!("{what} did not listen on port {port} within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct RedisServer {
    pub port: u16,
    _child: Child,
}

/// The shared objects that run `redis-server` on a shifted clock: libfaketime (Debian's `faketime`),
/// behind glibc's malloc from `libc_malloc_debug` — Debian's redis-server uses jemalloc, whose start-up
/// calls `clock_gettime` before libfaketime is ready, and the two together abort at start.
fn faketime_preload() -> anyhow::Result<String> {
    let triplet = format!("{}-linux-gnu", std::env::consts::ARCH);
    let faketime = [
        format!("/usr/lib/{triplet}/faketime/libfaketime.so.1"),
        "/usr/lib/faketime/libfaketime.so.1".to_string(),
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .ok_or_else(|| anyhow!("libfaketime is not installed (scripts/install-tools.sh installs Debian's faketime)"))?;
    let malloc = [
        format!("/lib/{triplet}/libc_malloc_debug.so.0"),
        format!("/usr/lib/{triplet}/libc_malloc_debug.so.0"),
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .ok_or_else(|| anyhow!("glibc's libc_malloc_debug.so.0 was not found"))?;
    Ok(format!("{malloc} {faketime}"))
}

/// `redis-server`, ready to spawn. A test command run under libfaketime as a whole (docs/testing.md: testing on
/// another date) shifts redis-server too; it then needs glibc's malloc in front of jemalloc to start.
fn redis_command() -> Command {
    let mut command = Command::new("redis-server");
    if let Some(preload) = std::env::var_os("LD_PRELOAD").filter(|p| p.to_string_lossy().contains("faketime")) {
        if let Ok(both) = faketime_preload() {
            let malloc = both.split(' ').next().unwrap_or_default().to_string();
            command.env("LD_PRELOAD", format!("{malloc} {}", preload.to_string_lossy()));
        }
    }
    command
}

/// `command` started (its stderr kept for the error, killed when dropped), once it listens on `port`;
/// `missing`: what to say when it cannot be started at all.
async fn spawn_listening(mut command: Command, port: u16, what: &str, missing: &str) -> anyhow::Result<Child> {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context(missing.to_string())?;
    wait_for_port(port, &mut child, what).await?;
    Ok(child)
}

/// `command` (a redis-server) on `port` of 127.0.0.1 with no RDB snapshots, once it accepts connections.
async fn spawn_redis(mut command: Command, port: u16) -> anyhow::Result<Child> {
    command.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""]);
    let missing = "redis-server is not installed (scripts/install-tools.sh installs it)";
    spawn_listening(command, port, "redis-server", missing).await
}

impl RedisServer {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_at(None).await
    }

    /// A `redis-server` whose clock runs `offset_ms` ahead of this process's clock (behind when
    /// negative): the store's idea of now moved, as if the tests ran on another date. Its `TIME` and every
    /// expiry it enforces follow the shifted clock. The start instant is given to libfaketime as an
    /// absolute UTC time computed from this process's clock, so it holds even when the whole test command
    /// itself runs under faketime.
    pub async fn start_shifted(offset_ms: i64) -> anyhow::Result<Self> {
        let now = chrono::Utc::now() + chrono::Duration::milliseconds(offset_ms);
        Self::start_at(Some(now.format("@%Y-%m-%d %H:%M:%S").to_string())).await
    }

    /// A `redis-server` that keeps its data in `dir` (append-only file, fsync on every write), so
    /// [`RedisServer::kill_and_restart`] brings it back with what it had acknowledged.
    pub async fn start_persistent(dir: &std::path::Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let child = Self::spawn_persistent(port, dir).await?;
        Ok(Self { port, _child: child })
    }

    async fn spawn_persistent(port: u16, dir: &std::path::Path) -> anyhow::Result<Child> {
        std::fs::create_dir_all(dir)?;
        let mut command = redis_command();
        command
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir);
        spawn_redis(command, port).await
    }

    /// kill -9, then a new server on the same port and data directory (a crash and a restart).
    pub async fn kill_and_restart(&mut self, dir: &std::path::Path, down_for: Duration) -> anyhow::Result<()> {
        self._child.start_kill()?;
        self._child.wait().await?;
        tokio::time::sleep(down_for).await;
        self._child = Self::spawn_persistent(self.port, dir).await?;
        Ok(())
    }

    async fn start_at(faketime: Option<String>) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut command = redis_command();
        if let Some(start) = faketime {
            command
                .env("LD_PRELOAD", faketime_preload()?)
                .env("FAKETIME", start)
                .env("TZ", "UTC")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        command.args(["--appendonly", "no"]);
        let child = spawn_redis(command, port).await?;
        Ok(Self { port, _child: child })
    }

    /// Sends a signal to the server (`STOP` freezes it: requests time out instead of being refused;
    /// `CONT` wakes it and it runs what was sent meanwhile). For the chaos tests.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self._child.id().ok_or_else(|| anyhow!("redis-server has exited"))?;
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -{signal} {pid} failed");
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends one command over RESP and returns the raw reply text (bulk strings unwrapped).
    pub async fn command(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(request.as_bytes()).await?;
        let mut reader = BufReader::new(stream);
        let mut first = String::new();
        reader.read_line(&mut first).await?;
        match first.as_bytes().first() {
            Some(b'+') | Some(b':') => Ok(first[1..].trim_end().to_string()),
            Some(b'-') => Err(anyhow!("redis: {}", first[1..].trim_end())),
            Some(b'$') => {
                let len: i64 = first[1..].trim_end().parse()?;
                if len < 0 {
                    return Ok(String::new());
                }
                let mut body = vec![0u8; len as usize + 2];
                reader.read_exact(&mut body).await?;
                body.truncate(len as usize);
                Ok(String::from_utf8(body)?)
            }
            _ => Err(anyhow!("unexpected redis reply {first:?}")),
        }
    }

    /// Calls per command since the last reset (`INFO commandstats`), commands inside scripts included.
    pub async fn command_stats(&self) -> anyhow::Result<HashMap<String, u64>> {
        let info = self.command(&["INFO", "commandstats"]).await?;
        let mut stats = HashMap::new();
        for line in info.lines() {
            // cmdstat_get:calls=3,usec=12,...
            if let Some((name, rest)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) {
                let calls = rest
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                stats.insert(name.to_string(), calls);
            }
        }
        Ok(stats)
    }

    /// The server's own clock (`TIME`), in epoch milliseconds: what every expiry is judged by.
    pub async fn time_ms(&self) -> anyhow::Result<u64> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
        stream.write_all(b"*1\r\n$4\r\nTIME\r\n").await?;
        let mut reader = BufReader::new(stream);
        // *2, then $n + seconds, then $n + microseconds.
        let mut lines = Vec::new();
        for _ in 0..5 {
            let mut line = String::new();
            reader.read_line(&mut line).await?;
            lines.push(line.trim_end().to_string());
        }
        if lines[0] != "*2" {
            bail!("unexpected TIME reply {lines:?}");
        }
        let seconds: u64 = lines[2].parse()?;
        let micros: u64 = lines[4].parse()?;
        Ok(seconds * 1000 + micros / 1000)
    }

    pub async fn reset_stats(&self) -> anyhow::Result<()> {
        self.command(&["CONFIG", "RESETSTAT"]).await.map(|_| ())
    }

    pub async fn dbsize(&self) -> anyhow::Result<u64> {
        Ok(self.command(&["DBSIZE"]).await?.parse()?)
    }

    /// The server's process id (for its CPU time and memory in `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self._child.id()
    }
}

/// The Upstash REST API emulator in front of a [`RedisServer`].
pub struct UpstashEmulator {
    pub url: String,
    pub token: String,
    _child: Child,
}

impl UpstashEmulator {
    pub async fn start(redis: &RedisServer) -> anyhow::Result<Self> {
        let server = tools_dir().join("node/node_modules/@humanwhocodes/upstash-redis-server/dist/server.js");
        if !server.exists() {
            bail!("{} is missing: run scripts/install-tools.sh", server.display());
        }
        let port = free_port()?;
        let token = format!("test-token-{port}");
        let mut command = Command::new("node");
        command
            .arg(&server)
            .env("URS_TOKEN", &token)
            .env("PORT", port.to_string())
            .env("REDIS_URL", redis.url());
        let child = spawn_listening(command, port, "the Upstash emulator", "node is not installed").await?;
        Ok(Self {
            url: format!("http://127.0.0.1:{port}"),
            token,
            _child: child,
        })
    }

    /// The emulator's process id (for its CPU time and memory in `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self._child.id()
    }
}

/// moto's server, for SQS (`region us-east-1`, any credentials).
pub struct MotoServer {
    pub endpoint: String,
    _child: Child,
}

impl MotoServer {
    pub async fn start() -> anyhow::Result<Self> {
        let moto = tools_dir().join("venv/bin/moto_server");
        if !moto.exists() {
            bail!("{} is missing: run scripts/install-tools.sh", moto.display());
        }
        let port = free_port()?;
        let mut command = Command::new(&moto);
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let child = spawn_listening(command, port, "moto_server", "moto_server could not be started").await?;
        Ok(Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            _child: child,
        })
    }
}
