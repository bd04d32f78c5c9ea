//! The commit-report preset: the contract's input limits, the evidence budget, redaction, the prompt,
//! the report schema and the deterministic template fallback.

use std::sync::{Arc, LazyLock};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::fields::{LongText, Strings, Text, Url};
use super::redact::redact;
use super::{digest, targets, Callbacks, Deadline, FieldError, Preset, PRESET_VERSION};
use crate::domain::job::{JobKind, JobSpec};
use crate::domain::llm::{ChatMessage, ResponseFormat};
use crate::domain::targets::Target;

/// Diff characters sent to providers; small-context providers get the compact budget.
pub(crate) const DIFF_BUDGET: usize = 24_000;
pub(crate) const COMPACT_DIFF_BUDGET: usize = 8_000;
const MAX_FILES: usize = 60;
const MAX_PATH: usize = 160;
const MAX_COMPONENTS: usize = 40;
const MAX_MESSAGE: usize = 3_000;
/// A diff beyond this is refused rather than budgeted (nobody reviews a 5 MB diff).
const MAX_DIFF_INPUT: usize = 5 * 1024 * 1024;

/// A commit-report job.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "ReportRequest")]
pub(crate) struct ReportBody {
    /// With `commitSha` and `template`, the job's identity: identical submits meet on one job.
    user_id: Text<1, 128>,
    /// The commit's hash.
    commit_sha: Text<1, 64>,
    /// The repository's name.
    repo: Text<1, 255>,
    /// The commit message (may be empty).
    #[serde(default)]
    #[schemars(with = "Text<0, 10_000>")]
    message: Option<Text<0, 10_000>>,
    /// Paths of the changed files.
    #[serde(default)]
    #[schemars(with = "Strings<2_000, 2_048>")]
    files: Option<Strings<2_000, 2_048>>,
    /// Components the commit touches.
    #[serde(default)]
    #[schemars(with = "Strings<200, 256>")]
    components: Option<Strings<200, 256>>,
    /// The diff, up to 5 MiB of UTF-8; a long one is cut to its head and tail, not refused.
    #[serde(default)]
    #[schemars(with = "LongText<MAX_DIFF_INPUT>")]
    diff_summary: Option<LongText<MAX_DIFF_INPUT>>,
    /// The caller's report template; part of the job's identity.
    #[serde(default)]
    #[schemars(with = "Text<0, 10_000>")]
    template: Option<Text<0, 10_000>>,
    /// Give up after this long (default `JOB_DEADLINE_SECONDS`).
    #[serde(default)]
    #[schemars(with = "Deadline")]
    deadline_seconds: Option<Deadline>,
    /// The signed webhook, POSTed once when the job ends. Needs a webhook secret for the key's owner.
    #[serde(default)]
    #[schemars(with = "Url")]
    callback_url: Option<Url>,
    /// Delivered in order after the job ends.
    #[serde(default)]
    #[schemars(with = "Callbacks")]
    callbacks: Option<Callbacks>,
    /// `true`: the job deletes itself once every webhook and callback it owes is acknowledged (its
    /// record expires seconds after the last), for a caller that takes results by webhook only and
    /// would purge at once. A dead-lettered delivery keeps the job (to redeliver); a job with no
    /// webhook or callback is kept as usual.
    #[serde(default)]
    #[schemars(with = "super::fields::Flag")]
    purge_on_delivery: Option<super::fields::Flag>,
    /// The job's place among its tenant's jobs when a provider is scarce: `high` takes the tenant's
    /// next turn before its earlier `normal` and `low` jobs (submitted up to an hour before it),
    /// `normal` before its earlier `low` ones; never another tenant's turn. Default `normal`.
    #[serde(default)]
    #[schemars(with = "super::PriorityField")]
    priority: Option<super::PriorityField>,
    /// Checked like every route's (the original ignored it on this route).
    #[serde(default)]
    #[schemars(with = "crate::domain::contract::ContractVersion")]
    #[allow(dead_code)] // read for its check only
    contract_version: Option<crate::domain::contract::ContractVersion>,
}

/// A commit-report request, read: what the prompt, the fallback and the identity are made of.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReportRequest {
    pub(crate) user_id: String,
    pub(crate) commit_sha: String,
    pub(crate) repo: String,
    pub(crate) message: String,
    pub(crate) files: Vec<String>,
    pub(crate) components: Vec<String>,
    pub(crate) diff_summary: String,
    pub(crate) template: String,
    pub(crate) deadline_seconds: Option<u64>,
    pub(crate) targets: Vec<Target>,
    pub(crate) purge_on_delivery: bool,
    pub(crate) priority: crate::domain::job::Priority,
}

