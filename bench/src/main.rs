//! `stepper-bench`: what stepper costs and how fast it goes, measured on real components.
//!
//! - `stepper-bench [cost] [--jobs N] [--idle-seconds S] [--provider-ms MS]`: jobs through the
//!   service on the real Upstash stack; Upstash-billed commands per job and per route, REST requests,
//!   Redis commands, bytes held, keys left after purge, the idle cost, and the AWS + Upstash bill.
//! - `stepper-bench capacity [--jobs N] [--callers C] [--in-flight M] [--warmup W] [--server PATH]
//!   [--wrap CMD]`: the embedded stack's capacity, a real `stepper-local` over loopback HTTP.
//! - `stepper-bench vs-original --original DIR [--jobs N] [--callers C] [--poll-ms MS] [--backlog B]
//!   [--idle-seconds S] [--server PATH]`: side by side with the service stepper replaces
//!   (`scripts/bench-vs-original.sh` installs it and runs this).
//! - `stepper-bench soak [--target local|serverless] [--minutes M] [--rate R] [--sample-seconds S]
//!   [--stuck-seconds S] [--server PATH]`: a steady rate for a long time on the Upstash stack, against
//!   `stepper-local` or the four functions under the local serverless loop; RSS and Redis commands
//!   per job over time, stuck and lost jobs (docs/testing.md, "Long runs").

mod aws;
mod capacity;
mod client;
mod cost;
mod load;
mod process;
mod resp;
mod soak;
mod versus;

use std::path::PathBuf;

use anyhow::{bail, Context};

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    value.parse().with_context(|| format!("{flag} {value}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let command = match args.first().map(String::as_str) {
        Some("cost" | "capacity" | "vs-original" | "soak") => args.remove(0),
        _ => "cost".to_string(),
    };
    let mut pairs = Vec::new();
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        pairs.push((flag, value));
    }
    match command.as_str() {
        "capacity" => {
            let mut o = capacity::Options::default();
            for (flag, value) in &pairs {
                match flag.as_str() {
                    "--jobs" => o.jobs = parse(flag, value)?,
                    "--callers" => o.callers = parse(flag, value)?,
                    "--in-flight" => o.in_flight = parse(flag, value)?,
                    "--warmup" => o.warmup = parse(flag, value)?,
                    "--server" => o.server = Some(PathBuf::from(value)),
                    "--wrap" => o.wrap = Some(value.clone()),
                    other => bail!("unknown flag {other} for capacity"),
                }
            }
            capacity::run(o).await
        }
        "soak" => {
            let mut o = soak::Options::default();
            for (flag, value) in &pairs {
                match flag.as_str() {
                    "--target" => {
                        o.target = match value.as_str() {
                            "local" => soak::Target::Local,
                            "serverless" => soak::Target::Serverless,
                            other => bail!("--target {other}: local or serverless"),
                        }
                    }
                    "--minutes" => o.minutes = parse(flag, value)?,
                    "--rate" => o.rate = parse(flag, value)?,
                    "--sample-seconds" => o.sample_seconds = parse(flag, value)?,
                    "--stuck-seconds" => o.stuck_seconds = parse(flag, value)?,
                    "--server" => o.server = Some(PathBuf::from(value)),
                    other => bail!("unknown flag {other} for soak"),
                }
            }
            if !(o.rate > 0.0 && o.minutes > 0.0 && o.sample_seconds > 0) {
                bail!("soak needs --rate, --minutes and --sample-seconds above 0");
            }
            soak::run(o).await
        }
        "vs-original" => {
            let mut o = versus::Options::default();
            for (flag, value) in &pairs {
                match flag.as_str() {
                    "--original" => o.original = PathBuf::from(value),
                    "--jobs" => o.jobs = parse(flag, value)?,
                    "--callers" => o.callers = parse(flag, value)?,
                    "--poll-ms" => o.poll_ms = parse(flag, value)?,
                    "--backlog" => o.backlog = parse(flag, value)?,
                    "--idle-seconds" => o.idle_seconds = parse(flag, value)?,
                    "--server" => o.server = Some(PathBuf::from(value)),
                    other => bail!("unknown flag {other} for vs-original"),
                }
            }
            if o.original.as_os_str().is_empty() {
                bail!("vs-original needs --original <folder npm installed ai-inference-stepper into>");
            }
            versus::run(o).await
        }
        _ => {
            let mut o = cost::Options {
                jobs: 100,
                idle_seconds: 60,
                provider_ms: 3000,
            };
            for (flag, value) in &pairs {
                match flag.as_str() {
                    "--jobs" => o.jobs = parse(flag, value)?,
                    "--idle-seconds" => o.idle_seconds = parse(flag, value)?,
                    "--provider-ms" => o.provider_ms = parse(flag, value)?,
                    other => bail!("unknown flag {other} for cost (use --jobs N, --idle-seconds S, --provider-ms MS)"),
                }
            }
            cost::run(o).await
        }
    }
}
