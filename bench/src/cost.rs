//! `stepper-bench cost` (the default): N commit-report jobs, one at a time, through the service on
//! the real Upstash stack (redis-server, the REST emulator behind the counting proxy, an instant
//! fake provider). Prints what Upstash bills per delivered job and per route, REST requests and
//! Redis commands (scripts' inner commands included), bytes held per finished job, keys left after
//! purge, what the idle service bills, and the AWS + Upstash bill this adds up to.

use std::path::Path;
use std::time::Duration;

use stepper_bench::routes::{JobTrace, Phase, UpstashStack, BILLED_PER_ROUTE, MAX_IN_FLIGHT, RATE_LIMIT};

use crate::aws;

/// The backlog whose poll and purge are measured.
const BACKLOG: usize = 150;

/// Webhook-only jobs measured (`UpstashStack::webhook_job`).
const WEBHOOK_JOBS: usize = 20;

pub(crate) struct Options {
    pub jobs: usize,
    pub idle_seconds: u64,
    /// Added to every step's measured duration for the Lambda bill: the provider's answer time,
    /// which the instant fake does not have.
    pub provider_ms: u64,
}

/// Commands the jobs ran; the benchmark's own inspections are not theirs.
fn job_commands(stats: &std::collections::HashMap<String, u64>) -> u64 {
    stats
        .iter()
        .filter(|(name, _)| !["info", "config", "memory", "scan", "dbsize"].contains(&name.as_str()))
        .map(|(_, calls)| calls)
        .sum()
}

fn billed_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e3).ceil().max(1.0)
}

