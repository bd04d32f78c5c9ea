//! Generic jobs: a prompt (string, or `{template, instructions, variables}` with `{{payload.x}}`,
//! `{{metadata.x}}`, `{{variables.x}}` placeholders) or a `messages` array; JSON (optionally checked
//! against an `outputSchema`, JSON Schema or the old flat `http-json` DSL) or text.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::fields::{
    leaf_schema, nested, parse_field, present, via_check, Int, JsonObject, Refusal, Temperature, Text, Url,
};
use super::{digest, targets, Callbacks, Deadline, FieldError, Preset, PRESET_VERSION};
use crate::domain::contract::{CacheControl, ContractVersion, ProviderNames, ProviderPrefs};
use crate::domain::job::{JobKind, JobSpec};
use crate::domain::llm::{ChatMessage, ResponseFormat, Role};
use crate::domain::targets::Target;

const MAX_PROMPT: usize = 200_000;

/// A generic job: `prompt` or `messages`, answered as JSON (optionally checked) or text.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(
    rename = "GenerateRequest",
    extend(
        "anyOf" = [{"required": ["prompt"]}, {"required": ["messages"]}],
        "dependentSchemas" = {"outputSchema": {"properties": {"responseMode": {"const": "json"}}}}
    )
)]
pub(crate) struct GenerateBody {
    // Null is not absent here: it is a prompt of the wrong type.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Prompt")]
    prompt: Option<Prompt>,
    /// A whole conversation; read only when `prompt` is absent.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "ChatMessages")]
    messages: Option<Unread>,
    /// Data for `{{payload.x}}` placeholders.
    #[serde(default)]
    #[schemars(with = "JsonObject")]
    payload: Option<JsonObject>,
    /// Data for `{{metadata.x}}` placeholders, kept with the job.
    #[serde(default)]
    #[schemars(with = "JsonObject")]
    metadata: Option<JsonObject>,
    #[serde(default)]
    #[schemars(with = "Mode", extend("default" = "json"))]
    response_mode: Option<Mode>,
    /// What the JSON answer must validate against: a JSON Schema, or the old flat DSL.
    #[serde(default)]
    #[schemars(with = "OutputSchema")]
    output_schema: Option<OutputSchema>,
    #[serde(default)]
    #[schemars(with = "Temperature")]
    temperature: Option<Temperature>,
    #[serde(default)]
    #[schemars(with = "Int<1, 32_768>", extend("default" = DEFAULT_MAX_TOKENS))]
    max_tokens: Option<Int<1, 32_768>>,
    /// The job's identity when given (else a hash of the prompt and options).
    #[serde(default)]
    #[schemars(with = "Text<1, 256>")]
    cache_key: Option<Text<1, 256>>,
    /// Kept with the job, and its tenant when a provider is scarce: each tenant's waiting jobs take
    /// turns, so one tenant's backlog never starves another's job.
    #[serde(default)]
    #[schemars(with = "Text<1, 256>")]
    tenant_id: Option<Text<1, 256>>,
    /// Kept with the job.
    #[serde(default)]
    #[schemars(with = "Text<1, 256>")]
    request_id: Option<Text<1, 256>>,
    /// Give up after this long (default `JOB_DEADLINE_SECONDS`).
    #[serde(default)]
    #[schemars(with = "Deadline")]
    deadline_seconds: Option<Deadline>,
    /// The signed webhook, POSTed once when the job ends. Needs a webhook secret for the key's owner.
    #[serde(default)]
    #[schemars(with = "Url")]
    callback_url: Option<Url>,
    /// Delivered in order after the job ends.
    #[serde(default)]
    #[schemars(with = "Callbacks")]
    callbacks: Option<Callbacks>,
    /// `true`: the job deletes itself once every webhook and callback it owes is acknowledged (its
    /// record expires seconds after the last), for a caller that takes results by webhook only and
    /// would purge at once. A dead-lettered delivery keeps the job (to redeliver); a job with no
    /// webhook or callback is kept as usual.
    #[serde(default)]
    #[schemars(with = "super::fields::Flag")]
    purge_on_delivery: Option<super::fields::Flag>,
    /// The job's place among its tenant's jobs when a provider is scarce: `high` takes the tenant's
    /// next turn before its earlier `normal` and `low` jobs (submitted up to an hour before it),
    /// `normal` before its earlier `low` ones; never another tenant's turn. Default `normal`.
    #[serde(default)]
    #[schemars(with = "super::PriorityField")]
    priority: Option<super::PriorityField>,
    #[serde(default)]
    #[schemars(with = "ContractVersion")]
    #[allow(dead_code)] // read for its check only
    contract_version: Option<ContractVersion>,
    /// `default`: an identical job in flight is joined, an identical finished one answers with its
    /// result. `no-cache` and `refresh` (the same): a finished identical job is replaced by a new one.
    #[serde(default)]
    #[schemars(with = "CacheControl")]
    cache_control: Option<CacheControl>,
    /// Providers to try first, in this order (case-insensitive; names this deployment lacks are
    /// ignored; never adds a provider).
    #[serde(default)]
    #[schemars(with = "ProviderNames")]
    preferred_providers: Option<ProviderNames>,
    /// Providers this job must never use (case-insensitive; unknown names ignored).
    #[serde(default)]
    #[schemars(with = "ProviderNames")]
    exclude_providers: Option<ProviderNames>,
}

