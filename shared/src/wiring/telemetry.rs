//! Structured logs: JSON lines with job and provider fields (`LOG_FORMAT=text` for humans). The level
//! is `AWS_LAMBDA_LOG_LEVEL` when Lambda sets it, else `RUST_LOG`, else `info`.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = crate::wiring::config::log_filter()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let text = crate::wiring::config::log_format_is_text();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    // A second init (tests) keeps the first subscriber.
    let _ = if text {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).with_current_span(false).try_init()
    };
}
