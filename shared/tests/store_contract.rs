//! The store contract: the same cases against every Store adapter — the in-memory store, and the
//! Upstash store on the real local stack (redis-server + the Upstash REST emulator).

use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shared::adapters::store::memory::MemoryStore;
use shared::adapters::store::upstash::{UpstashClient, UpstashStore};
use shared::domain::alert::{AlertRules, Incident};
use shared::domain::budget::{self, Spent, Tally};
use shared::domain::error_class::ErrorClass;
use shared::domain::job::{job_id, new_gen, public_id, record_id, Job, JobSpec, JobState, StepRef};
use shared::domain::llm::{ChatMessage, ResponseFormat};
use shared::domain::origins::{self, OriginState};
use shared::domain::quota::{
    BackoffPolicy, ProviderEvent, ProviderLimits, ProviderState, Reservable, Reservation, Reserve, ResetClock,
};
use shared::domain::secret::Secret;
use shared::domain::targets::{DeliveryState, DeliveryStatus, Target};
use shared::ports::{
    Admission, AttemptCount, Claim, Clock, Created, Enlist, JobRead, Limits, OriginDown, Overview, OverviewBounds,
    RateLimit, RateWindow, Standing, Store, StoreError, SweepRequest, Swept, SystemClock, TenantCount, DAY_MS,
    HORIZONS_MS,
};

/// Thirty days: how far ahead of this process redis-server runs in the tests of an engine clock behind the store's.
const MONTH_MS: i64 = 30 * 86_400_000;

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
        spec: JobSpec {
            // Non-ASCII, quotes, newlines and a big integer: the record must come back exactly.
            messages: vec![ChatMessage::user("Résumé \"quoted\"\nline two 🚀 12345678901234567890")],
            format: ResponseFormat::Json {
                schema: Some(std::sync::Arc::new(
                    serde_json::json!({"type": "object", "required": []}),
                )),
            },
            max_tokens: 100,
            temperature: Some(0.2),
            ..shared::testing::spec()
        },
        created_at_ms: t,
        deadline_ms: t + 3_600_000,
        expires_at_ms: t + 3_600_000,
        ..shared::testing::job()
    }
}

/// The value of a store call made with no limits (nothing can refuse it).
fn unlimited<T: std::fmt::Debug>(admission: Admission<T>) -> T {
    match admission {
        Admission::Admitted { value, rate: None } => value,
        other => panic!("expected an unlimited admission, got {other:?}"),
    }
}

/// A fresh due-index entry and sweeper token, as the submit route makes them.
fn enlist() -> Enlist {
    Enlist {
        due_at_ms: now() + 30_000,
        sweeper_token: new_gen(),
        sweeper_life: Duration::from_secs(60),
    }
}

/// Creates with a fresh enlistment; what was created (the sweeper arming is checked on its own).
async fn create_with(store: &Arc<dyn Store>, job: &Job, limits: Limits) -> Result<Admission<Created>, StoreError> {
    Ok(match store.create(job, &enlist(), limits).await? {
        Admission::Admitted { value, rate } => Admission::Admitted {
            value: value.created,
            rate,
        },
        Admission::RateLimited(window) => Admission::RateLimited(window),
        Admission::TooManyInFlight { limit, rate } => Admission::TooManyInFlight { limit, rate },
    })
}

async fn create(store: &Arc<dyn Store>, job: &Job) -> Created {
    unlimited(create_with(store, job, Limits::default()).await.unwrap())
}

async fn read(store: &Arc<dyn Store>, owner: &str, id: &str, grace: Duration) -> Option<JobRead> {
    unlimited(store.read(owner, id, grace, None).await.unwrap())
}

async fn purge(store: &Arc<dyn Store>, owner: &str, id: &str) -> bool {
    unlimited(store.purge(owner, id, None).await.unwrap())
}

/// Claims `step` with a 30 s lease and nothing to reserve: it must be acquired.
async fn acquire(store: &Arc<dyn Store>, step: &StepRef) {
    let claim = store
        .claim(step, Duration::from_secs(30), &Reserve::default())
        .await
        .unwrap();
    assert!(matches!(claim, Claim::Acquired { .. }), "{claim:?}");
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
    assert_eq!(create(&store, &j).await, Created::New);
    let mut again = j.clone();
    again.gen = new_gen();
    match create(&store, &again).await {
        Created::Existing(existing) => assert_eq!(*existing, j, "the stored job comes back exactly"),
        other => panic!("expected the existing job, got {other:?}"),
    }
}

async fn create_replaces_a_failed_job(store: Arc<dyn Store>) {
    let mut j = job(&unique("owner"));
    create(&store, &j).await;
    let step = j.step_ref();
    acquire(&store, &step).await;
    let mut failed = j.clone();
    failed.seq = 2;
    failed.state = JobState::Failed;
    failed.error = Some("every provider failed".into());
    assert!(store.finish(&step, &failed, None, None).await.unwrap().written);
    j.gen = new_gen();
    assert_eq!(
        create(&store, &j).await,
        Created::New,
        "a failed job is replaced by a new submit"
    );
    let seen_first = read(&store, &j.owner, &j.id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        (seen_first.job.gen, seen_first.job.state),
        (j.gen.clone(), JobState::Queued)
    );
}

/// A job of an identity with its incarnation in its id (`job::public_id`), as the submit route makes it.
fn incarnation(owner: &str, identity: &str) -> Job {
    let mut j = job(owner);
    j.gen = new_gen();
    j.id = public_id(&job_id(owner, identity), &j.gen);
    j
}

async fn every_new_job_of_an_identity_has_a_new_id(store: Arc<dyn Store>) {
    let owner = unique("owner");
    let first = incarnation(&owner, "commit abc");
    assert_eq!(create(&store, &first).await, Created::New);
    // While it lives, an identical submit meets it: the same id.
    let identical = incarnation(&owner, "commit abc");
    assert_ne!(identical.id, first.id);
    match create(&store, &identical).await {
        Created::Existing(existing) => assert_eq!(existing.id, first.id, "single-flight answers the live job's id"),
        other => panic!("expected the live job, got {other:?}"),
    }
    // Purged (by commit: the record id alone names whichever incarnation), then submitted again.
    assert!(purge(&store, &owner, record_id(&first.id)).await);
    let second = incarnation(&owner, "commit abc");
    assert_eq!(create(&store, &second).await, Created::New);
    assert_ne!(second.id, first.id, "a new job gets a new id");
    assert_eq!(
        record_id(&second.id),
        record_id(&first.id),
        "one record per identity: the dedupe key"
    );
    // The old id names an incarnation that is gone: no job, and the new one is neither read nor purged
    // through it.
    assert!(read(&store, &owner, &first.id, Duration::ZERO).await.is_none());
    assert!(store.peek(&owner, &first.id).await.unwrap().is_none());
    assert!(!purge(&store, &owner, &first.id).await);
    let seen = read(&store, &owner, &second.id, Duration::from_secs(60)).await.unwrap();
    assert_eq!((seen.job.id, seen.job.gen), (second.id.clone(), second.gen.clone()));
    assert_eq!(
        store.peek(&owner, &second.id).await.unwrap().map(|j| j.gen),
        Some(second.gen.clone())
    );
    assert!(purge(&store, &owner, &second.id).await);
}

async fn claim_is_fenced_and_leased(store: Arc<dyn Store>) {
    let j = job(&unique("owner"));
    create(&store, &j).await;
    let step = j.step_ref();
    let mut wrong_seq = step.clone();
    wrong_seq.seq = 7;
    assert!(matches!(
        store
            .claim(&wrong_seq, Duration::from_secs(30), &Reserve::default())
            .await
            .unwrap(),
        Claim::Stale(_)
    ));
    let mut wrong_gen = step.clone();
    wrong_gen.gen = new_gen();
    assert!(matches!(
        store
            .claim(&wrong_gen, Duration::from_secs(30), &Reserve::default())
            .await
            .unwrap(),
        Claim::Stale(_)
    ));
    match store
        .claim(&step, Duration::from_secs(30), &Reserve::default())
        .await
        .unwrap()
    {
        Claim::Acquired { job, .. } => assert_eq!(job, j),
        other => panic!("expected the lease, got {other:?}"),
    }
    assert!(matches!(
        store.claim(&step, Duration::from_secs(30), &Reserve::default()).await.unwrap(),
        Claim::Busy { lease_left } if lease_left <= Duration::from_secs(30) && lease_left > Duration::from_secs(25)
    ));
    let running = read(&store, &j.owner, &j.id, Duration::from_secs(60)).await.unwrap();
    assert!(running.running, "a held lease shows the job as running");
    let mut missing = step.clone();
    missing.job_id = job_id("nobody", "nothing");
    assert_eq!(
        store
            .claim(&missing, Duration::from_secs(30), &Reserve::default())
            .await
            .unwrap(),
        Claim::Missing
    );
}

async fn a_lease_expires(store: Arc<dyn Store>) {
    let j = job(&unique("owner"));
    create(&store, &j).await;
    let step = j.step_ref();
    assert!(matches!(
        store
            .claim(&step, Duration::from_millis(300), &Reserve::default())
            .await
            .unwrap(),
        Claim::Acquired { .. }
    ));
    tokio::time::sleep(Duration::from_millis(450)).await;
    acquire(&store, &step).await;
}

