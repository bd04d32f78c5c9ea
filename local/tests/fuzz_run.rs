//! The schema-driven fuzz run: requests generated from the server's own `GET /openapi.json` (valid bodies
//! from the request schemas, and their mutations: missing fields, wrong types, huge strings, deep nesting,
//! bytes that are not JSON), sent to a real `stepper-local` by two owners interleaved over concurrent
//! connections. Never a 5xx, always a JSON answer, and never one owner's job visible to or deletable by the
//! other; every job not deleted by its owner is still there at the end, and ends (none stuck).
//! `FUZZ_REQUESTS` sets the count (default 10,000; the long form is 100,000, docs/testing.md, "Long
//! runs"); `FUZZ_SEED` replays a run.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{openai_provider, Local, ALICE, BOB};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use testkit::fake::{FakeProvider, FakeReply, Wire};

struct Operation {
    method: reqwest::Method,
    path: String,
    query: Vec<String>,
    body: Option<Value>,
    /// The operation answers an HTML page (`/dashboard`), not JSON.
    html: bool,
}

/// A report job's `(userId, commitSha)`, what a purge by commit names.
type Commit = (String, String);

/// What the run has learned: whose job is whose, and what each owner may have deleted itself.
#[derive(Default)]
struct Ledger {
    jobs: HashMap<String, (&'static str, Option<Commit>)>,
    deleted: HashSet<String>,
    purged_commits: HashSet<(&'static str, String, String)>,
}

#[derive(Default)]
struct Tally {
    sent: usize,
    by_status: std::collections::BTreeMap<u16, usize>,
    server_errors: Vec<String>,
    not_json: Vec<String>,
    leaks: Vec<String>,
    /// Requests naming a job of the other owner: what the isolation check rests on.
    foreign_probes: usize,
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let Ok(method) = method.to_uppercase().parse::<reqwest::Method>() else {
                continue;
            };
            let query = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect();
            let body = op.pointer("/requestBody/content/application~1json/schema").cloned();
            let html = op.pointer("/responses/200/content/text~1html").is_some();
            ops.push(Operation {
                method,
                path: path.clone(),
                query,
                body,
                html,
            });
        }
    }
    ops
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
        Some(pointer) => doc.pointer(pointer).map_or(schema, |s| resolve(doc, s)),
        None => schema,
    }
}

const ALPHABET: &[&str] = &[
    "a", "Z", "7", " ", "-", "_", "/", ".", "é", "漢", "🙂", "\"", "\\", "\n", "{", "%", "<",
];

fn text(rng: &mut StdRng, min: u64, max: u64) -> String {
    let len = rng.gen_range(min..=max.max(min));
    (0..len).map(|_| *ALPHABET.choose(rng).unwrap_or(&"a")).collect()
}

