//! The store contract: the same cases against every Store adapter — the in-memory store, and the
//! Upstash store on the real local stack (redis-server + the Upstash REST emulator).

use std::sync::Arc;
use std::time::Duration;

use shared::config::Secret;
use shared::job::{job_id, new_gen, Job, JobKind, JobSpec, JobState};
use shared::llm::{ChatMessage, ResponseFormat};
use shared::ports::{Claim, Clock, Created, Store, SystemClock};
use shared::providers::ErrorClass;
use shared::quota::{BackoffPolicy, ProviderEvent, ProviderLimits, ProviderState, ResetClock};
use shared::store::memory::MemoryStore;
use shared::store::upstash::{UpstashClient, UpstashStore};

fn now() -> u64 {
    SystemClock.now_ms()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", new_gen())
}

fn job(owner: &str) -> Job {
    let t = now();
    Job {
        id: job_id(owner, &unique("identity")),
        owner: owner.to_string(),
        gen: new_gen(),
        seq: 1,
        state: JobState::Queued,
        spec: JobSpec {
            kind: JobKind::Generic,
            // Non-ASCII, quotes, newlines and a big integer: the record must come back exactly.
            messages: vec![ChatMessage::user("Résumé \"quoted\"\nline two 🚀 12345678901234567890")],
            compact_messages: None,
            format: ResponseFormat::Json {
                schema: Some(serde_json::json!({"type": "object", "required": []})),
            },
            max_tokens: 100,
            temperature: Some(0.2),
            fallback: None,
            context: Default::default(),
            targets: vec![],
        },
        created_at_ms: t,
        deadline_ms: t + 3_600_000,
        next_attempt_at_ms: None,
        attempts: vec![],
        result: None,
        error: None,
        finished_at_ms: None,
        expires_at_ms: t + 3_600_000,
        deliveries: vec![],
    }
}

fn event(provider: &str, class: Option<ErrorClass>, cooldown_until_ms: u64) -> ProviderEvent {
    let limits = ProviderLimits {
        rpm: Some(10),
        rpd: Some(100),
        tpm: None,
        reset: ResetClock::UtcMidnight,
    };
    let mut e = ProviderEvent::new(provider, &limits, now(), BackoffPolicy::default());
    e.class = class;
    e.tokens = 42;
    e.cooldown_until_ms = cooldown_until_ms;
    e.message = "auth_invalid: 401 bad key".into();
    e
}

async fn create_dedupes_identical_jobs(store: Arc<dyn Store>) {
    let j = job(&unique("owner"));
    assert_eq!(store.create(&j).await.unwrap(), Created::New);
    let mut again = j.clone();
    again.gen = new_gen();
    match store.create(&again).await.unwrap() {
        Created::Existing(existing) => assert_eq!(*existing, j, "the stored job comes back exactly"),
        other => panic!("expected the existing job, got {other:?}"),
    }
}

async fn create_replaces_a_failed_job(store: Arc<dyn Store>) {
    let mut j = job(&unique("owner"));
    store.create(&j).await.unwrap();
    let step = j.step_ref();
    assert!(matches!(
        store.claim(&step, Duration::from_secs(30)).await.unwrap(),
        Claim::Acquired { .. }
    ));
    let mut failed = j.clone();
    failed.seq = 2;
    failed.state = JobState::Failed;
    failed.error = Some("every provider failed".into());
    assert!(store.finish(&step, &failed, None).await.unwrap());
    j.gen = new_gen();
    assert_eq!(
        store.create(&j).await.unwrap(),
        Created::New,
        "a failed job is replaced by a new submit"
    );
    let delivered = store
        .deliver(&j.owner, &j.id, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (delivered.job.gen, delivered.job.state),
        (j.gen.clone(), JobState::Queued)
    );
}

