//! How every wire reads a provider's JSON: leniently. A provider's answer is outside text: a field that is
//! absent, `null` or of another type than the one we read counts as absent, never as a broken answer (the
//! wire structs in each `providers/<wire>.rs` and the error bodies in `classify.rs` use these as
//! `#[serde(deserialize_with = "de::…")]`). A leaf: both the transport and the classifier import it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Reads one scalar field of a wire struct (a string, a count, a flag) the way a provider's answer must be
/// read: absent, `null`, or of another type than the one we read all count as absent (`None`), never as
/// a broken answer. Wire structs pair it with `#[serde(default)]` on the struct, so a missing field is
/// absent too.
pub(crate) fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(serde_json::from_value(Value::deserialize(d)?).ok())
}

/// Reads a field that holds one of our wire structs: only a JSON object is read (serde would otherwise
/// read an array into a struct by position); anything else is absent.
pub(crate) fn object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(match Value::deserialize(d)? {
        value @ Value::Object(_) => serde_json::from_value(value).ok(),
        _ => None,
    })
}

/// The first element of a list field (`choices[0]`, `candidates[0]`): absent when the list is absent,
/// empty or starts with `null`; an element that is there but is not an object reads as one that says
/// nothing (`T::default()`).
pub(crate) fn first<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => match items.into_iter().next() {
            None | Some(Value::Null) => None,
            Some(value @ Value::Object(_)) => serde_json::from_value(value).ok(),
            Some(_) => Some(T::default()),
        },
        _ => None,
    })
}

/// The elements of a list field (content blocks, parts) that are objects; a list that is absent or not a
/// list is empty, and an element that is not an object (a bare string among the blocks) carries nothing.
pub(crate) fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .filter(Value::is_object)
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect(),
        _ => Vec::new(),
    })
}
