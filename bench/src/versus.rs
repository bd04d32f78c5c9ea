//! `stepper-bench vs-original`: the identical workload against the service stepper replaces (npm
//! `ai-inference-stepper` on its own redis-server, rate limit off) and against `stepper-local` on its
//! embedded store and on the Upstash REST emulator, all three calling the same instant fake provider.
//! Prints one table with every figure and the ratios. `scripts/bench-vs-original.sh` installs the
//! original and runs this.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use testkit::billing::BillingProxy;
use testkit::fake::FakeReply;
use testkit::instant::InstantProvider;
use testkit::stack::{RedisServer, UpstashEmulator};

use crate::capacity::{stepper_env, temp_dir};
use crate::load::{self, Outcome, REPORT};
use crate::process::{self, Server};
use crate::resp::{Monitor, Resp};

pub(crate) struct Options {
    /// The folder npm installed `ai-inference-stepper` into (it holds `node_modules/`).
    pub original: PathBuf,
    pub jobs: usize,
    pub callers: usize,
    pub poll_ms: u64,
    pub backlog: usize,
    pub idle_seconds: u64,
    pub server: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            original: PathBuf::new(),
            jobs: 500,
            callers: 16,
            poll_ms: 50,
            backlog: 2000,
            idle_seconds: 60,
            server: None,
        }
    }
}

/// The original's worker and provider settings: as many jobs at once as stepper-local's worker pool
/// (8), and its provider limiter as loose as it goes (its Bottleneck spaces calls by at least 1 ms).
const ORIGINAL_CONCURRENCY: &str = "8";
const ORIGINAL_PROVIDER_RPS: &str = "1000";

/// What one server measured.
#[derive(Default)]
struct Column {
    ready: Duration,
    e2e: Outcome,
    capacity: Outcome,
    /// Commands a per-command bill counts (none without a store).
    billed_per_job: Option<f64>,
    billed_idle_per_minute: Option<f64>,
    /// Billed commands in the idle time after the backlog was purged.
    billed_idle_after_backlog: Option<u64>,
    /// Billed commands per job of the backlog (submitted all at once, each then polled once and purged).
    billed_per_backlog_job: Option<f64>,
    /// Commands (or REST requests) clients sent per job: a script call once.
    sent_per_job: Option<f64>,
    redis_commands_per_job: Option<f64>,
    keys_left: Option<i64>,
    bytes_left: Option<i64>,
    cpu_per_job: f64,
    peak_rss: u64,
    store_rss: Option<u64>,
}

/// A store the benchmark can count and inspect.
struct Store {
    redis: RedisServer,
    probe: Resp,
    extra_pids: Vec<u32>,
}

impl Store {
    async fn start() -> anyhow::Result<Self> {
        let redis = RedisServer::start().await?;
        let probe = Resp::connect(redis.port).await?;
        Ok(Self {
            redis,
            probe,
            extra_pids: Vec::new(),
        })
    }

    async fn snapshot(&mut self) -> anyhow::Result<(i64, i64)> {
        let sizes = self.probe.key_bytes().await?;
        Ok((sizes.len() as i64, sizes.values().sum::<u64>() as i64))
    }

    fn rss(&self) -> u64 {
        let pids = self.redis.pid().into_iter().chain(self.extra_pids.iter().copied());
        pids.filter_map(|pid| process::usage(pid).ok())
            .map(|u| u.peak_rss_bytes)
            .sum()
    }
}

/// How billed commands are counted for one server.
enum Counter<'a> {
    /// No store: nothing is billed.
    None,
    /// The original's redis-server: every command it executed (`INFO commandstats`, its Lua scripts'
    /// inner commands included, as Upstash would bill them). `MONITOR` beside it counts what clients
    /// sent (a script call once).
    Executed { redis_port: u16, monitor: &'a Monitor },
    /// The proxy in front of the Upstash emulator (executed commands, from the same commandstats).
    Proxy(&'a BillingProxy),
}

impl Counter<'_> {
    async fn read(&self) -> anyhow::Result<Option<u64>> {
        Ok(match self {
            Counter::None => None,
            Counter::Executed { redis_port, .. } => Some(testkit::billing::executed_so_far(*redis_port).await?),
            Counter::Proxy(p) => Some(p.tally().billed),
        })
    }

    /// Commands clients sent (a script call once), where that differs from what was executed.
    fn sent(&self) -> Option<u64> {
        match self {
            Counter::Executed { monitor, .. } => Some(monitor.sent()),
            Counter::Proxy(p) => Some(p.tally().requests),
            Counter::None => None,
        }
    }
}

