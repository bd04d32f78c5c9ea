//! Runs `js/receiver.mjs`: a Node webhook receiver that verifies exactly as stepper's real caller does
//! (parse, `JSON.stringify`, hex HMAC-SHA256, millisecond timestamp within ±5 min) and also checks the
//! Standard Webhooks headers.

use std::process::Stdio;

use anyhow::Context;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(Debug, Clone, Deserialize)]
pub struct ReceivedWebhook {
    pub path: String,
    pub legacy_ok: bool,
    pub standard_ok: bool,
    pub reasons: Vec<String>,
    pub body: serde_json::Value,
    pub webhook_id: Option<String>,
    /// An `Authorization` header came, and it was `Bearer <secret>` (the original's legacy header).
    pub authorization: bool,
    pub bearer_ok: bool,
    pub at_ms: u64,
    pub answered: u16,
}

pub struct NodeReceiver {
    pub port: u16,
    _child: Child,
}

impl NodeReceiver {
    /// Starts on `port` (0: any free one), answering with `statuses` in turn (the last one repeats).
    pub async fn start(secret: &str, statuses: &[u16], port: u16) -> anyhow::Result<Self> {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("js/receiver.mjs");
        let statuses: Vec<String> = statuses.iter().map(u16::to_string).collect();
        let mut child = Command::new("node")
            .arg(script)
            .env("SECRET", secret)
            .env("STATUSES", statuses.join(","))
            .env("PORT", port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("node is not installed")?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let first = lines
            .next_line()
            .await?
            .context("the receiver exited before listening")?;
        Ok(Self {
            port: first.trim().parse()?,
            _child: child,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn deliveries(&self) -> anyhow::Result<Vec<ReceivedWebhook>> {
        Ok(reqwest::get(self.url("/_deliveries")).await?.json().await?)
    }
}