impl Preset for ReportRequest {
    type Body = ReportBody;
    const STATUS_PREFIX: &'static str = "/v1/reports/";

    fn from_body(b: ReportBody) -> Result<Self, FieldError> {
        Ok(Self {
            user_id: b.user_id.0,
            commit_sha: b.commit_sha.0,
            repo: b.repo.0,
            // The caller sometimes sends "" (and sometimes null): both are the empty message.
            message: b.message.map(|t| t.0).unwrap_or_default(),
            files: b.files.unwrap_or_default().0,
            components: b.components.unwrap_or_default().0,
            diff_summary: b.diff_summary.unwrap_or_default().0,
            template: b.template.map(|t| t.0).unwrap_or_default(),
            deadline_seconds: b.deadline_seconds.map(|d| d.0),
            targets: targets(b.callback_url, b.callbacks),
            purge_on_delivery: b.purge_on_delivery.is_some_and(|f| f.0),
            priority: b.priority.map(|p| p.0).unwrap_or_default(),
        })
    }

    fn identity(&self) -> String {
        report_identity(&self.user_id, &self.commit_sha, Some(&self.template))
    }

    fn deadline_seconds(&self) -> Option<u64> {
        self.deadline_seconds
    }

    fn spec(&self) -> JobSpec {
        let (messages, compact_messages) = prompts(self);
        let mut context = Map::new();
        context.insert("userId".into(), json!(self.user_id));
        context.insert("commitSha".into(), json!(self.commit_sha));
        context.insert("repo".into(), json!(self.repo));
        JobSpec {
            providers: None,
            kind: JobKind::Report,
            messages,
            compact_messages: Some(compact_messages),
            format: ResponseFormat::Json {
                schema: Some(report_schema()),
            },
            max_tokens: 1_500,
            temperature: Some(0.2),
            fallback: Some(Arc::new(fallback_report(self))),
            context,
            targets: self.targets.clone(),
            purge_on_delivery: self.purge_on_delivery,
            priority: self.priority,
        }
    }
}

/// The identity of a report job: one per user, commit and template (the purge route computes it too).
pub(crate) fn report_identity(user_id: &str, commit_sha: &str, template: Option<&str>) -> String {
    let template = digest(&json!(template.unwrap_or("")));
    format!(
        "report:v{PRESET_VERSION}:{}:{}:{template}",
        json!(user_id),
        json!(commit_sha)
    )
}

fn cut_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Keeps ~70 % head and ~30 % tail of a diff, cut at line boundaries, with a marker where the middle went.
pub(crate) fn budget_diff(diff: &str, budget: usize) -> String {
    if diff.chars().count() <= budget {
        return diff.to_string();
    }
    let lines: Vec<&str> = diff.lines().collect();
    let (head_budget, tail_budget) = (budget * 7 / 10, budget * 3 / 10);
    let (mut head, mut used) = (0, 0);
    while head < lines.len() && used + lines[head].chars().count() < head_budget {
        used += lines[head].chars().count() + 1;
        head += 1;
    }
    let (mut tail, mut used_tail) = (lines.len(), 0);
    while tail > head && used_tail + lines[tail - 1].chars().count() < tail_budget {
        used_tail += lines[tail - 1].chars().count() + 1;
        tail -= 1;
    }
    let omitted: usize = lines[head..tail].iter().map(|l| l.chars().count() + 1).sum();
    let mut out = lines[..head].join("\n");
    out.push_str(&format!("\n… [{} lines / {omitted} chars omitted] …\n", tail - head));
    out.push_str(&lines[tail..].join("\n"));
    out
}

fn budget_files(files: &[String]) -> Vec<String> {
    let cut = |f: &String| cut_chars(f, MAX_PATH).to_string();
    if files.len() <= MAX_FILES {
        return files.iter().map(cut).collect();
    }
    let (head, tail) = (MAX_FILES * 3 / 4, MAX_FILES / 4);
    let mut out: Vec<String> = files[..head].iter().map(cut).collect();
    out.push(format!("… and {} more files", files.len() - head - tail));
    out.extend(files[files.len() - tail..].iter().map(cut));
    out
}

