//! A batch: up to [`MAX_ITEMS`] generic requests submitted at once. Each item is a job of its own (it
//! waits for quota, survives crashes and is delivered like any job); the batch itself is a small
//! record of its items' job ids, polled as one (`Store::put_batch`, `Store::read_batch`).

use serde::{Deserialize, Serialize};

use super::contract::Failure;

/// Most items one batch holds (the original's `BATCH_MAX_ITEMS` default).
pub(crate) const MAX_ITEMS: usize = 100;
/// Highest `concurrency` a batch may ask for, and its default (the original's `BATCH_MAX_CONCURRENCY`).
pub(crate) const MAX_CONCURRENCY: u64 = 5;
/// Longest item id, in characters.
pub(crate) const MAX_ITEM_ID: usize = 128;

/// One item: its caller-given id and its job (`None`: refused at submit, `refused` says why).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchItem {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Failure>,
}

/// What the store keeps of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub id: String,
    pub owner: String,
    pub created_at_ms: u64,
    /// When the record expires (epoch ms): as long as its items' jobs can live.
    pub expires_at_ms: u64,
    pub concurrency: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub items: Vec<BatchItem>,
}

/// A fresh batch id: a UUID v4, as the original's (never 32 hex digits, so never a job id).
pub fn new_batch_id() -> String {
    use rand::Rng;
    let mut b: [u8; 16] = rand::thread_rng().gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// A batch id: a lowercase UUID (8-4-4-4-12 hex digits).
pub(crate) fn is_valid_batch_id(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => matches!(b, b'0'..=b'9' | b'a'..=b'f'),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ids_are_uuids_and_never_job_ids() {
        let id = new_batch_id();
        assert!(is_valid_batch_id(&id), "{id}");
        assert!(!crate::domain::job::is_valid_job_id(&id));
        assert_eq!(&id[14..15], "4");
        assert!(!is_valid_batch_id("0123456789abcdef0123456789abcdef"));
        assert_ne!(new_batch_id(), id);
    }
}
