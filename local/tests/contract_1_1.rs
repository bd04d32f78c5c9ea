//! The published 1.1.0 HTTP contract (`seed-contract-1.1.md`), capability by capability, against the
//! real `stepper-local` on the in-memory store and on Upstash (the REST emulator over redis-server).
//! Where stepper differs on purpose, the test asserts stepper's behaviour; docs/contract.md says why.

mod common;

use std::time::Duration;

use common::{openai_provider, report, Local, ALICE, BOB};
use serde_json::{json, Value};
use testkit::fake::{FakeProvider, FakeReply, Wire};
use testkit::receiver::NodeReceiver;
use testkit::stack::{RedisServer, UpstashEmulator};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ANSWER: &str = r#"{"colour": "blue"}"#;

/// Four fake providers in this order: `alpha` and `beta` answer, `gamma` is always rate-limited for a
/// minute, `delta` refuses every request (400: this job cannot go there).
struct Providers {
    alpha: FakeProvider,
    beta: FakeProvider,
    gamma: FakeProvider,
    delta: FakeProvider,
}

impl Providers {
    async fn start() -> Self {
        let start = || FakeProvider::start(Wire::OpenAi);
        let (alpha, beta, gamma, delta) = (
            start().await.unwrap(),
            start().await.unwrap(),
            start().await.unwrap(),
            start().await.unwrap(),
        );
        alpha.set_default(FakeReply::openai_text(ANSWER));
        beta.set_default(FakeReply::openai_text(ANSWER));
        gamma.set_default(FakeReply::openai_status(429).with_header("retry-after", "60"));
        delta.set_default(FakeReply::openai_status(400));
        Self {
            alpha,
            beta,
            gamma,
            delta,
        }
    }

    fn toml(&self) -> String {
        [
            ("alpha", &self.alpha),
            ("beta", &self.beta),
            ("gamma", &self.gamma),
            ("delta", &self.delta),
        ]
        .iter()
        .map(|(name, p)| openai_provider(name, &p.base_url()))
        .collect()
    }
}

async fn start(providers: &Providers, receiver: &NodeReceiver, upstash: Option<&UpstashEmulator>) -> Local {
    let origin = format!("http://127.0.0.1:{}", receiver.port);
    let secrets = format!("alice={SECRET}");
    let mut env = vec![
        ("STEPPER_WEBHOOK_SECRETS", secrets.as_str()),
        ("CALLBACK_ALLOWED_ORIGINS", origin.as_str()),
    ];
    if let Some(u) = upstash {
        env.push(("UPSTASH_REDIS_REST_URL", u.url.as_str()));
        env.push(("UPSTASH_REDIS_REST_TOKEN", u.token.as_str()));
    }
    Local::start(&providers.toml(), &env).await
}

async fn finished(local: &Local, url: &str) -> Value {
    local.wait_finished(url, ALICE, Duration::from_secs(20)).await
}

fn only(provider: &str) -> Value {
    let others: Vec<&str> = ["alpha", "beta", "gamma", "delta"]
        .into_iter()
        .filter(|p| *p != provider)
        .collect();
    json!(others)
}

/// Every 1.1.0 capability, in the order of the contract's checklist.
async fn the_contract(local: &Local, providers: &Providers, receiver: &NodeReceiver) {
    // A job that cannot finish within the immediate wait (its only provider is rate-limited for a
    // minute): started first, checked last, so its 25 s run beside the rest.
    let slow = local.post(
        "/v1/generate/immediate",
        ALICE,
        json!({"prompt": "Wait for me", "excludeProviders": only("gamma")}),
    );
    let rest = async {
        service_info(local).await;
        version_and_fields(local).await;
        poll_fields_and_cache_control(local).await;
        provider_preferences(local, providers).await;
        immediate(local, providers).await;
        batch(local, receiver).await;
    };
    let ((code, pending), ()) = tokio::join!(slow, rest);
    // Past the wait: 202 with the job to poll, never a gateway timeout. It is still queued, waiting
    // for gamma to come back (rawStatus delayed).
    assert_eq!(code, 202, "{pending}");
    assert_eq!(pending["status"], "queued");
    let (_, polled) = local.get(pending["statusUrl"].as_str().unwrap(), ALICE).await;
    assert_eq!(polled["status"], "queued", "{polled}");
    assert_eq!(polled["rawStatus"], "delayed", "{polled}");
    assert_eq!(polled["attempts"][0]["provider"], "gamma");
}

