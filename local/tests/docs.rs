//! The documents cannot rot: the README's try-it commands run against a real `stepper-local`, every
//! local link and anchor of the README, the changelog and `docs/` resolves, and the configuration
//! table names exactly the variables the configuration code reads.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Local;
use testkit::fake::{FakeProvider, FakeReply, Wire};

/// The repository's root (this crate is `local/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The heading level of `line` (`## Try it`: 2), or 0 when it is not a heading.
fn heading_level(line: &str) -> usize {
    let hashes = line.chars().take_while(|c| *c == '#').count();
    if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
        hashes
    } else {
        0
    }
}

/// The lines of `text` under the heading `heading` (exactly, e.g. `## Try it`), up to the next heading
/// of the same or a higher level (a `#` line inside a code block is no heading).
fn section<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
    let level = heading_level(heading);
    let mut lines = text.lines().skip_while(|l| l.trim_end() != heading);
    assert!(lines.next().is_some(), "no heading {heading:?}");
    let mut in_code = false;
    lines
        .take_while(|l| {
            if l.trim_start().starts_with("```") {
                in_code = !in_code;
            }
            let found = heading_level(l);
            in_code || found == 0 || found > level
        })
        .collect()
}

/// The fenced code blocks of `lines` whose info string is `lang`.
fn code_blocks(lines: &[&str], lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in lines {
        match current.take() {
            None => {
                if let Some(info) = line.trim_start().strip_prefix("```") {
                    current = Some((info.trim().to_string(), Vec::new()));
                }
            }
            Some((info, mut body)) => {
                if line.trim_start().starts_with("```") {
                    if info == lang {
                        blocks.push(body.join("\n"));
                    }
                } else {
                    body.push(line);
                    current = Some((info, body));
                }
            }
        }
    }
    assert!(current.is_none(), "an unclosed code block");
    blocks
}

const REPORT: &str = r#"{"title": "Add token refresh to the auth client", "summary": "The auth client now refreshes its token before it expires.", "changes": ["Added refresh() to src/auth.ts"], "rationale": "Sessions expired in the middle of work.", "impact_and_tests": "Affects the auth client; covered by its unit tests.", "next_steps": [], "tags": "auth"}"#;

#[tokio::test]
async fn the_readme_try_it_commands_run_against_stepper_local() {
    for tool in ["bash", "curl", "jq"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} is needed by the README's try-it commands (scripts/install-tools.sh installs it)"
        );
    }
    let readme = read(&root().join("README.md"));
    let blocks = code_blocks(&section(&readme, "## Try it"), "sh");
    assert!(blocks.len() >= 3, "the try-it section has {} sh blocks", blocks.len());
    let script = blocks.join("\n\n");
    assert!(
        script.contains("localhost:3005"),
        "the try-it commands call localhost:3005"
    );

    // One OpenAI-compatible fake: the generic job's colours, and a report for everything else.
    let provider = FakeProvider::start(Wire::OpenAi).await.expect("fake provider");
    provider.set_responder(|request| {
        if request.body.to_string().contains("colours") {
            FakeReply::openai_text(r#"{"colours": ["red", "green", "blue"]}"#)
        } else {
            FakeReply::openai_text(REPORT)
        }
    });
    // Open, as the README describes it: no API keys.
    let local = Local::start(
        &common::openai_provider("fake", &provider.base_url()),
        &[("STEPPER_API_KEYS", "")],
    )
    .await;
    let addr = local.base.trim_start_matches("http://").to_string();
    let script = script.replace("localhost:3005", &addr);

    let dir = common::TempDir::new();
    let run = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(&dir.0)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the try-it commands did not end within 60 s")
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the README's try-it commands failed ({}):\n--- script\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    // What the README says they show: both jobs completed (the report by the fake provider, with its
    // summary; the generic job with the colours), a healthy store, the provider and the budget.
    let compact: String = stdout.split_whitespace().collect();
    assert_eq!(
        compact.matches(r#""status":"completed""#).count(),
        2,
        "both jobs complete:\n{stdout}"
    );
    assert!(
        compact.contains(r#""provider":"fake""#),
        "the report names its provider:\n{stdout}"
    );
    assert!(
        compact.contains(r#""summary":"Theauthclientnowrefreshesitstokenbeforeitexpires.""#),
        "the report's summary:\n{stdout}"
    );
    assert!(
        compact.contains(r#"["red","green","blue"]"#),
        "the generic job's result:\n{stdout}"
    );
    assert!(compact.contains(r#""status":"healthy""#), "health:\n{stdout}");
    assert!(compact.contains(r#""name":"fake""#), "the providers:\n{stdout}");
    assert_eq!(provider.hits(), 2, "one provider call per job");
}

/// GitHub's anchor for a heading: lower case, punctuation dropped (letters, digits, `-`, `_` and
/// spaces kept), spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings, with GitHub's `-1`, `-2` for repeats. Headings inside
/// code blocks are not headings.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let level = heading_level(line);
        if in_code || level == 0 {
            continue;
        }
        let base = slug(&line[level..]);
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 { base.clone() } else { format!("{base}-{n}") });
        *n += 1;
    }
    out
}

/// The targets of a Markdown file's inline links (`[text](target)`), outside code blocks and code
/// spans, with their line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_code = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Drop code spans: a link inside backticks is text.
        let mut plain = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                plain.push_str(part);
            }
        }
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((n + 1, after[..end].trim().to_string()));
            rest = &after[end + 1..];
        }
    }
    out
}

