//! Keeps configured secrets out of text that came from outside. A provider's error body or a webhook
//! receiver's answer may quote a key back at us (some gateways and proxies echo the `Authorization`
//! header); that text is logged, stored with the job, shown on poll and on `/v1/providers`. The one
//! [`Scrubber`] is built once from the configuration (every API key given in clear, every provider key,
//! every webhook secret, the Upstash token) and applied where outside text enters: the provider
//! transport's report and a delivery attempt's report. Nothing downstream has to remember.

use std::borrow::Cow;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// What a secret becomes in scrubbed text.
pub(crate) const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not searched for: a one-letter test key would blank out every
/// occurrence of that letter, and a key that short protects nothing anyway.
pub(crate) const MIN_SECRET_LEN: usize = 6;

/// Replaces every configured secret in a text. Cheap to clone (one shared automaton).
#[derive(Clone, Default)]
pub struct Scrubber {
    automaton: Option<Arc<AhoCorasick>>,
    count: usize,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber").field("secrets", &self.count).finish()
    }
}

impl Scrubber {
    /// A scrubber for `secrets` (duplicates and ones shorter than [`MIN_SECRET_LEN`] are dropped).
    pub(crate) fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Self {
        let mut patterns: Vec<String> = secrets
            .into_iter()
            .map(|s| s.as_ref().trim().to_string())
            .filter(|s| s.chars().count() >= MIN_SECRET_LEN)
            .collect();
        patterns.sort();
        patterns.dedup();
        if patterns.is_empty() {
            return Self::default();
        }
        // Leftmost-longest: a secret that contains another one is replaced whole.
        match AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
        {
            Ok(automaton) => Self {
                automaton: Some(Arc::new(automaton)),
                count: patterns.len(),
            },
            // Only a pattern set too large for the automaton fails; refuse nothing, but say so.
            Err(e) => {
                tracing::error!(error = %e, "secret scrubber could not be built; outside text is not scrubbed");
                Self::default()
            }
        }
    }

    /// How many distinct secrets are searched for.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// `text` with every configured secret replaced by [`REDACTED`].
    pub(crate) fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match &self.automaton {
            Some(ac) if ac.is_match(text) => Cow::Owned(ac.replace_all(text, &vec![REDACTED; self.count])),
            _ => Cow::Borrowed(text),
        }
    }

    /// [`Scrubber::scrub`] for an owned string, without a copy when nothing matches.
    pub(crate) fn scrub_owned(&self, text: String) -> String {
        match self.scrub(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(scrubbed) => scrubbed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_is_replaced_wherever_it_appears() {
        let s = Scrubber::new(["sk-live-0123456789", "whsec_abcdefgh", "short", "sk-live-0123456789"]);
        assert_eq!(s.len(), 2, "duplicates and short ones dropped");
        assert_eq!(
            s.scrub("401 Incorrect API key provided: sk-live-0123456789 (Bearer sk-live-0123456789)"),
            "401 Incorrect API key provided: [redacted] (Bearer [redacted])"
        );
        assert_eq!(s.scrub("x whsec_abcdefghij y"), "x [redacted]ij y");
        assert!(matches!(s.scrub("nothing here, short"), Cow::Borrowed(_)));
        assert_eq!(Scrubber::default().scrub("sk-live-0123456789"), "sk-live-0123456789");
    }

    #[test]
    fn a_secret_containing_another_is_replaced_whole() {
        let s = Scrubber::new(["abcdef", "abcdefghijkl"]);
        assert_eq!(s.scrub("<abcdefghijkl>"), "<[redacted]>");
        assert_eq!(format!("{s:?}"), "Scrubber { secrets: 2 }");
    }
}
