//! `POST /v1/generate/batch`: the envelope `{items: [{id, request}], concurrency?, tenantId?,
//! requestId?, contractVersion?}`, read in the original's order of checks; each item's `request` is a
//! generic request ([`GenerateRequest`]), read as `/v1/generate` reads it.

use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use super::generic::{GenerateBody, GenerateRequest};
use super::{FieldError, Preset};
use crate::domain::batch::{MAX_CONCURRENCY, MAX_ITEMS, MAX_ITEM_ID};
use crate::domain::contract::{ContractVersion, VERSION_UNSUPPORTED};

/// Longest envelope `tenantId` / `requestId`, in characters.
const MAX_ENVELOPE_ID: usize = 256;

/// The batch body (its schema only: [`parse`] reads it, in the original's order of checks).
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "BatchRequest")]
#[allow(dead_code)]
pub(crate) struct BatchBody {
    /// 1 to 100 items; each becomes a job of its own.
    #[schemars(length(min = 1, max = MAX_ITEMS))]
    items: Vec<BatchEntry>,
    /// Accepted and echoed (1 to 5, default 5). Items run as independent jobs, paced by the providers'
    /// shared quotas, not by lanes of the batch.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_CONCURRENCY))]
    concurrency: Option<u64>,
    /// Given to every item that has none.
    #[serde(default)]
    #[schemars(length(min = 1, max = MAX_ENVELOPE_ID))]
    tenant_id: Option<String>,
    /// An item without a `requestId` gets `<requestId or "batch">:<item id>`.
    #[serde(default)]
    #[schemars(length(min = 1, max = MAX_ENVELOPE_ID))]
    request_id: Option<String>,
    #[serde(default)]
    contract_version: Option<ContractVersion>,
}

#[derive(JsonSchema)]
#[schemars(inline)]
#[allow(dead_code)]
struct BatchEntry {
    /// Unique within the batch (after trimming); 1 to 128 characters.
    #[schemars(length(min = 1, max = MAX_ITEM_ID), regex(pattern = r"\S"))]
    id: String,
    request: GenerateBody,
}

/// A batch, read.
#[derive(Debug)]
pub(crate) struct Batch {
    /// Each item's trimmed id and request, in input order.
    pub(crate) items: Vec<(String, GenerateRequest)>,
    pub(crate) concurrency: u64,
    pub(crate) tenant_id: Option<String>,
    pub(crate) request_id: Option<String>,
}

/// Why a batch is refused: the envelope (one error), or its items (every refused item's error, in
/// input order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BatchRefusal {
    Envelope(FieldError),
    Items(Vec<FieldError>),
}

fn envelope(field: &str, message: impl Into<String>) -> BatchRefusal {
    BatchRefusal::Envelope(FieldError::new(field, message))
}

/// An envelope id: absent, or a string of at most [`MAX_ENVELOPE_ID`] characters.
fn envelope_id(body: &Map<String, Value>, field: &str) -> Result<Option<String>, BatchRefusal> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= MAX_ENVELOPE_ID => Ok(Some(s.clone()).filter(|s| !s.is_empty())),
        Some(_) => Err(envelope(
            field,
            format!("must be a string of at most {MAX_ENVELOPE_ID} characters"),
        )),
    }
}

