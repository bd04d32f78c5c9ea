//! `GET /dashboard`: one HTML page, rendered once when the router is built, with its style and script
//! inline (no build step, no external asset). It needs no key and touches no store: it asks for the API
//! key once, keeps it in the tab's session storage, and calls `GET /v1/providers`, `GET /v1/jobs`,
//! `GET /v1/budget` and the redeliver route with it in the configured key header. A strict
//! Content-Security-Policy allows exactly this script and this style (by their SHA-256) and connections
//! to the page's own origin.

use axum::body::Bytes;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

const PAGE: &str = include_str!("dashboard/page.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// The rendered page and its policy, shared by every request.
#[derive(Clone)]
pub(crate) struct Page {
    body: Bytes,
    policy: HeaderValue,
}

fn sha256_source(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest))
}

/// Text for an HTML attribute value.
fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The Content-Security-Policy of the page: nothing but its own script and style, and requests to its
/// own origin; no frame, no form submission (the key form is handled by the script, never sent as a
/// URL), no base URI.
pub(crate) fn policy() -> String {
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        sha256_source(SCRIPT),
        sha256_source(STYLE)
    )
}

impl Page {
    pub(crate) fn render(key_header: &str) -> Self {
        let html = PAGE
            .replace("{{key_header}}", &escape(key_header))
            .replace("{{style}}", STYLE)
            .replace("{{script}}", SCRIPT);
        Self {
            body: Bytes::from(html),
            // Built from a fixed template and base64: always a valid header value.
            policy: HeaderValue::from_str(&policy()).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
        }
    }

    pub(crate) fn response(&self) -> Response {
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                ),
                (header::CONTENT_SECURITY_POLICY, self.policy.clone()),
                (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
                (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
                (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            self.body.clone(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_its_policy_names_exactly_its_script_and_style() {
        let page = Page::render("x-stepper-key");
        let html = std::str::from_utf8(&page.body).unwrap();
        assert!(html.contains(r#"data-key-header="x-stepper-key""#));
        assert!(!html.contains("{{"), "every placeholder is filled");
        for external in ["src=", "href=", "http://", "https://", "@import"] {
            assert!(!html.contains(external), "no external asset: {external}");
        }
        let script = html
            .split("<script>")
            .nth(1)
            .and_then(|s| s.split("</script>").next())
            .unwrap();
        let style = html
            .split("<style>")
            .nth(1)
            .and_then(|s| s.split("</style>").next())
            .unwrap();
        let policy = page.policy.to_str().unwrap();
        assert!(
            policy.contains(&format!("script-src {};", sha256_source(script))),
            "{policy}"
        );
        assert!(
            policy.contains(&format!("style-src {};", sha256_source(style))),
            "{policy}"
        );
        assert!(policy.starts_with("default-src 'none';") && policy.contains("form-action 'none'"));
        assert!(!policy.contains("unsafe"), "{policy}");
        // The key is kept in session storage only: the script never writes it anywhere else.
        assert!(
            !SCRIPT.contains("localStorage") && !SCRIPT.contains("document.cookie") && !SCRIPT.contains("location")
        );
        assert_eq!(escape(r#"a"<b>&'"#), "a&quot;&lt;b&gt;&amp;&#39;");
    }
}
