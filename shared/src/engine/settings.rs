//! The settings the engine receives: the job lifecycle's knobs, the webhook and alert policies, and
//! (until the use-case layer takes them) each owner's request limits. Plain values with their
//! defaults; `config` builds them from the environment at start, and nothing here reads it.

use std::collections::HashMap;

use super::decide::StepPolicy;
use crate::adapters::outbound::alert_sink::AlertSettings;
use crate::adapters::outbound::guard::UrlGuard;
use crate::adapters::outbound::sign::WebhookSecrets;
use crate::domain::quota::BackoffPolicy;
use crate::domain::scrub::Scrubber;
use crate::domain::targets::STANDARD_SCHEDULE_MS;
use crate::ports::{Limits, RateLimit};

/// Knobs of the job lifecycle (defaults in [`Settings::default`]).
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a finished result lives when nobody reads it (`RESULT_TTL_SECONDS`, 24 h: a caller that was
    /// down for an hour still finds its results; the first read shortens it to `delivery_grace_ms`).
    pub result_ttl_ms: u64,
    /// How long a failed job lives (`FAILURE_TTL_SECONDS`, 1 h).
    pub failure_ttl_ms: u64,
    /// A finished job's life after its first delivery (`DELIVERY_GRACE_SECONDS`, 10 min).
    pub delivery_grace_ms: u64,
    /// An unfinished job lives until its deadline plus this margin.
    pub unfinished_margin_ms: u64,
    /// Per-job deadline when the request names none (`JOB_DEADLINE_SECONDS`, 24 h).
    pub default_deadline_ms: u64,
    pub policy: StepPolicy,
    pub backoff: BackoffPolicy,
    /// Per-owner webhook secrets (`STEPPER_WEBHOOK_SECRETS`): current first, previous during a rotation.
    pub webhook_secrets: HashMap<String, WebhookSecrets>,
    /// Decides which callback URLs may be called (`CALLBACK_ALLOWED_ORIGINS` opens origins such as
    /// `http://127.0.0.1:8080` that the SSRF rules would refuse).
    pub url_guard: UrlGuard,
    /// The wait before each attempt of a `callbackUrl` webhook (`WEBHOOK_SCHEDULE`; Standard Webhooks'
    /// schedule by default). Empty when the older exponential knobs are set instead
    /// (`WEBHOOK_MAX_ATTEMPTS`, `WEBHOOK_BACKOFF_MS`: attempts and first back-off, doubling, at most 10 min).
    pub webhook_schedule_ms: Vec<u64>,
    pub webhook_max_attempts: u32,
    pub webhook_backoff_ms: u64,
    /// Also send `Authorization: Bearer <owner's current secret>` on `callbackUrl` webhooks, as the
    /// original did (`WEBHOOK_LEGACY_BEARER=true`; off by default). For receivers that accept it instead
    /// of the HMAC: weaker, since the secret itself travels and proves nothing about the body.
    pub webhook_legacy_bearer: bool,
    /// Per-owner request rate and jobs in flight, shared by every instance through the store.
    pub limits: OwnerLimits,
    /// Every configured secret, scrubbed from outside text (provider errors, receiver answers).
    pub scrubber: Scrubber,
    /// How long past its due time a step may go unclaimed before the sweeper sends it again
    /// (`SWEEP_GRACE_SECONDS`, 30 s): a lost message, a dead process, a lease that lapsed.
    pub sweep_grace_ms: u64,
    /// Waits longer than this are not queued: the job stays parked in the due-index and the sweeper
    /// wakes it (`PARK_AFTER_SECONDS`, 5 min).
    pub park_after_ms: u64,
    /// Where operational alerts go (`ALERT_WEBHOOK_URLS`, `DISCORD_WEBHOOK_URL`, `ALERT_*`).
    pub alerts: AlertSettings,
    /// How many steps run at once (`STEP_CONCURRENCY`, 5: the template's `StepMaxConcurrency`): the
    /// pace of the ETA (engine/eta.rs), never a limit. Lambda runs up to maximum concurrency × batch
    /// size; `stepper-local` runs 8 workers.
    pub step_concurrency: u32,
    /// The owner whose `GET /v1/budget` shows the whole deployment and every owner
    /// (`STEPPER_ADMIN_OWNER`; unset: every owner sees only its own).
    pub admin_owner: Option<String>,
}

/// A limit for every owner, and per-owner overrides (`None`: off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerOwner<T> {
    pub default: Option<T>,
    pub overrides: HashMap<String, Option<T>>,
}

impl<T: Copy> PerOwner<T> {
    pub(crate) fn get(&self, owner: &str) -> Option<T> {
        self.overrides.get(owner).copied().unwrap_or(self.default)
    }
}

/// `STEPPER_RATE_LIMIT(S)` and `STEPPER_MAX_IN_FLIGHT(_OVERRIDES)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerLimits {
    pub rate: PerOwner<RateLimit>,
    pub in_flight: PerOwner<u32>,
}

impl OwnerLimits {
    /// The limits one of `owner`'s requests is held to.
    pub(crate) fn for_owner(&self, owner: &str) -> Limits {
        Limits {
            rate: self.rate.get(owner),
            in_flight: self.in_flight.get(owner),
        }
    }
}

impl Default for OwnerLimits {
    /// 120 requests a minute (two a second: room to poll a few jobs each second) and 1,000 unfinished
    /// jobs per owner. Parked jobs cost bytes, not commands: a job's record is at most
    /// ≈ 40 KB (a commit report at its full evidence budget, 24 KB of diff plus the 8 KB compact
    /// prompt, as JSON), so an owner at its cap holds ≤ 40 MB, under a sixth of Upstash free's 256 MB;
    /// a quota outage of a day fills no caller's cap, while a runaway client is still refused.
    fn default() -> Self {
        Self {
            rate: PerOwner {
                default: Some(RateLimit {
                    limit: 120,
                    window_ms: 60_000,
                }),
                overrides: HashMap::new(),
            },
            in_flight: PerOwner {
                default: Some(1_000),
                overrides: HashMap::new(),
            },
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            result_ttl_ms: 86_400_000,
            failure_ttl_ms: 3_600_000,
            delivery_grace_ms: 600_000,
            unfinished_margin_ms: 900_000,
            default_deadline_ms: 86_400_000,
            policy: StepPolicy::default(),
            backoff: BackoffPolicy::default(),
            webhook_secrets: HashMap::new(),
            // An empty allow-list has no origin to parse, so it cannot fail.
            url_guard: UrlGuard::new(&[]).expect("an empty allow-list is valid"),
            webhook_schedule_ms: STANDARD_SCHEDULE_MS.to_vec(),
            webhook_max_attempts: 5,
            webhook_backoff_ms: 2_000,
            webhook_legacy_bearer: false,
            limits: OwnerLimits::default(),
            scrubber: Scrubber::default(),
            sweep_grace_ms: 30_000,
            park_after_ms: 300_000,
            alerts: AlertSettings::default(),
            step_concurrency: 5,
            admin_owner: None,
        }
    }
}