/// `GET /`: service info, no key.
async fn service_info(local: &Local) {
    let (code, info) = local.request(reqwest::Method::GET, "/", None, None).await;
    assert_eq!(code, 200, "{info}");
    assert_eq!(info["service"], "stepper");
    assert_eq!(info["contractVersion"], "1");
    for route in [
        "POST /v1/generate",
        "POST /v1/generate/batch",
        "POST /v1/generate/immediate",
        "POST /v1/reports/immediate",
        "GET /v1/jobs/{jobId}",
    ] {
        assert!(info["endpoints"][route].is_string(), "{route} missing: {info}");
    }
    assert_eq!(info["security"]["apiKeyRequired"], true);
}

/// `contractVersion` (`"1"` only, `SCHEMA_VERSION_MISMATCH`), and the 400s of the new fields.
async fn version_and_fields(local: &Local) {
    for version in [json!("2"), json!(1)] {
        let (code, body) = local
            .post(
                "/v1/generate",
                ALICE,
                json!({"prompt": "x", "contractVersion": version}),
            )
            .await;
        assert_eq!(code, 400, "{body}");
        assert_eq!(body["error"], "Request contract version is not supported");
        assert_eq!(body["errorCode"], "SCHEMA_VERSION_MISMATCH");
        assert_eq!(body["supportedVersion"], "1");
    }
    // Ours: checked on every route (the original let /v1/reports take any version).
    let mut r = report("c0ffee01");
    r["contractVersion"] = json!("9");
    let (code, body) = local.post("/v1/reports", ALICE, r).await;
    assert_eq!(
        (code, &body["errorCode"]),
        (400, &json!("SCHEMA_VERSION_MISMATCH")),
        "{body}"
    );
    for (field, value) in [
        ("cacheControl", json!("sometimes")),
        ("preferredProviders", json!("alpha")),
        ("excludeProviders", json!([""])),
        ("priority", json!("urgent")),
    ] {
        let (code, body) = local
            .post("/v1/generate", ALICE, json!({"prompt": "x", field: value}))
            .await;
        assert_eq!(code, 400, "{field}: {body}");
        assert_eq!(body["field"], field, "{body}");
        assert_eq!(body["code"], "invalid_request");
    }
    // A report's priority is checked the same way.
    let report = json!({"userId": "u", "commitSha": "abc", "repo": "r", "priority": 2});
    let (code, body) = local.post("/v1/reports", ALICE, report).await;
    assert_eq!((code, &body["field"]), (400, &json!("priority")), "{body}");
    assert_eq!(
        body["error"], r#"priority: must be "high", "normal" or "low""#,
        "{body}"
    );
}

