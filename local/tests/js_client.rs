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

use common::{good_report_json, openai_provider, Local, ALICE};
use testkit::fake::{FakeProvider, FakeReply, Wire};
use testkit::stack::tools_dir;

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/js")
}

async fn run(program: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut command = tokio::process::Command::new(program);
    command.args(args).current_dir(client_dir()).kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .unwrap_or_else(|_| panic!("{} did not finish in 180 s", program.display()))
        .unwrap_or_else(|e| panic!("{}: {e} (is it installed?)", program.display()))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
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
    let tsc = tools_dir().join("node/node_modules/.bin/tsc");
    if !tsc.exists() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{} is missing: run scripts/install-tools.sh",
            tsc.display()
        );
        eprintln!(
            "SKIPPED: {} is not installed (scripts/install-tools.sh installs it)",
            tsc.display()
        );
        return;
    }
    let output = run(&tsc, &["-p", "test/tsconfig.json"], &[]).await;
    assert!(output.status.success(), "tsc refused the caller:\n{}", text(&output));
}