async fn claim_is_fenced_and_leased(store: Arc<dyn Store>) {
    let j = job(&unique("owner"));
    store.create(&j).await.unwrap();
    let step = j.step_ref();
    let mut wrong_seq = step.clone();
    wrong_seq.seq = 7;
    assert!(matches!(
        store.claim(&wrong_seq, Duration::from_secs(30)).await.unwrap(),
        Claim::Stale(_)
    ));
    let mut wrong_gen = step.clone();
    wrong_gen.gen = new_gen();
    assert!(matches!(
        store.claim(&wrong_gen, Duration::from_secs(30)).await.unwrap(),
        Claim::Stale(_)
    ));
    match store.claim(&step, Duration::from_secs(30)).await.unwrap() {
        Claim::Acquired { job, .. } => assert_eq!(job, j),
        other => panic!("expected the lease, got {other:?}"),
    }
    assert_eq!(store.claim(&step, Duration::from_secs(30)).await.unwrap(), Claim::Busy);
    let running = store
        .deliver(&j.owner, &j.id, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert!(running.running, "a held lease shows the job as running");
    let mut missing = step.clone();
    missing.job_id = job_id("nobody", "nothing");
    assert_eq!(
        store.claim(&missing, Duration::from_secs(30)).await.unwrap(),
        Claim::Missing
    );
}

async fn a_lease_expires(store: Arc<dyn Store>) {
    let j = job(&unique("owner"));
    store.create(&j).await.unwrap();
    let step = j.step_ref();
    assert!(matches!(
        store.claim(&step, Duration::from_millis(300)).await.unwrap(),
        Claim::Acquired { .. }
    ));
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(matches!(
        store.claim(&step, Duration::from_secs(30)).await.unwrap(),
        Claim::Acquired { .. }
    ));
}

async fn finish_is_fenced(store: Arc<dyn Store>) {
    let j = job(&unique("owner"));
    store.create(&j).await.unwrap();
    let step = j.step_ref();
    let mut next = j.clone();
    next.seq = 2;
    next.state = JobState::WaitingForRetry;
    next.next_attempt_at_ms = Some(now() + 5_000);
    assert!(store.finish(&step, &next, None).await.unwrap());
    let mut late = next.clone();
    late.seq = 3;
    late.state = JobState::Failed;
    assert!(
        !store.finish(&step, &late, None).await.unwrap(),
        "a second finish of the same step is refused"
    );
    let seen = store
        .deliver(&j.owner, &j.id, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.job, next, "the refused finish changed nothing");
    let mut gone = j.clone();
    gone.id = job_id("nobody", "never");
    assert!(
        !store.finish(&gone.step_ref(), &gone, None).await.unwrap(),
        "finish never creates a job"
    );
    assert!(store
        .deliver(&gone.owner, &gone.id, Duration::from_secs(1))
        .await
        .unwrap()
        .is_none());
}

async fn finish_applies_provider_events_like_quota_rs(store: Arc<dyn Store>) {
    let name = unique("provider-");
    let events = [
        event(&name, None, 0),
        event(&name, Some(ErrorClass::RateLimited), now() + 30_000),
        event(&name, Some(ErrorClass::Overloaded), 0),
        event(&name, Some(ErrorClass::Overloaded), 0),
        event(&name, Some(ErrorClass::InvalidOutput), 0),
        event(&name, Some(ErrorClass::AuthInvalid), 0),
    ];
    let mut expected = ProviderState::default();
    for e in &events {
        let j = job(&unique("owner"));
        store.create(&j).await.unwrap();
        let mut next = j.clone();
        next.seq = 2;
        assert!(store.finish(&j.step_ref(), &next, Some(e)).await.unwrap());
        expected.apply(e);
    }
    let states = store.provider_states().await.unwrap();
    assert_eq!(
        states.get(&name),
        Some(&expected),
        "the store folds events exactly as ProviderState::apply"
    );
    let j = job(&unique("owner"));
    store.create(&j).await.unwrap();
    match store.claim(&j.step_ref(), Duration::from_secs(30)).await.unwrap() {
        Claim::Acquired { providers, .. } => assert_eq!(providers.get(&name), Some(&expected)),
        other => panic!("expected the lease, got {other:?}"),
    }
}

async fn deliver_is_owner_scoped_and_shortens_a_finished_life(store: Arc<dyn Store>) {
    let j = job(&unique("owner"));
    store.create(&j).await.unwrap();
    assert!(store
        .deliver("someone-else", &j.id, Duration::from_secs(60))
        .await
        .unwrap()
        .is_none());
    let mut done = j.clone();
    done.seq = 2;
    done.state = JobState::Succeeded;
    done.expires_at_ms = now() + 3_600_000;
    assert!(store.finish(&j.step_ref(), &done, None).await.unwrap());
    let first = store
        .deliver(&j.owner, &j.id, Duration::from_millis(700))
        .await
        .unwrap()
        .unwrap();
    assert!(!first.running);
    assert_eq!(first.job.state, JobState::Succeeded);
    // A later read with a longer grace does not extend the first deadline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(store
        .deliver(&j.owner, &j.id, Duration::from_secs(60))
        .await
        .unwrap()
        .is_some());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        store
            .deliver(&j.owner, &j.id, Duration::from_secs(60))
            .await
            .unwrap()
            .is_none(),
        "gone after the grace"
    );
}