/// The 1.1.0 poll fields, the cached 200 and `cacheControl`.
async fn poll_fields_and_cache_control(local: &Local) {
    let body = json!({"prompt": "Name a colour", "contractVersion": "1", "tenantId": "t1", "requestId": "q1"});
    let (code, queued) = local.post("/v1/generate", ALICE, body.clone()).await;
    assert_eq!(code, 202, "{queued}");
    assert_eq!(queued["contractVersion"], "1");
    let done = finished(local, queued["statusUrl"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["rawStatus"], "completed");
    assert_eq!(done["contractVersion"], "1");
    assert_eq!(done["progress"], 100);
    assert_eq!(done["data"]["validated"], true);
    assert_eq!(done["data"]["result"]["colour"], "blue");

    // An identical request: the finished job's result (ours: single-flight plus the kept result).
    let (code, cached) = local.post("/v1/generate", ALICE, body.clone()).await;
    assert_eq!(code, 200, "{cached}");
    assert_eq!(cached["cached"], true);
    assert_eq!(cached["metadata"]["validated"], true);
    assert_eq!(cached["metadata"]["contractVersion"], "1");

    // no-cache and refresh: never the finished result; a new job replaces it, and the next default
    // request gets the new one's result.
    for control in ["no-cache", "refresh"] {
        let mut fresh = body.clone();
        fresh["cacheControl"] = json!(control);
        let (code, again) = local.post("/v1/generate", ALICE, fresh).await;
        assert_eq!(code, 202, "{control}: {again}");
        let done = finished(local, again["statusUrl"].as_str().unwrap()).await;
        assert_eq!(done["status"], "completed");
    }
    let (code, cached) = local.post("/v1/generate", ALICE, body).await;
    assert_eq!(code, 200, "{cached}");
}

/// `preferredProviders` re-orders, `excludeProviders` removes, each per job; a failed job carries
/// `failure` beside `error`.
async fn provider_preferences(local: &Local, providers: &Providers) {
    let before = providers.alpha.requests().len();
    let (_, queued) = local
        .post(
            "/v1/generate",
            ALICE,
            json!({"prompt": "prefer", "preferredProviders": ["BETA", "nope"]}),
        )
        .await;
    let done = finished(local, queued["statusUrl"].as_str().unwrap()).await;
    assert_eq!(done["data"]["usedProvider"], "beta", "{done}");

    let (_, queued) = local
        .post(
            "/v1/generate",
            ALICE,
            json!({"prompt": "exclude", "excludeProviders": ["Alpha"]}),
        )
        .await;
    let done = finished(local, queued["statusUrl"].as_str().unwrap()).await;
    assert_eq!(done["data"]["usedProvider"], "beta", "{done}");
    assert_eq!(providers.alpha.requests().len(), before, "alpha was never called");

    // Only delta, which refuses the request: failed, with the original's failure object.
    let (_, queued) = local
        .post(
            "/v1/generate",
            ALICE,
            json!({"prompt": "refused", "excludeProviders": only("delta")}),
        )
        .await;
    let failed = finished(local, queued["statusUrl"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["error"].is_string());
    assert_eq!(failed["failure"]["errorCode"], "UNKNOWN", "{failed}");
    assert_eq!(failed["failure"]["retryable"], false);
    assert!(failed["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["provider"] == "delta"));

    // Every provider excluded: no attempt at all (ours: a failed job, not a fallback result).
    let (_, queued) = local
        .post(
            "/v1/generate",
            ALICE,
            json!({"prompt": "nothing", "excludeProviders": ["alpha", "beta", "gamma", "delta"]}),
        )
        .await;
    let failed = finished(local, queued["statusUrl"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["attempts"], json!([]));
    assert!(
        failed["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("excludeProviders"),
        "{failed}"
    );
}

/// The two immediate routes: 200 with the result and its metadata, 502 when the job failed.
async fn immediate(local: &Local, providers: &Providers) {
    let (code, answer) = local
        .post(
            "/v1/generate/immediate",
            ALICE,
            json!({"prompt": "Right now", "contractVersion": "1"}),
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["status"], "completed");
    assert_eq!(answer["data"]["colour"], "blue");
    let metadata = &answer["metadata"];
    assert_eq!(metadata["provider"], "alpha");
    assert_eq!(metadata["fallback"], false);
    assert_eq!(metadata["validated"], true);
    assert_eq!(metadata["contractVersion"], "1");
    assert!(metadata["timings"]["totalMs"].is_u64());
    assert_eq!(metadata["providersAttempted"][0]["provider"], "alpha");
    // The job behind it is an ordinary one.
    let (code, polled) = local
        .get(&format!("/v1/jobs/{}", answer["jobId"].as_str().unwrap()), ALICE)
        .await;
    assert_eq!((code, &polled["status"]), (200, &json!("completed")));

    // The next answer is a valid report (the generic answer is not one).
    providers
        .alpha
        .push(FakeReply::openai_text(&common::good_report_json()));
    let (code, answer) = local.post("/v1/reports/immediate", ALICE, report("feedbeef")).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        answer["data"]["title"], "Add token refresh to the auth client",
        "{answer}"
    );
    assert!(answer["metadata"]["provider"].is_string());

    let (code, failed) = local
        .post(
            "/v1/generate/immediate",
            ALICE,
            json!({"prompt": "no", "excludeProviders": only("delta")}),
        )
        .await;
    assert_eq!(code, 502, "{failed}");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["failure"]["errorCode"], "UNKNOWN");

    let (code, refused) = local
        .post(
            "/v1/generate/immediate",
            ALICE,
            json!({"prompt": "x", "contractVersion": "2"}),
        )
        .await;
    assert_eq!((code, &refused["errorCode"]), (400, &json!("SCHEMA_VERSION_MISMATCH")));
}

/// Batch: the envelope's 400s, per-item 400s in input order, one id to poll, progress, per-item
/// results in input order, per-item callbacks, owner scoping.
async fn batch(local: &Local, receiver: &NodeReceiver) {
    let item = |id: &str, request: Value| json!({"id": id, "request": request});
    let ok = item("a", json!({"prompt": "x"}));
    for (body, field) in [
        (json!({"items": []}), "items"),
        (json!({"items": vec![ok.clone(); 101]}), "items"),
        (json!({"items": [ok.clone()], "concurrency": 6}), "concurrency"),
        (
            json!({"items": [ok.clone(), item(" a ", json!({"prompt": "y"}))]}),
            "items[1].id",
        ),
        (json!({"items": [{"id": "a"}]}), "items[0]"),
        (json!({"items": [ok.clone()], "tenantId": 3}), "tenantId"),
    ] {
        let (code, refused) = local.post("/v1/generate/batch", ALICE, body).await;
        assert_eq!(code, 400, "{refused}");
        assert_eq!(refused["field"], field, "{refused}");
    }
    let (code, refused) = local
        .post(
            "/v1/generate/batch",
            ALICE,
            json!({"contractVersion": "2", "items": [ok.clone()]}),
        )
        .await;
    assert_eq!((code, &refused["errorCode"]), (400, &json!("SCHEMA_VERSION_MISMATCH")));
    let (code, refused) = local
        .post(
            "/v1/generate/batch",
            ALICE,
            json!({"items": [
                item("a", json!({"prompt": "x", "contractVersion": "2"})),
                item("b", json!({"prompt": "fine"})),
                item("c", json!({"prompt": 3})),
            ]}),
        )
        .await;
    assert_eq!(code, 400, "{refused}");
    assert_eq!(
        refused["error"],
        "Invalid items[0].request: Request contract version is not supported"
    );
    assert_eq!(refused["errorCode"], "SCHEMA_VERSION_MISMATCH");
    let fields: Vec<&str> = refused["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["items[0].request.contractVersion", "items[2].request.prompt"]);

    let callback = receiver.url("/item-a");
    let (code, queued) = local
        .post(
            "/v1/generate/batch",
            ALICE,
            json!({"tenantId": "t1", "requestId": "r1", "concurrency": 2, "items": [
                item("a", json!({"prompt": "first", "callbacks": [{"url": callback}], "metadata": {"k": "v"}})),
                item("b", json!({"prompt": "second", "preferredProviders": ["beta"]})),
                item("c", json!({"prompt": "third", "excludeProviders": only("delta")})),
            ]}),
        )
        .await;
    assert_eq!(code, 202, "{queued}");
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["itemCount"], 3);
    assert_eq!(queued["concurrency"], 2);
    assert_eq!(queued["contractVersion"], "1");
    let url = queued["statusUrl"].as_str().unwrap().to_string();
    assert_eq!(url, format!("/v1/jobs/{}", queued["jobId"].as_str().unwrap()));
    let done = finished(local, &url).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"], json!({"done": 3, "total": 3}));
    let data = &done["data"];
    assert_eq!(
        (data["total"].clone(), data["completed"].clone(), data["failed"].clone()),
        (json!(3), json!(2), json!(1))
    );
    let items = data["items"].as_array().unwrap();
    let ids: Vec<(&str, u64, &str)> = items
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap(),
                i["index"].as_u64().unwrap(),
                i["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(ids, [("a", 0, "completed"), ("b", 1, "completed"), ("c", 2, "failed")]);
    assert_eq!(items[0]["data"]["colour"], "blue");
    assert_eq!(items[0]["metadata"]["validated"], true);
    assert_eq!(items[1]["metadata"]["provider"], "beta");
    assert_eq!(items[2]["failure"]["errorCode"], "UNKNOWN");
    // The same answer on the reports path; another owner sees nothing.
    let batch_id = queued["jobId"].as_str().unwrap();
    let (code, same) = local.get(&format!("/v1/reports/{batch_id}"), ALICE).await;
    assert_eq!((code, &same["progress"]), (200, &done["progress"]));
    let (code, hidden) = local.get(&url, BOB).await;
    assert_eq!((code, &hidden["error"]), (404, &json!("Job not found")));
    let (code, _) = local.get("/v1/jobs/00000000-0000-4000-8000-000000000000", ALICE).await;
    assert_eq!(code, 404);

    // Item a's callback, with the inherited tenantId and requestId and the request's metadata.
    let mut got = Vec::new();
    for _ in 0..100 {
        got = receiver.deliveries().await.unwrap();
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got.len(), 1, "{got:?}");
    let metadata = &got[0].body["metadata"];
    assert_eq!(got[0].body["success"], true);
    assert_eq!(metadata["tenantId"], "t1");
    assert_eq!(metadata["requestId"], "r1:a");
    assert_eq!(metadata["requestMetadata"], json!({"k": "v"}));
    assert_eq!(metadata["jobId"], items[0]["jobId"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_1_1_contract_on_the_memory_store() {
    let providers = Providers::start().await;
    let receiver = NodeReceiver::start(SECRET, &[200], 0).await.expect("node receiver");
    let local = start(&providers, &receiver, None).await;
    the_contract(&local, &providers, &receiver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_1_1_contract_on_upstash() {
    let redis = RedisServer::start().await.unwrap();
    let upstash = UpstashEmulator::start(&redis).await.unwrap();
    let providers = Providers::start().await;
    let receiver = NodeReceiver::start(SECRET, &[200], 0).await.expect("node receiver");
    let local = start(&providers, &receiver, Some(&upstash)).await;
    let logs = local.logs.clone();
    let run = std::panic::AssertUnwindSafe(the_contract(&local, &providers, &receiver));
    if let Err(panic) = futures::FutureExt::catch_unwind(run).await {
        eprintln!("stepper-local's log:\n{}", logs.lock().unwrap().join("\n"));
        std::panic::resume_unwind(panic);
    }
}
