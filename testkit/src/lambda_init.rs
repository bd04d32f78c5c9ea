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