pub(crate) async fn run(o: Options) -> anyhow::Result<()> {
    let mut stack = UpstashStack::start().await?;
    eprintln!(
        "stepper-bench cost: stack up (redis {}, emulator {}); warming up",
        stack.redis.url(),
        stack.emulator.url
    );
    // The first use of each script loads it (NOSCRIPT → EVAL); that does not recur per job.
    stack.one_job("warm", 0).await?;
    let jobs_before = stack.keys("st:j:").await?.len();
    stack.redis.reset_stats().await?;
    stack.proxy.reset();

    eprintln!("stepper-bench cost: {} jobs, one at a time", o.jobs);
    let mut traces: Vec<JobTrace> = Vec::with_capacity(o.jobs);
    let mut held_bytes = 0u64;
    for i in 0..o.jobs {
        let trace = stack.one_job("cost", i).await?;
        held_bytes += trace.held_bytes;
        traces.push(trace);
    }
    let commands = job_commands(&stack.redis.command_stats().await?);
    let tally = stack.proxy.tally();
    let jobs_left = stack.keys("st:j:").await?.len().saturating_sub(jobs_before);
    let owner_buckets = stack.keys("st:b:m:").await?.len();
    let mut left_bytes = 0;
    for key in stack.keys("st:j:").await?.iter() {
        left_bytes += stack.bytes_of(key).await?;
    }

    eprintln!("stepper-bench cost: idle for {} s", o.idle_seconds);
    stack.proxy.reset();
    stack.redis.reset_stats().await?;
    tokio::time::sleep(Duration::from_secs(o.idle_seconds)).await;
    let idle = stack.proxy.tally();
    let idle_commands = job_commands(&stack.redis.command_stats().await?);

    // A backlog: BACKLOG jobs submitted and left waiting (their step messages are not run), the last
    // one polled (its ETA read with BACKLOG - 1 jobs ahead), then every one purged; then silence.
    eprintln!(
        "stepper-bench cost: a backlog of {BACKLOG} jobs, a poll of the last, purge, idle {} s",
        o.idle_seconds
    );
    let mut urls = Vec::with_capacity(BACKLOG);
    for i in 0..BACKLOG {
        urls.push(stack.submit_only("backlog", i).await?);
    }
    let last = urls.last().cloned().unwrap_or_default();
    // Once to load nothing new (the scripts are loaded), then measured.
    let (status, body, backlog_poll) = stack.billed_call("GET", &last).await?;
    if status != 200 || body["status"] == "completed" {
        anyhow::bail!("the backlog's poll answered {status}: {body}");
    }
    let mut backlog_purge = 0;
    for i in 0..BACKLOG {
        let (status, body, phase) = stack
            .billed_call("DELETE", &stepper_bench::purge_uri("backlog", i))
            .await?;
        if status != 200 {
            anyhow::bail!("the backlog's purge answered {status}: {body}");
        }
        backlog_purge += phase.billed();
    }
    stack.proxy.reset();
    stack.redis.reset_stats().await?;
    tokio::time::sleep(Duration::from_secs(o.idle_seconds)).await;
    let after_backlog = stack.proxy.tally();
    let after_backlog_commands = job_commands(&stack.redis.command_stats().await?);
    let backlog_keys = stack.keys("st:j:").await?.len();

    // A caller that takes results by webhook only: submit with a callbackUrl and purgeOnDelivery, the
    // provider step, the delivery step; no poll, no purge. The first one also runs the backlog's step
    // messages still queued (their jobs purged: dropped), before the count starts.
    eprintln!("stepper-bench cost: {WEBHOOK_JOBS} webhook jobs with purgeOnDelivery");
    stack.webhook_job("webhook-warm", 0).await?;
    stack.proxy.reset();
    let mut webhook_requests = 0;
    for i in 0..WEBHOOK_JOBS {
        webhook_requests += stack.webhook_job("webhook", i).await?.requests.len();
    }
    let webhook = stack.proxy.tally();

    let n = o.jobs as f64;
    let mean = |f: &dyn Fn(&JobTrace) -> f64| traces.iter().map(f).sum::<f64>() / n;
    println!(
        "stepper-bench cost: {} jobs on the Upstash stack (REST emulator on redis-server), each delivered at its first provider attempt",
        o.jobs
    );
    println!("  per-owner limits                          {RATE_LIMIT} requests (submits in the store, polls and purges per process), {MAX_IN_FLIGHT} jobs in flight");
    println!(
        "  Upstash-billed commands per delivered job {:>8.2}   (executed: a script call + every command inside it; a pipeline per command)",
        tally.billed as f64 / n
    );
    let per_route: Vec<String> = BILLED_PER_ROUTE
        .iter()
        .enumerate()
        // The budget read is no step of a job.
        .filter(|(_, (name, _))| *name != "budget")
        .map(|(k, (name, _))| format!("{name} {:.2}", mean(&|t| t.billed_per_route()[k].1 as f64)))
        .collect();
    println!("    per route                               {}", per_route.join(", "));
    println!(
        "  REST requests per delivered job           {:>8.2}",
        tally.requests as f64 / n
    );
    println!(
        "  Redis commands per job (scripts incl.)    {:>8.2}",
        commands as f64 / n
    );
    println!(
        "  bytes held per finished job               {:>8.0}",
        held_bytes as f64 / n
    );
    println!(
        "  keys left after purge                     {:>8}   (job records, their leases inside; {:.2} per job, {} bytes; they expire by themselves)",
        jobs_left,
        jobs_left as f64 / n,
        left_bytes
    );
    println!(
        "  shared keys (not per job)                 {:>8}   (owners' month buckets {owner_buckets}: budget, rate window, jobs in flight; st:pv)",
        owner_buckets + 1
    );
    println!(
        "  idle {} s: billed commands {} (REST requests {}, Redis commands {})",
        o.idle_seconds, idle.billed, idle.requests, idle_commands
    );

    println!(
        "  a poll of a waiting job, {} queued         {:>8}   billed commands ({} REST requests)",
        BACKLOG,
        backlog_poll.billed(),
        backlog_poll.requests.len()
    );
    println!(
        "  purge of the backlog                      {:>8.2}   billed commands per job",
        backlog_purge as f64 / BACKLOG as f64
    );
    println!(
        "  idle {} s after the backlog's purge: billed commands {} (REST requests {}, Redis commands {}); job records and leases left {}",
        o.idle_seconds, after_backlog.billed, after_backlog.requests, after_backlog_commands, backlog_keys
    );

    println!(
        "  a webhook job with purgeOnDelivery        {:>8.2}   billed commands ({:.2} REST requests: submit, the provider step and its delivery; no poll, no purge)",
        webhook.billed as f64 / WEBHOOK_JOBS as f64,
        webhook_requests as f64 / WEBHOOK_JOBS as f64
    );

    // Lambda: one invocation per route call and per step message (at batch size 1; the step
    // function takes up to StepBatchSize messages per invocation under load), each billed by the ms.
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let lambda = aws::lambda_config(&template);
    let gb = lambda.memory_mb as f64 / 1024.0;
    let step_ms = |t: &JobTrace, extra: f64| t.steps.iter().map(|s| billed_ms(s.duration) + extra).sum::<f64>();
    let route_ms = |t: &JobTrace| {
        [&t.submit, &t.poll, &t.purge]
            .iter()
            .map(|p: &&Phase| billed_ms(p.duration))
            .sum::<f64>()
    };
    let measured_gb_s = mean(&|t| (route_ms(t) + step_ms(t, 0.0)) / 1e3 * gb);
    let with_provider_gb_s = mean(&|t| (route_ms(t) + step_ms(t, o.provider_ms as f64)) / 1e3 * gb);
    let messages = mean(&|t| t.steps.len() as f64);
    let polls = 1.0;
    let invocations = 2.0 + polls + messages;
    let ms = |f: &dyn Fn(&JobTrace) -> Duration| mean(&|t| f(t).as_secs_f64() * 1e3);
    println!(
        "  handler durations here (mean ms)          submit {:.2}, step {:.2}, poll {:.2}, purge {:.2}",
        ms(&|t| t.submit.duration),
        ms(&|t| t.steps.iter().map(|s| s.duration).sum()),
        ms(&|t| t.poll.duration),
        ms(&|t| t.purge.duration)
    );
    println!(
        "  Lambda invocations per job                {invocations:>8.2}   (submit, {messages:.2} step, {polls:.0} poll, purge)"
    );
    println!(
        "  Lambda GB-s per job                       {measured_gb_s:>8.5}   as measured (each invocation rounded up to 1 ms × {} MB)",
        lambda.memory_mb
    );
    println!(
        "                                            {with_provider_gb_s:>8.5}   with a {} ms provider answer per step (--provider-ms)",
        o.provider_ms
    );
    println!(
        "  SQS requests per job                      {:>8.2}   ({messages:.2} step messages × send + receive + delete)",
        messages * 3.0
    );
    println!(
        "  HTTP API calls per job                    {:>8.2}   (submit, {polls:.0} poll, purge)",
        2.0 + polls
    );
    aws::print(
        &aws::PerJob {
            upstash_billed: tally.billed as f64 / n,
            upstash_billed_idle_per_minute: idle.billed as f64 * 60.0 / o.idle_seconds.max(1) as f64,
            lambda_invocations: invocations,
            gb_seconds: with_provider_gb_s,
            sqs_requests: messages * 3.0,
            http_api_calls: 2.0 + polls,
        },
        &lambda,
    );
    if held_bytes == 0 || jobs_left > 0 {
        anyhow::bail!("unexpected store contents: {held_bytes} bytes held, {jobs_left} job records left after purge");
    }
    Ok(())
}