/// A field kept as JSON, read later: `messages` is read only when `prompt` is absent.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct Unread(Value);

/// `maxTokens` when the request does not say.
const DEFAULT_MAX_TOKENS: u64 = 1_024;

/// `prompt`: the prompt itself, or a template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Prompt {
    Text(String),
    Template(PromptTemplate),
}

impl Prompt {
    fn check(value: Value) -> Result<Self, Refusal> {
        match value {
            Value::String(p) if p.trim().is_empty() || p.len() > MAX_PROMPT => Err(Refusal::new(format!(
                "must be a non-empty string of at most {MAX_PROMPT} bytes"
            ))),
            Value::String(p) => Ok(Self::Text(p)),
            v @ Value::Object(_) => nested("", v).map(Self::Template),
            _ => Err(Refusal::new("must be a string or {template, instructions, variables}")),
        }
    }
}

via_check!([] Prompt);

/// The prompt itself (its schema only: [`Prompt`] reads it).
struct PromptText;

leaf_schema!(
    [] PromptText,
    |_g| "PromptText",
    json_schema!({"type": "string", "minLength": 1, "maxLength": MAX_PROMPT, "pattern": "\\S", "description": "The prompt itself."})
);

impl JsonSchema for Prompt {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Prompt".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({"oneOf": [generator.subschema_for::<PromptText>(), generator.subschema_for::<PromptTemplate>()]})
    }
}

/// A template with `{{payload.x}}`, `{{metadata.x}}` and `{{variables.x}}` placeholders.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(inline)]
pub(crate) struct PromptTemplate {
    /// The user message.
    template: Text<1, MAX_PROMPT>,
    /// The system message.
    #[serde(default)]
    #[schemars(with = "Text<0, MAX_PROMPT>")]
    instructions: Option<Text<0, MAX_PROMPT>>,
    // Null is not absent here: variables must be an object.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "JsonObject")]
    variables: Option<JsonObject>,
}

const ROLES: &str = "must be system, user or assistant";

/// `messages`: 1 to 100 `{role, content}`.
#[derive(Debug, Clone, PartialEq)]
struct ChatMessages(Vec<ChatMessage>);

/// How many `messages` a request carries: one limit for the check, its 400 text and the schema.
const MESSAGES: std::ops::RangeInclusive<usize> = 1..=100;

impl ChatMessages {
    fn check(value: Value) -> Result<Self, Refusal> {
        let items = match value {
            Value::Array(items) if MESSAGES.contains(&items.len()) => items,
            _ => {
                let (min, max) = (MESSAGES.start(), MESSAGES.end());
                return Err(Refusal::new(format!(
                    "must be an array of {min} to {max} {{role, content}}"
                )));
            }
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let child = format!("[{i}]");
                // Whatever is not an object has no role: the role is what is named.
                let item: ChatItem = match item {
                    v @ Value::Object(_) => nested(&child, v)?,
                    _ => ChatItem::default(),
                };
                let role = item.role.ok_or_else(|| Refusal::at(format!("{child}.role"), ROLES))?;
                let content = item
                    .content
                    .ok_or_else(|| Refusal::at(format!("{child}.content"), "must be a string"))?;
                Ok(ChatMessage {
                    role: role.0,
                    content: content.0,
                })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

via_check!([] ChatMessages);

impl JsonSchema for ChatMessages {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "ChatMessages".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "array",
            "minItems": MESSAGES.start(),
            "maxItems": MESSAGES.end(),
            "items": generator.subschema_for::<ChatItem>()
        })
    }
}