async fn finish_is_fenced(store: Arc<dyn Store>) {
    let j = job(&unique("owner"));
    create(&store, &j).await;
    let step = j.step_ref();
    let mut next = j.clone();
    next.seq = 2;
    next.state = JobState::WaitingForRetry;
    next.next_attempt_at_ms = Some(now() + 5_000);
    assert!(store.finish(&step, &next, None, None).await.unwrap().written);
    let mut late = next.clone();
    late.seq = 3;
    late.state = JobState::Failed;
    assert!(
        !store.finish(&step, &late, None, None).await.unwrap().written,
        "a second finish of the same step is refused"
    );
    let seen = read(&store, &j.owner, &j.id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(seen.job, next, "the refused finish changed nothing");
    let mut gone = j.clone();
    gone.id = job_id("nobody", "never");
    assert!(
        !store.finish(&gone.step_ref(), &gone, None, None).await.unwrap().written,
        "finish never creates a job"
    );
    assert!(read(&store, &gone.owner, &gone.id, Duration::from_secs(1))
        .await
        .is_none());
}

async fn finish_applies_provider_events_like_quota_rs(store: Arc<dyn Store>) {
    let name = unique("provider-");
    let timed = |latency_ms| ProviderEvent {
        latency_ms,
        ..event(&name, None, 0)
    };
    let events = [
        // The latency average: the first success sets it, the next moves it a quarter of the way.
        timed(900),
        timed(500),
        event(&name, Some(ErrorClass::RateLimited), now() + 30_000),
        event(&name, Some(ErrorClass::Overloaded), 0),
        event(&name, Some(ErrorClass::Overloaded), 0),
        event(&name, Some(ErrorClass::InvalidOutput), 0),
        event(&name, Some(ErrorClass::AuthInvalid), 0),
    ];
    let mut expected = ProviderState::default();
    for e in &events {
        let j = job(&unique("owner"));
        create(&store, &j).await;
        let mut next = j.clone();
        next.seq = 2;
        assert!(store.finish(&j.step_ref(), &next, None, Some(e)).await.unwrap().written);
        expected.apply(e);
    }
    let states = store.provider_states().await.unwrap();
    assert_eq!(
        states.get(&name),
        Some(&expected),
        "the store folds events exactly as ProviderState::apply"
    );
    let j = job(&unique("owner"));
    create(&store, &j).await;
    match store
        .claim(&j.step_ref(), Duration::from_secs(30), &Reserve::default())
        .await
        .unwrap()
    {
        Claim::Acquired { providers, .. } => assert_eq!(providers.get(&name), Some(&expected)),
        other => panic!("expected the lease, got {other:?}"),
    }
}

/// Claims that race for a provider's last requests of the minute: each claim reserves a request of the
/// first of its ranked providers that can be called now (counted in the same atomic change), so of eight
/// claims at once only three get the 3-rpm provider; the rest find it full and reserve nothing (their
/// next provider has no shared limit). With no other provider, a claim books the job's turn instead: a
/// tenant's turns a request's share apart from the next minute on, another tenant's first turn at the
/// next minute. A finish of a reserved call does not count it again; a finish of an unreserved one does.
/// A provider cooling down is passed over.
async fn claims_share_a_providers_minute_through_their_reservations(store: Arc<dyn Store>) {
    // Not across a minute's turn: the counts below are one minute's.
    let into_minute = now() % 60_000;
    if into_minute > 50_000 {
        tokio::time::sleep(Duration::from_millis(60_500 - into_minute)).await;
    }
    let limited = unique("limited-");
    let free = unique("free-");
    let day = now() / DAY_MS;
    let limited_one = Reservable {
        name: limited.clone(),
        limits: ProviderLimits {
            rpm: Some(3),
            rpd: Some(100),
            tpm: None,
            reset: ResetClock::UtcMidnight,
        },
        day,
    };
    let both = Reserve {
        providers: vec![
            limited_one.clone(),
            Reservable {
                name: free.clone(),
                limits: ProviderLimits::default(),
                day,
            },
        ],
        tenant: "owner/a".into(),
    };
    let mut jobs = Vec::new();
    for _ in 0..11 {
        let j = job(&unique("owner"));
        create(&store, &j).await;
        jobs.push(j);
    }
    let steps: Vec<StepRef> = jobs.iter().map(Job::step_ref).collect();
    let claims = futures::future::join_all(
        steps[..8]
            .iter()
            .map(|step| store.claim(step, Duration::from_secs(30), &both)),
    )
    .await;
    let mut reserved = Vec::new();
    for claim in claims {
        match claim.unwrap() {
            Claim::Acquired { reservation, .. } => reserved.push(reservation),
            other => panic!("expected the lease, got {other:?}"),
        }
    }
    let took = reserved
        .iter()
        .filter(|r| **r == Reservation::Reserved(limited.clone()))
        .count();
    assert_eq!(
        took, 3,
        "three claims reserve the minute's three requests: {reserved:?}"
    );
    assert!(reserved
        .iter()
        .all(|r| *r == Reservation::None || *r == Reservation::Reserved(limited.clone())));
    let count =
        |states: &std::collections::HashMap<String, ProviderState>| states.get(&limited).map(|s| s.minute_requests);
    assert_eq!(count(&store.provider_states().await.unwrap()), Some(3));

    // Only the full provider left: turns are booked, not requests.
    let next_minute = (now() / 60_000 + 1) * 60_000;
    let only = |tenant: &str| Reserve {
        providers: vec![limited_one.clone()],
        tenant: tenant.into(),
    };
    let mut booked = Vec::new();
    for (step, tenant) in steps[8..].iter().zip(["owner/a", "owner/a", "owner/b"]) {
        match store.claim(step, Duration::from_secs(30), &only(tenant)).await.unwrap() {
            Claim::Acquired {
                reservation: Reservation::Booked { provider, at_ms },
                ..
            } => {
                assert_eq!(provider, limited);
                booked.push(at_ms);
            }
            other => panic!("expected a booked turn, got {other:?}"),
        }
    }
    assert_eq!(
        booked,
        [next_minute, next_minute + 20_000, next_minute],
        "a's turns 20 s apart (3 a minute), b's first at the next minute"
    );

    // A reserved call's finish does not count it again; an unreserved one's does.
    let finish = |j: &Job, reserved: bool| {
        let store = store.clone();
        let j = j.clone();
        let limited = limited.clone();
        async move {
            let mut next = j.clone();
            next.seq += 1;
            let mut e = event(&limited, None, 0);
            e.reserved = reserved;
            assert!(
                store
                    .finish(&j.step_ref(), &next, None, Some(&e))
                    .await
                    .unwrap()
                    .written
            );
        }
    };
    finish(&jobs[0], true).await;
    assert_eq!(count(&store.provider_states().await.unwrap()), Some(3));
    finish(&jobs[1], false).await;
    assert_eq!(count(&store.provider_states().await.unwrap()), Some(4));

    // A finished job's claim (a delivery step) reserves nothing.
    let mut done = jobs[3].clone();
    done.seq += 1;
    done.state = JobState::Succeeded;
    done.deliveries = Vec::new();
    assert!(
        store
            .finish(&jobs[3].step_ref(), &done, None, None)
            .await
            .unwrap()
            .written
    );
    // Room in the minute: only the job's state or the provider's cooldown keeps a claim from reserving.
    let roomy = Reserve {
        providers: vec![Reservable {
            limits: ProviderLimits {
                rpm: Some(1_000),
                ..limited_one.limits
            },
            ..limited_one.clone()
        }],
        tenant: "owner/a".into(),
    };
    match store
        .claim(&done.step_ref(), Duration::from_secs(30), &roomy)
        .await
        .unwrap()
    {
        Claim::Acquired { reservation, .. } => {
            assert_eq!(reservation, Reservation::None, "a delivery step reserves nothing")
        }
        other => panic!("expected the lease, got {other:?}"),
    }

    // Cooling down: passed over for the next provider, which needs no reservation.
    let mut cooling = event(&limited, Some(ErrorClass::RateLimited), now() + 60_000);
    cooling.reserved = true;
    let mut next = jobs[2].clone();
    next.seq += 1;
    assert!(
        store
            .finish(&jobs[2].step_ref(), &next, None, Some(&cooling))
            .await
            .unwrap()
            .written
    );
    let later = job(&unique("owner"));
    create(&store, &later).await;
    match store
        .claim(&later.step_ref(), Duration::from_secs(30), &roomy)
        .await
        .unwrap()
    {
        Claim::Acquired { reservation, .. } => {
            assert_eq!(
                reservation,
                Reservation::None,
                "a provider cooling down is neither reserved nor booked"
            )
        }
        other => panic!("expected the lease, got {other:?}"),
    }
}

/// Submit and poll read what an unfinished job's ETA needs in the script they run anyway:
/// the jobs due ahead of it and every provider's state.
async fn create_and_read_read_what_the_eta_needs(store: Arc<dyn Store>) {
    // Due far past every other case's jobs: counts are compared with the first of these.
    let base = now() + 20 * 86_400_000;
    let owner = unique("eta");
    let provider = unique("provider-");
    let mut expected = ProviderState::default();
    for latency_ms in [1_200, 400] {
        let seed = job(&owner);
        create(&store, &seed).await;
        let mut done = seed.clone();
        done.seq = 2;
        done.state = JobState::Succeeded;
        let e = ProviderEvent {
            latency_ms,
            ..event(&provider, None, 0)
        };
        assert!(
            store
                .finish(&seed.step_ref(), &done, None, Some(&e))
                .await
                .unwrap()
                .written
        );
        expected.apply(&e);
    }
    assert_eq!(expected.latency_ms, 1_000);
    let jobs: Vec<Job> = (0..3).map(|_| job(&owner)).collect();
    let mut ahead = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        // Scores base, base, base + 1 s: the first two tie.
        let enlist = Enlist {
            due_at_ms: base + (i as u64 / 2) * 1_000,
            ..enlist()
        };
        let submitted = unlimited(store.create(j, &enlist, Limits::default()).await.unwrap());
        assert_eq!(submitted.created, Created::New);
        assert_eq!(submitted.standing.providers.get(&provider), Some(&expected));
        ahead.push(submitted.standing.ahead);
    }
    assert_eq!(
        [ahead[1] - ahead[0], ahead[2] - ahead[0]],
        [1, 2],
        "a new job joins the end of the line of those due no later than it"
    );
    let mut ranks = Vec::new();
    for j in &jobs {
        let d = read(&store, &owner, &j.id, Duration::from_secs(60)).await.unwrap();
        assert_eq!(d.standing.providers.get(&provider), Some(&expected));
        ranks.push(d.standing.ahead);
    }
    // On poll, a job's rank in the index: jobs due at the same millisecond keep their arrival order.
    assert_eq!(ranks, [ahead[0], ahead[0] + 1, ahead[0] + 2], "{ahead:?}");
    // And, when it is submitted (met here by an identical submit), the jobs due after its
    // millisecond per horizon: the third job is 1 s after the first two. A poll reads only what stays
    // cheap whatever the backlog (its rank and the provider states).
    let mut again = jobs[0].clone();
    again.gen = new_gen();
    let first = unlimited(store.create(&again, &enlist(), Limits::default()).await.unwrap()).standing;
    assert_eq!(first.due_ms, Some(base));
    assert_eq!(first.later.len(), HORIZONS_MS.len());
    assert_eq!(first.later[..3], [0, 1, 1], "horizons 0, 15 s, 30 s: {:?}", first.later);
    let mut again = jobs[2].clone();
    again.gen = new_gen();
    let last = unlimited(store.create(&again, &enlist(), Limits::default()).await.unwrap()).standing;
    assert_eq!(last.due_ms, Some(base + 1_000));
    assert!(last.later.iter().all(|n| *n == 0), "{:?}", last.later);
    // An identical submit meets the unfinished job with its rank.
    let mut again = jobs[2].clone();
    again.gen = new_gen();
    let met = unlimited(store.create(&again, &enlist(), Limits::default()).await.unwrap());
    assert!(matches!(met.created, Created::Existing(_)));
    assert_eq!(met.standing.ahead, ranks[2]);
    // A finished job needs no ETA: nothing is read for it; the jobs behind it move up.
    let mut done = jobs[0].clone();
    done.seq = 2;
    done.state = JobState::Succeeded;
    assert!(
        store
            .finish(&jobs[0].step_ref(), &done, None, None)
            .await
            .unwrap()
            .written
    );
    let d = read(&store, &owner, &jobs[0].id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(d.standing, Standing::default());
    let d = read(&store, &owner, &jobs[2].id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(d.standing.ahead, ranks[2] - 1);
    // The second of a tie (a fraction of a millisecond later in the index) is still due by its
    // millisecond: keeping the order never delays a sweep.
    assert_eq!(
        due_of(&store, &[jobs[1].id.as_str(), jobs[2].id.as_str()], base).await,
        vec![jobs[1].step_ref()]
    );
    for j in &jobs {
        purge(&store, &owner, &j.id).await;
    }
}

async fn read_is_owner_scoped_and_shortens_a_finished_life(store: Arc<dyn Store>) {
    let j = job(&unique("owner"));
    create(&store, &j).await;
    assert!(read(&store, "someone-else", &j.id, Duration::from_secs(60))
        .await
        .is_none());
    let mut done = j.clone();
    done.seq = 2;
    done.state = JobState::Succeeded;
    done.expires_at_ms = now() + 3_600_000;
    assert!(store.finish(&j.step_ref(), &done, None, None).await.unwrap().written);
    let first = read(&store, &j.owner, &j.id, Duration::from_millis(700)).await.unwrap();
    assert!(!first.running);
    assert_eq!(first.job.state, JobState::Succeeded);
    // A later read with a longer grace does not extend the first deadline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(read(&store, &j.owner, &j.id, Duration::from_secs(60)).await.is_some());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        read(&store, &j.owner, &j.id, Duration::from_secs(60)).await.is_none(),
        "gone after the grace"
    );
}

async fn unfinished_jobs_expire_at_their_expiry(store: Arc<dyn Store>) {
    let mut j = job(&unique("owner"));
    j.expires_at_ms = now() + 400;
    create(&store, &j).await;
    assert!(read(&store, &j.owner, &j.id, Duration::from_secs(60)).await.is_some());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(read(&store, &j.owner, &j.id, Duration::from_secs(60)).await.is_none());
}

/// A record whose absolute expiry is already past would vanish as it is written: every adapter refuses
/// it with `ExpiryInPast` and writes nothing (on Upstash, judged by Redis's own clock).
async fn an_expiry_already_past_is_refused_and_nothing_is_written(store: Arc<dyn Store>) {
    let mut late = job(&unique("owner"));
    late.expires_at_ms = now() - 60_000;
    let refused = create_with(&store, &late, Limits::default()).await;
    assert!(matches!(refused, Err(StoreError::ExpiryInPast(_))), "{refused:?}");
    assert!(read(&store, &late.owner, &late.id, Duration::from_secs(60))
        .await
        .is_none());

    let j = job(&unique("owner"));
    create(&store, &j).await;
    let step = j.step_ref();
    assert!(matches!(
        store
            .claim(&step, Duration::from_secs(5), &Reserve::default())
            .await
            .unwrap(),
        Claim::Acquired { .. }
    ));
    let mut next = j.clone();
    next.seq += 1;
    next.expires_at_ms = now() - 60_000;
    let refused = store.finish(&step, &next, None, None).await;
    assert!(matches!(refused, Err(StoreError::ExpiryInPast(_))), "{refused:?}");
    let kept = read(&store, &j.owner, &j.id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        (kept.job.seq, kept.job.expires_at_ms),
        (j.seq, j.expires_at_ms),
        "nothing was written"
    );
}

async fn purge_is_owner_checked(store: Arc<dyn Store>) {
    let j = job(&unique("owner"));
    create(&store, &j).await;
    assert!(!purge(&store, "someone-else", &j.id).await);
    assert!(read(&store, &j.owner, &j.id, Duration::from_secs(60)).await.is_some());
    assert!(purge(&store, &j.owner, &j.id).await);
    assert!(read(&store, &j.owner, &j.id, Duration::from_secs(60)).await.is_none());
    assert!(!purge(&store, &j.owner, &j.id).await);
}

async fn unfinished_lists_only_unfinished_jobs(store: Arc<dyn Store>) {
    let owner = unique("owner");
    let open = job(&owner);
    let done = job(&owner);
    create(&store, &open).await;
    create(&store, &done).await;
    let mut finished = done.clone();
    finished.seq = 2;
    finished.state = JobState::Succeeded;
    assert!(
        store
            .finish(&done.step_ref(), &finished, None, None)
            .await
            .unwrap()
            .written
    );
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
        tokio::spawn(async move { create(&store, &j).await })
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
        create(&store, &j).await;
        let step = j.step_ref();
        let none = Reserve::default();
        let (a, b) = tokio::join!(
            store.claim(&step, Duration::from_secs(30), &none),
            store.claim(&step, Duration::from_secs(30), &none)
        );
        let acquired = [a.unwrap(), b.unwrap()]
            .iter()
            .filter(|c| matches!(c, Claim::Acquired { .. }))
            .count();
        assert_eq!(acquired, 1);
    }
}