/// The report the model writes: each key's limits, `(min, max)` characters for text and `(min, max)`
/// items for lists. The prompt states them, [`report_schema`] enforces them, [`fallback_report`] meets
/// them: one home for each.
pub(crate) const TITLE_CHARS: (usize, usize) = (10, 120);
pub(crate) const SUMMARY_CHARS: (usize, usize) = (50, 2_000);
pub(crate) const CHANGES_ITEMS: (usize, usize) = (1, 50);
pub(crate) const RATIONALE_CHARS: (usize, usize) = (20, 2_000);
pub(crate) const IMPACT_CHARS: (usize, usize) = (20, 2_000);
pub(crate) const NEXT_STEPS_ITEMS: (usize, usize) = (0, 20);
/// The fewest characters of one `changes` or `next_steps` item.
pub(crate) const ITEM_MIN_CHARS: usize = 5;
/// The most characters of `tags`.
pub(crate) const TAGS_MAX_CHARS: usize = 200;

fn instructions() -> String {
    let text = |(min, max): (usize, usize)| format!("{min}-{max} characters");
    let items = |(min, max): (usize, usize)| format!("{min}-{max} strings of at least {ITEM_MIN_CHARS} characters");
    format!(
        "You write concise, accurate reports about one git commit for a developer's diary. \
Answer with ONE JSON object and nothing else (no code fences, no prose) with exactly these keys: \
\"title\" ({}), \"summary\" ({}), \"changes\" ({}), \
\"rationale\" ({}), \"impact_and_tests\" ({}), \"next_steps\" ({}), \"tags\" (comma-separated keywords, at most \
{TAGS_MAX_CHARS} characters). Base every statement on the commit evidence; do not invent files or behaviour.",
        text(TITLE_CHARS),
        text(SUMMARY_CHARS),
        items(CHANGES_ITEMS),
        text(RATIONALE_CHARS),
        text(IMPACT_CHARS),
        items(NEXT_STEPS_ITEMS),
    )
}

/// The full prompt and the compact one (the diff cut to [`DIFF_BUDGET`] and [`COMPACT_DIFF_BUDGET`]),
/// built in one pass: what does not depend on the budget (the system prompt, the redacted message and
/// template, the file list) is built once, and when the diff fits the smaller budget the compact prompt
/// is the full one (no second redaction).
fn prompts(r: &ReportRequest) -> (Vec<ChatMessage>, Vec<ChatMessage>) {
    let files = budget_files(&r.files);
    let components: Vec<&str> = r.components.iter().take(MAX_COMPONENTS).map(String::as_str).collect();
    let head = format!(
        "Repository: {}\nCommit: {}\nMessage:\n{}\n\nFiles changed ({}):\n{}\n\nComponents: {}\n\nDiff:\n",
        r.repo,
        r.commit_sha,
        redact(cut_chars(&r.message, MAX_MESSAGE)),
        r.files.len(),
        files.join("\n"),
        if components.is_empty() {
            "none".to_string()
        } else {
            components.join(", ")
        },
    );
    let mut system = instructions();
    if !r.template.trim().is_empty() {
        system.push_str("\n\nThe caller's template for this report:\n");
        system.push_str(&redact(&r.template));
    }
    let prompt = |cut: &str| {
        vec![
            ChatMessage::system(system.clone()),
            ChatMessage::user(format!("{head}{}\n", redact(cut))),
        ]
    };
    let (full_cut, compact_cut) = (
        budget_diff(&r.diff_summary, DIFF_BUDGET),
        budget_diff(&r.diff_summary, COMPACT_DIFF_BUDGET),
    );
    let full = prompt(&full_cut);
    let compact = if compact_cut == full_cut {
        full.clone()
    } else {
        prompt(&compact_cut)
    };
    (full, compact)
}

pub(crate) const REPORT_KEYS: [&str; 7] = [
    "title",
    "summary",
    "changes",
    "rationale",
    "impact_and_tests",
    "next_steps",
    "tags",
];

/// The report's JSON Schema (unknown keys are dropped by [`normalize`] before validation), built once
/// per process: every report job holds this one.
pub(crate) fn report_schema() -> Arc<Value> {
    static SCHEMA: LazyLock<Arc<Value>> = LazyLock::new(|| Arc::new(build_report_schema()));
    SCHEMA.clone()
}

