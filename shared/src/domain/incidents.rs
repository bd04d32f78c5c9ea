//! The rules that turn a change of a provider's shared state into at most one incident, and the flap
//! window that summarises a provider that flaps: the store's, because it decides them in the same
//! atomic change as the state itself. The memory store runs them; `finish.lua` mirrors them rule
//! for rule on Upstash.
//!
//! Deduplication across instances rides on the state change the store already makes: the one
//! `finish` call whose script (or memory-store lock) moved a provider's shared state from one side of
//! an incident to the other reports it, so exactly one instance alerts. A provider that flaps is
//! summarised: at most one alert per provider per window, the next one says how many were held back.

use std::collections::HashMap;

use crate::domain::alert::{Alert, AlertRules, Incident};
use crate::domain::error_class::ErrorClass;
use crate::domain::quota::{LastOutcome, ProviderState};

/// The store-side bookkeeping of alerts (`st:alerts` on Upstash): whether "all unusable" is raised,
/// and per provider the last alert's time, how many were held back since, and whether the operator
/// was told its circuit opened (so its closing is told too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AlertBook {
    pub(crate) all_down: bool,
    pub(crate) last_ms: HashMap<String, u64>,
    pub(crate) held: HashMap<String, u32>,
    pub(crate) told_open: std::collections::HashSet<String>,
}

/// The class names that disable a provider.
const DISABLING: [ErrorClass; 2] = [ErrorClass::AuthInvalid, ErrorClass::Gone];

/// The provider incidents one folded event caused: `before` and `after` are the provider's shared
/// state around [`ProviderState::apply`]. Mirrors `finish.lua` rule for rule.
pub(crate) fn provider_incidents(
    provider: &str,
    before: &ProviderState,
    after: &ProviderState,
    now_ms: u64,
) -> Vec<Incident> {
    let mut out = Vec::new();
    if before.disabled.is_none() {
        if let Some(reason) = &after.disabled {
            out.push(Incident::ProviderDisabled {
                provider: provider.to_string(),
                reason: reason.clone(),
            });
        }
    }
    if before.circuit_open_until_ms <= now_ms && after.circuit_open_until_ms > now_ms {
        out.push(Incident::CircuitOpened {
            provider: provider.to_string(),
            until_ms: after.circuit_open_until_ms,
            failures: after.consecutive_failures,
        });
    }
    if before.circuit_open_until_ms > 0 && after.circuit_open_until_ms == 0 {
        out.push(Incident::CircuitClosed {
            provider: provider.to_string(),
        });
    }
    if after.last_class == Some(LastOutcome::Failed(ErrorClass::QuotaExhausted))
        && before.cooldown_until_ms <= now_ms
        && after.cooldown_until_ms > now_ms
    {
        out.push(Incident::QuotaExhausted {
            provider: provider.to_string(),
            until_ms: after.cooldown_until_ms,
        });
    }
    out
}

/// When a provider returns, judged on its shared state alone (`None`: disabled). Cooldowns and open
/// circuits count; per-minute counters do not (they end within the minute).
pub(crate) fn returns_at(state: &ProviderState) -> Option<u64> {
    if state.disabled.is_some() || state.last_class.is_some_and(|c| c.is_any(&DISABLING)) {
        return None;
    }
    Some(state.cooldown_until_ms.max(state.circuit_open_until_ms))
}

/// The system incident after one event of `provider`: every configured provider unusable (raised
/// once), or the first success after that (cleared once). Mirrors `finish.lua`.
pub(crate) fn system_incident(
    rules: &AlertRules,
    states: &HashMap<String, ProviderState>,
    provider: &str,
    succeeded: bool,
    book: &mut AlertBook,
    now_ms: u64,
) -> Option<Incident> {
    if rules.providers.is_empty() {
        return None;
    }
    if succeeded {
        if book.all_down {
            book.all_down = false;
            return Some(Incident::ProvidersRecovered {
                provider: provider.to_string(),
            });
        }
        return None;
    }
    if book.all_down {
        return None;
    }
    let fresh = ProviderState::default();
    let mut eta: Option<u64> = None;
    for name in &rules.providers {
        match returns_at(states.get(name).unwrap_or(&fresh)) {
            None => {}
            Some(at) if at > now_ms => eta = Some(eta.map_or(at, |e| e.min(at))),
            Some(_) => return None,
        }
    }
    book.all_down = true;
    Some(Incident::AllProvidersUnusable { eta_ms: eta })
}