/// Sleeps into a fresh window when fewer than `room_ms` are left in the current one, so a test's
/// requests all fall in one window.
async fn with_room_in_window(window_ms: u64, room_ms: u64) {
    let left = window_ms - now() % window_ms;
    if left < room_ms {
        tokio::time::sleep(Duration::from_millis(left + 20)).await;
    }
}

fn rate(limit: u32, window_ms: u64) -> Limits {
    Limits {
        rate: Some(RateLimit { limit, window_ms }),
        in_flight: None,
    }
}

fn window_of<T: std::fmt::Debug>(admission: &Admission<T>) -> RateWindow {
    match admission {
        Admission::Admitted { rate: Some(w), .. } | Admission::RateLimited(w) => *w,
        other => panic!("expected a counted request, got {other:?}"),
    }
}

async fn requests_past_the_rate_limit_are_refused_and_change_nothing(store: Arc<dyn Store>) {
    let limits = rate(3, 60_000);
    with_room_in_window(60_000, 5_000).await;
    let owner = unique("owner");
    let a = job(&owner);
    let grace = Duration::from_secs(60);
    // Creates count in the owner's window; polls and purges (of a job that is not there, too) in a
    // window of their own, with the same limit.
    let first = create_with(&store, &a, limits).await.unwrap();
    assert!(
        matches!(
            first,
            Admission::Admitted {
                value: Created::New,
                ..
            }
        ),
        "{first:?}"
    );
    assert_eq!(window_of(&first).remaining, 2);
    let second = store.read(&owner, &a.id, grace, limits.rate).await.unwrap();
    assert!(
        matches!(&second, Admission::Admitted { value: Some(d), .. } if d.job == a),
        "{second:?}"
    );
    assert_eq!(window_of(&second).remaining, 2, "a poll is counted apart from creates");
    let third = store
        .purge(&owner, &job_id(&owner, "nothing"), limits.rate)
        .await
        .unwrap();
    assert!(matches!(third, Admission::Admitted { value: false, .. }), "{third:?}");
    assert_eq!(window_of(&third).remaining, 1);
    let fourth = store.read(&owner, &a.id, grace, limits.rate).await.unwrap();
    let w = window_of(&fourth);
    assert_eq!((w.remaining, w.limit), (0, limits.rate.unwrap()));
    assert!(w.resets_in_ms > 0 && w.resets_in_ms <= 60_000, "{w:?}");
    for _ in 0..2 {
        let more = create_with(&store, &job(&owner), limits).await.unwrap();
        assert!(
            matches!(
                more,
                Admission::Admitted {
                    value: Created::New,
                    ..
                }
            ),
            "{more:?}"
        );
    }

    // Over the limit: refused, and nothing is done.
    let b = job(&owner);
    let refused = create_with(&store, &b, limits).await.unwrap();
    assert!(
        matches!(refused, Admission::RateLimited(RateWindow { remaining: 0, .. })),
        "{refused:?}"
    );
    assert!(
        read(&store, &owner, &b.id, grace).await.is_none(),
        "a refused create writes nothing"
    );
    assert!(matches!(
        store.purge(&owner, &a.id, limits.rate).await.unwrap(),
        Admission::RateLimited(_)
    ));
    assert!(
        read(&store, &owner, &a.id, grace).await.is_some(),
        "a refused purge deletes nothing"
    );
    let refused = store.read(&owner, &a.id, grace, limits.rate).await.unwrap();
    assert!(matches!(refused, Admission::RateLimited(_)), "{refused:?}");
    assert!(
        window_of(&refused).resets_in_ms <= w.resets_in_ms,
        "the same window, ending at the same time"
    );

    // Another owner has its own windows.
    let other = create_with(&store, &job(&unique("owner")), limits).await.unwrap();
    assert!(matches!(
        other,
        Admission::Admitted {
            value: Created::New,
            ..
        }
    ));
    assert_eq!(window_of(&other).remaining, 2);
}

async fn a_new_rate_window_starts_afresh(store: Arc<dyn Store>) {
    let limits = rate(2, 1_000);
    // Start right after a window begins, so the first three requests share it.
    tokio::time::sleep(Duration::from_millis(1_000 - now() % 1_000 + 10)).await;
    let owner = unique("owner");
    let id = job_id(&owner, "x");
    for expected_left in [1, 0] {
        let a = store.purge(&owner, &id, limits.rate).await.unwrap();
        assert_eq!(window_of(&a).remaining, expected_left, "{a:?}");
    }
    assert!(matches!(
        store.purge(&owner, &id, limits.rate).await.unwrap(),
        Admission::RateLimited(_)
    ));
    tokio::time::sleep(Duration::from_millis(1_000 - now() % 1_000 + 10)).await;
    let next = store.purge(&owner, &id, limits.rate).await.unwrap();
    assert!(matches!(next, Admission::Admitted { value: false, .. }), "{next:?}");
    assert_eq!(window_of(&next).remaining, 1);
}

fn cap(n: u32) -> Limits {
    Limits {
        rate: None,
        in_flight: Some(n),
    }
}