/// A value the schema accepts (as far as this generator reads schemas).
fn valid(doc: &Value, schema: &Value, rng: &mut StdRng, depth: u32) -> Value {
    let schema = resolve(doc, schema);
    if let Some(options) = schema["enum"].as_array() {
        return options.choose(rng).cloned().unwrap_or(Value::Null);
    }
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array() {
            let pick = options.choose(rng).cloned().unwrap_or(Value::Null);
            return valid(doc, &pick, rng, depth);
        }
    }
    if let Some(first) = schema["allOf"].as_array().and_then(|a| a.first()) {
        return valid(doc, first, rng, depth);
    }
    let kind = match &schema["type"] {
        Value::Array(types) => types.choose(rng).and_then(Value::as_str).unwrap_or("null").to_string(),
        Value::String(t) => t.clone(),
        _ if schema.get("properties").is_some() => "object".into(),
        _ => ["string", "integer", "boolean", "object"]
            .choose(rng)
            .unwrap_or(&"null")
            .to_string(),
    };
    match kind.as_str() {
        "object" => {
            let required: Vec<&str> = schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut object = Map::new();
            for (name, property) in schema["properties"].as_object().into_iter().flatten() {
                if depth < 6 && (required.contains(&name.as_str()) || rng.gen_bool(0.5)) {
                    object.insert(name.clone(), valid(doc, property, rng, depth + 1));
                }
            }
            Value::Object(object)
        }
        "array" => {
            let min = schema["minItems"].as_u64().unwrap_or(0);
            let max = schema["maxItems"].as_u64().unwrap_or(min + 3).min(min + 3);
            let items = schema.get("items").cloned().unwrap_or(json!({"type": "string"}));
            let n = if depth < 6 {
                rng.gen_range(min..=max.max(min))
            } else {
                min
            };
            Value::Array((0..n).map(|_| valid(doc, &items, rng, depth + 1)).collect())
        }
        "string" => match schema["format"].as_str() {
            Some("uri") => json!(format!("https://hooks.example.com/{}", rng.gen::<u32>())),
            _ => {
                let min = schema["minLength"].as_u64().unwrap_or(0);
                let max = schema["maxLength"].as_u64().unwrap_or(min + 24).min(min + 24);
                json!(text(rng, min, max))
            }
        },
        "integer" => {
            let min = schema["minimum"].as_i64().unwrap_or(0);
            let max = schema["maximum"].as_i64().unwrap_or(min + 1_000).max(min);
            json!(rng.gen_range(min..=max))
        }
        "number" => json!(rng.gen_range(0.0..2.0)),
        "boolean" => json!(rng.gen_bool(0.5)),
        _ => Value::Null,
    }
}

fn any_key(object: &Map<String, Value>, rng: &mut StdRng) -> String {
    object
        .keys()
        .cloned()
        .collect::<Vec<_>>()
        .choose(rng)
        .cloned()
        .unwrap_or_default()
}

/// A valid body broken in one of the ways clients break them.
fn mutated(mut body: Value, rng: &mut StdRng) -> Value {
    let wrong = [
        json!(null),
        json!(42),
        json!(-1),
        json!(""),
        json!([]),
        json!({}),
        json!(true),
        json!("x".repeat(70_000)),
        json!(1e308),
    ];
    match (rng.gen_range(0..5), body.as_object_mut()) {
        (0, Some(object)) if !object.is_empty() => {
            let key = any_key(object, rng);
            object.remove(&key);
        }
        (1, Some(object)) if !object.is_empty() => {
            let key = any_key(object, rng);
            object.insert(key, wrong.choose(rng).cloned().unwrap_or_default());
        }
        (2, Some(object)) => {
            let deep = (0..rng.gen_range(10..300)).fold(json!(1), |v, _| json!([v]));
            object.insert("payload".into(), deep);
        }
        (3, Some(object)) => {
            object.insert(text(rng, 1, 12), wrong.choose(rng).cloned().unwrap_or_default());
        }
        _ => return wrong.choose(rng).cloned().unwrap_or_default(),
    }
    body
}

fn owner_of(key: &str) -> &'static str {
    if key == ALICE {
        "alice"
    } else {
        "bob"
    }
}