/// The flap window: a circuit opening or a spent quota inside the window of the provider's last such
/// alert is held back (counted); otherwise it goes out with the count. A circuit's closing goes out
/// exactly when its opening did (each incident and its recovery once). Others always go out.
pub(crate) fn gate(incident: Incident, rules: &AlertRules, book: &mut AlertBook, now_ms: u64) -> Option<Alert> {
    let Some(provider) = incident.provider().map(str::to_string) else {
        return Some(Alert {
            incident,
            suppressed: 0,
            at_ms: now_ms,
        });
    };
    let alert = |suppressed| Alert {
        incident: incident.clone(),
        suppressed,
        at_ms: now_ms,
    };
    if matches!(incident, Incident::CircuitClosed { .. }) {
        return book.told_open.remove(&provider).then(|| alert(0));
    }
    if let Some(last) = book.last_ms.get(&provider) {
        if now_ms < last + rules.window_ms {
            *book.held.entry(provider).or_default() += 1;
            return None;
        }
    }
    book.last_ms.insert(provider.clone(), now_ms);
    let suppressed = book.held.remove(&provider).unwrap_or(0);
    if matches!(incident, Incident::CircuitOpened { .. }) {
        book.told_open.insert(provider);
    }
    Some(alert(suppressed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cooling(until: u64) -> ProviderState {
        ProviderState {
            cooldown_until_ms: until,
            last_class: Some(LastOutcome::Failed(ErrorClass::RateLimited)),
            ..ProviderState::default()
        }
    }

    #[test]
    fn all_unusable_is_raised_once_with_the_first_return_and_cleared_once() {
        let rules = AlertRules {
            providers: vec!["a".into(), "b".into()],
            window_ms: 0,
        };
        let mut book = AlertBook::default();
        let mut states = HashMap::from([("a".to_string(), cooling(5_000))]);
        assert_eq!(
            system_incident(&rules, &states, "a", false, &mut book, 1_000),
            None,
            "b is fine"
        );
        states.insert("b".into(), cooling(3_000));
        assert_eq!(
            system_incident(&rules, &states, "b", false, &mut book, 1_000),
            Some(Incident::AllProvidersUnusable { eta_ms: Some(3_000) })
        );
        assert_eq!(system_incident(&rules, &states, "a", false, &mut book, 1_100), None);
        assert_eq!(
            system_incident(&rules, &states, "b", true, &mut book, 4_000),
            Some(Incident::ProvidersRecovered { provider: "b".into() })
        );
        assert_eq!(system_incident(&rules, &states, "b", true, &mut book, 4_100), None);
    }

    #[test]
    fn a_flapping_provider_is_summarised() {
        let rules = AlertRules {
            providers: vec![],
            window_ms: 60_000,
        };
        let mut book = AlertBook::default();
        let open = || Incident::CircuitOpened {
            provider: "p".into(),
            until_ms: 1,
            failures: 5,
        };
        let closed = || Incident::CircuitClosed { provider: "p".into() };
        assert_eq!(gate(open(), &rules, &mut book, 0).map(|a| a.suppressed), Some(0));
        assert!(gate(closed(), &rules, &mut book, 5_000).is_some(), "its recovery, once");
        assert_eq!(gate(open(), &rules, &mut book, 10_000), None);
        assert_eq!(
            gate(closed(), &rules, &mut book, 15_000),
            None,
            "its opening was held back"
        );
        assert_eq!(gate(open(), &rules, &mut book, 20_000), None);
        assert_eq!(gate(open(), &rules, &mut book, 60_000).map(|a| a.suppressed), Some(2));
        assert!(gate(closed(), &rules, &mut book, 61_000).is_some());
    }
}
