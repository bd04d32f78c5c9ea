//! The environment as the configuration reads it: one lookup (the process's variables, or a map in
//! tests) and the few typed reads every variable goes through, so each refusal names its variable
//! and says what was expected the same way.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

use super::ConfigError;
use crate::ports::RateLimit;

/// A variable lookup: `None` when unset (the process's lookup also treats an empty value as unset).
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process's own variables, an empty value counting as unset. The one place the crate reads
/// `std::env` for its configuration.
pub(crate) fn process(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[derive(Clone, Copy)]
pub(crate) struct Env<'a>(Lookup<'a>);

impl<'a> Env<'a> {
    pub(crate) fn new(lookup: Lookup<'a>) -> Self {
        Self(lookup)
    }

    pub(crate) fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
    }

    pub(crate) fn is_set(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The variable's text, or `""` when unset (lists of entries).
    pub(crate) fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or_default()
    }

    /// The variable read through `parse` (`None` when unset); a refusal names the variable.
    pub(crate) fn parse<T>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        self.get(name)
            .map(|v| parse(&v).map_err(|message| ConfigError::Invalid { name, message }))
            .transpose()
    }

    /// A yes/no switch: `true`/`false` (also `1`/`0`, `yes`/`no`, any case); unset is `false`.
    pub(crate) fn flag(&self, name: &'static str) -> Result<bool, ConfigError> {
        Ok(self
            .parse(name, |v| match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" | "" => Ok(false),
                other => Err(format!("expected true or false, got {other:?}")),
            })?
            .unwrap_or(false))
    }

    /// A number `accept` takes, refused as "expected {expected}, got …".
    pub(crate) fn number<T: FromStr>(
        &self,
        name: &'static str,
        accept: impl Fn(&T) -> bool,
        expected: &str,
    ) -> Result<Option<T>, ConfigError> {
        self.parse(name, |v| {
            v.trim()
                .parse::<T>()
                .ok()
                .filter(|n| accept(n))
                .ok_or_else(|| format!("expected {expected}, got {v:?}"))
        })
    }

    /// A number within `range`, refused as "expected {low} to {high}, got …".
    pub(crate) fn number_in<T: FromStr + PartialOrd + Display>(
        &self,
        name: &'static str,
        range: RangeInclusive<T>,
    ) -> Result<Option<T>, ConfigError> {
        let expected = format!("{} to {}", range.start(), range.end());
        self.number(name, |n| range.contains(n), &expected)
    }

    /// A positive number of seconds, in milliseconds (`default_ms` when unset).
    pub(crate) fn seconds(&self, name: &'static str, default_ms: u64) -> Result<u64, ConfigError> {
        Ok(self
            .number::<u64>(name, |s| *s > 0, "a positive number of seconds")?
            .map_or(default_ms, |s| s * 1000))
    }
}

/// `0s,5s,5m,30m,2h,5h,10h,10h`: the wait before each attempt (`ms`, `s`, `m` or `h`; 1 to 20 of them,
/// each at most 24 h).
pub(crate) fn schedule(text: &str) -> Result<Vec<u64>, String> {
    let expected = |item: &str| {
        format!("expected comma-separated waits such as 0s,5s,5m,30m,2h,5h,10h,10h (ms, s, m or h); got {item:?}")
    };
    let waits = text
        .split(',')
        .map(|item| {
            let item = item.trim();
            let (number, unit_ms) = if let Some(n) = item.strip_suffix("ms") {
                (n, 1)
            } else if let Some(n) = item.strip_suffix('s') {
                (n, 1_000)
            } else if let Some(n) = item.strip_suffix('m') {
                (n, 60_000)
            } else if let Some(n) = item.strip_suffix('h') {
                (n, 3_600_000)
            } else {
                return Err(expected(item));
            };
            let n: u64 = number.trim().parse().map_err(|_| expected(item))?;
            let ms = n.saturating_mul(unit_ms);
            if ms > 86_400_000 {
                return Err(format!("{item:?} is longer than 24 h"));
            }
            Ok(ms)
        })
        .collect::<Result<Vec<u64>, String>>()?;
    if waits.len() > 20 {
        return Err(format!("at most 20 attempts, got {}", waits.len()));
    }
    Ok(waits)
}

/// `120/60s`, `1000/1h`, `10/s` (requests per window of whole seconds, minutes or hours), or `off`.
pub(crate) fn rate_limit(text: &str) -> Result<Option<RateLimit>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let expected = || format!("expected <requests>/<window> such as 120/60s, 1000/1h or 10/s, or off; got {text:?}");
    let (requests, window) = text.split_once('/').ok_or_else(expected)?;
    let limit: u32 = requests.trim().parse().map_err(|_| expected())?;
    if limit == 0 {
        return Err(format!(
            "{text:?} would refuse every request; use off to lift the limit, or remove the key"
        ));
    }
    let window = window.trim();
    let unit_ms = match window.chars().last() {
        Some('s') => 1_000,
        Some('m') => 60_000,
        Some('h') => 3_600_000,
        _ => return Err(expected()),
    };
    let count = &window[..window.len() - 1];
    let count: u64 = if count.is_empty() {
        1
    } else {
        count.parse().map_err(|_| expected())?
    };
    let window_ms = count.saturating_mul(unit_ms);
    if !(1_000..=86_400_000).contains(&window_ms) {
        return Err(format!("the window of {text:?} must be 1 second to 24 hours"));
    }
    Ok(Some(RateLimit { limit, window_ms }))
}

/// A positive number of jobs, or `off`.
pub(crate) fn in_flight_cap(text: &str) -> Result<Option<u32>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match text.parse::<u32>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(format!("expected a positive number of jobs, or off; got {text:?}")),
    }
}

/// `owner=value` entries, comma-separated, trimmed, numbered from 1; an entry without `=` is refused
/// as "entry N: expected {expected}".
pub(crate) fn owner_entries<'t>(text: &'t str, expected: &str) -> Result<Vec<(usize, &'t str, &'t str)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .enumerate()
        .map(|(index, entry)| {
            let (owner, value) = entry
                .split_once('=')
                .ok_or_else(|| format!("entry {}: expected {expected}", index + 1))?;
            Ok((index + 1, owner.trim(), value.trim()))
        })
        .collect()
}