async fn measure(
    o: &Options,
    server: &Server,
    mut store: Option<&mut Store>,
    counter: Counter<'_>,
) -> anyhow::Result<Column> {
    let mut column = Column {
        ready: server.ready_after,
        ..Column::default()
    };
    let baseline = match store.as_deref_mut() {
        Some(s) => {
            s.probe.reset_stats().await?;
            Some(s.snapshot().await?)
        }
        None => None,
    };
    eprintln!("  {}: {} jobs end to end", server.name, o.jobs);
    let billed_before = counter.read().await?;
    let sent_before = counter.sent();
    column.e2e = load::end_to_end(server.addr, "e2e", o.jobs, o.callers, Duration::from_millis(o.poll_ms)).await?;
    let n = o.jobs as f64;
    column.billed_per_job = billed_before
        .zip(counter.read().await?)
        .map(|(before, after)| (after - before) as f64 / n);
    column.sent_per_job = sent_before
        .zip(counter.sent())
        .map(|(before, after)| (after - before) as f64 / n);
    // Let what a server does after answering (the original's clean-ups) finish before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let (Some(s), Some((keys, bytes))) = (store.as_deref_mut(), baseline) {
        column.redis_commands_per_job = Some(s.probe.command_calls().await? as f64 / n);
        let (keys_after, bytes_after) = s.snapshot().await?;
        column.keys_left = Some(keys_after - keys);
        column.bytes_left = Some(bytes_after - bytes);
    }

    eprintln!("  {}: idle for {} s", server.name, o.idle_seconds);
    let idle_before = counter.read().await?;
    tokio::time::sleep(Duration::from_secs(o.idle_seconds)).await;
    column.billed_idle_per_minute = idle_before
        .zip(counter.read().await?)
        .map(|(before, after)| (after - before) as f64 * 60.0 / o.idle_seconds.max(1) as f64);

    eprintln!(
        "  {}: a backlog of {} jobs (submit all, then poll + purge)",
        server.name, o.backlog
    );
    let before = server.usage()?;
    let billed_before = counter.read().await?;
    column.capacity = load::capacity(server.addr, "backlog", o.backlog, o.callers).await?;
    let after = server.usage()?;
    // Let what a server does after answering finish (the original's clean-ups) before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    column.billed_per_backlog_job = billed_before
        .zip(counter.read().await?)
        .map(|(before, after)| (after - before) as f64 / o.backlog as f64);
    // The work is over (every backlog job polled and purged): the store must fall silent.
    eprintln!("  {}: idle for {} s after the backlog", server.name, o.idle_seconds);
    let idle_before = counter.read().await?;
    tokio::time::sleep(Duration::from_secs(o.idle_seconds)).await;
    column.billed_idle_after_backlog = idle_before
        .zip(counter.read().await?)
        .map(|(before, after)| after - before);
    column.cpu_per_job = (after.cpu_seconds - before.cpu_seconds) / o.backlog as f64;
    column.peak_rss = after.peak_rss_bytes;
    column.store_rss = store.map(|s| s.rss());
    Ok(column)
}

