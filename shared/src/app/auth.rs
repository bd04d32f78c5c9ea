//! API keys: `STEPPER_API_KEYS` = comma-separated `owner=key` or `owner=sha256:<hex>` entries.
//! Keys are compared as SHA-256 digests in constant time, over every entry, so neither an unknown
//! key nor a wrong one answers faster.

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// The owner of every job when no keys are configured (local use only).
pub const OPEN_OWNER: &str = "public";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("entry {0}: expected owner=key or owner=sha256:<64 hex digits>")]
    Malformed(usize),
    #[error("entry {0}: owner names use letters, digits, '.', '_' and '-' (1–64 characters)")]
    BadOwner(usize),
    #[error("API_KEY_HEADER {0:?} is not a valid header name")]
    BadHeader(String),
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    Missing,
    Invalid,
}

#[derive(Clone)]
struct KeyEntry {
    owner: String,
    digest: [u8; 32],
}

#[derive(Clone)]
pub struct ApiKeys {
    header: http::HeaderName,
    entries: Vec<KeyEntry>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let owners: Vec<_> = self.entries.iter().map(|e| e.owner.as_str()).collect();
        f.debug_struct("ApiKeys")
            .field("header", &self.header)
            .field("owners", &owners)
            .finish()
    }
}

fn valid_owner(owner: &str) -> bool {
    (1..=64).contains(&owner.len()) && owner.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl ApiKeys {
    pub fn parse(spec: &str, header: &str) -> Result<Self, AuthError> {
        let header = http::HeaderName::try_from(header.trim()).map_err(|_| AuthError::BadHeader(header.to_string()))?;
        let mut entries = Vec::new();
        for (index, raw) in spec.split(',').map(str::trim).filter(|s| !s.is_empty()).enumerate() {
            let (owner, key) = raw.split_once('=').ok_or(AuthError::Malformed(index + 1))?;
            let (owner, key) = (owner.trim(), key.trim());
            if !valid_owner(owner) {
                return Err(AuthError::BadOwner(index + 1));
            }
            let digest = match key.strip_prefix("sha256:") {
                Some(hex_digest) => {
                    let bytes = hex::decode(hex_digest).map_err(|_| AuthError::Malformed(index + 1))?;
                    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| AuthError::Malformed(index + 1))?
                }
                None if !key.is_empty() => Sha256::digest(key.as_bytes()).into(),
                None => return Err(AuthError::Malformed(index + 1)),
            };
            entries.push(KeyEntry {
                owner: owner.to_string(),
                digest,
            });
        }
        Ok(Self { header, entries })
    }

    /// No keys configured: every request is served as [`OPEN_OWNER`].
    pub fn is_open(&self) -> bool {
        self.entries.is_empty()
    }

    /// The owners keys belong to.
    pub(crate) fn owners(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.owner.as_str())
    }

    pub fn header_name(&self) -> &str {
        self.header.as_str()
    }

    /// The owner a request's key belongs to.
    pub(crate) fn owner(&self, headers: &HeaderMap) -> Result<String, Rejection> {
        if self.is_open() {
            return Ok(OPEN_OWNER.to_string());
        }
        let presented = headers
            .get(&self.header)
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(Rejection::Missing)?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        match self.scan(&digest, |a, b| a.ct_eq(b)) {
            Some(index) => Ok(self.entries[index].owner.clone()),
            None => Err(Rejection::Invalid),
        }
    }

    /// The entry whose digest is `digest`. Compares with every entry, in constant time each, and
    /// branches on nothing it learns, so a known key, a wrong one and an unknown one cost the same.
    fn scan(&self, digest: &[u8; 32], equal: impl Fn(&[u8; 32], &[u8; 32]) -> subtle::Choice) -> Option<usize> {
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, entry) in self.entries.iter().enumerate() {
            let hit = equal(&entry.digest, digest);
            index.conditional_assign(&(i as u32), hit & !found);
            found |= hit;
        }
        bool::from(found).then_some(index as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    #[test]
    fn raw_and_hashed_keys_map_to_their_owners() {
        let hashed = hex::encode(Sha256::digest(b"k2"));
        let keys = ApiKeys::parse(&format!("alice=k1, bob=sha256:{hashed}"), "X-API-Key").unwrap();
        assert_eq!(keys.owner(&headers(&[("x-api-key", "k1")])), Ok("alice".into()));
        assert_eq!(
            keys.owner(&headers(&[("authorization", "Bearer k2")])),
            Ok("bob".into())
        );
        assert_eq!(keys.owner(&headers(&[("x-api-key", "nope")])), Err(Rejection::Invalid));
        assert_eq!(keys.owner(&headers(&[])), Err(Rejection::Missing));
    }

    #[test]
    fn every_lookup_compares_with_every_key_whatever_it_finds() {
        let keys = ApiKeys::parse("a=key-one,b=key-two,c=key-three,d=key-four", "x-api-key").unwrap();
        let lookup = |presented: &str| {
            let compared = std::cell::Cell::new(0);
            let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
            let found = keys.scan(&digest, |a, b| {
                compared.set(compared.get() + 1);
                a.ct_eq(b)
            });
            (found, compared.get())
        };
        // The first key, the last, a near miss of a real key, and a key nobody has: the same work.
        assert_eq!(lookup("key-one"), (Some(0), 4));
        assert_eq!(lookup("key-four"), (Some(3), 4));
        assert_eq!(lookup("key-fouR"), (None, 4));
        assert_eq!(lookup("unknown"), (None, 4));
        assert_eq!(keys.owner(&headers(&[("x-api-key", "key-four")])), Ok("d".into()));
    }

    #[test]
    fn malformed_entries_are_refused_with_their_position() {
        assert!(matches!(
            ApiKeys::parse("alice", "x-api-key"),
            Err(AuthError::Malformed(1))
        ));
        assert!(matches!(
            ApiKeys::parse("a=1,b c=2", "x-api-key"),
            Err(AuthError::BadOwner(2))
        ));
        assert!(matches!(
            ApiKeys::parse("a=sha256:zz", "x-api-key"),
            Err(AuthError::Malformed(1))
        ));
        assert!(ApiKeys::parse("", "x-api-key").unwrap().is_open());
    }
}
