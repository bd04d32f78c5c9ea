//! `GET /metrics` on the real `stepper-local` over the real local stack (redis-server + the Upstash
//! emulator, fake OpenAI-compatible providers, a callback receiver): a job that meets a 429 and fails
//! over, an identical re-submit, a job that waits out the 429 and falls back, a generic job that fails.
//! The scrape is parsed by the Prometheus Python client's own parser and every family is checked for
//! its type, its label names and its values.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{good_report_json, openai_provider, report, Local, ALICE, BOB};
use serde_json::{json, Value};
use testkit::alert_sink::AlertReceiver;
use testkit::fake::{FakeProvider, FakeReply, Wire};
use testkit::stack::{tools_dir, RedisServer, UpstashEmulator};
use tokio::io::AsyncWriteExt;

const TOKEN: &str = "metrics-test-token";

struct Sample {
    family_type: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Every sample by its name, parsed by `prometheus_client.parser`.
struct Scrape(BTreeMap<String, Vec<Sample>>);

impl Scrape {
    async fn parse(text: &str) -> Scrape {
        let python = tools_dir().join("venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/install-tools.sh",
            python.display()
        );
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/prom_parse.py");
        let mut child = tokio::process::Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).await.expect("write");
        drop(stdin);
        let out = child.wait_with_output().await.expect("parser");
        assert!(
            out.status.success(),
            "prometheus_client could not parse the scrape: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let families: Vec<Value> = serde_json::from_slice(&out.stdout).expect("parser JSON");
        let mut samples: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
        for family in families {
            for s in family["samples"].as_array().expect("samples") {
                let labels = s["labels"]
                    .as_object()
                    .expect("labels")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().expect("label value").to_string()))
                    .collect();
                samples
                    .entry(s["name"].as_str().expect("name").to_string())
                    .or_default()
                    .push(Sample {
                        family_type: family["type"].as_str().expect("type").to_string(),
                        labels,
                        value: s["value"].as_f64().expect("value"),
                    });
            }
        }
        Scrape(samples)
    }

    fn samples(&self, name: &str) -> &[Sample] {
        self.0.get(name).map_or(&[], Vec::as_slice)
    }

    /// The value of the sample whose labels include every pair given (0 when absent, as Prometheus
    /// treats a counter never incremented).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<&Sample> = self
            .samples(name)
            .iter()
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(
            matching.len() <= 1,
            "{name} {labels:?} matches {} samples",
            matching.len()
        );
        matching.first().map_or(0.0, |s| s.value)
    }

    /// Asserts the family's type and that every sample carries exactly these label names.
    fn family(&self, name: &str, family_type: &str, label_names: &[&str]) {
        let samples = self.samples(name);
        assert!(
            !samples.is_empty(),
            "no {name} in the scrape: {:?}",
            self.0.keys().collect::<Vec<_>>()
        );
        let expected: BTreeSet<&str> = label_names.iter().copied().collect();
        for s in samples {
            assert_eq!(s.family_type, family_type, "{name}");
            let names: BTreeSet<&str> = s.labels.keys().map(String::as_str).filter(|k| *k != "le").collect();
            assert_eq!(names, expected, "{name} labels");
        }
    }
}