async fn unfinished_jobs_expire_at_their_expiry(store: Arc<dyn Store>) {
    let mut j = job(&unique("owner"));
    j.expires_at_ms = now() + 400;
    store.create(&j).await.unwrap();
    assert!(store
        .deliver(&j.owner, &j.id, Duration::from_secs(60))
        .await
        .unwrap()
        .is_some());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(store
        .deliver(&j.owner, &j.id, Duration::from_secs(60))
        .await
        .unwrap()
        .is_none());
}

async fn purge_is_owner_checked(store: Arc<dyn Store>) {
    let j = job(&unique("owner"));
    store.create(&j).await.unwrap();
    assert!(!store.purge("someone-else", &j.id).await.unwrap());
    assert!(store
        .deliver(&j.owner, &j.id, Duration::from_secs(60))
        .await
        .unwrap()
        .is_some());
    assert!(store.purge(&j.owner, &j.id).await.unwrap());
    assert!(store
        .deliver(&j.owner, &j.id, Duration::from_secs(60))
        .await
        .unwrap()
        .is_none());
    assert!(!store.purge(&j.owner, &j.id).await.unwrap());
}

async fn unfinished_lists_only_unfinished_jobs(store: Arc<dyn Store>) {
    let owner = unique("owner");
    let open = job(&owner);
    let done = job(&owner);
    store.create(&open).await.unwrap();
    store.create(&done).await.unwrap();
    let mut finished = done.clone();
    finished.seq = 2;
    finished.state = JobState::Succeeded;
    assert!(store.finish(&done.step_ref(), &finished, None).await.unwrap());
    let listed: Vec<String> = store
        .with_work_left()
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.owner == owner)
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, vec![open.id]);
}

async fn fifty_identical_submits_make_one_job(store: Arc<dyn Store>) {
    let template = job(&unique("owner"));
    let attempts = (0..50).map(|_| {
        let store = store.clone();
        let mut j = template.clone();
        j.gen = new_gen();
        tokio::spawn(async move { store.create(&j).await.unwrap() })
    });
    let results = futures::future::join_all(attempts).await;
    let new = results
        .iter()
        .filter(|r| matches!(r.as_ref().unwrap(), Created::New))
        .count();
    assert_eq!(new, 1, "exactly one of 50 concurrent identical submits creates the job");
    let gens: std::collections::HashSet<String> = results
        .into_iter()
        .filter_map(|r| match r.unwrap() {
            Created::Existing(j) => Some(j.gen),
            Created::New => None,
        })
        .collect();
    assert_eq!(gens.len(), 1, "every other submit sees that same job");
}

async fn two_concurrent_claims_one_wins(store: Arc<dyn Store>) {
    for _ in 0..10 {
        let j = job(&unique("owner"));
        store.create(&j).await.unwrap();
        let step = j.step_ref();
        let (a, b) = tokio::join!(
            store.claim(&step, Duration::from_secs(30)),
            store.claim(&step, Duration::from_secs(30))
        );
        let acquired = [a.unwrap(), b.unwrap()]
            .iter()
            .filter(|c| matches!(c, Claim::Acquired { .. }))
            .count();
        assert_eq!(acquired, 1);
    }
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        async fn run_contract(store: Arc<dyn Store>) {
            $(
                eprintln!("store contract: {}", stringify!($case));
                $case(store.clone()).await;
            )*
        }
    };
}

contract!(
    create_dedupes_identical_jobs,
    create_replaces_a_failed_job,
    claim_is_fenced_and_leased,
    a_lease_expires,
    finish_is_fenced,
    finish_applies_provider_events_like_quota_rs,
    deliver_is_owner_scoped_and_shortens_a_finished_life,
    unfinished_jobs_expire_at_their_expiry,
    purge_is_owner_checked,
    unfinished_lists_only_unfinished_jobs,
    fifty_identical_submits_make_one_job,
    two_concurrent_claims_one_wins,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_meets_the_contract() {
    run_contract(Arc::new(MemoryStore::new(Arc::new(SystemClock)))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstash_store_meets_the_contract_on_the_real_stack() {
    let redis = testkit::stack::RedisServer::start().await.expect("redis-server");
    let upstash = testkit::stack::UpstashEmulator::start(&redis)
        .await
        .expect("upstash emulator");
    let client = UpstashClient::new(&upstash.url, Secret::new(upstash.token.clone()), Duration::from_secs(5)).unwrap();
    run_contract(Arc::new(UpstashStore::new(client))).await;
}
