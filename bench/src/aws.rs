//! What a job costs on AWS (Lambda + SQS + HTTP API) and Upstash, from the measured figures and the
//! published prices below (us-east-1; each with the page it comes from, as read in November 2026).

use std::path::Path;

/// A metered line of the bill.
pub(crate) struct Price {
    pub what: &'static str,
    /// US dollars per `per` units.
    pub usd: f64,
    pub per: f64,
    /// Units free every month.
    pub free: f64,
    pub free_note: &'static str,
    pub source: &'static str,
}

pub(crate) const LAMBDA_REQUESTS: Price = Price {
    what: "Lambda requests",
    usd: 0.20,
    per: 1e6,
    free: shared::domain::budget::FREE_LAMBDA_INVOCATIONS as f64,
    free_note: "1M requests a month, always free",
    source: "https://aws.amazon.com/lambda/pricing/",
};

pub(crate) const LAMBDA_ARM_GB_S: Price = Price {
    what: "Lambda GB-seconds (arm64)",
    usd: 0.0000133334,
    per: 1.0,
    free: 400_000.0,
    free_note: "400,000 GB-s a month, always free",
    source: "https://aws.amazon.com/lambda/pricing/",
};

pub(crate) const LAMBDA_X86_GB_S: Price = Price {
    what: "Lambda GB-seconds (x86_64)",
    usd: 0.0000166667,
    per: 1.0,
    free: 400_000.0,
    free_note: "400,000 GB-s a month, always free",
    source: "https://aws.amazon.com/lambda/pricing/",
};

pub(crate) const SQS_REQUESTS: Price = Price {
    what: "SQS standard requests",
    usd: 0.40,
    per: 1e6,
    free: shared::domain::budget::FREE_SQS_REQUESTS as f64,
    free_note: "1M requests a month, always free; each 64 KB of a payload is one request",
    source: "https://aws.amazon.com/sqs/pricing/",
};

pub(crate) const HTTP_API_REQUESTS: Price = Price {
    what: "API Gateway HTTP API calls",
    usd: 1.00,
    per: 1e6,
    free: 1e6,
    free_note: "1M calls a month for the first 12 months only",
    source: "https://aws.amazon.com/api-gateway/pricing/",
};

pub(crate) const UPSTASH_COMMANDS: Price = Price {
    what: "Upstash Redis commands (pay as you go)",
    usd: 0.20,
    per: 1e5,
    free: shared::domain::budget::FREE_STORE_COMMANDS as f64,
    free_note: "500K commands a month on the free plan",
    source: "https://upstash.com/pricing/redis",
};

/// Empty receives while idle: the SQS event source mapping long-polls with five concurrent pollers
/// (the optimisation down to two is off when MaximumConcurrency is set, as template.yaml does), each
/// a 20 s long poll: 5 × 3 a minute. An estimate from the documented behaviour, not a measurement.
pub(crate) const SQS_IDLE_RECEIVES_PER_MINUTE: f64 = 15.0;
pub(crate) const SQS_IDLE_SOURCE: &str = "https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-scaling.html";

pub(crate) const MINUTES_PER_MONTH: f64 = 30.0 * 24.0 * 60.0;

/// The functions' configured memory and architecture, read from the SAM template's `Globals`.
pub(crate) struct LambdaConfig {
    pub memory_mb: u64,
    pub arm64: bool,
    pub from: String,
}

pub(crate) fn lambda_config(template: &Path) -> LambdaConfig {
    let text = std::fs::read_to_string(template).unwrap_or_default();
    let memory_mb = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("MemorySize:"))
        .and_then(|v| v.trim().parse().ok());
    let arm64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Architectures:"))
        .map(|v| v.contains("arm64"));
    match (memory_mb, arm64) {
        (Some(memory_mb), Some(arm64)) => LambdaConfig {
            memory_mb,
            arm64,
            from: template.display().to_string(),
        },
        _ => LambdaConfig {
            memory_mb: 128,
            arm64: true,
            from: format!("{} unreadable: assumed 128 MB arm64", template.display()),
        },
    }
}

/// Measured usage of one delivered job, and of the idle service per minute.
pub(crate) struct PerJob {
    pub upstash_billed: f64,
    pub upstash_billed_idle_per_minute: f64,
    pub lambda_invocations: f64,
    pub gb_seconds: f64,
    pub sqs_requests: f64,
    pub http_api_calls: f64,
}

