//! The workload, identical for every server under test: N callers submit commit reports
//! (`POST /v1/reports`), poll each job's `statusUrl` until it is completed, and purge it by commit
//! (`DELETE /v1/reports?userId=&commitSha=&template=`), all over loopback HTTP.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::client::Conn;

pub(crate) use stepper_bench::REPORT;

fn report_body(run: &str, i: usize) -> Vec<u8> {
    stepper_bench::report_json(run, i).to_string().into_bytes()
}

/// Latencies in microseconds.
#[derive(Debug, Default, Clone)]
pub(crate) struct Latencies(Vec<u32>);

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_micros().min(u32::MAX as u128) as u32);
    }

    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// The `p`th percentile (0–100), nearest rank.
    pub fn pct(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.0.clone();
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
        Duration::from_micros(v[rank.min(v.len()) - 1] as u64)
    }
}

/// What one run measured.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub jobs: usize,
    pub wall: Duration,
    pub post: Latencies,
    pub poll: Latencies,
    pub purge: Latencies,
    /// From the start of the submit to the poll that saw the job completed.
    pub completed_after: Latencies,
    /// Jobs whose poll answered 404 before the caller had read a result: the result was lost.
    pub lost: usize,
    pub failed: usize,
    pub polls: u64,
}

impl Outcome {
    pub fn jobs_per_second(&self) -> f64 {
        self.jobs as f64 / self.wall.as_secs_f64()
    }

    fn absorb(&mut self, part: Outcome) {
        self.post.extend(part.post);
        self.poll.extend(part.poll);
        self.purge.extend(part.purge);
        self.completed_after.extend(part.completed_after);
        self.lost += part.lost;
        self.failed += part.failed;
        self.polls += part.polls;
    }
}

#[derive(Deserialize)]
struct Submitted {
    #[serde(rename = "statusUrl")]
    status_url: Option<String>,
}

#[derive(Deserialize)]
struct Polled {
    status: String,
}

/// A job as a caller tracks it.
pub(crate) struct Pending {
    index: usize,
    status_url: String,
    submitted_at: Instant,
}

enum Seen {
    Done,
    NotYet,
    Lost,
    Failed,
}

async fn submit(conn: &mut Conn, run: &str, i: usize, out: &mut Outcome) -> anyhow::Result<Pending> {
    let body = report_body(run, i);
    let started = Instant::now();
    let answer = conn.send("POST", "/v1/reports", Some(&body)).await?;
    out.post.push(started.elapsed());
    if answer.status != 202 {
        bail!(
            "submit {i} answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    let submitted: Submitted = serde_json::from_slice(&answer.body).context("submit answer")?;
    Ok(Pending {
        index: i,
        status_url: submitted.status_url.context("submit answer without statusUrl")?,
        submitted_at: started,
    })
}

async fn poll(conn: &mut Conn, job: &Pending, out: &mut Outcome) -> anyhow::Result<Seen> {
    let started = Instant::now();
    let answer = conn.send("GET", &job.status_url, None).await?;
    out.poll.push(started.elapsed());
    out.polls += 1;
    match answer.status {
        200 => {}
        404 => return Ok(Seen::Lost),
        other => bail!("poll answered {other}: {}", String::from_utf8_lossy(&answer.body)),
    }
    let polled: Polled = serde_json::from_slice(&answer.body).context("poll answer")?;
    Ok(match polled.status.as_str() {
        "completed" => {
            out.completed_after.push(job.submitted_at.elapsed());
            Seen::Done
        }
        "failed" => Seen::Failed,
        _ => Seen::NotYet,
    })
}

async fn purge(conn: &mut Conn, run: &str, job: &Pending, out: &mut Outcome) -> anyhow::Result<()> {
    let started = Instant::now();
    let answer = conn
        .send("DELETE", &stepper_bench::purge_uri(run, job.index), None)
        .await?;
    out.purge.push(started.elapsed());
    if answer.status != 200 {
        bail!(
            "purge answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    Ok(())
}

const JOB_DEADLINE: Duration = Duration::from_secs(300);

/// Each caller submits a job, polls it every `poll_every` until it is completed, purges it, and
/// takes the next: what a backend does, one job at a time per caller.
pub(crate) async fn end_to_end(
    addr: SocketAddr,
    run: &str,
    jobs: usize,
    callers: usize,
    poll_every: Duration,
) -> anyhow::Result<Outcome> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (next, run) = (next.clone(), run.to_string());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            let mut out = Outcome::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs {
                    return anyhow::Ok(out);
                }
                let job = submit(&mut conn, &run, i, &mut out).await?;
                loop {
                    tokio::time::sleep(poll_every).await;
                    match poll(&mut conn, &job, &mut out).await? {
                        Seen::NotYet if job.submitted_at.elapsed() < JOB_DEADLINE => continue,
                        Seen::NotYet => bail!("job {i} did not finish within {JOB_DEADLINE:?}"),
                        Seen::Lost => out.lost += 1,
                        Seen::Failed => out.failed += 1,
                        Seen::Done => {}
                    }
                    break;
                }
                purge(&mut conn, &run, &job, &mut out).await?;
            }
        }));
    }
    let mut total = Outcome {
        jobs,
        ..Outcome::default()
    };
    for task in tasks {
        total.absorb(task.await??);
    }
    total.wall = started.elapsed();
    Ok(total)
}

