//! The dashboard in a real browser: `stepper-local` with fake providers holds jobs in every state (a
//! completed job, a failed one, one delayed on cooling providers, one whose webhook was dead-lettered
//! while its receiver was down), then `dashboard_browser.py` (Playwright from the tools venv, driving
//! Debian's Chromium) opens `/dashboard`, types the key, and checks what a person would see; it clicks
//! Redeliver once the receiver is up, and saves a screenshot to `<target>/test-output/dashboard.png`.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{openai_provider, Local, ALICE};
use serde_json::{json, Value};
use testkit::fake::{FakeProvider, FakeReply, RecordedRequest, Wire};
use testkit::receiver::NodeReceiver;
use testkit::stack::{free_port, tools_dir};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ANSWER: &str = r#"{"colours": ["red", "green", "blue"]}"#;

fn prompt_of(request: &RecordedRequest) -> String {
    request.body["messages"].to_string()
}

/// `alpha` and `beta` answer by phase: before `cooling`, a job whose prompt says "please fail" is
/// refused (400) and every other one answered; after it, alpha is rate-limited for 15 minutes and beta's
/// quota is spent.
fn scripted(provider: &FakeProvider, cooling: Arc<AtomicBool>, exhausted_instead: bool) {
    provider.set_responder(move |request| {
        if cooling.load(Ordering::SeqCst) {
            return if exhausted_instead {
                FakeReply::openai_error(
                    429,
                    "insufficient_quota",
                    "insufficient_quota",
                    "You exceeded your current quota, please check your plan and billing details.",
                )
            } else {
                FakeReply::openai_rate_limited(900)
            };
        }
        if prompt_of(request).contains("please fail") {
            FakeReply::openai_status(400)
        } else {
            FakeReply::openai_text(ANSWER)
        }
    });
}

async fn wait_for(local: &Local, status_url: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = local.get(status_url, ALICE).await;
        assert_eq!(code, 200, "{body}");
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn python() -> PathBuf {
    tools_dir().join("venv/bin/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_state_in_a_real_browser_and_redelivers() {
    let cooling = Arc::new(AtomicBool::new(false));
    // gamma refuses our key, quoting it back: it is disabled for everyone, the reason scrubbed.
    let gamma = FakeProvider::start(Wire::OpenAi).await.unwrap();
    gamma.set_responder(FakeReply::openai_bad_key_echoing);
    let alpha = FakeProvider::start(Wire::OpenAi).await.unwrap();
    scripted(&alpha, cooling.clone(), false);
    let beta = FakeProvider::start(Wire::OpenAi).await.unwrap();
    scripted(&beta, cooling.clone(), true);
    let providers = [
        openai_provider("gamma", &gamma.base_url()),
        openai_provider("alpha", &alpha.base_url()),
        openai_provider("beta", &beta.base_url()),
    ]
    .concat();
    let hook_port = free_port().unwrap();
    let origin = format!("http://127.0.0.1:{hook_port}");
    let local = Local::start(
        &providers,
        &[
            ("STEPPER_WEBHOOK_SECRETS", &format!("alice={SECRET}")),
            ("CALLBACK_ALLOWED_ORIGINS", &origin),
            ("WEBHOOK_SCHEDULE", "0s,100ms"),
        ],
    )
    .await;

    // Completed (gamma disabled on the way), failed (refused by every usable provider), and completed
    // with its webhook dead-lettered (nothing listens on the receiver's port yet).
    let (code, done) = local
        .post("/v1/generate", ALICE, json!({"prompt": "Name three colours"}))
        .await;
    assert_eq!(code, 202, "{done}");
    let done_url = done["statusUrl"].as_str().unwrap().to_string();
    let done = local.wait_finished(&done_url, ALICE, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (_, failed) = local
        .post("/v1/generate", ALICE, json!({"prompt": "please fail"}))
        .await;
    let failed = local
        .wait_finished(failed["statusUrl"].as_str().unwrap(), ALICE, Duration::from_secs(20))
        .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let (_, dead) = local
        .post(
            "/v1/generate",
            ALICE,
            json!({"prompt": "Name three more colours", "callbackUrl": format!("{origin}/hook")}),
        )
        .await;
    let dead_url = dead["statusUrl"].as_str().unwrap().to_string();
    let dead = wait_for(&local, &dead_url, "the webhook never died", |b| {
        b["deliveries"][0]["status"] == "dead"
    })
    .await;

    // Every usable provider cools down: a new job (of tenant acme) waits (delayed) for the first to come back.
    cooling.store(true, Ordering::SeqCst);
    let (_, waiting) = local
        .post(
            "/v1/generate",
            ALICE,
            json!({"prompt": "Name a fourth colour", "tenantId": "acme"}),
        )
        .await;
    let waiting_url = waiting["statusUrl"].as_str().unwrap().to_string();
    let waiting = wait_for(&local, &waiting_url, "the job never waited", |b| {
        b["rawStatus"] == "delayed"
    })
    .await;
    let (_, health) = local.get("/v1/providers", ALICE).await;
    let state = |name: &str| {
        health["providers"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing: {health}"))
    };
    assert_eq!(state("gamma")["enabled"], false, "{health}");
    assert!(state("alpha")["coolingDownUntil"].is_string(), "{health}");
    assert_eq!(state("beta")["lastErrorClass"], "quota_exhausted", "{health}");

    // The receiver comes up before the browser clicks Redeliver.
    let hook = NodeReceiver::start(SECRET, &[200], hook_port)
        .await
        .expect("node receiver");

    let output = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|target| target.join("test-output"))
        .unwrap_or_else(|| PathBuf::from("test-output"));
    std::fs::create_dir_all(&output).unwrap();
    let screenshot = output.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let expected = json!({
        "base": local.base,
        "key": ALICE,
        "otherKeys": ["sk-test"],
        "screenshot": screenshot,
        "chromium": std::env::var("STEPPER_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
        "providers": health["providers"],
        "waiting": waiting,
        "done": done,
        "failed": failed,
        "dead": dead,
    });
    let spec = output.join("dashboard-expected.json");
    std::fs::write(&spec, serde_json::to_vec_pretty(&expected).unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard_browser.py");
    let run = tokio::process::Command::new(python())
        .arg(script)
        .arg(&spec)
        .kill_on_drop(true)
        .output();
    let run = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser check finished in 3 minutes")
        .unwrap_or_else(|e| {
            panic!(
                "{} did not start ({e}): run scripts/install-tools.sh",
                python().display()
            )
        });
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    print!("{stdout}");
    assert!(run.status.success(), "the browser check failed:\n{stdout}\n{stderr}");
    assert!(screenshot.is_file(), "no screenshot at {}", screenshot.display());
    println!("dashboard: screenshot at {}", screenshot.display());

    // The click went through: the receiver got the webhook once, verified, with the dead letter's id.
    let got = hook.deliveries().await.unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].legacy_ok && got[0].standard_ok, "{:?}", got[0].reasons);
    assert_eq!(
        got[0].webhook_id.as_deref(),
        dead["deliveries"][0]["webhookId"].as_str()
    );
    let delivered = wait_for(&local, &dead_url, "the redelivery never landed", |b| {
        b["deliveries"][0]["status"] == "delivered"
    })
    .await;
    assert_eq!(delivered["deliveries"][0]["redeliveries"], 1, "{delivered}");
}
