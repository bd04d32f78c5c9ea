//! The request bodies' field types. Each type holds its field's limits, refuses a value past them while
//! serde reads the body, and describes the same limits in the JSON Schema the OpenAPI document serves: a
//! limit has one home, so the parser and the document cannot drift apart. The 400's `field` is the path
//! serde was at (`serde_path_to_error`), and its `error` text is the contract's, word for word.
//!
//! Leaf types read the JSON value whole and inspect it (a value past its limit is named where it stands);
//! a type that refuses something below itself (an array item, a key it looked for) says where with a
//! [`Refusal`]'s child path.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::FieldError;

/// Separates a refusal's child path from its message inside serde's error text (serde errors carry a
/// string only); never a character of a field name or a message.
const CHILD: char = '\u{1f}';

/// Why a field type refused a value, and where below the field (`""`: the field itself; `"url"`,
/// `"[2]"`, `"[2].role"`: inside it).
#[derive(Debug)]
pub(crate) struct Refusal {
    child: String,
    message: String,
}

impl Refusal {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self::at("", message)
    }

    pub(crate) fn at(child: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            child: child.into(),
            message: message.into(),
        }
    }

    pub(crate) fn into_error<E: serde::de::Error>(self) -> E {
        E::custom(format_args!("{}{CHILD}{}", self.child, self.message))
    }
}

/// `a` then `b` as the contract spells a path: `callbacks[0].url`.
fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ if b.starts_with('[') => format!("{a}{b}"),
        _ => format!("{a}.{b}"),
    }
}

/// Reads a request body: a JSON object, as `T`.
pub(crate) fn parse<T: DeserializeOwned>(body: Value) -> Result<T, FieldError> {
    if !body.is_object() {
        return Err(FieldError::new("body", "must be a JSON object"));
    }
    parse_at(body).map_err(|e| {
        if e.field.is_empty() {
            FieldError::new("body", e.message)
        } else {
            e
        }
    })
}

/// Reads `value` as `T`; the error's field is the path below `value` (empty for `value` itself).
pub(crate) fn parse_at<T: DeserializeOwned>(value: Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = match e.path().to_string() {
            root if root == "." => String::new(),
            path => path,
        };
        let message = e.into_inner().to_string();
        let (child, message) = match message.split_once(CHILD) {
            Some((child, message)) => (child.to_string(), message.to_string()),
            // serde's derive names a missing field in its message, at the object's path.
            None => match message
                .strip_prefix("missing field `")
                .and_then(|m| m.strip_suffix('`'))
            {
                Some(name) => (name.to_string(), "is required".to_string()),
                None => (String::new(), message),
            },
        };
        FieldError::new(join(&path, &child), message)
    })
}

/// Reads the field `name`'s value as `T` (for a field read only when another is absent).
pub(crate) fn parse_field<T: DeserializeOwned>(name: &str, value: Value) -> Result<T, FieldError> {
    parse_at(value).map_err(|e| FieldError::new(join(name, &e.field), e.message))
}

/// Reads `value`, found at `child` below the field being read, as `T`.
pub(crate) fn nested<T: DeserializeOwned>(child: &str, value: Value) -> Result<T, Refusal> {
    parse_at(value).map_err(|e| Refusal::at(join(child, &e.field), e.message))
}

/// `Deserialize` for a type with `fn check(Value) -> Result<Self, Refusal>`.
macro_rules! via_check {
    ([$($generics:tt)*] $ty:ty) => {
        impl<'de, $($generics)*> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = <::serde_json::Value as ::serde::Deserialize>::deserialize(deserializer)?;
                Self::check(value).map_err($crate::domain::presets::fields::Refusal::into_error)
            }
        }
    };
}

/// `JsonSchema` for a leaf type: always inlined where it is used, under `name`.
macro_rules! leaf_schema {
    ([$($generics:tt)*] $ty:ty, |$generator:ident| $name:expr, $schema:expr) => {
        impl<$($generics)*> ::schemars::JsonSchema for $ty {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> ::std::borrow::Cow<'static, str> {
                $name.into()
            }
            fn json_schema($generator: &mut ::schemars::SchemaGenerator) -> ::schemars::Schema {
                $schema
            }
        }
    };
}

