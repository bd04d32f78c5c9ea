//! A Lambda function's start-up checks, as the four functions' `tests/init.rs` hold them: started with only
//! the variables given (and what Lambda itself sets), the binary must exit 1 with one JSON log line
//! naming the missing variable, before any contact with the Runtime API.

use std::process::Command;

/// Starts `binary` (a function's bootstrap) as Lambda would, with only `vars` set besides PATH; its exit
/// status and its log lines, each parsed as JSON.
fn start(binary: &str, function: &str, vars: &[(&str, &str)]) -> (Option<i32>, Vec<serde_json::Value>) {
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // What Lambda sets: the runtime would connect here if the checks let it start.
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .envs(vars.iter().copied());
    let output = command.output().expect("the function's binary runs");
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}")))
        .collect();
    (output.status.code(), lines)
}

/// Asserts that `function` (its binary at `binary`), started with `vars`, refuses to start: exit status 1
/// and exactly one ERROR line whose `variable` field and message name `variable`.
pub fn assert_refused(binary: &str, function: &str, vars: &[(&str, &str)], variable: &str) {
    let (status, lines) = start(binary, function, vars);
    assert_eq!(status, Some(1), "exit status; log: {lines:?}");
    assert_eq!(lines.len(), 1, "one log line: {lines:?}");
    let line = &lines[0];
    assert_eq!(line["level"], "ERROR", "{line}");
    assert_eq!(line["variable"], variable, "{line}");
    assert_eq!(line["function"], function, "{line}");
    let message = line["message"].as_str().unwrap_or_default();
    assert!(message.contains(variable), "the message names {variable}: {message}");
}

/// Every function needs a store: without the Upstash pair it refuses to start, naming the first missing
/// variable (a queue URL alone does not stand in for it).
pub fn assert_needs_the_store(binary: &str, function: &str) {
    assert_refused(binary, function, &[], "UPSTASH_REDIS_REST_URL");
    assert_refused(
        binary,
        function,
        &[("STEP_QUEUE_URL", "http://127.0.0.1:9/000000000000/steps")],
        "UPSTASH_REDIS_REST_URL",
    );
    assert_refused(
        binary,
        function,
        &[("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:9")],
        "UPSTASH_REDIS_REST_TOKEN",
    );
}

/// The store's variables, set to an address nothing answers on (the checks run before any contact).
const STORE: [(&str, &str); 2] = [
    ("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:9"),
    ("UPSTASH_REDIS_REST_TOKEN", "t"),
];

/// A function that sends step messages (submit, step) also needs the queue's URL.
pub fn assert_needs_the_queue(binary: &str, function: &str) {
    assert_refused(binary, function, &STORE, "STEP_QUEUE_URL");
}

/// A function that serves the API (submit, poll, purge) with its store (and queue) set but no API keys
/// refuses to start open, naming `STEPPER_API_KEYS` (`STEPPER_ALLOW_OPEN=false` is no permission).
pub fn assert_refuses_to_start_open(binary: &str, function: &str, with_queue: bool) {
    let mut vars: Vec<(&str, &str)> = STORE.to_vec();
    if with_queue {
        vars.push(("STEP_QUEUE_URL", "http://127.0.0.1:9/000000000000/steps"));
    }
    assert_refused(binary, function, &vars, "STEPPER_API_KEYS");
    vars.push(("STEPPER_ALLOW_OPEN", "false"));
    assert_refused(binary, function, &vars, "STEPPER_API_KEYS");
}

/// ... and the region and credentials its SQS requests are signed with, each named when missing.
pub fn assert_needs_aws_credentials(binary: &str, function: &str) {
    let base: Vec<(&str, &str)> = STORE
        .iter()
        .copied()
        .chain([
            ("STEP_QUEUE_URL", "http://127.0.0.1:9/000000000000/steps"),
            // Keys, so an API function gets past its refusal to start open.
            ("STEPPER_API_KEYS", "ops=k1"),
        ])
        .collect();
    let with = |extra: &[(&'static str, &'static str)]| base.iter().chain(extra).copied().collect::<Vec<_>>();
    assert_refused(binary, function, &base, "AWS_REGION");
    assert_refused(
        binary,
        function,
        &with(&[("AWS_REGION", "us-east-1")]),
        "AWS_ACCESS_KEY_ID",
    );
    assert_refused(
        binary,
        function,
        &with(&[("AWS_REGION", "us-east-1"), ("AWS_ACCESS_KEY_ID", "AK")]),
        "AWS_SECRET_ACCESS_KEY",
    );
}