async fn the_in_flight_cap_refuses_new_jobs_and_frees_slots_on_finish_and_purge(store: Arc<dyn Store>) {
    let owner = unique("owner");
    let (a, b, c, d) = (job(&owner), job(&owner), job(&owner), job(&owner));
    let grace = Duration::from_secs(60);
    assert_eq!(unlimited(create_with(&store, &a, cap(2)).await.unwrap()), Created::New);
    assert_eq!(unlimited(create_with(&store, &b, cap(2)).await.unwrap()), Created::New);
    let refused = create_with(&store, &c, cap(2)).await.unwrap();
    assert_eq!(refused, Admission::TooManyInFlight { limit: 2, rate: None });
    assert!(
        read(&store, &owner, &c.id, grace).await.is_none(),
        "a refused create writes nothing"
    );
    // An identical submit at the cap still meets its job, as before, and takes no second slot.
    let mut again = a.clone();
    again.gen = new_gen();
    assert!(
        matches!(unlimited(create_with(&store, &again, cap(2)).await.unwrap()), Created::Existing(j) if j.gen == a.gen)
    );
    // Another owner is not affected.
    assert_eq!(
        unlimited(create_with(&store, &job(&unique("owner")), cap(2)).await.unwrap()),
        Created::New
    );

    // A step that leaves the job unfinished keeps its slot; finishing it frees the slot.
    let mut waiting = a.clone();
    waiting.seq = 2;
    waiting.state = JobState::WaitingForRetry;
    assert!(store.finish(&a.step_ref(), &waiting, None, None).await.unwrap().written);
    assert!(matches!(
        create_with(&store, &c, cap(2)).await.unwrap(),
        Admission::TooManyInFlight { .. }
    ));
    let mut done = waiting.clone();
    done.seq = 3;
    done.state = JobState::Succeeded;
    assert!(
        store
            .finish(&waiting.step_ref(), &done, None, None)
            .await
            .unwrap()
            .written
    );
    assert_eq!(unlimited(create_with(&store, &c, cap(2)).await.unwrap()), Created::New);
    // A finished job met again at the cap is still the cached answer.
    assert!(
        matches!(unlimited(create_with(&store, &a, cap(2)).await.unwrap()), Created::Existing(j) if j.state == JobState::Succeeded)
    );

    // Purging an unfinished job frees its slot; purging a finished one changes no count.
    assert!(matches!(
        create_with(&store, &d, cap(2)).await.unwrap(),
        Admission::TooManyInFlight { .. }
    ));
    assert!(purge(&store, &owner, &a.id).await);
    assert!(matches!(
        create_with(&store, &d, cap(2)).await.unwrap(),
        Admission::TooManyInFlight { .. }
    ));
    assert!(purge(&store, &owner, &b.id).await);
    assert_eq!(unlimited(create_with(&store, &d, cap(2)).await.unwrap()), Created::New);

    // A failed job frees its slot, and its replacement takes one.
    let mut failed = c.clone();
    failed.seq = 2;
    failed.state = JobState::Failed;
    assert!(store.finish(&c.step_ref(), &failed, None, None).await.unwrap().written);
    let mut retry = c.clone();
    retry.gen = new_gen();
    assert_eq!(
        unlimited(create_with(&store, &retry, cap(2)).await.unwrap()),
        Created::New
    );
    assert!(matches!(
        create_with(&store, &job(&owner), cap(2)).await.unwrap(),
        Admission::TooManyInFlight { .. }
    ));
}

async fn a_job_that_expires_unfinished_frees_its_slot(store: Arc<dyn Store>) {
    let owner = unique("owner");
    let mut short = job(&owner);
    short.expires_at_ms = now() + 400;
    assert_eq!(
        unlimited(create_with(&store, &short, cap(1)).await.unwrap()),
        Created::New
    );
    let next = job(&owner);
    assert!(matches!(
        create_with(&store, &next, cap(1)).await.unwrap(),
        Admission::TooManyInFlight { .. }
    ));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        unlimited(create_with(&store, &next, cap(1)).await.unwrap()),
        Created::New,
        "no slot is held past expiry"
    );
}

async fn concurrent_requests_never_pass_the_limits(store: Arc<dyn Store>) {
    let owner = unique("owner");
    let creates = (0..20).map(|_| {
        let (store, j) = (store.clone(), job(&owner));
        tokio::spawn(async move { create_with(&store, &j, cap(5)).await.unwrap() })
    });
    let results = futures::future::join_all(creates).await;
    let new = results
        .iter()
        .filter(|r| {
            matches!(
                r.as_ref().unwrap(),
                Admission::Admitted {
                    value: Created::New,
                    ..
                }
            )
        })
        .count();
    let refused = results
        .iter()
        .filter(|r| matches!(r.as_ref().unwrap(), Admission::TooManyInFlight { .. }))
        .count();
    assert_eq!(
        (new, refused),
        (5, 15),
        "exactly the cap of 20 concurrent submits get in"
    );

    with_room_in_window(60_000, 5_000).await;
    let limits = rate(7, 60_000);
    let polls = (0..20).map(|_| {
        let (store, owner) = (store.clone(), owner.clone());
        tokio::spawn(async move {
            store
                .read(&owner, "none", Duration::from_secs(1), limits.rate)
                .await
                .unwrap()
        })
    });
    let results = futures::future::join_all(polls).await;
    let admitted = results
        .iter()
        .filter(|r| matches!(r.as_ref().unwrap(), Admission::Admitted { .. }))
        .count();
    assert_eq!(admitted, 7, "exactly the limit of 20 concurrent polls get in");
}

/// One sweep, as the engine makes it (`take_over` with a fresh token unless one is given).
async fn sweep_at(store: &Arc<dyn Store>, (token, round): (&str, u64), take_over: bool, at: u64) -> Swept {
    store
        .sweep(&SweepRequest {
            token,
            round,
            take_over,
            now_ms: at,
            limit: 10_000,
            requeue_at_ms: at + 30_000,
            token_life: Duration::from_secs(60),
        })
        .await
        .unwrap()
}

/// The steps of `ids` a sweep at `at` found due (other cases' jobs share the store's index).
async fn due_of(store: &Arc<dyn Store>, ids: &[&str], at: u64) -> Vec<StepRef> {
    match sweep_at(store, (&new_gen(), 0), true, at).await {
        Swept::Due { steps, .. } => steps.into_iter().filter(|s| ids.contains(&s.job_id.as_str())).collect(),
        Swept::Stale => panic!("a take-over sweep is never stale"),
    }
}

/// The origins' states as a claim sees them (a fresh job of `owner`, claimed).
async fn origins_seen(store: &Arc<dyn Store>, owner: &str) -> HashMap<String, OriginState> {
    let reader = job(owner);
    create(store, &reader).await;
    match store
        .claim(&reader.step_ref(), Duration::from_secs(30), &Reserve::default())
        .await
        .unwrap()
    {
        Claim::Acquired { origins, .. } => origins,
        other => panic!("expected the claim, got {other:?}"),
    }
}

/// A finished job of `owner` that owes a webhook to `url`, its attempt failed, due again at `due`.
async fn waiting_on(store: &Arc<dyn Store>, owner: &str, url: &str, due: u64) -> Job {
    let j = job(owner);
    create(store, &j).await;
    let mut next = j.clone();
    next.seq = 2;
    next.state = JobState::Succeeded;
    next.finished_at_ms = Some(now());
    next.next_attempt_at_ms = Some(due);
    let waiting = DeliveryState {
        target: Target::webhook(url.to_string()),
        status: DeliveryStatus::Pending,
        attempts: 1,
        round_attempts: 1,
        redeliveries: 0,
        last_status: None,
        last_error: Some("connection refused".into()),
        next_at_ms: Some(due),
        done_at_ms: None,
        last_at_ms: Some(now()),
        waits_origin: true,
    };
    next.deliveries = vec![waiting];
    assert!(
        store
            .finish(&j.step_ref(), &next, Some(due), None)
            .await
            .unwrap()
            .written
    );
    next
}

/// The receiver-recovery fast path's shared state (domain/origins.rs): a failing origin is marked down
/// with one probe holder whose failed probes move the probe on by the back-off, exactly as
/// `origins::mark_down` says; a success marks it up once and wakes every job waiting on it (moved in
/// the due-index, earlier only, answered with its current step); a dead holder releases the probe.
async fn a_failing_origin_is_probed_by_one_delivery_and_woken_by_a_success(store: Arc<dyn Store>) {
    let owner = unique("origins");
    let origin = format!("http://{}.example:8080", unique("o"));
    let url = format!("{origin}/hook?token=t");
    let t = now();
    let a = waiting_on(&store, &owner, &url, t + 300_000).await;
    let b = waiting_on(&store, &owner, &url, t + 300_000).await;
    let mut mirror: HashMap<String, OriginState> = origins_seen(&store, &owner).await;
    assert!(!mirror.contains_key(&origin), "no state before a failure");
    fn down<'a>(
        origin: &'a str,
        owner: &'a str,
        j: &'a Job,
        waits: Option<u64>,
        probed: bool,
        at: u64,
    ) -> OriginDown<'a> {
        OriginDown {
            origin,
            owner,
            job_id: &j.id,
            holder: "",
            waits_until_ms: waits,
            probed,
            now_ms: at,
        }
    }
    let holder_a = origins::holder_of(&a.id, 0);
    let holder_b = origins::holder_of(&b.id, 0);
    // (job, its holder name, waits until, probed, at, the probe time expected)
    type Call<'a> = (&'a Job, &'a str, Option<u64>, bool, u64, Option<u64>);
    let steps: [Call; 3] = [
        (&a, &holder_a, Some(t + 300_000), false, t, Some(t + 5_000)),
        (&b, &holder_b, Some(t + 300_000), false, t + 100, None),
        (&a, &holder_a, Some(t + 300_000), true, t + 70_000, Some(t + 80_000)),
    ];
    for (j, holder, waits, probed, at, expected) in steps {
        let answer = store
            .origin_down(&OriginDown {
                holder,
                ..down(&origin, &owner, j, waits, probed, at)
            })
            .await
            .unwrap();
        let (_, mirrored) = origins::mark_down(&mut mirror, &origin, holder, waits.is_some(), probed, at);
        assert_eq!((answer, mirrored), (expected, expected), "{holder} at +{}", at - t);
    }
    let seen = origins_seen(&store, &owner).await;
    assert_eq!(
        seen.get(&origin),
        mirror.get(&origin),
        "the store's state is origins.rs's"
    );
    assert_eq!(
        seen[&origin],
        OriginState {
            down_since_ms: t,
            holder: holder_a.clone(),
            probe_at_ms: t + 80_000,
            probe_until_ms: t + 80_000 + origins::PROBE_LEASE_MS,
            probes_failed: 1,
            up_at_ms: 0,
        }
    );
    assert!(
        due_of(&store, &[&a.id, &b.id], t + 40_000).await.is_empty(),
        "waiting out their schedule"
    );

    // A success: marked up once, both jobs due at once with their current steps.
    let mut woken = store.origin_up(&origin, &owner, t + 90_000, t + 35_000).await.unwrap();
    woken.sort_by(|x, y| x.job_id.cmp(&y.job_id));
    let mut expected = vec![a.step_ref(), b.step_ref()];
    expected.sort_by(|x, y| x.job_id.cmp(&y.job_id));
    assert_eq!(woken, expected);
    assert!(origins::mark_up(&mut mirror, &origin, t + 90_000));
    assert_eq!(origins_seen(&store, &owner).await.get(&origin), mirror.get(&origin));
    let mut due = due_of(&store, &[&a.id, &b.id], t + 35_001).await;
    due.sort_by(|x, y| x.job_id.cmp(&y.job_id));
    assert_eq!(due, expected, "moved in the due-index");
    assert!(
        store
            .origin_up(&origin, &owner, t + 91_000, t + 35_000)
            .await
            .unwrap()
            .is_empty(),
        "once: the origin is up"
    );

    // A new outage counts its probes afresh; a dead holder releases the probe.
    let fresh = store
        .origin_down(&OriginDown {
            holder: &holder_b,
            ..down(&origin, &owner, &b, Some(t + 400_000), false, t + 100_000)
        })
        .await
        .unwrap();
    assert_eq!(fresh, Some(t + 105_000));
    let released = store
        .origin_down(&OriginDown {
            holder: &holder_b,
            ..down(&origin, &owner, &b, None, true, t + 105_000)
        })
        .await
        .unwrap();
    assert_eq!(released, None);
    let seen = origins_seen(&store, &owner).await;
    assert!(seen[&origin].is_down() && seen[&origin].holder.is_empty(), "{seen:?}");
    assert_eq!(seen[&origin].up_at_ms, t + 90_000);
    // Nothing waits on it any more (b died, a was woken): a success wakes nobody.
    assert!(store
        .origin_up(&origin, &owner, t + 106_000, t + 35_000)
        .await
        .unwrap()
        .is_empty());
}

