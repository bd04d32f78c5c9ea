//! The library half of `stepper-bench`: the workload's requests, and [`routes`], which measures what
//! each route of the Lambda path bills on Upstash (a test holds it to [`routes::BILLED_PER_ROUTE`]).

pub mod routes;

use serde_json::{json, Value};

/// The report the fake provider answers with: valid against the commit-report schema (ours and the
/// original's).
pub const REPORT: &str = r#"{"title":"Add token refresh to the auth client","summary":"The auth client now refreshes its access token before it expires, so long sessions keep working.","changes":["Added refresh() to src/auth.ts","Client retries once after a refresh"],"rationale":"Sessions were dropping after an hour when the token expired.","impact_and_tests":"Affects every authenticated call; covered by the client tests.","next_steps":["Add metrics for refresh failures"],"tags":"auth, client"}"#;

/// The owner's `userId` in every commit report.
pub const USER: &str = "bench-user";

/// Job `i` of run `run`: a commit report whose commit is unique to both.
pub fn report_json(run: &str, i: usize) -> Value {
    json!({
        "userId": USER, "commitSha": commit_sha(run, i), "repo": "acme/diary",
        "message": "Add token refresh to the auth client", "files": ["src/auth.ts", "src/client.ts"],
        "components": ["auth"], "diffSummary": "diff --git a/src/auth.ts b/src/auth.ts\n+export function refresh() {}\n",
        "template": "default"
    })
}

pub fn commit_sha(run: &str, i: usize) -> String {
    format!("{run}-{i:07}")
}

/// The purge by commit of job `i` of run `run`.
pub fn purge_uri(run: &str, i: usize) -> String {
    format!(
        "/v1/reports?userId={USER}&commitSha={}&template=default",
        commit_sha(run, i)
    )
}