/// Reads a batch body in the original's order: the envelope's version, `items`, their number,
/// `concurrency`, each item's shape, unique ids, `tenantId`, `requestId`; then every item's request
/// (all refused items are named, in input order).
pub(crate) fn parse(body: Value) -> Result<Batch, BatchRefusal> {
    let Value::Object(body) = body else {
        return Err(envelope("body", "must be a JSON object"));
    };
    if let Some(v) = body.get("contractVersion") {
        if ContractVersion::check(v.clone()).is_err() {
            return Err(envelope("contractVersion", VERSION_UNSUPPORTED));
        }
    }
    let items = match body.get("items") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        _ => return Err(envelope("items", "must be a non-empty array of {id, request}")),
    };
    if items.len() > MAX_ITEMS {
        return Err(envelope(
            "items",
            format!("must hold at most {MAX_ITEMS} items (got {})", items.len()),
        ));
    }
    let concurrency = match body.get("concurrency") {
        None => MAX_CONCURRENCY,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_CONCURRENCY).contains(&n) => n,
            _ => {
                return Err(envelope(
                    "concurrency",
                    format!("must be an integer from 1 to {MAX_CONCURRENCY}"),
                ))
            }
        },
    };
    let mut ids: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let id = item.get("id").and_then(Value::as_str);
        let shaped = matches!(id, Some(id) if !id.trim().is_empty() && id.chars().count() <= MAX_ITEM_ID)
            && item.get("request").is_some_and(Value::is_object);
        if !shaped {
            return Err(envelope(
                &format!("items[{i}]"),
                format!(
                    "must be an object with a unique id (a non-blank string of at most {MAX_ITEM_ID} characters) \
                     and a request object"
                ),
            ));
        }
        let id = id.unwrap_or_default().trim().to_string();
        if let Some(first) = ids.iter().position(|seen| *seen == id) {
            return Err(envelope(
                &format!("items[{i}].id"),
                format!("duplicates items[{first}].id '{id}': item ids must be unique"),
            ));
        }
        ids.push(id);
    }
    let tenant_id = envelope_id(&body, "tenantId")?;
    let request_id = envelope_id(&body, "requestId")?;
    let mut read = Vec::with_capacity(items.len());
    let mut refused = Vec::new();
    for (i, (item, id)) in items.iter().zip(ids).enumerate() {
        let mut request = item.get("request").cloned().unwrap_or_else(|| json!({}));
        // Inheritance, as the original: a falsy tenantId takes the envelope's; a missing requestId
        // becomes `<envelope requestId or "batch">:<id>`.
        if let Value::Object(r) = &mut request {
            let falsy = |v: Option<&Value>| {
                matches!(v, None | Some(Value::Null) | Some(Value::Bool(false)))
                    || v.and_then(Value::as_str) == Some("")
            };
            if let Some(tenant) = tenant_id.as_ref().filter(|_| falsy(r.get("tenantId"))) {
                r.insert("tenantId".into(), json!(tenant));
            }
            if r.get("requestId").is_none_or(Value::is_null) {
                let prefix = request_id.as_deref().unwrap_or("batch");
                r.insert("requestId".into(), json!(format!("{prefix}:{id}")));
            }
        }
        match GenerateRequest::parse(request) {
            Ok(request) => read.push((id, request)),
            Err(e) => refused.push(FieldError::new(format!("items[{i}].request.{}", e.field), e.message)),
        }
    }
    if !refused.is_empty() {
        return Err(BatchRefusal::Items(refused));
    }
    Ok(Batch {
        items: read,
        concurrency,
        tenant_id,
        request_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, request: Value) -> Value {
        json!({"id": id, "request": request})
    }

    fn envelope_field(body: Value) -> String {
        match parse(body) {
            Err(BatchRefusal::Envelope(e)) => e.field,
            other => panic!("expected an envelope refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_envelope_is_checked_in_the_originals_order() {
        let ok = item("a", json!({"prompt": "x"}));
        assert_eq!(
            envelope_field(json!({"contractVersion": 1, "items": []})),
            "contractVersion"
        );
        assert_eq!(envelope_field(json!({})), "items");
        assert_eq!(envelope_field(json!({"items": []})), "items");
        assert_eq!(envelope_field(json!({"items": vec![ok.clone(); 101]})), "items");
        for c in [json!(0), json!(6), json!(1.5), json!(null)] {
            assert_eq!(
                envelope_field(json!({"items": [ok.clone()], "concurrency": c})),
                "concurrency"
            );
        }
        assert_eq!(
            envelope_field(json!({"items": [{"id": " ", "request": {}}]})),
            "items[0]"
        );
        assert_eq!(
            envelope_field(json!({"items": [{"id": "a", "request": 3}]})),
            "items[0]"
        );
        assert_eq!(
            envelope_field(json!({"items": [{"id": "x".repeat(129), "request": {}}]})),
            "items[0]"
        );
        assert_eq!(
            envelope_field(json!({"items": [ok.clone(), item(" a ", json!({"prompt": "y"}))]})),
            "items[1].id"
        );
        assert_eq!(
            envelope_field(json!({"items": [ok.clone()], "tenantId": 5})),
            "tenantId"
        );
        assert_eq!(
            envelope_field(json!({"items": [ok.clone()], "requestId": "r".repeat(257)})),
            "requestId"
        );
    }

    #[test]
    fn every_refused_item_is_named_in_input_order() {
        let body = json!({"items": [
            item("a", json!({"prompt": 3})),
            item("b", json!({"prompt": "fine"})),
            item("c", json!({"prompt": "x", "contractVersion": "2"})),
        ]});
        let Err(BatchRefusal::Items(errors)) = parse(body) else {
            panic!("items refused")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["items[0].request.prompt", "items[2].request.contractVersion"]);
        assert_eq!(errors[1].message, VERSION_UNSUPPORTED);
    }

    #[test]
    fn items_inherit_the_envelopes_ids() {
        let batch = parse(json!({"tenantId": "t", "requestId": "r", "items": [
            item(" i1 ", json!({"prompt": "x"})),
            item("i2", json!({"prompt": "y", "tenantId": "own", "requestId": "mine"})),
        ]}))
        .unwrap();
        assert_eq!(batch.concurrency, MAX_CONCURRENCY);
        let (id, first) = &batch.items[0];
        assert_eq!(id, "i1");
        assert_eq!(first.context["tenantId"], "t");
        assert_eq!(first.context["requestId"], "r:i1");
        assert_eq!(batch.items[1].1.context["tenantId"], "own");
        assert_eq!(batch.items[1].1.context["requestId"], "mine");
        let bare = parse(json!({"items": [item("i1", json!({"prompt": "x"}))]})).unwrap();
        assert_eq!(bare.items[0].1.context["requestId"], "batch:i1");
        assert!(bare.items[0].1.context.get("tenantId").is_none());
    }
}