pub(crate) use leaf_schema;

fn characters(s: &str, min: usize, max: usize) -> Result<(), Refusal> {
    let n = s.chars().count();
    if n < min || n > max {
        let range = if min == 0 {
            format!("at most {max}")
        } else {
            format!("{min} to {max}")
        };
        return Err(Refusal::new(format!(
            "must be a string of {range} characters (got {n})"
        )));
    }
    Ok(())
}

/// A string of `MIN..=MAX` characters. Absent or null, an optional one is `None`; a required one
/// "is required".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Text<const MIN: usize, const MAX: usize>(pub String);

impl<const MIN: usize, const MAX: usize> Text<MIN, MAX> {
    pub(crate) fn check(value: Value) -> Result<Self, Refusal> {
        match value {
            Value::Null => Err(Refusal::new("is required")),
            Value::String(s) => characters(&s, MIN, MAX).map(|()| Self(s)),
            _ => Err(Refusal::new("must be a string")),
        }
    }
}

pub(crate) use via_check;

via_check!([const MIN: usize, const MAX: usize] Text<MIN, MAX>);
leaf_schema!(
    [const MIN: usize, const MAX: usize] Text<MIN, MAX>,
    |_g| format!("Text_{MIN}_{MAX}"),
    json_schema!({"type": "string", "minLength": MIN, "maxLength": MAX})
);

/// The longest URL a webhook or callback may have.
pub(crate) const MAX_URL: usize = 2048;

/// A webhook's or callback's URL: 1 to [`MAX_URL`] characters (whether it is safe is the URL guard's
/// question, asked by the route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url(pub String);

impl Url {
    fn check(value: Value) -> Result<Self, Refusal> {
        Text::<1, MAX_URL>::check(value).map(|t| Self(t.0))
    }
}

via_check!([] Url);
leaf_schema!(
    [] Url,
    |_g| "Url",
    json_schema!({"type": "string", "minLength": 1, "maxLength": MAX_URL, "format": "uri"})
);

/// Up to `ITEMS` strings of at most `LEN` characters each; absent or null is none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Strings<const ITEMS: usize, const LEN: usize>(pub Vec<String>);