/// The callers submit `jobs` jobs as fast as the server takes them; the jobs, in submission order.
pub(crate) async fn submit_all(
    addr: SocketAddr,
    run: &str,
    jobs: usize,
    callers: usize,
) -> anyhow::Result<(Vec<Pending>, Outcome)> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (next, run) = (next.clone(), run.to_string());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            let mut out = Outcome::default();
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs {
                    return anyhow::Ok((mine, out));
                }
                mine.push(submit(&mut conn, &run, i, &mut out).await?);
            }
        }));
    }
    let mut pending = Vec::with_capacity(jobs);
    let mut total = Outcome::default();
    for task in tasks {
        let (mine, out) = task.await??;
        pending.extend(mine);
        total.absorb(out);
    }
    pending.sort_by_key(|p| p.index);
    Ok((pending, total))
}

/// The callers share out the jobs and poll them round-robin until each is completed (or gone),
/// purging each as soon as it is read. A caller that went round its jobs without finding one
/// done waits `idle_wait` before the next round.
pub(crate) async fn collect_all(
    addr: SocketAddr,
    run: &str,
    pending: Vec<Pending>,
    callers: usize,
) -> anyhow::Result<Outcome> {
    let mut shares: Vec<VecDeque<Pending>> = (0..callers).map(|_| VecDeque::new()).collect();
    for (n, job) in pending.into_iter().enumerate() {
        shares[n % callers].push_back(job);
    }
    let idle_wait = Duration::from_millis(2);
    let deadline = Instant::now() + JOB_DEADLINE;
    let mut tasks = Vec::new();
    for mut share in shares {
        let run = run.to_string();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            let mut out = Outcome::default();
            let mut since_progress = 0usize;
            while let Some(job) = share.pop_front() {
                match poll(&mut conn, &job, &mut out).await? {
                    Seen::Done => {
                        purge(&mut conn, &run, &job, &mut out).await?;
                        since_progress = 0;
                    }
                    Seen::Lost => {
                        out.lost += 1;
                        since_progress = 0;
                    }
                    Seen::Failed => {
                        out.failed += 1;
                        purge(&mut conn, &run, &job, &mut out).await?;
                        since_progress = 0;
                    }
                    Seen::NotYet => {
                        share.push_back(job);
                        since_progress += 1;
                        if since_progress >= share.len() {
                            if Instant::now() > deadline {
                                bail!("{} jobs did not finish within {JOB_DEADLINE:?}", share.len());
                            }
                            tokio::time::sleep(idle_wait).await;
                            since_progress = 0;
                        }
                    }
                }
            }
            anyhow::Ok(out)
        }));
    }
    let mut total = Outcome::default();
    for task in tasks {
        total.absorb(task.await??);
    }
    Ok(total)
}

/// Submit everything, then poll and purge everything: the server's capacity, not the callers'
/// polling interval, sets the pace. `jobs/s` counts from the first submit to the last purge.
pub(crate) async fn capacity(addr: SocketAddr, run: &str, jobs: usize, callers: usize) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let (pending, mut total) = submit_all(addr, run, jobs, callers).await?;
    total.absorb(collect_all(addr, run, pending, callers).await?);
    total.jobs = jobs;
    total.wall = started.elapsed();
    Ok(total)
}

/// Submit everything, wait until `processed()` says the server has run every job, then poll each
/// job once (again 1 ms later if it is not yet completed) and purge it: one poll per job, so the
/// server's CPU per job is the cost of a job, not of a client's polling. `jobs/s` counts from the
/// first submit to the last purge.
pub(crate) async fn capacity_one_poll(
    addr: SocketAddr,
    run: &str,
    jobs: usize,
    callers: usize,
    processed: impl Fn() -> bool,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let (pending, mut total) = submit_all(addr, run, jobs, callers).await?;
    let deadline = Instant::now() + JOB_DEADLINE;
    while !processed() {
        if Instant::now() > deadline {
            bail!("the jobs were not run within {JOB_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let mut shares: Vec<Vec<Pending>> = (0..callers).map(|_| Vec::new()).collect();
    for (n, job) in pending.into_iter().enumerate() {
        shares[n % callers].push(job);
    }
    let mut tasks = Vec::new();
    for share in shares {
        let run = run.to_string();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            let mut out = Outcome::default();
            for job in share {
                loop {
                    match poll(&mut conn, &job, &mut out).await? {
                        Seen::Done | Seen::Failed => break,
                        Seen::Lost => bail!("job {} vanished before it was read", job.index),
                        Seen::NotYet if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(1)).await,
                        Seen::NotYet => bail!("job {} did not finish within {JOB_DEADLINE:?}", job.index),
                    }
                }
                purge(&mut conn, &run, &job, &mut out).await?;
            }
            anyhow::Ok(out)
        }));
    }
    for task in tasks {
        total.absorb(task.await??);
    }
    total.jobs = jobs;
    total.wall = started.elapsed();
    Ok(total)
}