#[test]
fn every_local_link_and_anchor_in_the_docs_resolves() {
    let root = root();
    let mut files = vec![root.join("README.md"), root.join("CHANGELOG.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);

    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = read(file);
        for (line, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue; // no network here
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let dest = if path.is_empty() {
                file.clone()
            } else {
                file.parent().expect("a folder").join(path)
            };
            let shown = format!(
                "{}:{line}: {target}",
                file.strip_prefix(&root).unwrap_or(file).display()
            );
            if !dest.exists() {
                broken.push(format!("{shown}: no file {}", dest.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                if dest.extension().is_none_or(|e| e != "md") {
                    broken.push(format!("{shown}: an anchor into a file that is not Markdown"));
                } else if !anchors(&read(&dest)).contains(anchor) {
                    broken.push(format!("{shown}: no heading with that anchor"));
                }
            }
        }
    }
    println!("{checked} local links checked in {} files", files.len());
    assert!(checked > 20, "the link check found only {checked} local links");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// Every name in `text` quoted as a whole string literal (`"STEPPER_CONFIG"`): upper-case letters,
/// digits and `_`, starting with a letter, at least three characters.
fn quoted_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices('"') {
        let rest = &text[i + 1..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if name.len() >= 3 && name.starts_with(|c: char| c.is_ascii_uppercase()) && rest[name.len()..].starts_with('"')
        {
            out.insert(name);
        }
    }
    out
}

/// A source file without its `#[cfg(test)]` module (by convention its last item): the names its tests
/// set are examples, not variables the code reads.
fn without_tests(text: &str) -> &str {
    text.find("\n#[cfg(test)]\nmod ").map_or(text, |end| &text[..end])
}

/// Every `{NAME}` placeholder (a variable filled into a catalog URL).
fn placeholders(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices('{') {
        let rest = &text[i + 1..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if name.len() >= 3 && rest[name.len()..].starts_with('}') {
            out.insert(name);
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// String literals in the scanned files that are not variable names.
const NOT_VARIABLES: [&str; 1] = [
    "POST", // the SQS client's HTTP method
];

#[test]
fn the_configuration_table_names_every_variable_the_code_reads() {
    let root = root();
    // Where variables are read: the configuration (`wiring/`, the only reader of the environment),
    // `stepper-local`, the SQS adapter's lookup of what Lambda sets, and the provider catalog (key
    // variables and URL placeholders).
    let mut sources = Vec::new();
    rust_files(&root.join("shared/src/wiring"), &mut sources);
    rust_files(&root.join("local/src"), &mut sources);
    sources.push(root.join("shared/src/adapters/queue/sqs.rs"));
    let catalog = root.join("shared/src/adapters/providers/catalog.rs");
    sources.push(catalog.clone());
    let mut read_by_code = BTreeSet::new();
    for source in &sources {
        read_by_code.extend(quoted_names(without_tests(&read(source))));
    }
    read_by_code.extend(placeholders(&read(&catalog)));
    for word in NOT_VARIABLES {
        read_by_code.remove(word);
    }
    assert!(
        read_by_code.len() > 40,
        "found only {} variable names",
        read_by_code.len()
    );

    let doc = read(&root.join("docs/configuration.md"));
    let lines = section(&doc, "## Environment variables");
    let mut documented = BTreeSet::new();
    for row in lines.iter().filter(|l| l.starts_with("| `")) {
        let first_cell = row[1..].split('|').next().unwrap_or_default();
        for (i, part) in first_cell.split('`').enumerate() {
            if i % 2 == 1
                && part
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                assert!(documented.insert(part.to_string()), "{part} has two rows");
            }
        }
    }
    let missing: Vec<_> = read_by_code.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&read_by_code).collect();
    println!(
        "{} variables read by the code, {} documented",
        read_by_code.len(),
        documented.len()
    );
    assert!(
        missing.is_empty(),
        "read by the code but not in docs/configuration.md's table: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "in docs/configuration.md's table but read by no configuration code: {stale:?}"
    );
}