struct Line<'a> {
    price: &'a Price,
    per_job: f64,
    idle_per_month: f64,
}

fn cost(price: &Price, units: f64, free_tier: bool) -> f64 {
    let billable = if free_tier {
        (units - price.free).max(0.0)
    } else {
        units
    };
    billable / price.per * price.usd
}

fn units(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.1}")
    }
}

/// Prints the usage per job and the monthly bill at 10k, 100k and 1M jobs, with and without the
/// free tiers, then the prices and their sources.
pub(crate) fn print(per_job: &PerJob, lambda: &LambdaConfig) {
    let gb_s = if lambda.arm64 {
        &LAMBDA_ARM_GB_S
    } else {
        &LAMBDA_X86_GB_S
    };
    let lines = [
        Line {
            price: &UPSTASH_COMMANDS,
            per_job: per_job.upstash_billed,
            idle_per_month: per_job.upstash_billed_idle_per_minute * MINUTES_PER_MONTH,
        },
        Line {
            price: &LAMBDA_REQUESTS,
            per_job: per_job.lambda_invocations,
            idle_per_month: 0.0,
        },
        Line {
            price: gb_s,
            per_job: per_job.gb_seconds,
            idle_per_month: 0.0,
        },
        Line {
            price: &SQS_REQUESTS,
            per_job: per_job.sqs_requests,
            idle_per_month: SQS_IDLE_RECEIVES_PER_MINUTE * MINUTES_PER_MONTH,
        },
        Line {
            price: &HTTP_API_REQUESTS,
            per_job: per_job.http_api_calls,
            idle_per_month: 0.0,
        },
    ];
    println!(
        "  AWS + Upstash, per month (functions: {} MB {}, from {})",
        lambda.memory_mb,
        if lambda.arm64 { "arm64" } else { "x86_64" },
        lambda.from
    );
    println!(
        "    {:<40} {:>10} {:>10} | {:>21} | {:>21} | {:>21}",
        "", "per job", "idle/month", "10k jobs", "100k jobs", "1M jobs"
    );
    println!(
        "    {:<40} {:>10} {:>10} | {:>21} | {:>21} | {:>21}",
        "", "", "", "units  free-tier/none", "units  free-tier/none", "units  free-tier/none"
    );
    let volumes = [1e4, 1e5, 1e6];
    let mut totals = [(0.0, 0.0); 3];
    for line in &lines {
        let mut row = format!(
            "    {:<40} {:>10} {:>10}",
            line.price.what,
            if line.per_job < 0.01 {
                format!("{:.5}", line.per_job)
            } else {
                format!("{:.2}", line.per_job)
            },
            units(line.idle_per_month)
        );
        for (k, jobs) in volumes.iter().enumerate() {
            let used = line.per_job * jobs + line.idle_per_month;
            let (free, none) = (cost(line.price, used, true), cost(line.price, used, false));
            totals[k].0 += free;
            totals[k].1 += none;
            row.push_str(&format!(" | {:>7} ${:>5.2}/${:>5.2}", units(used), free, none));
        }
        println!("{row}");
    }
    let mut row = format!("    {:<40} {:>10} {:>10}", "total", "", "");
    for (free, none) in totals {
        row.push_str(&format!(" | {:>7} ${:>5.2}/${:>5.2}", "", free, none));
    }
    println!("{row}");
    println!("    prices (us-east-1) and free tiers:");
    for line in &lines {
        println!(
            "      {:<40} ${} per {} ({}) — {}",
            line.price.what,
            line.price.usd,
            units(line.price.per),
            line.price.free_note,
            line.price.source
        );
    }
    println!("      SQS while idle: 5 long-polling receivers × 3 a minute (an estimate from {SQS_IDLE_SOURCE})");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_free_tier_is_taken_off_before_pricing() {
        assert_eq!(cost(&UPSTASH_COMMANDS, 400_000.0, true), 0.0);
        assert!((cost(&UPSTASH_COMMANDS, 600_000.0, true) - 0.20).abs() < 1e-9);
        assert!((cost(&UPSTASH_COMMANDS, 600_000.0, false) - 1.20).abs() < 1e-9);
        assert!((cost(&LAMBDA_REQUESTS, 3e6, true) - 0.40).abs() < 1e-9);
    }

    #[test]
    fn the_template_says_the_memory() {
        let c = lambda_config(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml"));
        assert!(c.memory_mb >= 128, "{}", c.from);
    }
}