async fn original(o: &Options, provider: &InstantProvider, dir: &Path) -> anyhow::Result<Column> {
    let cli = o.original.join("node_modules/ai-inference-stepper/dist/cli.js");
    if !cli.exists() {
        anyhow::bail!(
            "{} is missing: install it with scripts/bench-vs-original.sh",
            cli.display()
        );
    }
    let mut store = Store::start().await?;
    let port = testkit::stack::free_port()?;
    let env: Vec<(String, String)> = [
        ("PORT", port.to_string()),
        ("REDIS_URL", store.redis.url()),
        ("RATE_LIMIT_ENABLED", "false".into()),
        ("OPENAI_ENABLED", "true".into()),
        ("OPENAI_API_KEY", "sk-bench".into()),
        ("OPENAI_BASE_URL", provider.origin()),
        ("OPENAI_MODEL", "fake-model".into()),
        ("OPENAI_RPS", ORIGINAL_PROVIDER_RPS.into()),
        ("OPENAI_CONCURRENCY", ORIGINAL_CONCURRENCY.into()),
        ("QUEUE_CONCURRENCY", ORIGINAL_CONCURRENCY.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let cli = cli.display().to_string();
    let server = Server::start("original", Path::new("node"), &[&cli], &env, port, dir).await?;
    let monitor = Monitor::start(store.redis.port, vec![store.probe.local.clone()]).await?;
    let redis_port = store.redis.port;
    measure(
        o,
        &server,
        Some(&mut store),
        Counter::Executed {
            redis_port,
            monitor: &monitor,
        },
    )
    .await
}

async fn embedded(o: &Options, provider: &InstantProvider, dir: &Path) -> anyhow::Result<Column> {
    let program = process::stepper_local(o.server.as_deref())?;
    let port = testkit::stack::free_port()?;
    let sub = dir.join("embedded");
    std::fs::create_dir_all(&sub)?;
    let env = stepper_env(&sub, provider, port, None)?;
    let server = Server::start("stepper-embedded", &program, &[], &env, port, &sub).await?;
    measure(o, &server, None, Counter::None).await
}

async fn on_upstash(o: &Options, provider: &InstantProvider, dir: &Path) -> anyhow::Result<Column> {
    let program = process::stepper_local(o.server.as_deref())?;
    let mut store = Store::start().await?;
    let emulator = UpstashEmulator::start(&store.redis).await?;
    store.extra_pids.extend(emulator.pid());
    let proxy = BillingProxy::start(&emulator.url, &store.redis).await?;
    let port = testkit::stack::free_port()?;
    let sub = dir.join("upstash");
    std::fs::create_dir_all(&sub)?;
    let env = stepper_env(&sub, provider, port, Some((&proxy.url, &emulator.token)))?;
    let server = Server::start("stepper-upstash", &program, &[], &env, port, &sub).await?;
    let column = measure(o, &server, Some(&mut store), Counter::Proxy(&proxy)).await;
    proxy.take_log();
    column
}

pub(crate) async fn run(o: Options) -> anyhow::Result<()> {
    let dir = temp_dir("vs-original")?;
    let provider = InstantProvider::start(FakeReply::openai_text(REPORT)).await?;
    eprintln!("stepper-bench vs-original: the original (npm ai-inference-stepper) on redis-server");
    let orig = original(&o, &provider, &dir).await.context("the original")?;
    eprintln!("stepper-bench vs-original: stepper-local on its embedded store");
    let emb = embedded(&o, &provider, &dir).await.context("stepper-local, embedded")?;
    eprintln!("stepper-bench vs-original: stepper-local on the Upstash emulator");
    let ups = on_upstash(&o, &provider, &dir)
        .await
        .context("stepper-local on the Upstash emulator")?;
    print_table(&o, &orig, &emb, &ups);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{} cores ({cpu}), {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::consts::ARCH
    )
}

/// A figure and whether a larger value is better, for the ratio column.
enum Figure {
    Value(f64),
    None(&'static str),
}

struct Row {
    label: String,
    higher_is_better: bool,
    values: [Figure; 3],
    format: fn(f64) -> String,
}

fn ratio(orig: &Figure, ours: &Figure, higher_is_better: bool) -> String {
    let (Figure::Value(a), Figure::Value(b)) = (orig, ours) else {
        return "".into();
    };
    let (better, worse) = if higher_is_better { (*b, *a) } else { (*a, *b) };
    if better == 0.0 && worse == 0.0 {
        "=".into()
    } else if worse == 0.0 {
        "∞".into()
    } else {
        format!("×{:.1}", better / worse)
    }
}

fn print_table(o: &Options, orig: &Column, emb: &Column, ups: &Column) {
    let v = Figure::Value;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let opt = |x: Option<f64>, none: &'static str| x.map_or(Figure::None(none), Figure::Value);
    let f0: fn(f64) -> String = |x| format!("{x:.0}");
    let f1: fn(f64) -> String = |x| format!("{x:.1}");
    let f2: fn(f64) -> String = |x| format!("{x:.2}");
    let fms: fn(f64) -> String = |x| format!("{x:.1} ms");
    let fmb: fn(f64) -> String = |x| format!("{:.0} MB", x / 1_048_576.0);
    let fkb: fn(f64) -> String = |x| format!("{:.0} KB", x / 1024.0);
    let fus: fn(f64) -> String = |x| format!("{:.0} µs", x * 1e6);
    let cols = [orig, emb, ups];
    let each = |f: &dyn Fn(&Column) -> Figure| -> [Figure; 3] { [f(cols[0]), f(cols[1]), f(cols[2])] };
    let rows = vec![
        Row {
            label: format!("jobs/s end to end (a poll every {} ms)", o.poll_ms),
            higher_is_better: true,
            values: each(&|c| v(c.e2e.jobs_per_second())),
            format: f0,
        },
        Row {
            label: format!("jobs/s at capacity ({} submitted, then polled)", o.backlog),
            higher_is_better: true,
            values: each(&|c| v(c.capacity.jobs_per_second())),
            format: f0,
        },
        Row {
            label: "POST p50".into(),
            higher_is_better: false,
            values: each(&|c| v(ms(c.e2e.post.pct(50.0)))),
            format: fms,
        },
        Row {
            label: "POST p99".into(),
            higher_is_better: false,
            values: each(&|c| v(ms(c.e2e.post.pct(99.0)))),
            format: fms,
        },
        Row {
            label: "submit → completed p50".into(),
            higher_is_better: false,
            values: each(&|c| v(ms(c.e2e.completed_after.pct(50.0)))),
            format: fms,
        },
        Row {
            label: "submit → completed p99".into(),
            higher_is_better: false,
            values: each(&|c| v(ms(c.e2e.completed_after.pct(99.0)))),
            format: fms,
        },
        Row {
            label: format!("billed store commands per job (a poll every {} ms)", o.poll_ms),
            higher_is_better: false,
            values: each(&|c| opt(c.billed_per_job, "no store")),
            format: f2,
        },
        Row {
            label: "billed store commands per job, backlog (poll once)".into(),
            higher_is_better: false,
            values: each(&|c| opt(c.billed_per_backlog_job, "no store")),
            format: f2,
        },
        Row {
            label: format!("billed store commands in the {} s after the backlog", o.idle_seconds),
            higher_is_better: false,
            values: each(&|c| opt(c.billed_idle_after_backlog.map(|n| n as f64), "no store")),
            format: f0,
        },
        Row {
            label: "commands / REST requests sent per job".into(),
            higher_is_better: false,
            values: each(&|c| opt(c.sent_per_job, "no store")),
            format: f2,
        },
        Row {
            label: "billed store commands per idle minute".into(),
            higher_is_better: false,
            values: each(&|c| opt(c.billed_idle_per_minute, "no store")),
            format: f1,
        },
        Row {
            label: "Redis commands per job (scripts' inner incl.)".into(),
            higher_is_better: false,
            values: each(&|c| opt(c.redis_commands_per_job, "no store")),
            format: f1,
        },
        Row {
            label: format!("keys left after purge ({} jobs)", o.jobs),
            higher_is_better: false,
            values: each(&|c| opt(c.keys_left.map(|k| k as f64), "in process")),
            format: f0,
        },
        Row {
            label: "bytes left after purge".into(),
            higher_is_better: false,
            values: each(&|c| opt(c.bytes_left.map(|b| b as f64), "in process")),
            format: fkb,
        },
        Row {
            label: "service CPU per job at capacity".into(),
            higher_is_better: false,
            values: each(&|c| v(c.cpu_per_job)),
            format: fus,
        },
        Row {
            label: "service peak RSS".into(),
            higher_is_better: false,
            values: each(&|c| v(c.peak_rss as f64)),
            format: fmb,
        },
        Row {
            label: "store peak RSS (redis-server [+ emulator])".into(),
            higher_is_better: false,
            values: each(&|c| opt(c.store_rss.map(|b| b as f64), "in process")),
            format: fmb,
        },
        Row {
            label: "start → ready (GET /health 200)".into(),
            higher_is_better: false,
            values: each(&|c| v(ms(c.ready))),
            format: fms,
        },
        Row {
            label: format!("results lost under a {}-job backlog", o.backlog),
            higher_is_better: false,
            values: each(&|c| v(c.capacity.lost as f64)),
            format: f0,
        },
    ];
    println!(
        "stepper-bench vs-original: {} commit-report jobs, {} callers, a poll every {} ms, purge by commit; instant fake provider; {}",
        o.jobs,
        o.callers,
        o.poll_ms,
        machine()
    );
    println!(
        "| {:<50} | {:>12} | {:>12} | {:>6} | {:>14} | {:>6} |",
        "", "original", "stepper", "", "stepper", ""
    );
    println!(
        "| {:<50} | {:>12} | {:>12} | {:>6} | {:>14} | {:>6} |",
        "", "(redis)", "(embedded)", "better", "(Upstash emu)", "better"
    );
    println!(
        "|{:-<52}|{:->14}|{:->14}|{:->8}|{:->16}|{:->8}|",
        "", "", "", "", "", ""
    );
    for row in &rows {
        let show = |f: &Figure| match f {
            Figure::Value(x) => (row.format)(*x),
            Figure::None(why) => (*why).to_string(),
        };
        println!(
            "| {:<50} | {:>12} | {:>12} | {:>6} | {:>14} | {:>6} |",
            row.label,
            show(&row.values[0]),
            show(&row.values[1]),
            ratio(&row.values[0], &row.values[1], row.higher_is_better),
            show(&row.values[2]),
            ratio(&row.values[0], &row.values[2], row.higher_is_better),
        );
    }
    println!(
        "  \"better\": how many times better stepper's figure is than the original's (∞: the original's is worse, stepper's zero)."
    );
    println!(
        "  Billed: every command Redis executed (INFO commandstats: a script call plus each command inside it, as Upstash bills), the original's on its redis-server, stepper's at the REST proxy. Sent: the original's commands (MONITOR, a script once), stepper's REST requests."
    );
    println!(
        "  Failed jobs: original {}, embedded {}, Upstash {}.",
        orig.e2e.failed + orig.capacity.failed,
        emb.e2e.failed + emb.capacity.failed,
        ups.e2e.failed + ups.capacity.failed
    );
}