impl<const ITEMS: usize, const LEN: usize> Strings<ITEMS, LEN> {
    fn check(value: Value) -> Result<Self, Refusal> {
        let items = match value {
            Value::Array(items) => items,
            _ => return Err(Refusal::new("must be an array of strings")),
        };
        if items.len() > ITEMS {
            return Err(Refusal::new(format!(
                "must have at most {ITEMS} items (got {})",
                items.len()
            )));
        }
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) if s.chars().count() <= LEN => Ok(s),
                _ => Err(Refusal::at(
                    format!("[{i}]"),
                    format!("must be a string of at most {LEN} characters"),
                )),
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

via_check!([const ITEMS: usize, const LEN: usize] Strings<ITEMS, LEN>);
leaf_schema!(
    [const ITEMS: usize, const LEN: usize] Strings<ITEMS, LEN>,
    |_g| format!("Strings_{ITEMS}_{LEN}"),
    json_schema!({"type": "array", "maxItems": ITEMS, "items": {"type": "string", "maxLength": LEN}})
);

/// A string of at most `MAX_BYTES` bytes (counted in bytes: a diff is budgeted, not refused, below it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct LongText<const MAX_BYTES: usize>(pub String);

impl<const MAX_BYTES: usize> LongText<MAX_BYTES> {
    fn check(value: Value) -> Result<Self, Refusal> {
        match value {
            Value::String(s) if s.len() <= MAX_BYTES => Ok(Self(s)),
            Value::String(_) => Err(Refusal::new(format!("must be at most {} MB", MAX_BYTES >> 20))),
            _ => Err(Refusal::new("must be a string")),
        }
    }
}

via_check!([const MAX_BYTES: usize] LongText<MAX_BYTES>);
leaf_schema!(
    [const MAX_BYTES: usize] LongText<MAX_BYTES>,
    |_g| format!("LongText_{MAX_BYTES}"),
    json_schema!({"type": "string", "maxLength": MAX_BYTES})
);

/// A whole number from `MIN` to `MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Int<const MIN: u64, const MAX: u64>(pub u64);

impl<const MIN: u64, const MAX: u64> Int<MIN, MAX> {
    fn check(value: Value) -> Result<Self, Refusal> {
        match value.as_u64() {
            Some(n) if (MIN..=MAX).contains(&n) => Ok(Self(n)),
            _ => Err(Refusal::new(format!("must be an integer from {MIN} to {MAX}"))),
        }
    }
}

via_check!([const MIN: u64, const MAX: u64] Int<MIN, MAX>);
leaf_schema!(
    [const MIN: u64, const MAX: u64] Int<MIN, MAX>,
    |_g| format!("Int_{MIN}_{MAX}"),
    json_schema!({"type": "integer", "minimum": MIN, "maximum": MAX})
);

/// `true` or `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flag(pub bool);

impl Flag {
    fn check(value: Value) -> Result<Self, Refusal> {
        match value {
            Value::Bool(b) => Ok(Self(b)),
            _ => Err(Refusal::new("must be a boolean")),
        }
    }
}

via_check!([] Flag);
leaf_schema!([] Flag, |_g| "Flag", json_schema!({"type": "boolean"}));

/// Any JSON object, kept as it is.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct JsonObject(pub Map<String, Value>);

impl JsonObject {
    fn check(value: Value) -> Result<Self, Refusal> {
        match value {
            Value::Object(m) => Ok(Self(m)),
            _ => Err(Refusal::new("must be an object")),
        }
    }
}

via_check!([] JsonObject);
leaf_schema!(
    [] JsonObject,
    |_g| "JsonObject",
    json_schema!({"type": "object", "additionalProperties": true})
);

/// How many headers one callback may carry.
pub(crate) const MAX_HEADERS: usize = 20;
const MAX_HEADER_NAME: usize = 256;
const MAX_HEADER_VALUE: usize = 4096;

/// Headers sent with one callback: at most [`MAX_HEADERS`], each a valid HTTP name and value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Headers(pub BTreeMap<String, String>);

impl Headers {
    fn check(value: Value) -> Result<Self, Refusal> {
        let entries = match value {
            Value::Object(h) if h.len() <= MAX_HEADERS => h,
            _ => {
                return Err(Refusal::new(format!(
                    "must be an object of at most {MAX_HEADERS} string values"
                )))
            }
        };
        let mut headers = BTreeMap::new();
        for (name, value) in entries {
            let valid_name =
                !name.is_empty() && name.len() <= MAX_HEADER_NAME && http::HeaderName::try_from(name.as_str()).is_ok();
            match value {
                Value::String(s)
                    if valid_name && s.len() <= MAX_HEADER_VALUE && http::HeaderValue::try_from(s.as_str()).is_ok() =>
                {
                    headers.insert(name, s);
                }
                _ => {
                    return Err(Refusal::new(format!(
                        "header {name:?} must be a valid name with a string value"
                    )))
                }
            }
        }
        Ok(Self(headers))
    }
}

via_check!([] Headers);
leaf_schema!(
    [] Headers,
    |_g| "Headers",
    json_schema!({
        "type": "object",
        "maxProperties": MAX_HEADERS,
        "propertyNames": {"pattern": format!("^[!#$%&'*+.^_`|~0-9A-Za-z-]{{1,{MAX_HEADER_NAME}}}$")},
        "additionalProperties": {"type": "string", "maxLength": MAX_HEADER_VALUE, "pattern": "^[^\\x00-\\x08\\x0a-\\x1f\\x7f]*$"}
    })
);

/// A number from 0 to 2, the sampling temperature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Temperature(pub f32);

impl Temperature {
    const MAX: f64 = 2.0;