/// Runs first, on an empty store: the sweeper is armed by the create that finds none; its key names
/// the one live chain and the round of its next message, so another chain or a duplicate delivery
/// stops at once; it is released when the index empties (so an idle store sweeps nothing).
async fn the_sweeper_lives_only_while_the_index_holds_jobs(store: Arc<dyn Store>) {
    assert_eq!(
        sweep_at(&store, ("nobody", 1), false, now()).await,
        Swept::Due {
            steps: vec![],
            left: 0,
            next_due_ms: None,
            next_round: 2,
            stranded: 0,
        },
        "a message that finds no chain takes it over (a late message never ends a chain); an empty index keeps none"
    );
    let (a, b) = (job(&unique("owner")), job(&unique("owner")));
    let first = unlimited(store.create(&a, &enlist(), Limits::default()).await.unwrap());
    let token = first.arm_sweeper.expect("the first create arms the sweeper");
    let second = unlimited(store.create(&b, &enlist(), Limits::default()).await.unwrap());
    assert_eq!(second.arm_sweeper, None, "one sweeper at a time");
    assert_eq!(sweep_at(&store, ("another", 1), false, now()).await, Swept::Stale);
    match sweep_at(&store, (&token, 1), false, now()).await {
        Swept::Due {
            steps,
            left,
            next_due_ms,
            next_round,
            ..
        } => {
            assert!(steps.is_empty(), "nothing is due before its grace: {steps:?}");
            assert_eq!((left, next_round), (2, 2));
            assert!(next_due_ms.is_some_and(|at| at > now() + 20_000), "{next_due_ms:?}");
        }
        Swept::Stale => panic!("the armed token sweeps"),
    }
    assert_eq!(
        sweep_at(&store, (&token, 1), false, now()).await,
        Swept::Stale,
        "a duplicate delivery of round 1 stops"
    );
    match sweep_at(&store, (&token, 2), false, now() + 31_000).await {
        Swept::Due {
            mut steps,
            left,
            stranded,
            ..
        } => {
            steps.sort_by(|x, y| x.job_id.cmp(&y.job_id));
            let mut want = vec![a.step_ref(), b.step_ref()];
            want.sort_by(|x, y| x.job_id.cmp(&y.job_id));
            assert_eq!((steps, left), (want, 2), "due jobs come back with their current step");
            assert_eq!(stranded, 2, "queued and never claimed in a whole grace: stranded");
        }
        Swept::Stale => panic!("round 2 is the live one"),
    }
    assert!(purge(&store, &a.owner, &a.id).await && purge(&store, &b.owner, &b.id).await);
    assert_eq!(
        sweep_at(&store, (&token, 3), false, now()).await,
        Swept::Due {
            steps: vec![],
            left: 0,
            next_due_ms: None,
            next_round: 4,
            stranded: 0,
        }
    );
    assert!(
        matches!(
            sweep_at(&store, (&token, 4), false, now()).await,
            Swept::Due { left: 0, .. }
        ),
        "an empty index released the sweeper: a later message finds nothing to do, and the chain ends"
    );
    let c = job(&unique("owner"));
    let again = unlimited(store.create(&c, &enlist(), Limits::default()).await.unwrap());
    assert!(again.arm_sweeper.is_some(), "the next create arms a new sweeper");
    assert!(purge(&store, &c.owner, &c.id).await);
}

/// Create, claim, finish and purge keep the job's due score, in the scripts they already run.
async fn the_due_index_follows_the_job(store: Arc<dyn Store>) {
    let j = job(&unique("owner"));
    let t = now();
    create(&store, &j).await;
    let ids = [j.id.as_str()];
    assert!(
        due_of(&store, &ids, t + 20_000).await.is_empty(),
        "queued: due a grace after now"
    );
    assert_eq!(due_of(&store, &ids, t + 31_000).await, vec![j.step_ref()]);
    // The sweep moved it a grace on: not due again until then.
    assert!(due_of(&store, &ids, t + 40_000).await.is_empty());
    assert_eq!(due_of(&store, &ids, t + 61_000).await, vec![j.step_ref()]);

    // A claim moves it to the lease's end (the step's caller may die, or give up on a late answer).
    let step = j.step_ref();
    assert!(matches!(
        store
            .claim(&step, Duration::from_secs(120), &Reserve::default())
            .await
            .unwrap(),
        Claim::Acquired { .. }
    ));
    let t = now();
    assert!(due_of(&store, &ids, t + 100_000).await.is_empty(), "leased");
    assert_eq!(due_of(&store, &ids, t + 121_000).await, vec![step.clone()]);

    // Finish moves it to the next attempt (a parked wait), and takes it out when the job is done.
    let mut waiting = j.clone();
    waiting.seq = 2;
    waiting.state = JobState::WaitingForRetry;
    waiting.next_attempt_at_ms = Some(t + 3_600_000);
    assert!(
        store
            .finish(&step, &waiting, Some(t + 3_600_000), None)
            .await
            .unwrap()
            .written
    );
    assert!(
        due_of(&store, &ids, t + 3_599_000).await.is_empty(),
        "parked until its attempt"
    );
    assert_eq!(due_of(&store, &ids, t + 3_600_000).await, vec![waiting.step_ref()]);
    let mut done = waiting.clone();
    done.seq = 3;
    done.state = JobState::Succeeded;
    assert!(
        store
            .finish(&waiting.step_ref(), &done, None, None)
            .await
            .unwrap()
            .written
    );
    assert!(
        due_of(&store, &ids, u64::MAX / 2).await.is_empty(),
        "a finished job leaves the index"
    );

    // A purged job leaves it too.
    let p = job(&unique("owner"));
    create(&store, &p).await;
    assert!(purge(&store, &p.owner, &p.id).await);
    assert!(due_of(&store, &[p.id.as_str()], u64::MAX / 2).await.is_empty());
}

/// A job that expires unfinished leaves no index entry behind: the sweep drops it when it meets it.
async fn an_expired_job_leaves_no_index_entry(store: Arc<dyn Store>) {
    let before = match sweep_at(&store, (&new_gen(), 0), true, now()).await {
        Swept::Due { left, .. } => left,
        Swept::Stale => unreachable!(),
    };
    let mut short = job(&unique("owner"));
    short.expires_at_ms = now() + 300;
    create(&store, &short).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids = [short.id.as_str()];
    assert!(
        due_of(&store, &ids, u64::MAX / 2).await.is_empty(),
        "an expired job is never swept"
    );
    match sweep_at(&store, (&new_gen(), 0), true, now()).await {
        Swept::Due { left, .. } => assert!(left <= before, "its entry is gone ({left} > {before})"),
        Swept::Stale => unreachable!(),
    }
    // A claim that meets a vanished job drops its entry as well.
    let mut gone = job(&unique("owner"));
    gone.expires_at_ms = now() + 300;
    create(&store, &gone).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        store
            .claim(&gone.step_ref(), Duration::from_secs(5), &Reserve::default())
            .await
            .unwrap(),
        Claim::Missing
    );
}

/// One finish with `e` on a fresh job; the incidents it reported.
async fn finish_with(store: &Arc<dyn Store>, e: &ProviderEvent) -> Vec<Incident> {
    let j = job(&unique("owner"));
    create(store, &j).await;
    let mut next = j.clone();
    next.seq = 2;
    let outcome = store.finish(&j.step_ref(), &next, None, Some(e)).await.unwrap();
    assert!(outcome.written);
    outcome.alerts.into_iter().map(|a| a.incident).collect()
}

fn ruled(mut e: ProviderEvent, providers: &[&str], at: u64) -> ProviderEvent {
    e.alerts = AlertRules {
        providers: providers.iter().map(|p| p.to_string()).collect(),
        window_ms: 60_000,
    };
    e.now_ms = at;
    e
}