// One message of `messages`; a missing role or content is refused with the words of a wrong one.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(inline)]
struct ChatItem {
    #[schemars(with = "RoleWord")]
    role: Option<RoleWord>,
    #[schemars(with = "Content")]
    content: Option<Content>,
}

/// `system`, `user` or `assistant`.
#[derive(Debug)]
struct RoleWord(Role);

impl RoleWord {
    fn check(value: Value) -> Result<Self, Refusal> {
        match value.as_str() {
            Some("system") => Ok(Self(Role::System)),
            Some("user") => Ok(Self(Role::User)),
            Some("assistant") => Ok(Self(Role::Assistant)),
            _ => Err(Refusal::new(ROLES)),
        }
    }
}

via_check!([] RoleWord);
leaf_schema!([] RoleWord, |_g| "Role", json_schema!({"enum": ["system", "user", "assistant"]}));

/// A message's text, at most [`MAX_PROMPT`] bytes.
#[derive(Debug)]
struct Content(String);

impl Content {
    fn check(value: Value) -> Result<Self, Refusal> {
        match value {
            Value::String(s) if s.len() <= MAX_PROMPT => Ok(Self(s)),
            _ => Err(Refusal::new("must be a string")),
        }
    }
}

via_check!([] Content);
leaf_schema!(
    [] Content,
    |_g| "Content",
    json_schema!({"type": "string", "maxLength": MAX_PROMPT})
);

/// `responseMode`: a JSON answer (the default) or text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Json,
    Text,
}

impl Mode {
    fn check(value: Value) -> Result<Self, Refusal> {
        match Text::<1, 8>::check(value)?.0.as_str() {
            "json" => Ok(Self::Json),
            "text" => Ok(Self::Text),
            _ => Err(Refusal::new("must be \"json\" or \"text\"")),
        }
    }
}

via_check!([] Mode);
leaf_schema!([] Mode, |_g| "Mode", json_schema!({"enum": ["json", "text"]}));

/// `outputSchema`: a JSON Schema (checked to compile), or the old flat DSL turned into one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutputSchema(pub Value);

impl OutputSchema {
    fn check(value: Value) -> Result<Self, Refusal> {
        let schema = match value {
            Value::Object(m) if m.get("kind").and_then(Value::as_str) == Some("http-json") => {
                dsl_to_json_schema(&m).map_err(|e| Refusal::new(e.message))?
            }
            v @ (Value::Object(_) | Value::Bool(_)) => v,
            _ => return Err(Refusal::new("must be a JSON Schema object")),
        };
        jsonschema::validator_for(&schema).map_err(|e| Refusal::new(format!("is not a valid JSON Schema: {e}")))?;
        Ok(Self(schema))
    }
}

via_check!([] OutputSchema);

impl JsonSchema for OutputSchema {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "OutputSchema".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        // Any JSON Schema is one: no type describes them all, so this branch says what it takes.
        let any_schema = json!({
            "type": ["object", "boolean"],
            "additionalProperties": true,
            "description": "A JSON Schema.",
            "not": {"type": "object", "required": ["kind"], "properties": {"kind": {"const": "http-json"}}},
            "examples": [{"type": "object", "required": ["colours"]}]
        });
        json_schema!({"oneOf": [any_schema, generator.subschema_for::<HttpJsonDsl>()]})
    }
}

/// The old flat output DSL.
// Its schema only: `dsl_to_json_schema` reads it. `skip_serializing` keeps derived defaults out of the
// document (a field with a default is a required one to TypeScript generators).
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(
    inline,
    extend("examples" = [{"kind": "http-json", "requiredKeys": ["a"], "properties": {"a": {"type": "string"}}}])
)]
#[allow(dead_code)]
struct HttpJsonDsl {
    kind: HttpJson,
    #[serde(default, skip_serializing)]
    required_keys: Vec<String>,
    #[serde(default, skip_serializing)]
    properties: BTreeMap<String, DslProperty>,
    #[serde(default, skip_serializing)]
    #[schemars(extend("default" = true))]
    allow_additional_keys: bool,
}

