//! Test support shared by this crate's unit tests and the workspace's integration tests (the `testing`
//! feature, which `testkit` turns on): never part of a deployed build.

use crate::domain::job::{Job, JobKind, JobSpec, JobState};
use crate::domain::llm::{ChatMessage, ResponseFormat};

/// A queued generic job asking for text: owner `o`, id `0…0`, gen `g`, step 1, created at 0, its
/// deadline and expiry an hour later, no attempt yet. A test states what it needs and takes the rest
/// from here: `Job { owner: "alice".into(), deadline_ms, ..testing::job() }`.
pub fn job() -> Job {
    Job {
        id: "0".repeat(32),
        owner: "o".into(),
        gen: "g".into(),
        seq: 1,
        state: JobState::Queued,
        spec: spec(),
        created_at_ms: 0,
        deadline_ms: 3_600_000,
        next_attempt_at_ms: None,
        attempts: Vec::new(),
        result: None,
        error: None,
        finished_at_ms: None,
        expires_at_ms: 3_600_000,
        deliveries: Vec::new(),
    }
}

/// The spec of [`job`]: one user message, `hi`, a text answer of at most 10 tokens, no fallback, no
/// context, no delivery targets.
pub fn spec() -> JobSpec {
    JobSpec {
        providers: None,
        kind: JobKind::Generic,
        messages: vec![ChatMessage::user("hi")],
        compact_messages: None,
        format: ResponseFormat::Text,
        max_tokens: 10,
        temperature: None,
        fallback: None,
        context: Default::default(),
        targets: Vec::new(),
        purge_on_delivery: false,
        priority: Default::default(),
    }
}

/// One delivery attempt's report as an outbound adapter makes it: delivered (a 2xx `status`), or failed
/// with `status` (`None`: no answer at all) and `error`. For tests that script the Outbound port.
pub fn attempt_report(
    delivered: bool,
    status: Option<u16>,
    error: Option<&str>,
) -> crate::domain::targets::AttemptReport {
    crate::domain::targets::AttemptReport {
        delivered,
        status,
        error: error.map(str::to_string),
        permanent: false,
    }
}