async fn finish_reports_each_incident_once(store: Arc<dyn Store>) {
    let (a, b, c) = (unique("alert-a-"), unique("alert-b-"), unique("alert-c-"));
    let peers = [a.as_str(), b.as_str()];
    let t = now();
    // A revoked key: critical, once, however many workers meet it at once.
    let revoked = ruled(event(&a, Some(ErrorClass::AuthInvalid), 0), &peers, t);
    let reports = futures::future::join_all((0..8).map(|_| finish_with(&store, &revoked))).await;
    let all: Vec<Incident> = reports.into_iter().flatten().collect();
    assert_eq!(
        all,
        vec![Incident::ProviderDisabled {
            provider: a.clone(),
            reason: "auth_invalid: 401 bad key".into()
        }],
        "eight concurrent finishes, one incident"
    );
    // The other provider rate-limited too: every provider unusable, with the first return.
    let limited = ruled(event(&b, Some(ErrorClass::RateLimited), t + 30_000), &peers, t);
    assert_eq!(
        finish_with(&store, &limited).await,
        vec![Incident::AllProvidersUnusable {
            eta_ms: Some(t + 30_000)
        }]
    );
    assert_eq!(finish_with(&store, &limited).await, vec![], "raised once");
    let back = ruled(event(&b, None, 0), &peers, t + 31_000);
    assert_eq!(
        finish_with(&store, &back).await,
        vec![Incident::ProvidersRecovered { provider: b.clone() }]
    );
    assert_eq!(finish_with(&store, &back).await, vec![], "cleared once");
    // A flapping circuit: opened and closed (each told once), opened and closed again inside the window (held
    // back), opened after it (summarised: one held back).
    let overload = |at: u64| ruled(event(&c, Some(ErrorClass::Overloaded), 0), &[], at);
    let threshold = BackoffPolicy::default().circuit_threshold;
    let mut opened = Vec::new();
    for _ in 0..threshold {
        opened.extend(finish_with(&store, &overload(t)).await);
    }
    assert!(
        matches!(opened.as_slice(), [Incident::CircuitOpened { provider, failures, .. }] if *provider == c && *failures == threshold),
        "{opened:?}"
    );
    let close = |at: u64| ruled(event(&c, None, 0), &[], at);
    assert_eq!(
        finish_with(&store, &close(t + 1_000)).await,
        vec![Incident::CircuitClosed { provider: c.clone() }],
        "its recovery, once"
    );
    assert_eq!(finish_with(&store, &close(t + 1_100)).await, vec![]);
    // Opened again inside the window: held back, and so is its closing.
    let mut held = Vec::new();
    for _ in 0..threshold {
        held.extend(finish_with(&store, &overload(t + 2_000)).await);
    }
    held.extend(finish_with(&store, &close(t + 3_000)).await);
    assert_eq!(held, vec![], "inside the window");
    let later = t + 61_000;
    let mut reopened = Vec::new();
    let mut suppressed = Vec::new();
    for _ in 0..threshold {
        let j = job(&unique("owner"));
        create(&store, &j).await;
        let mut next = j.clone();
        next.seq = 2;
        let out = store
            .finish(&j.step_ref(), &next, None, Some(&overload(later)))
            .await
            .unwrap();
        suppressed.extend(out.alerts.iter().map(|a| a.suppressed));
        reopened.extend(out.alerts.into_iter().map(|a| a.incident));
    }
    assert!(
        matches!(reopened.as_slice(), [Incident::CircuitOpened { .. }]),
        "{reopened:?}"
    );
    assert_eq!(suppressed, vec![1], "the opening held back in the window is counted");
}

async fn overview(store: &Arc<dyn Store>, owner: &str, bounds: OverviewBounds) -> Overview {
    unlimited(store.overview(owner, bounds, None).await.unwrap())
}

/// Today's attempts of one provider, as (outcome, count).
fn attempts_of(overview: &Overview, provider: &str) -> Vec<(String, u64)> {
    overview
        .attempts_today
        .iter()
        .filter(|a| a.provider == provider)
        .map(|a| (a.outcome.clone(), a.count))
        .collect()
}

/// Ends `j`'s first step in `state`, with `event` and `deliveries`.
async fn finish_as(
    store: &Arc<dyn Store>,
    j: &Job,
    state: JobState,
    event: Option<&ProviderEvent>,
    deliveries: Vec<DeliveryState>,
) -> Job {
    let mut next = j.clone();
    next.seq = 2;
    next.state = state;
    next.deliveries = deliveries;
    let due = (!state.is_finished()).then(|| now() + 30_000);
    if state.is_finished() {
        next.finished_at_ms = Some(now());
    } else {
        next.next_attempt_at_ms = due;
    }
    assert!(store.finish(&j.step_ref(), &next, due, event).await.unwrap().written);
    next
}

