//! The drop-in JS client (`clients/js`, the ai-inference-stepper library API over HTTP) against a real
//! `stepper-local` with a fake OpenAI-compatible provider: its `node --test` suite runs caller-style code
//! (submit, poll to completion, purge, batch, immediate) with the server's URL and a key in the
//! environment, and its type declarations compile under a strict TypeScript consumer.
//! Node is required (the whole test command needs it); tsc comes from scripts/install-tools.sh and, like
//! the other tool-based tests, is a printed skip without it except under `CI=true`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{good_report_json, openai_provider, text, tool, Local, ALICE};
use testkit::fake::{FakeProvider, FakeReply, Wire};

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/js")
}

/// Runs `program` in the client's folder (three minutes at most).
async fn run(program: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    common::run(program, args, &client_dir(), env, Duration::from_secs(180)).await
}

#[tokio::test]
async fn the_js_client_runs_caller_style_code_against_stepper_local() {
    let provider = FakeProvider::start(Wire::OpenAi).await.expect("fake provider");
    // Every prompt gets a valid commit report: a report for report jobs, a JSON object for generic ones.
    provider.set_default(FakeReply::openai_text(&good_report_json()));
    let local = Local::start(&openai_provider("alpha", &provider.base_url()), &[]).await;

    let env = [
        ("STEPPER_URL", local.base.clone()),
        ("STEPPER_API_KEY", ALICE.to_string()),
        ("NODE_NO_WARNINGS", "1".to_string()),
    ];
    let output = run(Path::new("node"), &["--test", "--test-reporter=spec", "test/"], &env).await;
    let report = text(&output);
    println!("{report}");
    assert!(output.status.success(), "node --test failed:\n{report}");
    // Skipped cases (routes this stepper does not serve yet) are printed with their reason above.
    assert!(report.contains("pass"), "no test ran:\n{report}");
    assert!(
        provider.hits() >= 4,
        "the jobs reached the provider ({} calls)",
        provider.hits()
    );
}

#[tokio::test]
async fn the_js_client_declarations_compile_for_a_strict_typescript_caller() {
    let Some(tsc) = tool("node/node_modules/.bin/tsc") else {
        return;
    };
    let output = run(&tsc, &["-p", "test/tsconfig.json"], &[]).await;
    assert!(output.status.success(), "tsc refused the caller:\n{}", text(&output));
}
