//! What the simulated-time tests share: a clock the test moves by hand and a delay queue in that time.
// Each test crate uses its own part of this module.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shared::domain::message::Message;
use shared::ports::{Clock, Queue, QueueError};

/// The engine's clock, moved by the test.
pub struct ManualClock(pub AtomicU64);

impl ManualClock {
    pub fn at(ms: u64) -> Self {
        Self(AtomicU64::new(ms))
    }

    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The delay queue in simulated time: messages come out in due order, ties first-in first-out.
pub struct SimQueue {
    pub clock: Arc<ManualClock>,
    /// (due at, send order, message).
    pub pending: Mutex<Vec<(u64, u64, Message)>>,
    sent: AtomicU64,
}

impl SimQueue {
    pub fn new(clock: Arc<ManualClock>) -> Self {
        Self {
            clock,
            pending: Mutex::new(Vec::new()),
            sent: AtomicU64::new(0),
        }
    }

    /// The next message due no later than `limit`, with its due time.
    pub fn pop_due_by(&self, limit: u64) -> Option<(u64, Message)> {
        let mut pending = self.pending.lock().unwrap();
        let next = pending
            .iter()
            .enumerate()
            .min_by_key(|(_, (due, order, _))| (*due, *order))
            .map(|(i, _)| i)?;
        if pending[next].0 > limit {
            return None;
        }
        let (due, _, message) = pending.remove(next);
        Some((due, message))
    }

    /// The next message, whenever it is due.
    pub fn pop_due(&self) -> Option<(u64, Message)> {
        self.pop_due_by(u64::MAX)
    }
}

#[async_trait]
impl Queue for SimQueue {
    async fn send(&self, message: &Message, delay: Duration) -> Result<(), QueueError> {
        let due = self.clock.now_ms() + delay.as_millis() as u64;
        let order = self.sent.fetch_add(1, Ordering::SeqCst);
        self.pending.lock().unwrap().push((due, order, message.clone()));
        Ok(())
    }
}

/// A scenario's configuration: `settings`, `providers`, the store `upstash` names (memory when `None`),
/// one owner `o` with the key `secret-key` (header `x-api-key`), no SQS queue.
pub fn scenario_config(
    settings: shared::engine::settings::Settings,
    providers: Vec<shared::adapters::providers::spec::ProviderSpec>,
    upstash: Option<shared::wiring::config::UpstashConfig>,
) -> shared::wiring::config::Config {
    shared::wiring::config::Config {
        settings,
        keys: shared::app::auth::ApiKeys::parse("o=secret-key", "x-api-key").unwrap(),
        providers,
        providers_source: "the scenario".into(),
        upstash,
        step_queue_url: None,
        server: Default::default(),
        http: Default::default(),
    }
}

/// The Upstash emulator over `redis`, and the configuration that reaches it (the emulator stops when
/// the first value is dropped).
pub async fn upstash_emulator(
    redis: &testkit::stack::RedisServer,
) -> (testkit::stack::UpstashEmulator, shared::wiring::config::UpstashConfig) {
    let upstash = testkit::stack::UpstashEmulator::start(redis)
        .await
        .expect("upstash emulator");
    let config = shared::wiring::config::UpstashConfig {
        url: upstash.url.clone(),
        token: shared::domain::secret::Secret::new(upstash.token.clone()),
        timeout_ms: 5_000,
    };
    (upstash, config)
}
