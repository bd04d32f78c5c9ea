//! The step function refuses to start without what it needs: exit status 1 and one log line naming the
//! missing variable, before any contact with the Runtime API.

use std::process::Command;

/// Starts the binary with only `vars` (and PATH) set; its exit status and log lines.
fn start(vars: &[(&str, &str)]) -> (Option<i32>, Vec<serde_json::Value>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_step"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    // What Lambda sets: the runtime would connect here if the checks let it start.
    command
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .env("AWS_LAMBDA_FUNCTION_NAME", "step");
    command.envs(vars.iter().copied());
    let output = command.output().expect("the function's binary runs");
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}")))
        .collect();
    (output.status.code(), lines)
}

fn refused(vars: &[(&str, &str)], variable: &str) {
    let (status, lines) = start(vars);
    assert_eq!(status, Some(1), "exit status; log: {lines:?}");
    assert_eq!(lines.len(), 1, "one log line: {lines:?}");
    let line = &lines[0];
    assert_eq!(line["level"], "ERROR", "{line}");
    assert_eq!(line["variable"], variable, "{line}");
    assert_eq!(line["function"], "step", "{line}");
    let message = line["message"].as_str().unwrap_or_default();
    assert!(message.contains(variable), "the message names {variable}: {message}");
}

#[test]
fn without_a_store_it_exits_naming_the_variable() {
    refused(&[], "UPSTASH_REDIS_REST_URL");
    refused(
        &[("STEP_QUEUE_URL", "http://127.0.0.1:9/000000000000/steps")],
        "UPSTASH_REDIS_REST_URL",
    );
    refused(
        &[("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:9")],
        "UPSTASH_REDIS_REST_TOKEN",
    );
}

#[test]
fn without_the_queue_url_it_exits_naming_the_variable() {
    refused(
        &[
            ("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:9"),
            ("UPSTASH_REDIS_REST_TOKEN", "t"),
        ],
        "STEP_QUEUE_URL",
    );
}
