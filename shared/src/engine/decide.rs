//! The step decision: a pure function of the job, the providers' shared states, and the time.
//! It does no I/O and reads no clock, so it is property-tested (see the tests below).

use crate::domain::error_class::ErrorClass;
use crate::domain::job::Job;
use crate::domain::quota::{Availability, ProviderLimits, ProviderState};

/// One configured provider as the decision sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Candidate<'a> {
    pub(crate) name: &'a str,
    pub(crate) limits: ProviderLimits,
    pub(crate) state: &'a ProviderState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepPolicy {
    /// Failed attempts (overload, unusable answer) one provider gets within one job before it is spent.
    pub(crate) max_failures_per_provider: u32,
}

impl Default for StepPolicy {
    fn default() -> Self {
        Self {
            max_failures_per_provider: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Call the candidate at this index now.
    Call(usize),
    /// Every usable provider is cooling down: try again at this instant (before the deadline).
    Wait { until_ms: u64 },
    /// Nothing more can be done for this job.
    GiveUp(GiveUp),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GiveUp {
    NoProviders,
    /// Every provider failed for good for this job (or is disabled).
    ProvidersSpent,
    /// The job's deadline passed, or no provider becomes available before it.
    Deadline,
}

impl GiveUp {
    pub fn message(&self) -> &'static str {
        match self {
            GiveUp::NoProviders => "no AI provider is configured",
            GiveUp::ProvidersSpent => "every provider failed for this job",
            GiveUp::Deadline => "deadline_exceeded: the job's deadline passed before a provider could answer",
        }
    }
}

/// How many times this job failed on this provider, and whether it failed for good there.
pub(crate) fn job_failures(job: &Job, provider: &str) -> (u32, bool) {
    let mut soft = 0;
    let mut hard = false;
    for a in job.attempts.iter().filter(|a| a.provider == provider) {
        match a.class {
            // Waiting out a quota is not a failure of the job.
            None | Some(ErrorClass::RateLimited) | Some(ErrorClass::QuotaExhausted) => {}
            Some(ErrorClass::Overloaded) | Some(ErrorClass::InvalidOutput) => soft += 1,
            // The same content to the same provider meets the same answer.
            Some(ErrorClass::AuthInvalid)
            | Some(ErrorClass::BadRequest)
            | Some(ErrorClass::Gone)
            | Some(ErrorClass::Filtered) => hard = true,
        }
    }
    (soft, hard)
}

/// The job's providers (indexes into `chain`) in the order `decide` prefers them when several can be
/// called now: those neither spent for this job, by fewest failures for this job, ties in `chain`'s order.
/// `decide` calls the first of these that is available; the claim reserves a request of that same one
/// (`quota::reserve`), so the ranking travels in the step message.
pub(crate) fn ranking(job: &Job, chain: &[&str], policy: &StepPolicy) -> Vec<usize> {
    let mut ranked: Vec<(u32, usize)> = chain
        .iter()
        .enumerate()
        .filter_map(|(index, name)| {
            let (failures, hard) = job_failures(job, name);
            (!hard && failures < policy.max_failures_per_provider).then_some((failures, index))
        })
        .collect();
    ranked.sort();
    ranked.into_iter().map(|(_, index)| index).collect()
}

/// Picks what the job's next step does.
///
/// Among providers that are neither spent for this job nor disabled, the one available now with the
/// fewest failures for this job wins (ties: configuration order), so a failure moves the job to the
/// next provider. When none is available now, the job waits for the earliest one, unless that is past
/// the deadline.
pub(crate) fn decide(job: &Job, candidates: &[Candidate<'_>], now_ms: u64, policy: &StepPolicy) -> Decision {
    if candidates.is_empty() {
        return Decision::GiveUp(GiveUp::NoProviders);
    }
    if now_ms >= job.deadline_ms {
        return Decision::GiveUp(GiveUp::Deadline);
    }
    let mut best_now: Option<(u32, usize)> = None;
    let mut earliest: Option<u64> = None;
    for (index, c) in candidates.iter().enumerate() {
        let (failures, hard) = job_failures(job, c.name);
        if hard || failures >= policy.max_failures_per_provider {
            continue;
        }
        match c.state.available_at(&c.limits, now_ms) {
            Availability::Disabled(_) => {}
            Availability::At(at) if at <= now_ms => {
                if best_now.is_none_or(|(f, _)| failures < f) {
                    best_now = Some((failures, index));
                }
            }
            Availability::At(at) => earliest = Some(earliest.map_or(at, |e| e.min(at))),
        }
    }
    match (best_now, earliest) {
        (Some((_, index)), _) => Decision::Call(index),
        (None, Some(at)) if at < job.deadline_ms => Decision::Wait { until_ms: at },
        (None, Some(_)) => Decision::GiveUp(GiveUp::Deadline),
        (None, None) => Decision::GiveUp(GiveUp::ProvidersSpent),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::job::Attempt;

    fn job(deadline_ms: u64, attempts: Vec<Attempt>) -> Job {
        Job {
            deadline_ms,
            attempts,
            expires_at_ms: deadline_ms,
            ..crate::testing::job()
        }
    }

    fn attempt(provider: &str, class: Option<ErrorClass>) -> Attempt {
        Attempt {
            provider: provider.into(),
            number: 1,
            class,
            http_status: None,
            duration_ms: 1,
            retry_after_s: None,
            message: None,
            at_ms: 0,
        }
    }

    const NAMES: [&str; 4] = ["a", "b", "c", "d"];

    #[test]
    fn a_failure_moves_the_job_to_the_next_provider() {
        let fresh = ProviderState::default();
        let c: Vec<_> = NAMES[..2]
            .iter()
            .map(|n| Candidate {
                name: n,
                limits: Default::default(),
                state: &fresh,
            })
            .collect();
        let j = job(1_000, vec![attempt("a", Some(ErrorClass::InvalidOutput))]);
        assert_eq!(decide(&j, &c, 10, &StepPolicy::default()), Decision::Call(1));
    }

    #[test]
    fn all_cooling_down_waits_for_the_earliest() {
        let a = ProviderState {
            cooldown_until_ms: 500,
            ..Default::default()
        };
        let b = ProviderState {
            cooldown_until_ms: 300,
            ..Default::default()
        };
        let c = vec![
            Candidate {
                name: "a",
                limits: Default::default(),
                state: &a,
            },
            Candidate {
                name: "b",
                limits: Default::default(),
                state: &b,
            },
        ];
        let j = job(1_000, vec![attempt("a", Some(ErrorClass::RateLimited))]);
        assert_eq!(
            decide(&j, &c, 10, &StepPolicy::default()),
            Decision::Wait { until_ms: 300 }
        );
        assert_eq!(
            decide(&job(200, vec![]), &c, 10, &StepPolicy::default()),
            Decision::GiveUp(GiveUp::Deadline)
        );
    }

    #[test]
    fn hard_failures_spend_a_provider_for_the_job() {
        let fresh = ProviderState::default();
        let c = vec![Candidate {
            name: "a",
            limits: Default::default(),
            state: &fresh,
        }];
        let j = job(1_000, vec![attempt("a", Some(ErrorClass::BadRequest))]);
        assert_eq!(
            decide(&j, &c, 10, &StepPolicy::default()),
            Decision::GiveUp(GiveUp::ProvidersSpent)
        );
        assert_eq!(
            decide(&j, &[], 10, &StepPolicy::default()),
            Decision::GiveUp(GiveUp::NoProviders)
        );
    }

    fn class_strategy() -> impl Strategy<Value = Option<ErrorClass>> {
        prop_oneof![
            Just(None),
            Just(Some(ErrorClass::RateLimited)),
            Just(Some(ErrorClass::QuotaExhausted)),
            Just(Some(ErrorClass::Overloaded)),
            Just(Some(ErrorClass::AuthInvalid)),
            Just(Some(ErrorClass::BadRequest)),
            Just(Some(ErrorClass::Filtered)),
            Just(Some(ErrorClass::InvalidOutput)),
            Just(Some(ErrorClass::Gone)),
        ]
    }

    fn state_strategy() -> impl Strategy<Value = ProviderState> {
        (0u64..2_000, 0u64..2_000, 0u64..5, any::<bool>(), 0u64..3).prop_map(|(cu, co, mc, dis, dc)| ProviderState {
            cooldown_until_ms: cu,
            circuit_open_until_ms: co,
            minute: 0,
            minute_requests: mc,
            day: 0,
            day_requests: dc,
            disabled: dis.then(|| "bad key".to_string()),
            ..Default::default()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Never calls a provider that is cooling down, exhausted, disabled or spent; otherwise waits
        /// (strictly in the future, before the deadline) or ends; a wait is never past the deadline.
        #[test]
        fn decisions_respect_shared_state_and_the_deadline(
            states in prop::collection::vec(state_strategy(), 0..4),
            rpm in prop::option::of(1u64..4),
            rpd in prop::option::of(1u64..3),
            history in prop::collection::vec((0usize..4, class_strategy()), 0..8),
            now in 0u64..3_000,
            deadline in 1u64..3_000,
        ) {
            let limits = ProviderLimits { rpm, rpd, tpm: None, reset: Default::default() };
            let candidates: Vec<_> = states.iter().enumerate()
                .map(|(i, s)| Candidate { name: NAMES[i], limits, state: s }).collect();
            let attempts = history.iter().map(|(p, c)| attempt(NAMES[*p], *c)).collect();
            let j = job(deadline, attempts);
            let policy = StepPolicy::default();
            match decide(&j, &candidates, now, &policy) {
                Decision::Call(i) => {
                    prop_assert!(i < candidates.len());
                    prop_assert!(now < deadline);
                    let c = &candidates[i];
                    prop_assert!(matches!(c.state.available_at(&c.limits, now), Availability::At(at) if at <= now));
                    let (failures, hard) = job_failures(&j, c.name);
                    prop_assert!(!hard && failures < policy.max_failures_per_provider);
                }
                Decision::Wait { until_ms } => {
                    prop_assert!(until_ms > now);
                    prop_assert!(until_ms < deadline);
                    // Nobody usable was available now.
                    for c in &candidates {
                        let (failures, hard) = job_failures(&j, c.name);
                        if !hard && failures < policy.max_failures_per_provider {
                            if let Availability::At(at) = c.state.available_at(&c.limits, now) {
                                prop_assert!(at > now && at >= until_ms);
                            }
                        }
                    }
                }
                Decision::GiveUp(GiveUp::Deadline) => {
                    // Either past the deadline, or nothing usable frees up before it.
                    for c in &candidates {
                        let (failures, hard) = job_failures(&j, c.name);
                        if now < deadline && !hard && failures < policy.max_failures_per_provider {
                            if let Availability::At(at) = c.state.available_at(&c.limits, now) {
                                prop_assert!(at >= deadline);
                            }
                        }
                    }
                }
                Decision::GiveUp(GiveUp::ProvidersSpent) => {
                    for c in &candidates {
                        let (failures, hard) = job_failures(&j, c.name);
                        let disabled = matches!(c.state.available_at(&c.limits, now), Availability::Disabled(_));
                        prop_assert!(hard || failures >= policy.max_failures_per_provider || disabled);
                    }
                }
                Decision::GiveUp(GiveUp::NoProviders) => prop_assert!(candidates.is_empty()),
            }
        }

        /// The claim reserves a request of the provider the decision then calls: the first open one of the
        /// job's ranking (`quota::reserve`), once the engine has taken the reservation back out of the
        /// decision's view. With nothing open, nothing is reserved (a turn may be booked) and the decision
        /// does not call.
        #[test]
        fn the_claim_reserves_the_provider_the_decision_calls(
            states in prop::collection::vec(state_strategy(), 1..4),
            rpm in prop::option::of(1u64..4),
            rpd in prop::option::of(1u64..3),
            history in prop::collection::vec((0usize..4, class_strategy()), 0..8),
            now in 0u64..3_000,
        ) {
            let limits = ProviderLimits { rpm, rpd, tpm: None, reset: Default::default() };
            let attempts = history.iter().map(|(p, c)| attempt(NAMES[*p], *c)).collect();
            let j = job(10_000, attempts);
            let policy = StepPolicy::default();
            let names: Vec<&str> = NAMES[..states.len()].to_vec();
            let reservable: Vec<crate::domain::quota::Reservable> = ranking(&j, &names, &policy)
                .into_iter()
                .map(|i| crate::domain::quota::Reservable { name: names[i].to_string(), limits, day: 0 })
                .collect();
            let mut stored: std::collections::HashMap<String, ProviderState> =
                names.iter().zip(&states).map(|(n, s)| (n.to_string(), s.clone())).collect();
            let reservation = crate::domain::quota::reserve(&mut stored, &reservable, &[], "tenant", None, now);
            let mut booked = false;
            let reserved = match reservation {
                crate::domain::quota::Reservation::Reserved(name) => {
                    stored.get_mut(&name).unwrap().unreserve(0, 0);
                    Some(name)
                }
                crate::domain::quota::Reservation::Booked { provider, at_ms } => {
                    // A turn is booked only when none can be called now, and never before the next minute.
                    prop_assert!(at_ms >= 60_000);
                    let state = stored.get_mut(&provider).unwrap();
                    state.cooldown_until_ms = state.cooldown_until_ms.max(at_ms);
                    booked = true;
                    None
                }
                crate::domain::quota::Reservation::Handed { .. } => {
                    prop_assert!(false, "a hand-over needs a claimant");
                    None
                }
                crate::domain::quota::Reservation::None => None,
            };
            let seen: Vec<ProviderState> = names.iter().map(|n| stored[*n].clone()).collect();
            let candidates: Vec<_> = seen.iter().enumerate()
                .map(|(i, s)| Candidate { name: NAMES[i], limits, state: s }).collect();
            match decide(&j, &candidates, now, &policy) {
                Decision::Call(i) => {
                    let counted = limits.shared_requests();
                    prop_assert_eq!(reserved.as_deref(), counted.then_some(NAMES[i]));
                    prop_assert!(!booked);
                }
                _ => prop_assert_eq!(reserved, None),
            }
        }

        /// Following the decisions with nothing but rate limits ends by the deadline: waits only move
        /// time forward and never past it.
        #[test]
        fn waiting_is_bounded_by_the_deadline(cooldowns in prop::collection::vec(1u64..50_000, 1..4), deadline in 1u64..100_000) {
            let mut states: Vec<ProviderState> = cooldowns.iter().map(|c| ProviderState { cooldown_until_ms: *c, ..Default::default() }).collect();
            let mut now = 0;
            let mut total_wait = 0;
            for _ in 0..64 {
                let candidates: Vec<_> = states.iter().enumerate().map(|(i, s)| Candidate { name: NAMES[i], limits: Default::default(), state: s }).collect();
                match decide(&job(deadline, vec![]), &candidates, now, &StepPolicy::default()) {
                    Decision::Wait { until_ms } => { total_wait += until_ms - now; now = until_ms; }
                    Decision::Call(i) => { states[i].cooldown_until_ms = now + 7_000; }
                    Decision::GiveUp(_) => break,
                }
            }
            prop_assert!(total_wait <= deadline);
        }
    }
}
