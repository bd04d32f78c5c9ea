//! `stepper-bench capacity`: the embedded stack's real capacity. A real `stepper-local` process (in-
//! memory store, in-process queue) with an instant fake provider on loopback; N callers submit,
//! poll and purge over loopback HTTP. Prints jobs/s at capacity, POST and poll p50/p99, the server's
//! CPU time per job (user + sys from `/proc`), and its RSS, also with 10,000 jobs in flight.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use testkit::fake::FakeReply;
use testkit::instant::InstantProvider;

use crate::load::{self, Outcome, REPORT};
use crate::process::{self, Server, Usage};

pub(crate) struct Options {
    pub jobs: usize,
    pub callers: usize,
    pub in_flight: usize,
    pub warmup: usize,
    pub server: Option<PathBuf>,
    /// A command the server runs under (`valgrind --tool=callgrind …`), for profiling.
    pub wrap: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            jobs: 20_000,
            callers: 32,
            in_flight: 10_000,
            warmup: 200,
            server: None,
            wrap: None,
        }
    }
}

/// The per-owner limits stay on (the production path counts every request), set far above the load.
pub(crate) const RATE_LIMIT: &str = "1000000000/1h";
pub(crate) const MAX_IN_FLIGHT: &str = "10000000";

/// The environment of a `stepper-local` that uses `provider` and, when given, Upstash at `upstash`
/// (URL, token); the providers file goes into `dir`.
pub(crate) fn stepper_env(
    dir: &Path,
    provider: &InstantProvider,
    port: u16,
    upstash: Option<(&str, &str)>,
) -> anyhow::Result<Vec<(String, String)>> {
    let config = testkit::fake::providers_file(dir, &provider.base_url(), 60_000, Some("FAKE_KEY"))?;
    let mut env = vec![
        ("PORT".to_string(), port.to_string()),
        ("STEPPER_CONFIG".to_string(), config.display().to_string()),
        ("FAKE_KEY".to_string(), "sk-bench".to_string()),
        ("STEPPER_RATE_LIMIT".to_string(), RATE_LIMIT.to_string()),
        ("STEPPER_MAX_IN_FLIGHT".to_string(), MAX_IN_FLIGHT.to_string()),
    ];
    if let Some((url, token)) = upstash {
        env.push(("UPSTASH_REDIS_REST_URL".to_string(), url.to_string()));
        env.push(("UPSTASH_REDIS_REST_TOKEN".to_string(), token.to_string()));
    }
    Ok(env)
}

