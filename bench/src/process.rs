//! Server processes under test: started with their own environment on a free loopback port, timed
//! from spawn to their first healthy answer, and read from `/proc` (CPU time, RSS).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

use crate::client::Conn;

/// CPU time (user + system, every thread) and memory of a process, from `/proc/<pid>`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

pub(crate) fn usage(pid: u32) -> anyhow::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which may hold spaces, in parentheses.
    let after = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest)
        .context("unexpected /proc/<pid>/stat")?;
    let fields: Vec<&str> = after.split(' ').collect();
    // stat(5): utime is field 14, stime field 15; `after` starts at field 3.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let cpu_seconds = (ticks(11) + ticks(12)) as f64 / clock_ticks() as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok(Usage {
        cpu_seconds,
        rss_bytes: kb("VmRSS:"),
        peak_rss_bytes: kb("VmHWM:"),
    })
}

/// A server under test; killed when dropped.
pub(crate) struct Server {
    pub name: String,
    pub addr: SocketAddr,
    pub pid: u32,
    /// From spawn to the first `200` of `GET /health`.
    pub ready_after: Duration,
    _child: Child,
}

impl Server {
    /// Starts `program` in `dir` with `env` (on top of a cleared environment but `PATH` and `HOME`),
    /// waits for `GET /health` to answer 200 on `port`. Its stdout and stderr go to `<dir>/<name>.log`.
    pub async fn start(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(String, String)],
        port: u16,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(dir)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        for keep in ["PATH", "HOME"] {
            if let Some(v) = std::env::var_os(keep) {
                command.env(keep, v);
            }
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let started = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let pid = child.id().context("the process has no id")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = started + Duration::from_secs(60);
        loop {
            let mut conn = Conn::new(addr);
            if let Ok(answer) = conn.send("GET", "/health", None).await {
                if answer.status == 200 {
                    break;
                }
            }
            if let Some(status) = child.try_wait()? {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(15).collect();
                bail!(
                    "{name} exited with {status} before it was ready; the end of {}:\n{}",
                    log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} did not answer GET /health with 200 within 60 s (log: {})",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(Self {
            name: name.to_string(),
            addr,
            pid,
            ready_after: started.elapsed(),
            _child: child,
        })
    }

    pub fn usage(&self) -> anyhow::Result<Usage> {
        usage(self.pid)
    }
}

/// `stepper-local` next to this binary (same target directory and profile), or `--server`.
pub(crate) fn stepper_local(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let me = std::env::current_exe()?;
    let sibling = me.with_file_name("stepper-local");
    if sibling.exists() {
        return Ok(sibling);
    }
    bail!(
        "{} is missing: build it first (cargo build --release -p stepper-local) or pass --server <path>",
        sibling.display()
    )
}