async fn one_request(
    local: &Local,
    doc: &Value,
    ops: &[Operation],
    ledger: &Mutex<Ledger>,
    tally: &Mutex<Tally>,
    rng: &mut StdRng,
) {
    let op = ops.choose(rng).expect("operations");
    let key = if rng.gen_bool(0.5) { ALICE } else { BOB };
    let me = owner_of(key);
    // Aim path parameters at real jobs of both owners most of the time, so isolation is really tested.
    let (job_id, job_owner) = {
        let ledger = ledger.lock().unwrap();
        let known: Vec<(&String, &'static str)> = ledger.jobs.iter().map(|(id, (owner, _))| (id, *owner)).collect();
        match known.choose(rng) {
            Some((id, owner)) if rng.gen_bool(0.8) => ((*id).clone(), Some(*owner)),
            _ => (
                [
                    text(rng, 0, 40),
                    format!("{:032x}", rng.gen::<u128>()),
                    "..%2F..%2Fetc".into(),
                ]
                .choose(rng)
                .cloned()
                .unwrap_or_default(),
                None,
            ),
        }
    };
    let path = op.path.replace("{jobId}", &urlencode(&job_id));
    let commit = (
        format!("user-{}", rng.gen_range(0..3)),
        format!("c{}", rng.gen_range(0..6)),
    );
    let mut query = Vec::new();
    for name in op
        .query
        .iter()
        .filter(|_| rng.gen_bool(0.9))
        .cloned()
        .collect::<Vec<_>>()
    {
        query.push(match name.as_str() {
            "userId" => format!("userId={}", commit.0),
            "commitSha" => format!("commitSha={}", commit.1),
            other => format!("{other}={}", urlencode(&text(rng, 0, 8))),
        });
    }
    let url = if query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{}", query.join("&"))
    };
    let mut body = op.body.as_ref().map(|schema| valid(doc, schema, rng, 0));
    if let Some(Value::Object(object)) = body.as_mut() {
        if object.contains_key("commitSha") {
            object.insert("userId".into(), json!(commit.0));
            object.insert("commitSha".into(), json!(commit.1));
        }
        object.remove("callbackUrl");
        object.remove("callbacks");
    }
    let broken = body.is_some() && rng.gen_bool(0.4);
    if broken {
        body = body.map(|b| mutated(b, rng));
    }
    let mut request = local.http.request(op.method.clone(), format!("{}{url}", local.base));
    request = match rng.gen_range(0..20) {
        0 => request,
        1 => request.header("x-api-key", "not-a-key"),
        2 => request.header("authorization", format!("Bearer {key}")),
        _ => request.header("x-api-key", key),
    };
    if let Some(body) = &body {
        request = if rng.gen_range(0..30) == 0 {
            request
                .header("content-type", "application/json")
                .body(vec![0xff, 0xfe, b'{'])
        } else {
            request.json(body)
        };
    }
    let response = request.send().await.expect("stepper-local answers");
    let status = response.status().as_u16();
    let is_html = response
        .headers()
        .get("content-type")
        .is_some_and(|t| t.as_bytes().starts_with(b"text/html"));
    let text = response.text().await.unwrap_or_default();
    // A page the document declares as HTML is held to being that page; every other answer to JSON.
    let answer: Option<Value> = if op.html && status == 200 && is_html {
        Some(Value::Null)
    } else {
        serde_json::from_str(&text).ok()
    };
    let label = format!("{} {url} as {me}", op.method);

    let mut tally = tally.lock().unwrap();
    tally.sent += 1;
    *tally.by_status.entry(status).or_default() += 1;
    if status >= 500 {
        tally.server_errors.push(format!("{label}: {status} {text}"));
    }
    let Some(answer) = answer else {
        tally.not_json.push(format!(
            "{label}: {status} {}",
            text.chars().take(120).collect::<String>()
        ));
        return;
    };
    let mut ledger = ledger.lock().unwrap();
    let foreign = job_owner.is_some_and(|owner| owner != me);
    let names_job = op.path.contains("{jobId}");
    if foreign && names_job {
        tally.foreign_probes += 1;
    }
    if foreign && names_job && status != 404 && status != 401 && status != 429 {
        tally
            .leaks
            .push(format!("{label}: another owner's job answered {status} {answer}"));
    }
    if (200..300).contains(&status) {
        if let Some(id) = answer["jobId"].as_str() {
            let commit = body
                .as_ref()
                .and_then(|b| Some((b["userId"].as_str()?.to_string(), b["commitSha"].as_str()?.to_string())));
            ledger.jobs.entry(id.to_string()).or_insert((me, commit));
        }
        if op.method == reqwest::Method::DELETE && names_job && !foreign {
            ledger.deleted.insert(job_id.clone());
        }
        if op.method == reqwest::Method::DELETE && !names_job {
            ledger.purged_commits.insert((me, commit.0.clone(), commit.1.clone()));
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~%".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_generated_requests_two_owners_no_server_error_no_leak() {
    let fake = FakeProvider::start(Wire::OpenAi).await.unwrap();
    fake.set_default(FakeReply::openai_text(&common::good_report_json()));
    // Limits stay on (their paths are fuzzed too) but high enough that most requests reach the handlers.
    let limits = [("STEPPER_RATE_LIMIT", "1000000/1h"), ("STEPPER_MAX_IN_FLIGHT", "5000")];
    let local = Arc::new(Local::start(&openai_provider("fake", &fake.base_url()), &limits).await);
    let (status, doc) = local.get("/openapi.json", ALICE).await;
    assert_eq!(status, 200);
    let doc = Arc::new(doc);
    let ops = Arc::new(operations(&doc));
    assert!(ops.len() >= 8, "the document lists every route");

    let total: usize = std::env::var("FUZZ_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(rand::random);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let workers = 8;
    let mut handles = Vec::new();
    for w in 0..workers {
        let (local, doc, ops, ledger, tally) = (local.clone(), doc.clone(), ops.clone(), ledger.clone(), tally.clone());
        let share = total / workers + usize::from(w < total % workers);
        handles.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(w as u64));
            for _ in 0..share {
                one_request(&local, &doc, &ops, &ledger, &tally, &mut rng).await;
            }
        }));
    }
    for handle in handles {
        handle.await.expect("a fuzz worker panicked");
    }

    // Every job an owner did not delete itself is still there for it: the other owner deleted nothing.
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let mut lost = Vec::new();
    let mut survivors = Vec::new();
    for (id, (owner, commit)) in &ledger.jobs {
        let purged_by_owner = commit
            .as_ref()
            .is_some_and(|(u, c)| ledger.purged_commits.contains(&(owner, u.clone(), c.clone())));
        if ledger.deleted.contains(id) || purged_by_owner {
            continue;
        }
        let key = if *owner == "alice" { ALICE } else { BOB };
        let (status, _) = local.get(&format!("/v1/jobs/{id}"), key).await;
        if status == 404 {
            lost.push(format!("{owner}'s job {id}"));
        } else {
            survivors.push((id.clone(), key));
        }
    }
    // And every job that is still there ends: none is stuck (the fake provider answers at once, so a
    // minute is ample; a job whose deliveries are still pending has ended all the same).
    let settle = Instant::now() + std::time::Duration::from_secs(60);
    let mut stuck = Vec::new();
    for (id, key) in &survivors {
        loop {
            let (status, body) = local.get(&format!("/v1/jobs/{id}"), key).await;
            if status != 200 || body["status"] == "completed" || body["status"] == "failed" {
                break;
            }
            if Instant::now() > settle {
                stuck.push(format!("{id}: {}", body["status"]));
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    let tally = tally.lock().unwrap();
    println!(
        "stepper-fuzz: {} requests in {:.1}s (seed {seed}), statuses {:?}, {} server errors, {} non-JSON answers, {} requests at the other owner's jobs, {} cross-owner leaks, {} jobs lost, {} jobs stuck, {} jobs created",
        tally.sent,
        started.elapsed().as_secs_f64(),
        tally.by_status,
        tally.server_errors.len(),
        tally.not_json.len(),
        tally.foreign_probes,
        tally.leaks.len(),
        lost.len(),
        stuck.len(),
        ledger.jobs.len(),
    );
    assert_eq!(tally.sent, total);
    assert!(
        tally.server_errors.is_empty(),
        "server errors: {:#?}",
        &tally.server_errors[..tally.server_errors.len().min(5)]
    );
    assert!(
        tally.not_json.is_empty(),
        "non-JSON answers: {:#?}",
        &tally.not_json[..tally.not_json.len().min(5)]
    );
    assert!(
        tally.leaks.is_empty(),
        "leaks: {:#?}",
        &tally.leaks[..tally.leaks.len().min(5)]
    );
    assert!(lost.is_empty(), "jobs deleted by someone else: {lost:?}");
    assert!(
        stuck.is_empty(),
        "jobs not finished a minute after the run: {:?}",
        &stuck[..stuck.len().min(5)]
    );
    assert!(
        tally.foreign_probes > total / 20,
        "isolation was probed ({})",
        tally.foreign_probes
    );
    assert!(
        ledger.jobs.len() > 50,
        "the run created jobs to aim at ({})",
        ledger.jobs.len()
    );
}