fn build_report_schema() -> Value {
    let text = |(min, max): (usize, usize)| json!({"type": "string", "minLength": min, "maxLength": max});
    let items = |(min, max): (usize, usize)| {
        let mut list =
            json!({"type": "array", "maxItems": max, "items": {"type": "string", "minLength": ITEM_MIN_CHARS}});
        if min > 0 {
            list["minItems"] = json!(min);
        }
        list
    };
    json!({
        "type": "object",
        "required": ["title", "summary", "changes", "rationale", "impact_and_tests"],
        "properties": {
            "title": text(TITLE_CHARS),
            "summary": text(SUMMARY_CHARS),
            "changes": items(CHANGES_ITEMS),
            "rationale": text(RATIONALE_CHARS),
            "impact_and_tests": text(IMPACT_CHARS),
            "next_steps": items(NEXT_STEPS_ITEMS),
            "tags": {"type": "string", "maxLength": TAGS_MAX_CHARS, "pattern": "^(\\s*[^,\\s][^,]*(,\\s*[^,\\s][^,]*)*)?$"}
        },
        "additionalProperties": false
    })
}

/// Drops keys the report does not have (models add `confidence`, `notes`, ...).
pub(crate) fn normalize(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| REPORT_KEYS.contains(&k.as_str()))
                .collect(),
        ),
        other => other,
    }
}

fn fit(s: String, (min, max): (usize, usize), pad: &str) -> String {
    let mut s = s;
    while s.chars().count() < min {
        s.push_str(pad);
    }
    cut_chars(&s, max).trim_end().to_string()
}