pub(crate) fn temp_dir(what: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("stepper-bench-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_048_576.0)
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

pub(crate) async fn run(o: Options) -> anyhow::Result<()> {
    let program = process::stepper_local(o.server.as_deref())?;
    let dir = temp_dir("capacity")?;
    let provider = InstantProvider::start(FakeReply::openai_text(REPORT)).await?;
    let port = testkit::stack::free_port()?;
    let env = stepper_env(&dir, &provider, port, None)?;
    let (program, args): (PathBuf, Vec<String>) = match &o.wrap {
        Some(wrap) => {
            let mut words = wrap.split_whitespace().map(str::to_string);
            let first = words.next().context("--wrap is empty")?;
            let mut args: Vec<String> = words.collect();
            args.push(program.display().to_string());
            (PathBuf::from(first), args)
        }
        None => (program, Vec::new()),
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start("stepper-local", &program, &args, &env, port, &dir).await?;
    let me = std::process::id();
    eprintln!(
        "stepper-bench capacity: {} (pid {}) ready in {}; warming up with {} jobs",
        program.display(),
        server.pid,
        ms(server.ready_after),
        o.warmup
    );
    if o.warmup > 0 {
        let target = provider.hits() + o.warmup as u64;
        load::capacity_one_poll(server.addr, "warm", o.warmup, o.callers, || provider.hits() >= target).await?;
    }

    // Jobs in flight, on a process that has run only the warm-up: the provider holds every answer,
    // so the jobs wait (queued, or claimed by a worker waiting on the provider) while the callers
    // submit them.
    eprintln!("stepper-bench capacity: {} jobs in flight", o.in_flight);
    provider.hold();
    let (pending, _) = load::submit_all(server.addr, "flight", o.in_flight, o.callers).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = server.usage()?;
    let held = provider.waiting();
    let hits_before = provider.hits() - held;
    provider.release();
    let target = hits_before + o.in_flight as u64;
    wait_until("the jobs in flight to run", Duration::from_secs(120), || {
        provider.hits() >= target
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let finished = server.usage()?;
    let drained = load::collect_all(server.addr, "flight", pending, o.callers).await?;
    if drained.lost + drained.failed > 0 {
        bail!(
            "{} jobs lost and {} failed after the in-flight phase",
            drained.lost,
            drained.failed
        );
    }

    eprintln!("stepper-bench capacity: {} jobs, {} callers", o.jobs, o.callers);
    let target = provider.hits() + o.jobs as u64;
    let (before, gen_before) = (server.usage()?, process::usage(me)?);
    let outcome = load::capacity_one_poll(server.addr, "cap", o.jobs, o.callers, || provider.hits() >= target).await?;
    let (after, gen_after) = (server.usage()?, process::usage(me)?);
    if outcome.lost + outcome.failed > 0 {
        bail!("{} jobs lost and {} failed at capacity", outcome.lost, outcome.failed);
    }
    let end = after;

    print_report(
        &o,
        &server,
        &outcome,
        (before, after),
        (gen_before, gen_after),
        (waiting, held),
        finished,
        end,
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn print_report(
    o: &Options,
    server: &Server,
    outcome: &Outcome,
    (before, after): (Usage, Usage),
    (gen_before, gen_after): (Usage, Usage),
    (waiting, held): (Usage, u64),
    finished: Usage,
    end: Usage,
) {
    let n = outcome.jobs as f64;
    let cpu = after.cpu_seconds - before.cpu_seconds;
    let generator = gen_after.cpu_seconds - gen_before.cpu_seconds;
    println!(
        "stepper-bench capacity: stepper-local (embedded store), {} jobs, {} callers, instant fake provider, {} cores",
        outcome.jobs,
        o.callers,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  start → ready (GET /health 200)          {:>12}",
        ms(server.ready_after)
    );
    println!(
        "  jobs/s at capacity (submit all; once run, poll + purge)  {:>6.0}  ({} jobs in {:.2} s)",
        outcome.jobs_per_second(),
        outcome.jobs,
        outcome.wall.as_secs_f64()
    );
    println!(
        "  POST  p50 / p99                          {:>12} / {}",
        ms(outcome.post.pct(50.0)),
        ms(outcome.post.pct(99.0))
    );
    println!(
        "  poll  p50 / p99                          {:>12} / {}  ({:.2} polls per job)",
        ms(outcome.poll.pct(50.0)),
        ms(outcome.poll.pct(99.0)),
        outcome.polls as f64 / n
    );
    println!(
        "  purge p50 / p99                          {:>12} / {}",
        ms(outcome.purge.pct(50.0)),
        ms(outcome.purge.pct(99.0))
    );
    println!(
        "  server CPU per job (user+sys)            {:>9.0} µs  ({:.2} s over the run, {:.0}% of one core)",
        cpu / n * 1e6,
        cpu,
        cpu / outcome.wall.as_secs_f64() * 100.0
    );
    println!(
        "  load generator + fake provider CPU/job   {:>9.0} µs  (the same cores; not the server's)",
        generator / n * 1e6
    );
    println!(
        "  server RSS, {} jobs in flight           {:>12}  (after a {}-job warm-up; {} held at the provider, the rest queued)",
        o.in_flight,
        mb(waiting.rss_bytes),
        o.warmup,
        held
    );
    println!(
        "  server RSS, the same jobs finished, unread {:>10}",
        mb(finished.rss_bytes)
    );
    println!("  server RSS after the capacity run        {:>12}", mb(after.rss_bytes));
    println!(
        "  server peak RSS (VmHWM)                  {:>12}",
        mb(end.peak_rss_bytes)
    );
}
