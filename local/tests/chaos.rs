//! The chaos suite on the real stack: `stepper-local` (the real binary) over the Upstash REST
//! emulator and redis-server, with a fake provider on loopback. Prints its figures.
//!
//! Short form (the test command): `cargo test -p stepper-local --test chaos -- --nocapture`.
//! Long form (docs/testing.md): `CHAOS_JOBS=300 CHAOS_IDLE_SECONDS=60 cargo test -p stepper-local --test chaos --
//! --nocapture --test-threads=1`.
//!
//! - kill -9 of stepper-local mid-run, then a restart on the same store: every job finishes, 0 stuck.
//! - Redis frozen (SIGSTOP) during submits, so the store's answers time out: 0 ghosts (every job
//!   that exists runs and finishes, whatever the route answered), 0 stuck, the in-flight sets empty.
//! - Redis killed (-9) and restarted mid-run on its append-only file: every accepted job completes.
//! - The sweeper's idle cost: 0 store commands over a window with no job (short form; a long window may
//!   see the instance's takeover sweeps, backing off while the index is empty: one script each).
//! - A storm of 429s (`Retry-After: 5`) for `CHAOS_STORM_SECONDS` (20; the long form 60), then an instant
//!   provider: 40 jobs done within 10 s of the recovery, with at most twice the minimum calls during the
//!   storm (one per Retry-After window) after the first wave (each worker's first claim, before any 429)
//!   in the long form; the short form holds the 40 waiting jobs to a few calls a window.

mod common;

use std::time::{Duration, Instant};