/// The deterministic report built from the commit alone, used when every provider failed for good.
/// It validates against [`report_schema`] for every valid request (property-tested).
pub(crate) fn fallback_report(r: &ReportRequest) -> Value {
    let short_sha: String = r.commit_sha.chars().take(7).collect();
    let first_line = r.message.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let title = if first_line.is_empty() {
        format!("Update {}", r.repo)
    } else {
        first_line.to_string()
    };
    let title = fit(
        title.split_whitespace().collect::<Vec<_>>().join(" "),
        TITLE_CHARS,
        " (commit)",
    );
    let files: Vec<&String> = r.files.iter().filter(|f| !f.trim().is_empty()).collect();
    let summary = fit(
        format!(
            "Commit {short_sha} in {} changes {} file(s){}. {}",
            r.repo,
            files.len(),
            if files.is_empty() {
                String::new()
            } else {
                format!(
                    ", including {}",
                    files.iter().take(3).map(|f| f.as_str()).collect::<Vec<_>>().join(", ")
                )
            },
            cut_chars(first_line, 500)
        ),
        SUMMARY_CHARS,
        " This summary was built from the commit metadata.",
    );
    let mut changes: Vec<String> = files
        .iter()
        .take(10)
        .map(|f| format!("Modified {}", cut_chars(f, 200)))
        .collect();
    if changes.is_empty() {
        changes.push("Updated the repository contents".into());
    }
    let rationale = fit(
        format!("From the commit message: {}", cut_chars(first_line, 1500)),
        RATIONALE_CHARS,
        " (no message given)",
    );
    let scope = if r.components.is_empty() {
        format!("{} file(s)", files.len())
    } else {
        r.components.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
    };
    let impact = fit(
        format!("Affects {scope}. No automated analysis was available; review the tests covering these changes."),
        IMPACT_CHARS,
        ".",
    );
    let tags: Vec<String> = r
        .components
        .iter()
        .map(|c| c.replace(',', " ").split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|c| !c.is_empty())
        .collect();
    let mut tag_line = String::new();
    for tag in tags.iter().chain(std::iter::once(&"fallback".to_string())) {
        let candidate = if tag_line.is_empty() {
            tag.clone()
        } else {
            format!("{tag_line}, {tag}")
        };
        if candidate.chars().count() > TAGS_MAX_CHARS {
            break;
        }
        tag_line = candidate;
    }
    json!({
        "title": title,
        "summary": summary,
        "changes": changes,
        "rationale": rationale,
        "impact_and_tests": impact,
        "next_steps": ["Review this automatically generated summary"],
        "tags": tag_line,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn valid(o: Value) -> ReportRequest {
        ReportRequest::parse(o).unwrap()
    }

    fn base() -> Value {
        json!({"userId": "u", "commitSha": "abc", "repo": "r", "message": "", "files": [], "components": []})
    }

    #[test]
    fn the_compact_prompt_is_the_full_one_unless_the_diff_is_cut() {
        let with_diff = |diff: String| {
            let mut body = base();
            body["message"] = json!("Fix token=abcd1234efgh refresh");
            body["diffSummary"] = json!(diff);
            valid(body).spec()
        };
        let small = with_diff("+ one line\n".repeat(10));
        assert_eq!(small.compact_messages.as_ref(), Some(&small.messages));
        assert!(small.messages[1].content.contains("Diff:\n+ one line\n"));
        let large = with_diff(format!(
            "{}\n",
            "+ a longer line of the diff that repeats\n".repeat(400)
        ));
        let compact = large.compact_messages.as_ref().expect("a compact prompt");
        assert_eq!(compact[0], large.messages[0], "one system prompt");
        assert!(compact[1].content.len() < large.messages[1].content.len());
        assert!(
            compact[1].content.contains("lines /"),
            "the compact diff says what it omitted"
        );
        for messages in [&large.messages, compact] {
            assert!(messages[1].content.contains("token=[REDACTED]"), "redacted in both");
            assert!(messages[1]
                .content
                .starts_with("Repository: r\nCommit: abc\nMessage:\n"));
        }
    }

    #[test]
    fn contract_limits_at_the_edges() {
        let cases: Vec<(&str, Value, bool)> = vec![
            ("userId", json!("x".repeat(128)), true),
            ("userId", json!("x".repeat(129)), false),
            ("userId", json!(""), false),
            ("commitSha", json!("a".repeat(64)), true),
            ("commitSha", json!("a".repeat(65)), false),
            ("repo", json!("r".repeat(255)), true),
            ("repo", json!("r".repeat(256)), false),
            ("message", json!(""), true),
            ("message", json!("m".repeat(10_000)), true),
            ("message", json!("m".repeat(10_001)), false),
            ("files", json!(vec!["f"; 2000]), true),
            ("files", json!(vec!["f"; 2001]), false),
            ("files", json!(["a".repeat(2048)]), true),
            ("files", json!(["a".repeat(2049)]), false),
            ("components", json!(vec!["c"; 200]), true),
            ("components", json!(vec!["c"; 201]), false),
            ("components", json!(["c".repeat(257)]), false),
            ("template", json!("t".repeat(10_000)), true),
            ("template", json!("t".repeat(10_001)), false),
            ("diffSummary", json!("d".repeat(100_000)), true),
            (
                "callbacks",
                json!(vec![json!({"url": "https://a.example/x"}); 6]),
                false,
            ),
            (
                "callbacks",
                json!([{"url": "https://a.example/x", "retry": {"maxAttempts": 6}}]),
                false,
            ),
            (
                "callbacks",
                json!([{"url": "https://a.example/x", "retry": {"maxAttempts": 5, "backoffMs": 100}}]),
                true,
            ),
        ];
        // The document's schema of the body says the same at every edge.
        let schema = schemars::generate::SchemaSettings::draft2020_12()
            .for_deserialize()
            .into_generator()
            .into_root_schema_for::<ReportBody>();
        let validator = jsonschema::validator_for(schema.as_value()).unwrap();
        for (field, value, ok) in cases {
            let mut body = base();
            body[field] = value;
            let result = ReportRequest::parse(body.clone());
            assert_eq!(result.is_ok(), ok, "{field}: {result:?}");
            assert_eq!(validator.is_valid(&body), ok, "{field}: the schema");
            if let Err(e) = result {
                assert!(e.field.starts_with(field), "{e}");
            }
        }
    }

    #[test]
    fn wrong_types_and_missing_fields_are_named() {
        let mut body = base();
        body["files"] = json!(["ok", 3]);
        assert_eq!(
            ReportRequest::parse(body.clone()).unwrap_err().to_string(),
            "files[1]: must be a string of at most 2048 characters"
        );
        let mut body = base();
        body.as_object_mut().unwrap().remove("repo");
        assert_eq!(
            ReportRequest::parse(body.clone()).unwrap_err().to_string(),
            "repo: is required"
        );
        assert_eq!(ReportRequest::parse(json!([1])).unwrap_err().field, "body");
        let mut high = json!({"userId": "u", "commitSha": "abc", "repo": "r", "priority": "high"});
        assert_eq!(
            ReportRequest::parse(high.clone()).unwrap().spec().priority,
            crate::domain::job::Priority::High
        );
        high["priority"] = json!("soon");
        assert_eq!(ReportRequest::parse(high).unwrap_err().field, "priority");
    }

    #[test]
    fn the_prompt_states_the_report_limits_in_the_words_it_always_had() {
        assert_eq!(
            instructions(),
            "You write concise, accurate reports about one git commit for a developer's diary. Answer with ONE \
             JSON object and nothing else (no code fences, no prose) with exactly these keys: \"title\" (10-120 \
             characters), \"summary\" (50-2000 characters), \"changes\" (1-50 strings of at least 5 characters), \
             \"rationale\" (20-2000 characters), \"impact_and_tests\" (20-2000 characters), \"next_steps\" (0-20 \
             strings of at least 5 characters), \"tags\" (comma-separated keywords, at most 200 characters). Base \
             every statement on the commit evidence; do not invent files or behaviour."
        );
    }

    #[test]
    fn identity_ignores_the_diff_and_matches_the_purge() {
        let mut a = base();
        a["template"] = json!("t1");
        let mut b = a.clone();
        b["diffSummary"] = json!("other");
        assert_eq!(valid(a.clone()).identity(), valid(b).identity());
        assert_eq!(valid(a.clone()).identity(), report_identity("u", "abc", Some("t1")));
        assert_eq!(valid(base()).identity(), report_identity("u", "abc", None));
        a["template"] = json!("t2");
        assert_ne!(valid(a).identity(), report_identity("u", "abc", Some("t1")));
    }

    #[test]
    fn large_diffs_keep_head_and_tail_at_line_boundaries() {
        let diff: String = (0..6_000)
            .map(|i| format!("+line {i:05} of the generated diff\n"))
            .collect();
        assert!(diff.len() > 200_000);
        let cut = budget_diff(&diff, DIFF_BUDGET);
        assert!(cut.chars().count() <= DIFF_BUDGET + 80, "{}", cut.len());
        assert!(cut.starts_with("+line 00000 of the generated diff\n"));
        assert!(cut.ends_with("+line 05999 of the generated diff"));
        let marker = cut.lines().find(|l| l.starts_with("… [")).unwrap();
        assert!(
            marker.contains("lines /") && marker.ends_with("chars omitted] …"),
            "{marker}"
        );
        for line in cut.lines().filter(|l| !l.starts_with('…')) {
            assert!(
                line.starts_with("+line ") && line.ends_with("diff"),
                "cut mid-line: {line}"
            );
        }
        let head_chars: usize = cut.split("\n… [").next().unwrap().len();
        assert!(head_chars > DIFF_BUDGET * 6 / 10 && head_chars <= DIFF_BUDGET * 7 / 10);
        assert!(budget_diff(&diff, COMPACT_DIFF_BUDGET).len() <= COMPACT_DIFF_BUDGET + 80);
        assert_eq!(budget_diff("small", 100), "small");
    }

    #[test]
    fn the_prompt_is_budgeted_and_redacted() {
        let mut body = base();
        body["files"] = json!((0..100)
            .map(|i| format!("src/{}/{i}.rs", "d".repeat(200)))
            .collect::<Vec<_>>());
        body["diffSummary"] = json!(format!("+const password = \"hunter22x\";\n{}", "+x\n".repeat(50_000)));
        body["message"] = json!("Auth: Add token");
        let spec = valid(body).spec();
        let user = &spec.messages[1].content;
        assert!(user.contains("Auth: Add token"));
        assert!(user.contains("password = \"[REDACTED]\""), "{}", &user[..400]);
        assert!(user.contains("… and 40 more files"));
        assert!(spec.compact_messages.as_ref().unwrap()[1].content.len() < user.len());
        assert!(user.len() < 40_000);
    }

    fn schema_ok(v: &Value) -> Result<(), String> {
        let validator = jsonschema::validator_for(&*report_schema()).map_err(|e| e.to_string())?;
        validator
            .validate(v)
            .map_err(|e| format!("{} at {}", e, e.instance_path()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn the_fallback_always_fits_the_report_schema(
            message in "\\PC{0,300}",
            repo in "[a-zA-Z0-9/_.-]{1,255}",
            sha in "[0-9a-f]{1,64}",
            files in prop::collection::vec("\\PC{0,80}", 0..30),
            components in prop::collection::vec("[a-z, ]{0,40}", 0..50),
        ) {
            let r = valid(json!({"userId": "u", "commitSha": sha, "repo": repo, "message": message, "files": files, "components": components}));
            let report = fallback_report(&r);
            prop_assert!(schema_ok(&report).is_ok(), "{:?}: {}", schema_ok(&report), report);
        }
    }
}