    fn check(value: Value) -> Result<Self, Refusal> {
        value
            .as_f64()
            .filter(|t| (0.0..=Self::MAX).contains(t))
            .map(|t| Self(t as f32))
            .ok_or_else(|| Refusal::new(format!("must be a number from 0 to {}", Self::MAX)))
    }
}

via_check!([] Temperature);
leaf_schema!(
    [] Temperature,
    |_g| "Temperature",
    json_schema!({"type": "number", "minimum": 0, "maximum": Temperature::MAX as u64})
);

/// An object that must be one: absent or null is an error, with the owner's words.
pub(crate) trait Shape: DeserializeOwned {
    /// The `error` text for anything but an object.
    const NOT_AN_OBJECT: &'static str;
}

/// A nested object read by its derived `Deserialize`, its fields named below it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Object<T>(pub T);

impl<T: Shape> Object<T> {
    fn check(value: Value) -> Result<Self, Refusal> {
        match value {
            v @ Value::Object(_) => nested("", v).map(Self),
            _ => Err(Refusal::new(T::NOT_AN_OBJECT)),
        }
    }
}

via_check!([T: Shape] Object<T>);

impl<T: JsonSchema> JsonSchema for Object<T> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// Up to `MAX` objects, in order: a list that is not one (or too long) gets `T`'s list words.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct List<T, const MIN: usize, const MAX: usize>(pub Vec<T>);

/// The `error` text for a list of `T` that is not an array of `MIN..=MAX` items.
pub(crate) trait Listed {
    const NOT_A_LIST: &'static str;
}

impl<T: Shape + Listed, const MIN: usize, const MAX: usize> List<T, MIN, MAX> {
    fn check(value: Value) -> Result<Self, Refusal> {
        let items = match value {
            Value::Array(items) if (MIN..=MAX).contains(&items.len()) => items,
            _ => return Err(Refusal::new(T::NOT_A_LIST)),
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let child = format!("[{i}]");
                match item {
                    v @ Value::Object(_) => nested(&child, v),
                    _ => Err(Refusal::at(child, T::NOT_AN_OBJECT)),
                }
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

via_check!([T: Shape + Listed, const MIN: usize, const MAX: usize] List<T, MIN, MAX>);

impl<T: JsonSchema, const MIN: usize, const MAX: usize> JsonSchema for List<T, MIN, MAX> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        format!("List_{}_{MIN}_{MAX}", T::schema_name()).into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let items = generator.subschema_for::<T>();
        let mut schema = json_schema!({"type": "array", "maxItems": MAX, "items": items});
        if MIN > 0 {
            schema.insert("minItems".into(), MIN.into());
        }
        schema
    }
}

/// Reads a field that is present even when null (null is then the field type's to refuse); with
/// `#[serde(default)]`, only an absent field is `None`.
pub(crate) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        name: Text<1, 3>,
        #[serde(default)]
        tags: Option<Strings<2, 4>>,
    }

    impl Shape for Inner {
        const NOT_AN_OBJECT: &'static str = "must be an object";
    }

    impl Listed for Inner {
        const NOT_A_LIST: &'static str = "must be a list";
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        id: Text<1, 3>,
        #[serde(default)]
        inner: Option<List<Inner, 0, 2>>,
        #[serde(default)]
        one: Option<Object<Inner>>,
    }

    fn error(body: Value) -> String {
        parse::<Outer>(body).map(drop).unwrap_err().to_string()
    }