/// `GET /v1/jobs`' read: the owner's unfinished jobs by state (a step's lease makes one active), the
/// oldest first, jobs finished today, dead letters, today's provider attempts by outcome; owner-scoped,
/// bounded, counted like a poll.
async fn the_overview_counts_what_the_owner_holds(store: Arc<dyn Store>) {
    let day = now() / DAY_MS;
    let owner = unique("overview");
    let provider = unique("provider-");
    let bounds = OverviewBounds {
        scan: 100,
        oldest: 2,
        dead: 5,
        tenants: 10,
    };
    let empty = overview(&store, &owner, bounds).await;
    assert_eq!(
        (empty.unfinished, empty.counted, empty.oldest.len(), empty.dead_lettered),
        (0, 0, 0, 0)
    );
    assert!(attempts_of(&empty, &provider).is_empty());

    // Three unfinished jobs, submitted in this order: queued, then one a step is running, then one delayed.
    let mut jobs = Vec::new();
    for age in [3_000, 2_000, 1_000] {
        let mut j = job(&owner);
        j.created_at_ms -= age;
        jobs.push(j);
    }
    // Their tenants: the first names tenant t1 (after an empty tenantId, the userId); the second t1 by
    // its tenantId; the third none, though its prompt, its schema and its metadata hold tenant-like keys
    // (the overview reads the spec's context, nothing else).
    jobs[0].spec.context = serde_json::json!({"tenantId": "", "userId": "t1", "metadata": {"tenantId": "m"}})
        .as_object()
        .cloned()
        .unwrap();
    jobs[1].spec.context = serde_json::json!({"tenantId": "t1"}).as_object().cloned().unwrap();
    jobs[2].spec.messages = vec![ChatMessage::user(
        r#"{"spec":{"context":{"tenantId":"prompt"}}} \"tenantId\":"#,
    )];
    jobs[2].spec.format = ResponseFormat::Json {
        schema: Some(std::sync::Arc::new(
            serde_json::json!({"examples": [{"context": {"tenantId": "schema"}}], "tenantId": "s"}),
        )),
    };
    jobs[2].spec.context = serde_json::json!({"metadata": {"tenantId": "m", "userId": "m"}})
        .as_object()
        .cloned()
        .unwrap();
    for j in &jobs {
        create(&store, j).await;
    }
    let (queued, running, delayed) = (&jobs[0], &jobs[1], &jobs[2]);
    acquire(&store, &running.step_ref()).await;
    let limited = event(&provider, Some(ErrorClass::RateLimited), now() + 30_000);
    finish_as(&store, delayed, JobState::WaitingForRetry, Some(&limited), vec![]).await;
    // Three finished: completed, failed, completed with its webhook dead-lettered.
    let (done, failed, dead) = (job(&owner), job(&owner), job(&owner));
    for j in [&done, &failed, &dead] {
        create(&store, j).await;
    }
    finish_as(
        &store,
        &done,
        JobState::Succeeded,
        Some(&event(&provider, None, 0)),
        vec![],
    )
    .await;
    let overloaded = event(&provider, Some(ErrorClass::Overloaded), 0);
    finish_as(&store, &failed, JobState::Failed, Some(&overloaded), vec![]).await;
    let letter = DeliveryState {
        target: Target::webhook("https://hooks.example/down".into()),
        status: DeliveryStatus::Dead,
        attempts: 8,
        round_attempts: 8,
        redeliveries: 0,
        last_status: Some(503),
        last_error: Some("HTTP 503".into()),
        next_at_ms: None,
        done_at_ms: Some(now()),
        last_at_ms: None,
        waits_origin: false,
    };
    let dead = finish_as(&store, &dead, JobState::Succeeded, None, vec![letter]).await;

    let seen = overview(&store, &owner, bounds).await;
    assert_eq!(
        (seen.unfinished, seen.counted, seen.waiting, seen.active, seen.delayed),
        (3, 3, 1, 1, 1),
        "{seen:?}"
    );
    let oldest: Vec<(&str, bool)> = seen.oldest.iter().map(|d| (d.job.id.as_str(), d.running)).collect();
    assert_eq!(
        oldest,
        vec![(queued.id.as_str(), false), (running.id.as_str(), true)],
        "the oldest first, bounded"
    );
    assert_eq!(seen.oldest[0].job, *queued, "whole records");
    let tenant = |name: Option<&str>, unfinished, running| TenantCount {
        tenant: name.map(str::to_string),
        unfinished,
        running,
    };
    assert_eq!(
        seen.tenants,
        vec![tenant(Some("t1"), 2, 1), tenant(None, 1, 0)],
        "by tenant, the most unfinished first"
    );
    assert_eq!((seen.dead_lettered, seen.dead_letters.clone()), (1, vec![dead.clone()]));
    if now() / DAY_MS == day {
        assert_eq!((seen.completed_today, seen.failed_today), (2, 1));
        assert_eq!(
            attempts_of(&seen, &provider),
            vec![
                ("ok".to_string(), 1),
                ("overloaded".to_string(), 1),
                ("rate_limited".to_string(), 1)
            ]
        );
        assert!(seen.attempts_today.windows(2).all(|w| w[0] <= w[1]), "sorted");
        assert!(seen.attempts_today.contains(&AttemptCount {
            provider: provider.clone(),
            outcome: "ok".into(),
            count: 1
        }));
    }

    // Another owner sees none of it (but the same providers' attempts: providers are shared).
    let other = overview(&store, &unique("stranger"), bounds).await;
    assert_eq!(
        (
            other.unfinished,
            other.dead_lettered,
            other.completed_today,
            other.failed_today
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(attempts_of(&other, &provider), attempts_of(&seen, &provider));

    // The scan is bounded: counted over the oldest one only, the total still known.
    let one = overview(
        &store,
        &owner,
        OverviewBounds {
            scan: 1,
            oldest: 5,
            dead: 0,
            tenants: 10,
        },
    )
    .await;
    assert_eq!(
        one.tenants,
        vec![tenant(Some("t1"), 1, 0)],
        "over the counted jobs only"
    );
    let top = overview(&store, &owner, OverviewBounds { tenants: 1, ..bounds }).await;
    assert_eq!(
        top.tenants,
        vec![tenant(Some("t1"), 2, 1)],
        "the most unfinished tenants only"
    );
    assert_eq!(
        (
            one.unfinished,
            one.counted,
            one.waiting,
            one.oldest.len(),
            one.dead_lettered,
            one.dead_letters.len()
        ),
        (3, 1, 1, 1, 1, 0)
    );

    // A job that finishes leaves the unfinished ones; a purge takes a dead letter away; redelivered
    // (pending again), a dead letter is no longer one.
    finish_as(&store, queued, JobState::Succeeded, None, vec![]).await;
    let mut again = dead.clone();
    again.seq = 3;
    again.deliveries[0].status = DeliveryStatus::Pending;
    assert!(
        store
            .finish(&dead.step_ref(), &again, Some(now()), None)
            .await
            .unwrap()
            .written
    );
    let later = overview(&store, &owner, bounds).await;
    assert_eq!((later.unfinished, later.dead_lettered), (2, 0), "{later:?}");
    let mut dead_again = again.clone();
    dead_again.seq = 4;
    dead_again.deliveries[0].status = DeliveryStatus::Dead;
    assert!(
        store
            .finish(&again.step_ref(), &dead_again, None, None)
            .await
            .unwrap()
            .written
    );
    assert_eq!(overview(&store, &owner, bounds).await.dead_lettered, 1);
    assert!(purge(&store, &owner, &dead.id).await);
    assert!(purge(&store, &owner, &running.id).await);
    let last = overview(&store, &owner, bounds).await;
    assert_eq!((last.unfinished, last.dead_lettered), (1, 0), "{last:?}");
    if now() / DAY_MS == day {
        assert_eq!(
            (last.completed_today, last.failed_today),
            (3, 1),
            "a purge does not unfinish a job"
        );
    }

    // Counted against the owner's rate window like a poll.
    with_room_in_window(60_000, 2_000).await;
    let limited = rate(1, 60_000);
    assert!(matches!(
        store.overview(&owner, bounds, limited.rate).await.unwrap(),
        Admission::Admitted { rate: Some(_), .. }
    ));
    assert!(matches!(
        store.overview(&owner, bounds, limited.rate).await.unwrap(),
        Admission::RateLimited(_)
    ));
}

/// What one scope's month bucket holds in a read.
fn month_of(spent: &Spent, owner: Option<&str>) -> Tally {
    match owner {
        None => spent.month.total,
        Some(o) => spent.month.owners.get(o).copied().unwrap_or_default(),
    }
}

fn minus(after: Tally, before: Tally) -> Tally {
    Tally {
        jobs: after.jobs - before.jobs,
        store_commands: after.store_commands - before.store_commands,
        lambda_invocations: after.lambda_invocations - before.lambda_invocations,
        sqs_requests: after.sqs_requests - before.sqs_requests,
    }
}

/// Every call counts what it spends in the same request (on Upstash inside the command that counts the
/// request against its owner's limits; a claim's with the finish of its step), what `Charge::aws` says it
/// implies on AWS and a job per new create, for the deployment and for its owner; an owner's read sees
/// only its own fields.
async fn the_budget_counts_every_call_in_the_call_itself(store: Arc<dyn Store>) {
    let owner = unique("budget");
    // Every script once, so that none is loaded (and billed twice) inside the measured stretch.
    store.provider_states().await.unwrap();
    store.spent(&owner, false).await.unwrap();
    let before = store.spent(&owner, true).await.unwrap();

    let j = job(&owner);
    assert_eq!(create(&store, &j).await, Created::New);
    let mut again = j.clone();
    again.gen = new_gen();
    assert!(
        matches!(create(&store, &again).await, Created::Existing(_)),
        "no second job"
    );
    acquire(&store, &j.step_ref()).await;
    let mut done = j.clone();
    done.seq = 2;
    done.state = JobState::Succeeded;
    assert!(store.finish(&j.step_ref(), &done, None, None).await.unwrap().written);
    assert!(read(&store, &owner, &j.id, Duration::from_secs(60)).await.is_some());
    assert!(purge(&store, &owner, &j.id).await);
    // The deployment's own calls: a sweep message (stale: another chain's) and a provider-state read.
    let stale = sweep_at(&store, (&new_gen(), 7), false, now()).await;
    assert_eq!(stale, Swept::Stale);
    store.provider_states().await.unwrap();

    let mine = store.spent(&owner, false).await.unwrap();
    assert_eq!(
        mine.month.owners.keys().collect::<Vec<_>>(),
        vec![&owner],
        "an owner's read holds its own fields only"
    );
    assert_eq!(mine.month.total, Tally::default(), "and no deployment totals");
    assert_eq!(mine.hours.len(), 24);
    // The read before (each read counts itself once it has read), two creates, the claim, the finish,
    // the poll, the purge. Store commands: at least one per call (the memory store counts one; on
    // Upstash every command a script executes, which bench/tests/budget_matches_the_proxy.rs holds to
    // what the counting proxy measured).
    let spent = minus(month_of(&mine, Some(&owner)), month_of(&before, Some(&owner)));
    assert!(spent.store_commands >= 7, "{spent:?}");
    assert_eq!(
        Tally {
            store_commands: 7,
            ..spent
        },
        Tally {
            jobs: 1,
            store_commands: 7,
            lambda_invocations: 6,
            sqs_requests: 3,
        }
    );
    let at = now();
    let day = budget::windows(&mine, Some(&owner), at).day;
    assert!(
        day.store_commands >= 7 && day.jobs == 1,
        "the day window holds them too: {day:?}"
    );

    let all = store.spent(&owner, true).await.unwrap();
    // The owner's, the sweep (an invocation, its message's three SQS requests), the provider read and
    // the owner's read before this one (counted for its caller too).
    let spent = minus(month_of(&all, None), month_of(&before, None));
    assert!(spent.store_commands >= 10, "{spent:?}");
    assert_eq!(
        Tally {
            store_commands: 10,
            ..spent
        },
        Tally {
            jobs: 1,
            store_commands: 7 + 1 + 1 + 1,
            lambda_invocations: 6 + 1 + 1,
            sqs_requests: 3 + 3,
        }
    );
    let last_hour = all.hours.last().map(|(_, b)| b.total).unwrap_or_default();
    assert!(last_hour.store_commands >= 10, "this hour's bucket: {last_hour:?}");
}

/// A batch's record and its items' jobs come back in one read, in item order (a refused item and a
/// purged job as `None`), only to their owner; the read is counted like a poll; `peek` reads a job
/// without counting or touching it.
async fn batches_are_read_whole_in_item_order(store: Arc<dyn Store>) {
    use shared::domain::batch::{new_batch_id, BatchItem, BatchRecord};
    use shared::domain::contract::{Failure, FailureCode};
    let owner = unique("owner");
    let (first, second) = (job(&owner), job(&owner));
    for j in [&first, &second] {
        assert_eq!(create(&store, j).await, Created::New);
    }
    let t = now();
    let refused = Failure {
        code: FailureCode::RateLimit,
        message: "refused at submit".into(),
        retryable: true,
        retry_after_seconds: Some(3),
    };
    let batch = BatchRecord {
        id: new_batch_id(),
        owner: owner.clone(),
        created_at_ms: t,
        expires_at_ms: t + 3_600_000,
        concurrency: 2,
        tenant_id: Some("t".into()),
        request_id: None,
        items: vec![
            BatchItem {
                id: "b".into(),
                job_id: Some(second.id.clone()),
                refused: None,
            },
            BatchItem {
                id: "x".into(),
                job_id: None,
                refused: Some(refused),
            },
            BatchItem {
                id: "a".into(),
                job_id: Some(first.id.clone()),
                refused: None,
            },
        ],
    };
    store.put_batch(&batch).await.unwrap();
    let read = unlimited(store.read_batch(&owner, &batch.id, None).await.unwrap()).expect("the batch");
    assert_eq!(read.batch, batch);
    let ids: Vec<Option<&str>> = read.jobs.iter().map(|j| j.as_ref().map(|j| j.id.as_str())).collect();
    assert_eq!(ids, [Some(second.id.as_str()), None, Some(first.id.as_str())]);
    assert_eq!(read.jobs[2].as_ref(), Some(&first), "the record comes back exactly");
    assert!(unlimited(store.read_batch("someone-else", &batch.id, None).await.unwrap()).is_none());
    assert!(unlimited(store.read_batch(&owner, &new_batch_id(), None).await.unwrap()).is_none());

    assert_eq!(store.peek(&owner, &first.id).await.unwrap().as_ref(), Some(&first));
    assert!(store.peek("someone-else", &first.id).await.unwrap().is_none());
    assert!(purge(&store, &owner, &second.id).await);
    let read = unlimited(store.read_batch(&owner, &batch.id, None).await.unwrap()).expect("the batch");
    assert!(read.jobs[0].is_none(), "a purged item's job reads as gone");
    assert!(store.peek(&owner, &second.id).await.unwrap().is_none());

    // Counted against the owner's rate limit like a poll.
    let limits = rate(1, 60_000);
    assert!(matches!(
        store.read_batch(&owner, &batch.id, limits.rate).await.unwrap(),
        Admission::Admitted { .. }
    ));
    assert!(matches!(
        store.read_batch(&owner, &batch.id, limits.rate).await.unwrap(),
        Admission::RateLimited(_)
    ));
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
    // First: it needs the store's index empty.
    the_sweeper_lives_only_while_the_index_holds_jobs,
    the_due_index_follows_the_job,
    an_expired_job_leaves_no_index_entry,
    create_dedupes_identical_jobs,
    create_replaces_a_failed_job,
    every_new_job_of_an_identity_has_a_new_id,
    claim_is_fenced_and_leased,
    a_lease_expires,
    finish_is_fenced,
    finish_applies_provider_events_like_quota_rs,
    claims_share_a_providers_minute_through_their_reservations,
    finish_reports_each_incident_once,
    create_and_read_read_what_the_eta_needs,
    read_is_owner_scoped_and_shortens_a_finished_life,
    unfinished_jobs_expire_at_their_expiry,
    an_expiry_already_past_is_refused_and_nothing_is_written,
    purge_is_owner_checked,
    unfinished_lists_only_unfinished_jobs,
    fifty_identical_submits_make_one_job,
    two_concurrent_claims_one_wins,
    requests_past_the_rate_limit_are_refused_and_change_nothing,
    a_new_rate_window_starts_afresh,
    the_in_flight_cap_refuses_new_jobs_and_frees_slots_on_finish_and_purge,
    a_job_that_expires_unfinished_frees_its_slot,
    concurrent_requests_never_pass_the_limits,
    the_overview_counts_what_the_owner_holds,
    the_budget_counts_every_call_in_the_call_itself,
    batches_are_read_whole_in_item_order,
    a_failing_origin_is_probed_by_one_delivery_and_woken_by_a_success,
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
    run_contract(Arc::new(UpstashStore::new(client.clone(), Arc::new(SystemClock)))).await;
    // Every key the contract left behind expires by itself: job records, provider states and the
    // owners' buckets (budget, rate window, jobs in flight) alike; the due-index gets its expiry from
    // the sweeps (an index whose sweeper died goes once every job in it has).
    let swept = sweep_at(
        &(Arc::new(UpstashStore::new(client.clone(), Arc::new(SystemClock))) as Arc<dyn Store>),
        ("last", 1),
        true,
        now(),
    )
    .await;
    assert!(matches!(swept, Swept::Due { .. }), "{swept:?}");
    let keys = client.command(vec!["KEYS".into(), "st:*".into()]).await.unwrap();
    let keys: Vec<String> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert!(
        keys.iter().any(|k| k.starts_with("st:b:m:")) && keys.iter().any(|k| k == "st:due"),
        "{keys:?}"
    );
    for key in keys {
        let ttl = client.command(vec!["PTTL".into(), key.clone().into()]).await.unwrap();
        // -2: the key expired between KEYS and PTTL (a one-second rate window): it had an expiry.
        assert!(
            ttl.as_i64().is_some_and(|t| t > 0 || t == -2),
            "{key} has no expiry ({ttl})"
        );
    }

    // A job's lease lives in its record's header: a purged job leaves no key at all (record,
    // lease, index entry; its slot among its owner's jobs in flight is a counter in the owner's bucket).
    let store: Arc<dyn Store> = Arc::new(UpstashStore::new(client.clone(), Arc::new(SystemClock)));
    let owner = unique("keys");
    let j = job(&owner);
    assert_eq!(
        create_with(&store, &j, cap(5)).await.map(unlimited).unwrap(),
        Created::New
    );
    acquire(&store, &j.step_ref()).await;
    let mut done = j.clone();
    done.seq = 2;
    done.state = JobState::Succeeded;
    assert!(store.finish(&j.step_ref(), &done, None, None).await.unwrap().written);
    assert!(purge(&store, &owner, &j.id).await);
    let left = client
        .command(vec!["KEYS".into(), format!("st:*{owner}*").into()])
        .await
        .unwrap();
    // The owner's budget buckets (st:b:h:<hour>:<owner>, st:b:m:<month>:<owner>) are the owner's, not
    // the job's: they stay, and expire by themselves (checked above).
    let left: Vec<&Value> = left
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| !k.as_str().unwrap_or("").starts_with("st:b:"))
        .collect();
    assert!(left.is_empty(), "a purged job leaves no key: {left:?}");
    let score = client
        .command(vec![
            "ZSCORE".into(),
            "st:due".into(),
            format!("st:j:{owner}:{}", j.id).into(),
        ])
        .await
        .unwrap();
    assert!(score.is_null(), "nor a due-index entry: {score}");
}

/// An engine whose clock is a month behind Redis's (here Redis runs a month ahead under
/// libfaketime) computes expiries Redis already sees as past. Every route script refuses before it
/// writes, with `ExpiryInPast`, instead of writing a job that vanishes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_clock_behind_the_store_clock_is_refused_not_lost() {
    let redis = testkit::stack::RedisServer::start_shifted(MONTH_MS)
        .await
        .expect("redis-server under libfaketime");
    let upstash = testkit::stack::UpstashEmulator::start(&redis)
        .await
        .expect("upstash emulator");
    let client = UpstashClient::new(&upstash.url, Secret::new(upstash.token.clone()), Duration::from_secs(5)).unwrap();
    let store: Arc<dyn Store> = Arc::new(UpstashStore::new(client, Arc::new(SystemClock)));

    let j = job(&unique("owner"));
    let refused = create_with(&store, &j, Limits::default()).await;
    assert!(matches!(refused, Err(StoreError::ExpiryInPast(_))), "{refused:?}");
    assert_eq!(redis.dbsize().await.unwrap(), 0, "nothing was written");
    // Until the clocks agree, every call that writes an expiry checks them again (a check is asked for
    // once a minute only after one passed).
    let refused = create_with(&store, &j, Limits::default()).await;
    assert!(matches!(refused, Err(StoreError::ExpiryInPast(_))), "{refused:?}");
    assert_eq!(redis.dbsize().await.unwrap(), 0, "nothing was written");

    // The same job on a clock that agrees with the store's is written and lives.
    let mut j = job(&unique("owner"));
    let store_now = redis.time_ms().await.unwrap();
    j.created_at_ms = store_now;
    j.deadline_ms = store_now + 3_600_000;
    j.expires_at_ms = store_now + 3_600_000;
    assert_eq!(create(&store, &j).await, Created::New);
    assert!(read(&store, &j.owner, &j.id, Duration::from_secs(60)).await.is_some());
}

