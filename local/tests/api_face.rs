//! The API's face from outside: the served `/openapi.json` passes openapi-spec-validator, the TypeScript
//! example's generated types are current and type-check, and the example client runs against a real
//! `stepper-local` (a report, a generic job whose signed webhook it verifies both ways, purges).
//! The tools come from scripts/install-tools.sh; without them these tests say so and pass, except under
//! `CI=true`, where a missing tool fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{openai_provider, text, tool, Local, TempDir, ALICE};
use serde_json::{json, Value};
use testkit::fake::{FakeProvider, FakeReply, Wire};
use testkit::stack::{free_port, tools_dir};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

/// Runs `program` in `cwd` (two minutes at most).
async fn run(program: &Path, args: &[&str], cwd: &Path, env: &[(&str, String)]) -> Output {
    common::run(program, args, cwd, env, Duration::from_secs(120)).await
}

#[tokio::test]
async fn the_served_document_is_valid_openapi_and_is_the_committed_one() {
    let Some(validator) = tool("venv/bin/openapi-spec-validator") else {
        return;
    };
    let local = Local::start("", &[]).await;
    let answer = local
        .http
        .get(format!("{}/openapi.json", local.base))
        .send()
        .await
        .expect("GET /openapi.json");
    assert_eq!(answer.status().as_u16(), 200, "served without a key");
    assert_eq!(answer.headers()["content-type"], "application/json");
    let served: Value = answer.json().await.expect("JSON");
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("docs/openapi.json")).expect("docs/openapi.json"))
            .expect("docs/openapi.json is JSON");
    assert_eq!(
        served, committed,
        "docs/openapi.json is stale: scripts/openapi-types.sh"
    );

    let dir = TempDir::new();
    let file = dir.0.join("openapi.json");
    std::fs::write(&file, serde_json::to_string_pretty(&served).expect("serialize")).expect("write");
    let output = run(&validator, &[file.to_str().expect("utf-8 path")], &dir.0, &[]).await;
    assert!(
        output.status.success(),
        "openapi-spec-validator refused the document:\n{}",
        text(&output)
    );
    assert!(text(&output).contains("OK"), "{}", text(&output));

    // The validator does validate: the same document with a broken reference is refused.
    let mut broken = served.clone();
    broken["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] =
        json!({"$ref": "#/components/schemas/Nowhere"});
    std::fs::write(&file, broken.to_string()).expect("write");
    let output = run(&validator, &[file.to_str().expect("utf-8 path")], &dir.0, &[]).await;
    assert!(!output.status.success(), "a dangling $ref passed: {}", text(&output));
}

#[tokio::test]
async fn the_typescript_types_are_generated_from_the_committed_document() {
    let Some(generator) = tool("node/node_modules/.bin/openapi-typescript") else {
        return;
    };
    let dir = TempDir::new();
    let fresh = dir.0.join("api-types.ts");
    let args = [
        repo("docs/openapi.json").to_str().expect("utf-8").to_string(),
        "-o".into(),
        fresh.to_str().expect("utf-8").into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run(&generator, &args, &dir.0, &[]).await;
    assert!(output.status.success(), "{}", text(&output));
    let committed = std::fs::read_to_string(repo("examples/typescript/src/api-types.ts")).expect("api-types.ts");
    assert!(
        std::fs::read_to_string(&fresh).expect("generated") == committed,
        "examples/typescript/src/api-types.ts is stale: scripts/openapi-types.sh"
    );
}

/// A report that passes the preset's schema, so the job completes on its first attempt.
const REPORT: &str = r#"{"title": "Add token refresh to the auth client", "summary": "The auth client now refreshes its token before it expires, so long sessions no longer fail.", "changes": ["Added refresh() to src/auth.ts"], "rationale": "Sessions expired in the middle of work.", "impact_and_tests": "Affects the auth client; covered by its unit tests.", "next_steps": [], "tags": "auth, tokens"}"#;

#[tokio::test]
async fn the_typescript_example_type_checks_and_runs_against_stepper_local() {
    let (Some(tsc), Some(_)) = (
        tool("node/node_modules/.bin/tsc"),
        tool("node/node_modules/@types/node"),
    ) else {
        return;
    };
    let dir = TempDir::new();
    let out = dir.0.join("dist");
    let types = tools_dir().join("node/node_modules/@types");
    let example = repo("examples/typescript");
    let args = [
        "-p",
        example.to_str().expect("utf-8"),
        "--outDir",
        out.to_str().expect("utf-8"),
        "--typeRoots",
        types.to_str().expect("utf-8"),
    ];
    let output = run(&tsc, &args, &example, &[]).await;
    assert!(output.status.success(), "tsc refused the example:\n{}", text(&output));
    // The compiled files are ES modules, as in the example's own package.json.
    std::fs::write(out.join("package.json"), r#"{"type": "module"}"#).expect("write");

    let provider = FakeProvider::start(Wire::OpenAi).await.expect("fake provider");
    provider.set_default(FakeReply::openai_text(REPORT));
    let hook_port = free_port().expect("port");
    let local = Local::start(
        &openai_provider("alpha", &provider.base_url()),
        &[
            ("STEPPER_WEBHOOK_SECRETS", &format!("alice={SECRET}")),
            ("CALLBACK_ALLOWED_ORIGINS", &format!("http://127.0.0.1:{hook_port}")),
        ],
    )
    .await;
    let env = [
        ("STEPPER_URL", local.base.clone()),
        ("STEPPER_API_KEY", ALICE.to_string()),
        ("WEBHOOK_SECRET", SECRET.to_string()),
        ("WEBHOOK_PORT", hook_port.to_string()),
    ];
    let output = run(
        Path::new("node"),
        &[out.join("demo.js").to_str().expect("utf-8")],
        &dir.0,
        &env,
    )
    .await;
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(output.status.success(), "the example client failed:\n{}", text(&output));
    let step = |name: &str| {
        lines
            .iter()
            .find(|l| l["step"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} step: {lines:?}"))
    };
    assert_eq!(step("health")["providers"], json!(["alpha"]));
    assert_eq!(step("report")["title"], "Add token refresh to the auth client");
    assert_eq!(step("purge-report")["deleted"], true);
    assert_eq!(step("generate")["status"], "completed");
    let webhook = step("webhook");
    assert_eq!(
        (webhook["legacy"].as_bool(), webhook["standard"].as_bool()),
        (Some(true), Some(true)),
        "{webhook}"
    );
    assert_eq!(
        step("redeliver"),
        json!({"step": "redeliver", "status": 409, "code": "nothing_to_redeliver"}),
        "a delivered webhook has nothing to redeliver"
    );
    assert_eq!(step("purge-job")["success"], true);
    assert_eq!(step("done")["ok"], true);
}
