//! The signature headers on every webhook we send.
//!
//! Two schemes ride on each request so both old and new receivers can verify it:
//! - legacy: `X-Webhook-Signature: hex(HMAC-SHA256(secret, body))` and `X-Webhook-Timestamp: <epoch ms>`, keyed with
//!   the secret string's UTF-8 bytes exactly as the caller holds it (whatever its form), signed with the current
//!   secret only, since that header carries one signature;
//! - Standard Webhooks (<https://www.standardwebhooks.com/>): `webhook-id`, `webhook-timestamp` (epoch **seconds**)
//!   and `webhook-signature: v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`, one space-separated entry
//!   per configured secret (current first) so a receiver keeps verifying while a secret is rotated.
//!
//! Standard Webhooks key: a secret written `whsec_<base64>` is the spec's serialised form, and its key is the decoded
//! bytes; any other secret string is used as raw bytes. The secret itself is never put in a header.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD as BASE64};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Legacy signature header: lowercase hex HMAC-SHA256 of the body.
pub(crate) const LEGACY_SIGNATURE_HEADER: &str = "X-Webhook-Signature";
/// Legacy timestamp header: epoch milliseconds.
pub(crate) const LEGACY_TIMESTAMP_HEADER: &str = "X-Webhook-Timestamp";
/// Standard Webhooks message id, the same on every retry of one message.
pub(crate) const WEBHOOK_ID_HEADER: &str = "webhook-id";
/// Standard Webhooks timestamp: epoch seconds.
pub(crate) const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Standard Webhooks signatures: `v1,<base64>` entries separated by spaces.
pub(crate) const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";

/// The prefix of the Standard Webhooks serialised secret.
const WHSEC_PREFIX: &str = "whsec_";

type HmacSha256 = Hmac<Sha256>;

/// Decodes the base64 of a `whsec_` secret with or without its `=` padding (both forms circulate).
const WHSEC_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a configured secret cannot be used. Never carries the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("a webhook secret is empty")]
    Empty,
    #[error("a webhook secret starts with `whsec_` but the rest is not valid base64")]
    InvalidWhsecBase64,
    #[error("the HMAC implementation rejected a webhook secret's key length")]
    KeyLength,
    #[error("expected one or two webhook secrets (current first), got {0}")]
    WrongCount(usize),
}

/// One secret as two keyed HMACs, ready to clone per message; the key bytes are not kept elsewhere.
#[derive(Clone)]
struct Secret {
    /// Legacy: keyed with the secret string's bytes as the caller holds them.
    legacy_mac: HmacSha256,
    /// Standard Webhooks: keyed with the base64-decoded bytes for `whsec_` secrets, else the raw bytes.
    standard_mac: HmacSha256,
}

impl Secret {
    fn parse(text: &str) -> Result<Self, SecretError> {
        if text.is_empty() {
            return Err(SecretError::Empty);
        }
        let standard_key = match text.strip_prefix(WHSEC_PREFIX) {
            Some(encoded) => {
                let decoded = WHSEC_BASE64
                    .decode(encoded)
                    .map_err(|_| SecretError::InvalidWhsecBase64)?;
                if decoded.is_empty() {
                    return Err(SecretError::Empty);
                }
                decoded
            }
            None => text.as_bytes().to_vec(),
        };
        Ok(Self {
            legacy_mac: keyed_mac(text.as_bytes())?,
            standard_mac: keyed_mac(&standard_key)?,
        })
    }
}

/// One owner's webhook secrets: the current one, and during a rotation the previous one.
#[derive(Clone)]
pub struct WebhookSecrets {
    current: Secret,
    previous: Option<Secret>,
    /// The current secret as written, for the opt-in legacy `Authorization: Bearer` header only.
    current_text: String,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecrets")
            .field("count", &self.count())
            .finish_non_exhaustive()
    }
}

impl WebhookSecrets {
    /// The current secret and, while rotating, the previous one.
    pub fn new(current: &str, previous: Option<&str>) -> Result<Self, SecretError> {
        Ok(Self {
            current: Secret::parse(current)?,
            previous: previous.map(Secret::parse).transpose()?,
            current_text: current.to_owned(),
        })
    }

    /// From a configured list, current first; one or two entries.
    pub fn from_list<S: AsRef<str>>(secrets: &[S]) -> Result<Self, SecretError> {
        match secrets {
            [current] => Self::new(current.as_ref(), None),
            [current, previous] => Self::new(current.as_ref(), Some(previous.as_ref())),
            other => Err(SecretError::WrongCount(other.len())),
        }
    }

    /// How many secrets sign each message (1 or 2).
    pub fn count(&self) -> usize {
        1 + usize::from(self.previous.is_some())
    }

    fn all(&self) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.current).chain(self.previous.as_ref())
    }
}

/// Both header sets for one delivery of `body` (the exact bytes sent), message `msg_id`, sent at `now_ms`.
///
/// `msg_id` should stay the same across retries of one message so receivers can deduplicate.
pub fn signed_headers(secrets: &WebhookSecrets, msg_id: &str, now_ms: u64, body: &str) -> Vec<(String, String)> {
    let timestamp_seconds = (now_ms / 1000).to_string();
    let signed_content = format!("{msg_id}.{timestamp_seconds}.{body}");
    let standard_signatures: Vec<String> = secrets
        .all()
        .map(|secret| {
            format!(
                "v1,{}",
                BASE64.encode(sign_with(&secret.standard_mac, signed_content.as_bytes()))
            )
        })
        .collect();
    vec![
        (
            LEGACY_SIGNATURE_HEADER.to_owned(),
            hex::encode(sign_with(&secrets.current.legacy_mac, body.as_bytes())),
        ),
        (LEGACY_TIMESTAMP_HEADER.to_owned(), now_ms.to_string()),
        (WEBHOOK_ID_HEADER.to_owned(), msg_id.to_owned()),
        (WEBHOOK_TIMESTAMP_HEADER.to_owned(), timestamp_seconds),
        (WEBHOOK_SIGNATURE_HEADER.to_owned(), standard_signatures.join(" ")),
    ]
}

/// `Authorization: Bearer <current secret>`, the original's legacy webhook header, sent only when
/// `WEBHOOK_LEGACY_BEARER=true`. Weaker than the signatures: it hands the secret itself to the
/// receiver (and to anything that logs its headers), proves nothing about the body and never expires.
pub(crate) fn legacy_bearer_header(secrets: &WebhookSecrets) -> (String, String) {
    (
        AUTHORIZATION_HEADER.to_owned(),
        format!("Bearer {}", secrets.current_text),
    )
}

/// The header of [`legacy_bearer_header`].
pub(crate) const AUTHORIZATION_HEADER: &str = "Authorization";

fn keyed_mac(key: &[u8]) -> Result<HmacSha256, SecretError> {
    HmacSha256::new_from_slice(key).map_err(|_| SecretError::KeyLength)
}

fn sign_with(keyed: &HmacSha256, message: &[u8]) -> Vec<u8> {
    let mut mac = keyed.clone();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}