/// What the fast path's failure path costs on Upstash, as Upstash bills it (every command redis-server
/// executed, `INFO commandstats`): the figures docs/architecture.md and docs/webhooks.md state. An
/// ordinary delivery runs none of it (bench/tests/billed_per_route.rs holds the routes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_fast_path_costs_a_bounded_number_of_commands_on_upstash() {
    let redis = testkit::stack::RedisServer::start().await.expect("redis-server");
    let upstash = testkit::stack::UpstashEmulator::start(&redis)
        .await
        .expect("upstash emulator");
    let client = UpstashClient::new(&upstash.url, Secret::new(upstash.token.clone()), Duration::from_secs(5)).unwrap();
    let store: Arc<dyn Store> = Arc::new(UpstashStore::new(client, Arc::new(SystemClock)));
    let owner = unique("cost");
    let origin = "http://down.example:80";
    let t = now();
    let a = waiting_on(&store, &owner, &format!("{origin}/a"), t + 300_000).await;
    let b = waiting_on(&store, &owner, &format!("{origin}/b"), t + 300_000).await;
    let (holder_a, holder_b) = (origins::holder_of(&a.id, 0), origins::holder_of(&b.id, 0));
    // Each script's first call loads it (NOSCRIPT, then EVAL): a one-off, not measured.
    let warm = OriginDown {
        origin: "http://warm.example:80",
        owner: &owner,
        job_id: &a.id,
        holder: "w/0",
        waits_until_ms: Some(t + 300_000),
        probed: false,
        now_ms: t,
    };
    store.origin_down(&warm).await.unwrap();
    store.origin_up(warm.origin, &owner, t, t).await.unwrap();
    let mut measured = Vec::new();
    let calls: [(&str, &Job, &str, bool, u64); 3] = [
        (
            "the outage's first failure: takes the probe",
            &a,
            &holder_a,
            false,
            t + 1_000,
        ),
        ("another delivery fails there", &b, &holder_b, false, t + 1_100),
        ("the holder's probe fails", &a, &holder_a, true, t + 6_000),
    ];
    for (what, j, holder, probed, at) in calls {
        let before = testkit::billing::executed_so_far(redis.port).await.unwrap();
        store
            .origin_down(&OriginDown {
                origin,
                owner: &owner,
                job_id: &j.id,
                holder,
                waits_until_ms: Some(t + 300_000),
                probed,
                now_ms: at,
            })
            .await
            .unwrap();
        measured.push((
            what,
            testkit::billing::executed_so_far(redis.port).await.unwrap() - before,
        ));
    }
    let before = testkit::billing::executed_so_far(redis.port).await.unwrap();
    assert_eq!(
        store
            .origin_up(origin, &owner, t + 9_000, t + 30_000)
            .await
            .unwrap()
            .len(),
        2
    );
    measured.push((
        "a success: marked up, 2 jobs woken",
        testkit::billing::executed_so_far(redis.port).await.unwrap() - before,
    ));
    let before = testkit::billing::executed_so_far(redis.port).await.unwrap();
    assert!(store
        .origin_up(origin, &owner, t + 9_500, t + 30_000)
        .await
        .unwrap()
        .is_empty());
    measured.push((
        "another success: already up",
        testkit::billing::executed_so_far(redis.port).await.unwrap() - before,
    ));
    println!("fast path commands: {measured:?}");
    assert_eq!(
        measured.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        [6, 4, 6, 8, 3],
        "{measured:?}"
    );
}

/// On Upstash a success that changes nothing another step acts on (`ProviderEvent::changes_shared_state`
/// against the states its claim read) writes no provider state; the next finish that writes folds the
/// held successes in as each would have been: the latency average, today's successes, the last attempt.
#[tokio::test]
async fn quiet_successes_are_held_then_folded_in_on_upstash() {
    let redis = testkit::stack::RedisServer::start().await.expect("redis-server");
    let upstash = testkit::stack::UpstashEmulator::start(&redis)
        .await
        .expect("upstash emulator");
    let client = UpstashClient::new(&upstash.url, Secret::new(upstash.token.clone()), Duration::from_secs(5)).unwrap();
    let probe = UpstashClient::new(&upstash.url, Secret::new(upstash.token.clone()), Duration::from_secs(5)).unwrap();
    let store: Arc<dyn Store> = Arc::new(UpstashStore::new(client, Arc::new(SystemClock)));
    let owner = unique("quiet");
    let provider = unique("provider-");
    // A provider that limits nothing: its successes need no count in the shared state.
    let unlimited = ProviderLimits {
        rpm: None,
        rpd: None,
        tpm: None,
        reset: ResetClock::UtcMidnight,
    };
    let attempt = |class: Option<ErrorClass>, latency_ms: u64| {
        let mut e = ProviderEvent::new(&provider, &unlimited, now(), BackoffPolicy::default());
        e.class = class;
        e.latency_ms = latency_ms;
        e
    };
    let stored = || async {
        let raw = probe
            .command(vec![Value::from("GET"), Value::from("st:pv")])
            .await
            .unwrap();
        let all: Value = serde_json::from_str(raw.as_str().unwrap()).unwrap();
        all[provider.as_str()].clone()
    };
    let mut expected = ProviderState::default();
    let events = [
        attempt(None, 1_000),
        attempt(None, 600),
        attempt(None, 200),
        attempt(None, 1_400),
        attempt(Some(ErrorClass::Overloaded), 0),
    ];
    for (n, e) in events.iter().enumerate() {
        let j = job(&owner);
        create(&store, &j).await;
        acquire(&store, &j.step_ref()).await;
        let mut next = j.clone();
        next.seq += 1;
        assert!(store.finish(&j.step_ref(), &next, None, Some(e)).await.unwrap().written);
        expected.apply(e);
        let state = stored().await;
        match n {
            // The first success is written (its claim saw no state of the provider).
            0 => assert_eq!(state["lat"], 1_000, "{state}"),
            // The next three are held: the stored state has not moved.
            1..=3 => {
                assert_eq!(state["lat"], 1_000, "held, not written: {state}");
                assert_eq!(state["ua"]["ok"], 1, "{state}");
            }
            // The failure writes, and folds the three held successes in first.
            _ => {
                assert_eq!(state["lat"], expected.latency_ms, "{state}");
                assert_eq!(
                    (state["ua"]["ok"].clone(), state["ua"]["overloaded"].clone()),
                    (4.into(), 1.into()),
                    "{state}"
                );
                assert_eq!(state["lc"], "overloaded", "{state}");
                assert_eq!(state["cf"], 1, "{state}");
            }
        }
    }
}