async fn scrape(local: &Local, token: Option<&str>) -> (u16, String) {
    let mut request = local.http.get(format!("{}/metrics", local.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer = request.send().await.expect("GET /metrics");
    (answer.status().as_u16(), answer.text().await.expect("body"))
}

/// Polls until the job has finished; returns its body and how many polls it took.
async fn finish(local: &Local, status_url: &str, key: &str) -> (Value, u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut polls = 0;
    loop {
        let (code, body) = local.get(status_url, key).await;
        polls += 1;
        assert_eq!(code, 200, "{body}");
        if body["status"] == "completed" || body["status"] == "failed" {
            return (body, polls);
        }
        assert!(Instant::now() < deadline, "not finished: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_scrape_holds_every_family_with_the_originals_names_and_labels() {
    let redis = RedisServer::start().await.expect("redis-server");
    let upstash = UpstashEmulator::start(&redis).await.expect("upstash emulator");
    let (alpha, beta) = (
        FakeProvider::start(Wire::OpenAi).await.expect("fake"),
        FakeProvider::start(Wire::OpenAi).await.expect("fake"),
    );
    let receiver = AlertReceiver::start(&[]).await.expect("callback receiver");
    beta.set_default(FakeReply::openai_text(&good_report_json()));
    let origin = receiver.origin();
    let config = openai_provider("alpha", &alpha.base_url()) + &openai_provider("beta", &beta.base_url());
    let local = Local::start(
        &config,
        &[
            ("UPSTASH_REDIS_REST_URL", upstash.url.as_str()),
            ("UPSTASH_REDIS_REST_TOKEN", upstash.token.as_str()),
            ("CALLBACK_ALLOWED_ORIGINS", origin.as_str()),
            ("METRICS_TOKEN", TOKEN),
        ],
    )
    .await;

    let (code, _) = scrape(&local, None).await;
    assert_eq!(code, 401, "METRICS_TOKEN is set: a scrape without it is refused");
    let (code, _) = scrape(&local, Some("wrong")).await;
    assert_eq!(code, 401);

    let mut report_polls = 0;
    // A: alpha answers 429 (retry in 8 s), beta completes it; its callback is delivered.
    alpha.push(FakeReply::openai_rate_limited(8));
    let mut a = report("metrics-a");
    a["callbacks"] = json!([{ "url": receiver.url("/hook") }]);
    let (code, body) = local.post("/v1/reports", ALICE, a.clone()).await;
    assert_eq!(code, 202, "{body}");
    let (done, polls) = finish(&local, body["statusUrl"].as_str().unwrap(), ALICE).await;
    report_polls += polls;
    assert_eq!(done["data"]["usedProvider"], "beta", "{done}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.received().is_empty() {
        assert!(Instant::now() < deadline, "the callback never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The same submit again: answered from the finished job (a cache hit).
    let (code, body) = local.post("/v1/reports", ALICE, a).await;
    assert_eq!(code, 200, "{body}");

    // B: alpha is cooling down; beta refuses the request, the job waits for alpha, alpha refuses it
    // too: the report completes with its fallback.
    beta.push(FakeReply::openai_status(400));
    alpha.push(FakeReply::openai_status(400));
    let (code, body) = local.post("/v1/reports", BOB, report("metrics-b")).await;
    assert_eq!(code, 202, "{body}");
    let (done, polls) = finish(&local, body["statusUrl"].as_str().unwrap(), BOB).await;
    report_polls += polls;
    assert_eq!(done["data"]["fallback"], true, "{done}");

    // C: a generic job both providers refuse: failed (no fallback).
    alpha.push(FakeReply::openai_status(400));
    beta.push(FakeReply::openai_status(400));
    let (code, body) = local
        .post(
            "/v1/generate",
            ALICE,
            json!({"prompt": "Say hi", "responseMode": "text"}),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let (done, job_polls) = finish(&local, body["statusUrl"].as_str().unwrap(), ALICE).await;
    assert_eq!(done["status"], "failed", "{done}");

    let (code, text) = scrape(&local, Some(TOKEN)).await;
    assert_eq!(code, 200, "{text}");
    let m = Scrape::parse(&text).await;
    let report_json = [("preset", "commit-report"), ("response_mode", "json")];
    let generic_text = [("preset", "generic"), ("response_mode", "text")];
    let with = |extra: &[(&'static str, &'static str)], base: &[(&'static str, &'static str)]| {
        let mut all = base.to_vec();
        all.extend_from_slice(extra);
        all
    };

    // The original's families, with its label names.
    m.family(
        "ai_requests_total",
        "counter",
        &["provider", "status", "preset", "response_mode"],
    );
    for (provider, status, labels, want) in [
        ("alpha", "attempted", &report_json, 2.0),
        ("alpha", "failed", &report_json, 2.0),
        ("alpha", "success", &report_json, 0.0),
        ("alpha", "attempted", &generic_text, 1.0),
        ("alpha", "failed", &generic_text, 1.0),
        ("beta", "attempted", &report_json, 2.0),
        ("beta", "success", &report_json, 1.0),
        ("beta", "failed", &report_json, 1.0),
        ("beta", "attempted", &generic_text, 1.0),
        ("beta", "failed", &generic_text, 1.0),
    ] {
        let labels = with(&[("provider", provider), ("status", status)], labels);
        assert_eq!(m.value("ai_requests_total", &labels), want, "{labels:?}");
    }
    m.family(
        "provider_failures_total",
        "counter",
        &["provider", "reason", "preset", "response_mode"],
    );
    for (provider, reason, labels, want) in [
        ("alpha", "RATE_LIMIT", &report_json, 1.0),
        ("alpha", "UNKNOWN", &report_json, 1.0),
        ("alpha", "UNKNOWN", &generic_text, 1.0),
        ("beta", "UNKNOWN", &report_json, 1.0),
        ("beta", "UNKNOWN", &generic_text, 1.0),
    ] {
        let labels = with(&[("provider", provider), ("reason", reason)], labels);
        assert_eq!(m.value("provider_failures_total", &labels), want, "{labels:?}");
    }
    m.family(
        "ai_request_duration_seconds_count",
        "histogram",
        &["provider", "preset", "response_mode"],
    );
    let beta_report = with(&[("provider", "beta")], &report_json);
    assert_eq!(m.value("ai_request_duration_seconds_count", &beta_report), 1.0);
    let buckets: BTreeSet<String> = m
        .samples("ai_request_duration_seconds_bucket")
        .iter()
        .filter_map(|s| s.labels.get("le").cloned())
        .collect();
    for le in ["0.1", "0.5", "1", "2", "5", "10", "30", "+Inf"] {
        assert!(
            buckets.contains(le),
            "the original's bucket {le} is missing: {buckets:?}"
        );
    }
    m.family("cache_hits_total", "counter", &["status", "preset", "response_mode"]);
    assert_eq!(
        m.value("cache_hits_total", &with(&[("status", "fresh")], &report_json)),
        1.0
    );
    m.family("cache_misses_total", "counter", &["preset", "response_mode"]);
    assert_eq!(m.value("cache_misses_total", &report_json), 2.0);
    assert_eq!(m.value("cache_misses_total", &generic_text), 1.0);
    m.family(
        "jobs_processed_total",
        "counter",
        &["status", "kind", "owner", "fallback"],
    );
    for (status, kind, owner, fallback) in [
        ("success", "report", "alice", "false"),
        ("success", "report", "bob", "true"),
        ("failed", "generic", "alice", "false"),
    ] {
        let labels = [
            ("status", status),
            ("kind", kind),
            ("owner", owner),
            ("fallback", fallback),
        ];
        assert_eq!(m.value("jobs_processed_total", &labels), 1.0, "{labels:?}");
    }
    m.family("job_queue_size", "gauge", &[]);

    // stepper's own families.
    m.family("stepper_jobs_submitted_total", "counter", &["kind", "owner"]);
    assert_eq!(
        m.value(
            "stepper_jobs_submitted_total",
            &[("kind", "report"), ("owner", "alice")]
        ),
        1.0
    );
    assert_eq!(
        m.value("stepper_jobs_submitted_total", &[("kind", "report"), ("owner", "bob")]),
        1.0
    );
    assert_eq!(
        m.value(
            "stepper_jobs_submitted_total",
            &[("kind", "generic"), ("owner", "alice")]
        ),
        1.0
    );
    m.family("stepper_provider_attempts_total", "counter", &["provider", "outcome"]);
    for (provider, outcome, want) in [
        ("alpha", "rate_limited", 1.0),
        ("alpha", "bad_request", 2.0),
        ("beta", "ok", 1.0),
        ("beta", "bad_request", 2.0),
    ] {
        let labels = [("provider", provider), ("outcome", outcome)];
        assert_eq!(m.value("stepper_provider_attempts_total", &labels), want, "{labels:?}");
    }
    m.family("stepper_job_duration_seconds_count", "histogram", &["kind", "outcome"]);
    for (kind, outcome) in [("report", "completed"), ("report", "fallback"), ("generic", "failed")] {
        let labels = [("kind", kind), ("outcome", outcome)];
        assert_eq!(
            m.value("stepper_job_duration_seconds_count", &labels),
            1.0,
            "{labels:?}"
        );
    }
    // B waited for alpha's 429 to run out (≈ 8 s less what A and the re-submit took).
    m.family("stepper_wait_seconds_count", "histogram", &["reason"]);
    assert_eq!(
        m.value("stepper_wait_seconds_count", &[("reason", "rate_limited")]),
        1.0
    );
    let waited = m.value("stepper_wait_seconds_sum", &[("reason", "rate_limited")]);
    assert!(waited > 0.0 && waited <= 8.0, "waited {waited} s");
    m.family("stepper_webhook_attempts_total", "counter", &["target", "outcome"]);
    assert_eq!(
        m.value(
            "stepper_webhook_attempts_total",
            &[("target", "callback"), ("outcome", "delivered")]
        ),
        1.0
    );

    // Store requests per route and step; the REST requests they took: one per store request, plus one
    // the first time each script is loaded (EVALSHA answers NOSCRIPT, then EVAL); and the Redis commands
    // Upstash bills for them: every command executed (the script call and each command inside it), so
    // more than the requests (the exact figures per route: bench/tests/billed_per_route.rs).
    m.family(
        "stepper_store_requests_total",
        "counter",
        &["route", "operation", "outcome"],
    );
    let requests = |route: &str, operation: &str| {
        m.value(
            "stepper_store_requests_total",
            &[("route", route), ("operation", operation), ("outcome", "ok")],
        )
    };
    assert_eq!(requests("POST /v1/reports", "create"), 3.0);
    assert_eq!(requests("POST /v1/generate", "create"), 1.0);
    assert_eq!(requests("GET /v1/reports/{jobId}", "deliver"), f64::from(report_polls));
    assert_eq!(requests("GET /v1/jobs/{jobId}", "deliver"), f64::from(job_polls));
    // A: two attempts and one delivery (in the step that finished it: no claim of its own); B: two
    // attempts (the wait between them); C: two attempts.
    assert_eq!(requests("step", "claim"), 6.0);
    assert_eq!(requests("step", "finish"), 7.0);
    m.family("stepper_store_rest_requests_total", "counter", &["route"]);
    m.family("stepper_redis_commands_total", "counter", &["route"]);
    let rest = |route: &str| m.value("stepper_store_rest_requests_total", &[("route", route)]);
    let commands = |route: &str| m.value("stepper_redis_commands_total", &[("route", route)]);
    let expected = [
        ("POST /v1/reports", 3.0 + 1.0, "create.lua loaded once"),
        ("POST /v1/generate", 1.0, ""),
        ("step", 6.0 + 7.0 + 2.0, "claim.lua and finish.lua loaded once each"),
    ];
    // A poll is plain commands, one request each: the record, then its grace or its rank (none for a
    // finished job that still owes a delivery); once 64 commands wait, one script counts them in the
    // budget (flush.lua: loaded once, then the call and its BITFIELD).
    for (route, polls) in [
        ("GET /v1/reports/{jobId}", report_polls),
        ("GET /v1/jobs/{jobId}", job_polls),
    ] {
        let (polls, sent) = (f64::from(polls), rest(route));
        let flushes = (2.0 * polls / 64.0).ceil() + 1.0;
        assert!(
            polls < sent && sent <= 2.0 * polls + flushes,
            "{route}: {sent} requests for {polls} polls"
        );
        assert!(
            commands(route) >= sent && commands(route) <= sent + flushes,
            "{route}: {} commands for {sent} requests",
            commands(route)
        );
    }
    for (route, requests, why) in expected {
        assert_eq!(rest(route), requests, "{route}: {why}");
        assert!(
            commands(route) > requests,
            "{route}: {} executed commands for {requests} requests",
            commands(route)
        );
    }
    println!(
        "metrics: {} samples in {} bytes of Prometheus text; every route one REST request per store request",
        m.0.values().map(Vec::len).sum::<usize>(),
        text.len()
    );
}