use common::{openai_provider, report, Local, ALICE};
use testkit::fake::{FakeProvider, FakeReply, Wire};
use testkit::stack::{RedisServer, UpstashEmulator};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Stack {
    redis: RedisServer,
    _upstash: UpstashEmulator,
    provider: FakeProvider,
    env: Vec<(&'static str, String)>,
}

async fn stack(extra: &[(&'static str, &str)]) -> Stack {
    stack_on(RedisServer::start().await.expect("redis-server"), extra).await
}

async fn stack_on(redis: RedisServer, extra: &[(&'static str, &str)]) -> Stack {
    let upstash = UpstashEmulator::start(&redis).await.expect("upstash emulator");
    let provider = FakeProvider::start(Wire::OpenAi).await.expect("fake provider");
    let mut env = vec![
        ("UPSTASH_REDIS_REST_URL", upstash.url.clone()),
        ("UPSTASH_REDIS_REST_TOKEN", upstash.token.clone()),
        ("STEPPER_RATE_LIMIT", "off".to_string()),
        ("STEPPER_MAX_IN_FLIGHT", "1000".to_string()),
        ("SWEEP_GRACE_SECONDS", "1".to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    Stack {
        redis,
        _upstash: upstash,
        provider,
        env,
    }
}

impl Stack {
    async fn local(&self) -> Local {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Local::start(&openai_provider("alpha", &self.provider.base_url()), &env).await
    }

    /// Every job record in the store, by state letter (`q`ueued, `w`aiting, `s`ucceeded, `f`ailed).
    async fn records(&self) -> Vec<(String, char)> {
        let mut out = Vec::new();
        let mut cursor = "0".to_string();
        loop {
            let (next, batch) = scan(&self.redis, &cursor).await;
            for key in batch {
                let record = self.redis.command(&["GET", &key]).await.unwrap_or_default();
                // The header: `J2 <lease end> <state> ...` (`J1 <state> ...` before the lease moved in).
                let mut fields = record.split_whitespace();
                let state = match fields.next() {
                    Some("J2") => fields.nth(1),
                    _ => fields.next(),
                }
                .and_then(|f| f.chars().next())
                .unwrap_or('?');
                out.push((key, state));
            }
            if next == "0" {
                return out;
            }
            cursor = next;
        }
    }

    /// Alice's jobs in flight: the counter in her newest month bucket (`st:b:m:<yyyymm>:alice`, slot
    /// #2982: scripts/budget.lua).
    async fn in_flight(&self) -> u64 {
        const READ: &str = "local keys = redis.call('KEYS', 'st:b:m:*:alice') table.sort(keys) \
            if #keys == 0 then return 0 end \
            return redis.call('BITFIELD', keys[#keys], 'GET', 'i64', '#2982')[1]";
        self.redis
            .command(&["EVAL", READ, "0"])
            .await
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// One SCAN page over raw RESP (the testkit helper reads single replies only).
async fn scan(redis: &RedisServer, cursor: &str) -> (String, Vec<String>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", redis.port)).await.unwrap();
    let args = ["SCAN", cursor, "MATCH", "st:j:*", "COUNT", "1000"];
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap(); // *2
    line.clear();
    reader.read_line(&mut line).await.unwrap(); // $n
    line.clear();
    reader.read_line(&mut line).await.unwrap(); // cursor
    let next = line.trim_end().to_string();
    line.clear();
    reader.read_line(&mut line).await.unwrap(); // *count
    let count: usize = line[1..].trim_end().parse().unwrap();
    let mut keys = Vec::with_capacity(count);
    for _ in 0..count {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
        let len: usize = line[1..].trim_end().parse().unwrap();
        let mut body = vec![0u8; len + 2];
        reader.read_exact(&mut body).await.unwrap();
        body.truncate(len);
        keys.push(String::from_utf8(body).unwrap());
    }
    (next, keys)
}

async fn submit_reports(local: &Local, prefix: &str, n: u64) -> Vec<(u16, Option<String>)> {
    let posts = (0..n).map(|i| async move {
        let (code, body) = local.post("/v1/reports", ALICE, report(&format!("{prefix}-{i}"))).await;
        (code, body["jobId"].as_str().map(str::to_string))
    });
    futures::future::join_all(posts).await
}

/// Waits until every record in the store is finished; returns how long it took, or panics naming
/// the stuck ones.
async fn all_finished(stack: &Stack, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let records = stack.records().await;
        let open: Vec<_> = records.iter().filter(|(_, s)| *s != 's' && *s != 'f').collect();
        if open.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{} of {} jobs stuck: {:?}",
            open.len(),
            records.len(),
            &open[..open.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_restart_finishes_every_job() {
    let jobs = env_number("CHAOS_JOBS", 40);
    let s = stack(&[]).await;
    s.provider
        .set_default(FakeReply::openai_text(&common::good_report_json()).with_delay(Duration::from_millis(200)));
    let mut local = s.local().await;
    let answers = submit_reports(&local, "kill", jobs).await;
    assert!(answers.iter().all(|(code, _)| *code == 202), "{answers:?}");
    // Let some run, then kill -9 with steps mid-call.
    let started = Instant::now();
    while s.provider.hits() < (jobs / 3) as usize && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    local.kill();
    drop(local);
    let done_before = s.records().await.iter().filter(|(_, st)| *st == 's').count();
    let local = s.local().await;
    let took = all_finished(&s, Duration::from_secs(120)).await;
    let records = s.records().await;
    assert_eq!(records.len() as u64, jobs);
    assert_eq!(s.in_flight().await, 0, "in-flight counts back to 0");
    for (_, id) in &answers {
        let id = id.as_deref().unwrap();
        let (_, body) = local.get(&format!("/v1/reports/{id}"), ALICE).await;
        assert_eq!(body["status"], "completed", "{body}");
    }
    println!(
        "chaos kill -9: {jobs} jobs, {done_before} done at the kill, all {jobs} finished {took:?} after the restart, \
         0 stuck, {} provider calls",
        s.provider.hits()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_during_submits_leaves_no_ghost() {
    let jobs = env_number("CHAOS_JOBS", 40);
    let s = stack(&[("UPSTASH_TIMEOUT_MS", "300")]).await;
    s.provider
        .set_default(FakeReply::openai_text(&common::good_report_json()).with_delay(Duration::from_millis(50)));
    let local = s.local().await;
    submit_reports(&local, "warm", jobs / 4).await;
    let warm = s.records().await.len();
    s.redis.signal("STOP").unwrap();
    let frozen = submit_reports(&local, "frozen", jobs).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    s.redis.signal("CONT").unwrap();
    let refused = frozen.iter().filter(|(code, _)| *code == 503).count();
    assert!(refused > 0, "the freeze made submits time out: {frozen:?}");
    // Whatever each route answered, every job the store holds runs and finishes: no ghost.
    let took = all_finished(&s, Duration::from_secs(120)).await;
    let existing = s.records().await.len();
    assert_eq!(s.in_flight().await, 0, "in-flight counts back to 0");
    // The callers retry their 503s (Retry-After): identical submits meet the same jobs or make them.
    // Under load a 300 ms store timeout still answers some 503s: each is retried until none is left.
    let mut pending: Vec<u64> = (0..jobs).collect();
    for _ in 0..10 {
        let answers = futures::future::join_all(pending.iter().map(|i| {
            let local = &local;
            async move {
                let (code, body) = local.post("/v1/reports", ALICE, report(&format!("frozen-{i}"))).await;
                assert!([200, 202, 503].contains(&code), "{code} {body}");
                (*i, code)
            }
        }))
        .await;
        pending = answers
            .into_iter()
            .filter(|(_, code)| *code == 503)
            .map(|(i, _)| i)
            .collect();
        if pending.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(pending.is_empty(), "{} submits still answered 503", pending.len());
    all_finished(&s, Duration::from_secs(120)).await;
    assert_eq!(s.in_flight().await, 0);
    println!(
        "chaos SIGSTOP: {jobs} submits during a 1.5 s freeze, {refused} answered 503, {} jobs existed after it \
         (ghosts included) and all finished {took:?} after the wake, 0 stuck, in flight 0; the retries all answered \
         200/202 in the end",
        existing - warm
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_run_strands_nothing() {
    let jobs = env_number("CHAOS_JOBS", 40);
    let dir = std::env::temp_dir().join(format!("stepper-chaos-redis-{}", std::process::id()));
    let redis = RedisServer::start_persistent(&dir).await.expect("redis-server");
    let mut s = stack_on(redis, &[("UPSTASH_TIMEOUT_MS", "500")]).await;
    s.provider
        .set_default(FakeReply::openai_text(&common::good_report_json()).with_delay(Duration::from_millis(100)));
    let local = s.local().await;
    let answers = submit_reports(&local, "restart", jobs).await;
    let accepted = answers.iter().filter(|(code, _)| *code == 202).count();
    let started = Instant::now();
    while s.provider.hits() < (jobs / 3) as usize && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.redis
        .kill_and_restart(&dir, Duration::from_millis(1_000))
        .await
        .expect("redis restart");
    let took = all_finished(&s, Duration::from_secs(120)).await;
    let records = s.records().await;
    assert_eq!(s.in_flight().await, 0, "in-flight counts back to 0");
    let mut completed = 0;
    // A submit that timed out while Redis was down is the caller's to retry; the accepted ones must all complete.
    for id in answers.iter().filter_map(|(_, id)| id.as_deref()) {
        let (_, body) = local.get(&format!("/v1/reports/{id}"), ALICE).await;
        completed += usize::from(body["status"] == "completed");
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(completed, accepted, "every accepted job completed");
    println!(
        "chaos redis kill -9 + restart: {accepted} accepted, {completed} completed, {} records all finished {took:?} \
         after the restart, 0 stuck, in flight 0",
        records.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_costs_nothing_while_no_job_exists() {
    let idle = env_number("CHAOS_IDLE_SECONDS", 5);
    let s = stack(&[]).await;
    s.provider
        .set_default(FakeReply::openai_text(&common::good_report_json()));
    let local = s.local().await;
    // One job through and purged: the sweeper chain ran and must end with the index.
    let answers = submit_reports(&local, "idle", 1).await;
    let id = answers[0].1.clone().unwrap();
    local
        .wait_finished(&format!("/v1/reports/{id}"), ALICE, Duration::from_secs(30))
        .await;
    local.delete(&format!("/v1/jobs/{id}"), ALICE).await;
    // Let the chain notice the empty index (one grace), then count.
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.redis.reset_stats().await.unwrap();
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let stats = s.redis.command_stats().await.unwrap();
    let counted = |c: &String| !c.starts_with("config") && c.as_str() != "info";
    let commands: u64 = stats.iter().filter(|(c, _)| counted(c)).map(|(_, n)| n).sum();
    // The instance's own takeover sweep (local/src/sweeper.rs) may land in a long window: one per
    // SWEEP_INTERVAL_SECONDS (30) after the last request, then backing off (doubling) while the index is
    // empty; each is one script (the sweep and its budget counters). Nothing else may run.
    let sweep_parts = [
        "evalsha",
        "eval",
        "zrangebyscore",
        "zcard",
        "del",
        "hincrby",
        "expireat",
    ];
    let other: Vec<_> = stats
        .iter()
        .filter(|(c, n)| counted(c) && **n > 0 && !sweep_parts.contains(&c.as_str()))
        .collect();
    assert!(other.is_empty(), "store commands while idle: {stats:?}");
    let scripts = stats.get("evalsha").copied().unwrap_or(0) + stats.get("eval").copied().unwrap_or(0);
    let takeovers = 1 + (1 + idle / 30).ilog2() as u64;
    let allowed = if idle + 10 < 30 { 0 } else { takeovers };
    assert!(
        scripts <= allowed,
        "sweeps while idle: {scripts} > {allowed}: {stats:?}"
    );
    let keys = s.redis.dbsize().await.unwrap();
    println!("chaos idle: {commands} store commands ({scripts} takeover sweeps) over {idle} s with no job; {keys} keys left after the purge");
}

/// A storm of 429s with `Retry-After: 5`, then a provider that answers at once: after the first wave
/// (every worker's first claim, before any 429 is in the shared state) one call per cooldown window
/// reaches the provider (the claims that find the cooldown over give its probe to one of them), at most
/// twice the minimum; once a probe succeeds the held-back jobs look again within
/// about two of the provider's calls, so the 40 jobs are done within 10 s of the recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_429s_drains_within_seconds_of_the_recovery() {
    use std::sync::{Arc, Mutex};
    const JOBS: usize = 40;
    let storm = Duration::from_secs(env_number("CHAOS_STORM_SECONDS", 20));
    let stack = stack(&[]).await;
    let local = stack.local().await;
    let calls: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = calls.clone();
    let started = Instant::now();
    stack.provider.set_responder(move |_| {
        seen.lock().unwrap().push(Instant::now());
        if started.elapsed() < storm {
            FakeReply::openai_status(429).with_header("retry-after", "5")
        } else {
            FakeReply::openai_text(r#"{"answer": "after the storm"}"#)
        }
    });
    let posts = (0..JOBS).map(|i| {
        let local = &local;
        async move {
            let (code, body) = local
                .post(
                    "/v1/generate",
                    ALICE,
                    serde_json::json!({"prompt": format!("storm job {i}")}),
                )
                .await;
            assert_eq!(code, 202, "{body}");
            body["statusUrl"].as_str().unwrap().to_string()
        }
    });
    let urls = futures::future::join_all(posts).await;
    let recovered = started + storm;
    let mut last_done = Duration::ZERO;
    for url in &urls {
        let finished = local.wait_finished(url, ALICE, storm + Duration::from_secs(60)).await;
        assert_eq!(finished["status"], "completed", "{finished}");
        last_done = last_done.max(Instant::now().saturating_duration_since(recovered));
    }
    let calls = calls.lock().unwrap().clone();
    // The first wave: each worker's first claim, all at once, before any 429 is in the shared state (on a
    // loaded machine they may reach the provider over a second or more). None of those jobs may call again
    // before the first Retry-After ends (5 s), so what comes after is the storm's: one call per cooldown
    // window is the minimum.
    let first_wave = calls
        .iter()
        .filter(|at| at.duration_since(started) < Duration::from_millis(4_500))
        .count();
    let during = calls.iter().filter(|at| **at < recovered).count() - first_wave;
    let minimum = storm.as_secs().div_ceil(5) as usize - 1;
    let offsets: Vec<u128> = calls.iter().map(|at| at.duration_since(started).as_millis()).collect();
    println!(
        "chaos: {JOBS} jobs, {} s of 429 (Retry-After 5): a first wave of {first_wave} calls, then {during} during the \
         storm (minimum {minimum}, {:.2}x), all done {} ms after the recovery; {} calls in all",
        storm.as_secs(),
        during as f64 / minimum as f64,
        last_done.as_millis(),
        calls.len()
    );
    println!("chaos: call offsets (ms) {offsets:?}");
    assert!(
        first_wave <= 8,
        "{first_wave} calls in the first wave: more than the step concurrency"
    );
    // The goal, at least twice the minimum, holds over a storm of a minute or more; over the short form's
    // 20 s, a call more or less at a window's edge weighs a third of the minimum, so it is held to the herd
    // being held back (40 jobs waiting, a few calls a window).
    let bound = if storm >= Duration::from_secs(60) {
        2 * minimum
    } else {
        4 * minimum
    };
    assert!(
        during <= bound,
        "{during} calls during the storm after the first wave, minimum {minimum}"
    );
    assert!(
        last_done <= Duration::from_secs(10),
        "the backlog took {last_done:?} after the recovery"
    );
}