/// The DSL's `kind`.
struct HttpJson;

leaf_schema!([] HttpJson, |_g| "HttpJson", json_schema!({"const": "http-json"}));

/// One typed node of the DSL (nesting at most 8 deep; `items` and the item limits only on arrays,
/// `requiredKeys`, `properties` and `allowAdditionalKeys` only on objects).
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct DslProperty {
    r#type: DslType,
    #[serde(default, skip_serializing)]
    required_keys: Vec<String>,
    #[serde(default, skip_serializing)]
    properties: BTreeMap<String, DslProperty>,
    #[serde(default, skip_serializing)]
    items: Option<Box<DslProperty>>,
    #[serde(default, skip_serializing)]
    min_items: Option<u64>,
    #[serde(default, skip_serializing)]
    max_items: Option<u64>,
    #[serde(default, skip_serializing)]
    allow_additional_keys: Option<bool>,
}

/// The DSL's property types.
const DSL_TYPES: [&str; 5] = ["string", "number", "boolean", "array", "object"];

struct DslType;

leaf_schema!(
    [] DslType,
    |_g| "DslType",
    json_schema!({"enum": DSL_TYPES})
);

/// A generic request, read: the conversation, the answer's format and the options that shape it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GenerateRequest {
    pub(crate) messages: Vec<ChatMessage>,
    pub(crate) format: ResponseFormat,
    pub(crate) max_tokens: u32,
    pub(crate) temperature: Option<f32>,
    pub(crate) cache_key: Option<String>,
    pub(crate) context: Map<String, Value>,
    pub(crate) deadline_seconds: Option<u64>,
    pub(crate) targets: Vec<Target>,
    pub(crate) cache: CacheControl,
    pub(crate) providers: Option<ProviderPrefs>,
    pub(crate) purge_on_delivery: bool,
    pub(crate) priority: crate::domain::job::Priority,
}