    #[test]
    fn refusals_name_the_path_serde_was_at() {
        assert!(parse::<Outer>(json!({"id": "a", "inner": null, "unknown": 1})).is_ok());
        assert_eq!(error(json!({})), "id: is required");
        assert_eq!(error(json!({"id": null})), "id: is required");
        assert_eq!(error(json!({"id": 3})), "id: must be a string");
        assert_eq!(
            error(json!({"id": "abcd"})),
            "id: must be a string of 1 to 3 characters (got 4)"
        );
        assert_eq!(error(json!({"id": "a", "inner": {}})), "inner: must be a list");
        assert_eq!(
            error(json!({"id": "a", "inner": [{}, {}, {}]})),
            "inner: must be a list"
        );
        assert_eq!(
            error(json!({"id": "a", "inner": [{"name": "x"}, 5]})),
            "inner[1]: must be an object"
        );
        assert_eq!(
            error(json!({"id": "a", "inner": [{"name": "x"}, {}]})),
            "inner[1].name: is required"
        );
        assert_eq!(
            error(json!({"id": "a", "inner": [{"name": "x", "tags": ["ok", 7]}]})),
            "inner[0].tags[1]: must be a string of at most 4 characters"
        );
        assert_eq!(
            error(json!({"id": "a", "one": {"name": "x", "tags": ["a", "b", "c"]}})),
            "one.tags: must have at most 2 items (got 3)"
        );
        assert!(parse::<Outer>(json!({"id": "a", "one": null})).is_ok());
        assert_eq!(parse::<Outer>(json!([1])).unwrap_err().field, "body");
    }

    /// Each field type's two halves, its check and its schema, agree at its edges (what the generated
    /// agreement runs of the hand-written schemas checked, now per type: a type is the one home of its
    /// limits, so agreeing here is agreeing everywhere it is used).
    fn agree<T: DeserializeOwned + JsonSchema>(values: &[Value]) {
        let schema = schemars::generate::SchemaSettings::draft2020_12()
            .for_deserialize()
            .into_generator()
            .into_root_schema_for::<T>();
        let validator = jsonschema::validator_for(schema.as_value()).expect("the schema compiles");
        for value in values {
            let read = parse_at::<T>(value.clone()).map(drop);
            let shown: String = value.to_string().chars().take(80).collect();
            assert_eq!(
                validator.is_valid(value),
                read.is_ok(),
                "{}: schema and check disagree on {shown}: {read:?}",
                T::schema_name()
            );
        }
    }

    #[test]
    fn every_field_type_and_its_schema_agree_at_the_edges() {
        let wrong = [
            json!(null),
            json!(true),
            json!(12),
            json!(-1),
            json!(0.5),
            json!("x"),
            json!([]),
            json!({}),
        ];
        let with = |extra: Vec<Value>| wrong.iter().cloned().chain(extra).collect::<Vec<_>>();
        agree::<Text<1, 3>>(&with(vec![
            json!(""),
            json!("abc"),
            json!("abcd"),
            json!("éé"),
            json!("ééé€"),
        ]));
        agree::<Text<0, 2>>(&with(vec![json!(""), json!("ab"), json!("abc")]));
        agree::<Url>(&with(vec![
            json!(""),
            json!("x".repeat(MAX_URL)),
            json!("x".repeat(MAX_URL + 1)),
        ]));
        agree::<Strings<2, 3>>(&with(vec![
            json!(["abc"]),
            json!(["abcd"]),
            json!(["a", "b"]),
            json!(["a", "b", "c"]),
            json!([1]),
            json!([null]),
        ]));
        agree::<Int<60, 100>>(&with(vec![
            json!(59),
            json!(60),
            json!(100),
            json!(101),
            json!(60.5),
            json!("60"),
        ]));
        agree::<Flag>(&with(vec![json!(false)]));
        agree::<JsonObject>(&with(vec![json!({"a": [1]})]));
        agree::<LongText<8>>(&with(vec![json!(""), json!("x".repeat(8)), json!("x".repeat(9))]));
        agree::<Temperature>(&with(vec![
            json!(0),
            json!(2),
            json!(2.5),
            json!(1.5),
            json!(-0.5),
            json!("1"),
        ]));
        let many = |n: usize| Value::Object((0..n).map(|i| (format!("x-h{i}"), json!("v"))).collect());
        agree::<Headers>(&with(vec![
            json!({"x-a": "b"}),
            json!({"bad name": "v"}),
            json!({"x-a": 1}),
            json!({"x-a": "line\nbreak"}),
            json!({"": "v"}),
            many(MAX_HEADERS),
            many(MAX_HEADERS + 1),
        ]));
    }
}
