//! Secret redaction before anything reaches a prompt. It redacts values, never the words around them:
//! "Auth: Add token", "Add token refresh" and "password reset flow" pass unchanged.

use std::sync::OnceLock;

use regex::{Captures, Regex};

struct Rules {
    private_key: Regex,
    aws_key: Regex,
    bearer: Regex,
    assignment: Regex,
    long_run: Regex,
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    // The patterns are literals checked by the tests below; they always compile.
    RULES.get_or_init(|| Rules {
        private_key: Regex::new(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----").expect("pattern"),
        aws_key: Regex::new(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b").expect("pattern"),
        bearer: Regex::new(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/\-]{16,}=*").expect("pattern"),
        assignment: Regex::new(
            r#"(?i)\b((?:[a-z0-9]+[_-])*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|client[_-]?secret))(\s*[:=]\s*)(["']?)([^\s"',;]+)"#,
        )
        .expect("pattern"),
        long_run: Regex::new(r"[A-Za-z0-9+/_\-]{40,}={0,2}").expect("pattern"),
    })
}

/// A value that looks like a credential rather than a word ("refresh", "reset", "required").
fn secret_like(value: &str, separator: &str) -> bool {
    let has_digit = value.chars().any(|c| c.is_ascii_digit());
    let has_symbol = value.chars().any(|c| !c.is_ascii_alphanumeric());
    let plain_word = value.chars().all(|c| c.is_ascii_lowercase()) && value.len() < 16;
    if separator.contains('=') {
        value.len() >= 4 && !plain_word || value.len() >= 8 && (has_digit || has_symbol)
    } else {
        value.len() >= 8 && (has_digit || has_symbol || value.len() >= 20) && !plain_word
    }
}

/// Base64-ish runs mixing upper case, lower case and digits; lowercase hex (commit SHAs) is kept.
fn run_is_secret(run: &str) -> bool {
    run.chars().any(|c| c.is_ascii_uppercase())
        && run.chars().any(|c| c.is_ascii_lowercase())
        && run.chars().any(|c| c.is_ascii_digit())
}

pub(crate) fn redact(text: &str) -> String {
    let r = rules();
    let text = r.private_key.replace_all(text, "[REDACTED PRIVATE KEY]");
    let text = r.aws_key.replace_all(&text, "[REDACTED AWS KEY]");
    let text = r.bearer.replace_all(&text, "$1 [REDACTED]");
    let text = r.assignment.replace_all(&text, |c: &Captures| {
        if secret_like(&c[4], &c[2]) {
            format!("{}{}{}[REDACTED]", &c[1], &c[2], &c[3])
        } else {
            c[0].to_string()
        }
    });
    let text = r.long_run.replace_all(&text, |c: &Captures| {
        if run_is_secret(&c[0]) {
            "[REDACTED]".to_string()
        } else {
            c[0].to_string()
        }
    });
    text.into_owned()
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn ordinary_words_survive() {
        for text in [
            "Auth: Add token",
            "Add token refresh",
            "password reset flow",
            "Token: refresh on expiry",
            "fix: secret sauce in the README",
            "index 83db48f..bf269f4 100644",
            "Merge 3f786850e387550fdab836ed7e6dc881de23001b into main",
            "const tokenizer = new Tokenizer();",
        ] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn secrets_are_redacted_but_not_their_names() {
        assert_eq!(redact("aws_key = AKIAIOSFODNN7EXAMPLE"), "aws_key = [REDACTED AWS KEY]");
        assert_eq!(redact("password=hunter22"), "password=[REDACTED]");
        assert_eq!(redact("DB_PASSWORD: \"s3cr3t!pass\""), "DB_PASSWORD: \"[REDACTED]\"");
        assert_eq!(redact("api_key=sk-live-1234567890"), "api_key=[REDACTED]");
        assert_eq!(
            redact("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIx"),
            "Authorization: Bearer [REDACTED]"
        );
        assert_eq!(
            redact("key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEYabcdef"),
            "key: [REDACTED]"
        );
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----";
        assert_eq!(redact(&format!("x\n{pem}\ny")), "x\n[REDACTED PRIVATE KEY]\ny");
    }
}