/// Looks up `a.b.c` in a JSON object.
fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(root, |v, key| match v {
        Value::Object(m) => m.get(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Fills `{{payload.x}}`, `{{metadata.x}}` and `{{variables.x}}`; strings go in as they are, other
/// values as compact JSON; an unknown placeholder is an error.
pub(crate) fn render(template: &str, scopes: &Value) -> Result<String, FieldError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| FieldError::new("prompt.template", "has an unclosed {{"))?;
        let name = after[..close].trim();
        let value = lookup(scopes, name)
            .filter(|_| name.contains('.'))
            .ok_or_else(|| FieldError::new("prompt.template", format!("unknown placeholder {{{{{name}}}}}")))?;
        match value {
            Value::String(s) => out.push_str(s),
            other => out.push_str(&other.to_string()),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// How deep the DSL nests: a top-level property is at depth 0, and a node deeper than this is refused
/// (the original's limit).
const DSL_MAX_DEPTH: usize = 8;

/// The old DSL `{"kind":"http-json","requiredKeys":[..],"properties":{"k":{"type":..}},"allowAdditionalKeys":bool}`
/// as a JSON Schema. Properties nest as the original's 1.1.0 DSL does: each node is `{type, requiredKeys?,
/// properties?, items?, minItems?, maxItems?, allowAdditionalKeys?}`, at most [`DSL_MAX_DEPTH`] deep.
/// `allowAdditionalKeys: false` applies only where `properties` is given (as the original).
pub(crate) fn dsl_to_json_schema(dsl: &Map<String, Value>) -> Result<Value, FieldError> {
    let err = |m: String| FieldError::new("outputSchema", m);
    let DslObject {
        required,
        properties,
        additional,
    } = dsl_object(dsl, "", 0).map_err(err)?;
    Ok(json!({"type": "object", "required": required, "properties": properties, "additionalProperties": additional}))
}

/// An object node of the DSL, read: its required keys, its properties as JSON Schemas, whether other
/// keys are allowed.
struct DslObject {
    required: Vec<String>,
    properties: Map<String, Value>,
    additional: bool,
}

/// `requiredKeys`, `properties` and `allowAdditionalKeys` of an object node at `path`.
fn dsl_object(node: &Map<String, Value>, path: &str, depth: usize) -> Result<DslObject, String> {
    let at = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    let required = match node.get("requiredKeys") {
        None => Vec::new(),
        Some(Value::Array(keys)) => keys
            .iter()
            .map(|k| match k.as_str() {
                Some(k) if !k.is_empty() => Ok(k.to_string()),
                _ => Err(format!(
                    "{}: expected an array of non-empty strings",
                    at("requiredKeys")
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(format!(
                "{}: expected an array of non-empty strings",
                at("requiredKeys")
            ))
        }
    };
    let mut properties = Map::new();
    let has_properties = match node.get("properties") {
        None => false,
        Some(Value::Object(props)) => {
            for (key, child) in props {
                if key.is_empty() {
                    return Err(format!("{}: keys must be non-empty", at("properties")));
                }
                properties.insert(
                    key.clone(),
                    dsl_node(child, &at(format!("properties.{key}").as_str()), depth)?,
                );
            }
            true
        }
        Some(_) => return Err(format!("{}: expected an object map", at("properties"))),
    };
    let additional = match node.get("allowAdditionalKeys") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(allow)) => *allow || !has_properties,
        Some(_) => return Err(format!("{}: expected a boolean", at("allowAdditionalKeys"))),
    };
    Ok(DslObject {
        required,
        properties,
        additional,
    })
}

/// One typed node of the DSL at `path` (depth 0: a top-level property) as a JSON Schema.
fn dsl_node(node: &Value, path: &str, depth: usize) -> Result<Value, String> {
    if depth > DSL_MAX_DEPTH {
        return Err(format!("{path}: schema nesting is limited to {DSL_MAX_DEPTH} levels"));
    }
    let Some(fields) = node.as_object().filter(|m| m.get("type").is_some()) else {
        return Err(format!("{path}: expected an object with a type"));
    };
    let ty = fields
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| DSL_TYPES.contains(t))
        .ok_or_else(|| format!("{path}.type: expected one of {}", DSL_TYPES.join(", ")))?;
    let mut schema = Map::new();
    schema.insert("type".into(), json!(ty));
    let array_only = ["items", "minItems", "maxItems"];
    if ty != "array" && array_only.iter().any(|k| fields.contains_key(*k)) {
        return Err(format!("{path}: items and item limits are only valid for arrays"));
    }
    if ty == "array" {
        for (key, schema_key) in [("minItems", "minItems"), ("maxItems", "maxItems")] {
            match fields.get(key) {
                None => {}
                Some(v) => match v.as_u64() {
                    Some(n) => {
                        schema.insert(schema_key.into(), json!(n));
                    }
                    None => return Err(format!("{path}.{key}: expected a non-negative integer")),
                },
            }
        }
        if let Some(items) = fields.get("items") {
            schema.insert("items".into(), dsl_node(items, &format!("{path}.items"), depth + 1)?);
        }
    }
    let nests = ["requiredKeys", "properties", "allowAdditionalKeys"];
    if ty == "object" && nests.iter().any(|k| fields.contains_key(*k)) {
        let DslObject {
            required,
            properties,
            additional,
        } = dsl_object(fields, path, depth + 1)?;
        if !required.is_empty() {
            schema.insert("required".into(), json!(required));
        }
        if !properties.is_empty() {
            schema.insert("properties".into(), Value::Object(properties));
        }
        if !additional {
            schema.insert("additionalProperties".into(), json!(false));
        }
    }
    Ok(Value::Object(schema))
}

/// The conversation: the system message (JSON instructions, the template's instructions), then the
/// prompt or the caller's messages.
fn conversation(
    prompt: Option<Prompt>,
    messages: Option<Unread>,
    scopes: &mut Value,
    json_mode: bool,
    schema: Option<&Value>,
) -> Result<Vec<ChatMessage>, FieldError> {
    let mut system = Vec::new();
    if json_mode {
        let mut s = "Answer with one JSON value only: no code fences, no prose.".to_string();
        if let Some(schema) = schema {
            s.push_str(&format!(" It must validate against this JSON Schema: {schema}"));
        }
        system.push(s);
    }
    let mut out = match (prompt, messages) {
        (Some(Prompt::Text(p)), _) => vec![ChatMessage::user(p)],
        (Some(Prompt::Template(t)), _) => {
            if let Some(variables) = t.variables {
                scopes["variables"] = Value::Object(variables.0);
            }
            if let Some(instructions) = t.instructions {
                system.push(
                    render(&instructions.0, scopes).map_err(|e| FieldError::new("prompt.instructions", e.message))?,
                );
            }
            vec![ChatMessage::user(render(&t.template.0, scopes)?)]
        }
        (None, Some(Unread(messages))) => parse_field::<ChatMessages>("messages", messages)?.0,
        (None, None) => return Err(FieldError::new("prompt", "is required (or give messages)")),
    };
    if !system.is_empty() {
        out.insert(0, ChatMessage::system(system.join("\n\n")));
    }
    Ok(out)
}

impl Preset for GenerateRequest {
    type Body = GenerateBody;
    const STATUS_PREFIX: &'static str = "/v1/jobs/";

    fn from_body(b: GenerateBody) -> Result<Self, FieldError> {
        let json_mode = b.response_mode != Some(Mode::Text);
        let schema = b.output_schema.map(|s| s.0);
        if schema.is_some() && !json_mode {
            return Err(FieldError::new("outputSchema", "needs responseMode \"json\""));
        }
        let metadata = b.metadata.map(|m| m.0);
        let mut scopes = json!({
            "payload": b.payload.map_or_else(Map::new, |p| p.0),
            "metadata": metadata.clone().unwrap_or_default(),
            "variables": {},
        });
        let mut context = Map::new();
        for (name, value) in [("tenantId", b.tenant_id), ("requestId", b.request_id)] {
            if let Some(s) = value {
                context.insert(name.into(), json!(s.0));
            }
        }
        if let Some(m) = metadata {
            context.insert("metadata".into(), Value::Object(m));
        }
        Ok(Self {
            messages: conversation(b.prompt, b.messages, &mut scopes, json_mode, schema.as_ref())?,
            format: if json_mode {
                ResponseFormat::Json {
                    schema: schema.map(std::sync::Arc::new),
                }
            } else {
                ResponseFormat::Text
            },
            max_tokens: b.max_tokens.map_or(DEFAULT_MAX_TOKENS, |n| n.0) as u32,
            temperature: b.temperature.map(|t| t.0),
            cache_key: b.cache_key.map(|k| k.0),
            context,
            deadline_seconds: b.deadline_seconds.map(|d| d.0),
            targets: targets(b.callback_url, b.callbacks),
            purge_on_delivery: b.purge_on_delivery.is_some_and(|f| f.0),
            priority: b.priority.map(|p| p.0).unwrap_or_default(),
            cache: b.cache_control.unwrap_or_default(),
            providers: ProviderPrefs::of(b.preferred_providers, b.exclude_providers),
        })
    }

    fn cache_control(&self) -> CacheControl {
        self.cache
    }

    fn deadline_seconds(&self) -> Option<u64> {
        self.deadline_seconds
    }

    /// `cacheKey` when given, else a hash of everything that shapes the answer.
    fn identity(&self) -> String {
        match &self.cache_key {
            Some(key) => format!("generic:key:{key}"),
            None => format!(
                "generic:v{PRESET_VERSION}:{}",
                digest(&json!([self.messages, self.format, self.max_tokens, self.temperature]))
            ),
        }
    }

    fn spec(&self) -> JobSpec {
        JobSpec {
            kind: JobKind::Generic,
            messages: self.messages.clone(),
            compact_messages: None,
            format: self.format.clone(),
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            fallback: None,
            context: self.context.clone(),
            targets: self.targets.clone(),
            providers: self.providers.clone(),
            purge_on_delivery: self.purge_on_delivery,
            priority: self.priority,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_placeholders_from_their_scopes() {
        let r = GenerateRequest::parse(json!({
            "prompt": {"template": "Summarise {{payload.title}} for {{metadata.user}} ({{variables.n}} {{payload.tags}})", "instructions": "Be brief.", "variables": {"n": 3}},
            "payload": {"title": "the release", "tags": ["a", "b"]},
            "metadata": {"user": "ann"},
            "responseMode": "text"
        }))
        .unwrap();
        assert_eq!(r.messages[0], ChatMessage::system("Be brief."));
        assert_eq!(r.messages[1].content, "Summarise the release for ann (3 [\"a\",\"b\"])");
        let err = GenerateRequest::parse(json!({"prompt": {"template": "{{payload.nope}}"}})).unwrap_err();
        assert_eq!(err.to_string(), "prompt.template: unknown placeholder {{payload.nope}}");
    }

    #[test]
    fn the_old_dsl_becomes_a_json_schema() {
        let r = GenerateRequest::parse(json!({
            "prompt": "x",
            "outputSchema": {"kind": "http-json", "requiredKeys": ["a"], "properties": {"a": {"type": "string"}, "b": {"type": "number"}}, "allowAdditionalKeys": false}
        }))
        .unwrap();
        let ResponseFormat::Json { schema: Some(schema) } = r.format else {
            panic!("json with schema")
        };
        assert_eq!(
            *schema,
            json!({"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}, "b": {"type": "number"}}, "additionalProperties": false})
        );
        let bad = GenerateRequest::parse(
            json!({"prompt": "x", "outputSchema": {"kind": "http-json", "properties": {"a": {"type": "date"}}}}),
        );
        assert_eq!(bad.unwrap_err().field, "outputSchema");
        let nested = GenerateRequest::parse(json!({"prompt": "x", "outputSchema": {"kind": "http-json", "properties": {
            "tags": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"type": "object", "requiredKeys": ["n"], "properties": {"n": {"type": "number"}}, "allowAdditionalKeys": false}}
        }}}))
        .unwrap();
        let ResponseFormat::Json { schema: Some(schema) } = nested.format else {
            panic!("json with schema")
        };
        assert_eq!(
            schema["properties"]["tags"],
            json!({"type": "array", "minItems": 1, "maxItems": 3, "items": {"type": "object", "required": ["n"], "properties": {"n": {"type": "number"}}, "additionalProperties": false}})
        );
        let mut deep = json!({"type": "string"});
        for _ in 0..9 {
            deep = json!({"type": "array", "items": deep});
        }
        for (dsl, message) in [
            (
                json!({"a": {"type": "string", "items": {"type": "string"}}}),
                "properties.a: items and item limits are only valid for arrays",
            ),
            (
                json!({"a": {"type": "array", "minItems": -1}}),
                "properties.a.minItems: expected a non-negative integer",
            ),
            (
                json!({"a": {"type": "object", "properties": {"": {"type": "string"}}}}),
                "properties.a.properties: keys must be non-empty",
            ),
            (json!({"a": deep}), "schema nesting is limited to 8 levels"),
        ] {
            let bad = GenerateRequest::parse(
                json!({"prompt": "x", "outputSchema": {"kind": "http-json", "properties": dsl}}),
            );
            let bad = bad.unwrap_err();
            assert_eq!(bad.field, "outputSchema");
            assert!(bad.message.ends_with(message), "{}", bad.message);
        }
        let invalid = GenerateRequest::parse(json!({"prompt": "x", "outputSchema": {"type": 12}}));
        assert!(invalid.unwrap_err().message.starts_with("is not a valid JSON Schema"));
    }

    #[test]
    fn identity_is_the_cache_key_or_the_request() {
        let a = GenerateRequest::parse(json!({"prompt": "x"})).unwrap();
        let b = GenerateRequest::parse(json!({"prompt": "x", "requestId": "r2"})).unwrap();
        let c = GenerateRequest::parse(json!({"prompt": "y"})).unwrap();
        assert_eq!(a.identity(), b.identity());
        assert_ne!(a.identity(), c.identity());
        let k = GenerateRequest::parse(json!({"prompt": "y", "cacheKey": "k1"})).unwrap();
        assert_eq!(k.identity(), "generic:key:k1");
    }

    #[test]
    fn bad_fields_are_named() {
        for (body, field) in [
            (json!({}), "prompt"),
            (json!({"prompt": 3}), "prompt"),
            (json!({"prompt": ""}), "prompt"),
            (json!({"prompt": "x", "responseMode": "xml"}), "responseMode"),
            (json!({"prompt": "x", "priority": "urgent"}), "priority"),
            (json!({"prompt": "x", "priority": 1}), "priority"),
            (json!({"prompt": "x", "temperature": 3}), "temperature"),
            (json!({"prompt": "x", "maxTokens": 0}), "maxTokens"),
            (json!({"prompt": "x", "payload": [1]}), "payload"),
            (
                json!({"messages": [{"role": "robot", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"prompt": "x", "outputSchema": {"type": "object"}, "responseMode": "text"}),
                "outputSchema",
            ),
        ] {
            assert_eq!(GenerateRequest::parse(body.clone()).unwrap_err().field, field, "{body}");
        }
    }

    #[test]
    fn priority_is_kept_with_the_job_and_normal_by_default() {
        use crate::domain::job::Priority;
        for (given, want) in [
            (Some("high"), Priority::High),
            (Some("normal"), Priority::Normal),
            (Some("low"), Priority::Low),
            (None, Priority::Normal),
        ] {
            let mut body = json!({"prompt": "x"});
            if let Some(p) = given {
                body["priority"] = json!(p);
            }
            assert_eq!(GenerateRequest::parse(body).unwrap().spec().priority, want, "{given:?}");
        }
    }

    fn schema_and_parser_agree(bodies: &[Value]) {
        let schema = schemars::generate::SchemaSettings::draft2020_12()
            .for_deserialize()
            .into_generator()
            .into_root_schema_for::<GenerateBody>();
        let validator = jsonschema::validator_for(schema.as_value()).expect("the schema compiles");
        for body in bodies {
            let parsed = GenerateRequest::parse(body.clone());
            assert_eq!(validator.is_valid(body), parsed.is_ok(), "{body}: {parsed:?}");
        }
    }

    /// The whole body's schema and its reading agree on the rules that span fields and on every field
    /// type of its own (prompt, messages, responseMode, outputSchema).
    #[test]
    fn the_request_schema_and_the_parser_agree() {
        let x = "x".repeat(MAX_PROMPT);
        schema_and_parser_agree(&[
            json!({}),
            json!({"prompt": "x"}),
            json!({"prompt": null}),
            json!({"prompt": " "}),
            json!({"prompt": x}),
            json!({"prompt": format!("{x}y")}),
            json!({"prompt": 3}),
            json!({"prompt": {"template": "t"}}),
            json!({"prompt": {"template": ""}}),
            json!({"prompt": {"template": "t", "instructions": ""}}),
            json!({"prompt": {"template": "t", "variables": null}}),
            json!({"prompt": {"template": "t", "variables": {"n": 1}}}),
            json!({"prompt": {}}),
            json!({"messages": [{"role": "user", "content": "x"}]}),
            json!({"messages": []}),
            json!({"messages": null}),
            json!({"messages": vec![json!({"role": "user", "content": "x"}); 100]}),
            json!({"messages": vec![json!({"role": "user", "content": "x"}); 101]}),
            json!({"messages": [{"role": "robot", "content": "x"}]}),
            json!({"messages": [{"role": "user"}]}),
            json!({"messages": [{"content": "x"}]}),
            json!({"messages": ["x"]}),
            json!({"prompt": "x", "responseMode": "text"}),
            json!({"prompt": "x", "responseMode": "xml"}),
            json!({"prompt": "x", "outputSchema": {"type": "object"}}),
            json!({"prompt": "x", "outputSchema": true}),
            json!({"prompt": "x", "outputSchema": 5}),
            json!({"prompt": "x", "outputSchema": {"type": "object"}, "responseMode": "text"}),
            json!({"prompt": "x", "outputSchema": {"kind": "http-json", "requiredKeys": ["a"]}}),
            json!({"prompt": "x", "outputSchema": {"kind": "http-json", "properties": {"a": {"type": "date"}}}}),
            json!({"prompt": "x", "payload": [1]}),
            json!({"prompt": "x", "maxTokens": 0}),
            json!({"prompt": "x", "maxTokens": 32_768}),
            json!({"prompt": "x", "cacheKey": ""}),
            json!({"prompt": "x", "deadlineSeconds": 59}),
            json!({"prompt": "x", "callbacks": [{"url": "https://a.example/x", "retry": {"backoffMs": 99}}]}),
            json!({"prompt": "x", "callbacks": [{"url": "https://a.example/x", "continueOnFailure": true}]}),
            json!({"prompt": "x", "callbacks": [{}]}),
        ]);
    }
}
