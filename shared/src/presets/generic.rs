//! Generic jobs: a prompt (string, or `{template, instructions, variables}` with `{{payload.x}}`,
//! `{{metadata.x}}`, `{{variables.x}}` placeholders) or a `messages` array; JSON (optionally checked
//! against an `outputSchema`, JSON Schema or the old flat `http-json` DSL) or text.

use serde_json::{json, Map, Value};

use super::{
    common_schema_properties, deadline_seconds, delivery_targets, digest, integer, object, string, FieldError,
    PRESET_VERSION,
};
use crate::job::{JobKind, JobSpec};
use crate::llm::{ChatMessage, ResponseFormat, Role};
use crate::targets::Target;

const MAX_PROMPT: usize = 200_000;

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub messages: Vec<ChatMessage>,
    pub format: ResponseFormat,
    pub max_tokens: u32,
    pub temperature: Option<f32>,
    pub cache_key: Option<String>,
    pub context: Map<String, Value>,
    pub deadline_seconds: Option<u64>,
    pub targets: Vec<Target>,
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
pub fn render(template: &str, scopes: &Value) -> Result<String, FieldError> {
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

/// The old flat DSL `{"kind":"http-json","requiredKeys":[..],"properties":{"k":{"type":..}},"allowAdditionalKeys":bool}`
/// as a JSON Schema.
pub fn dsl_to_json_schema(dsl: &Map<String, Value>) -> Result<Value, FieldError> {
    let err = |m: &str| FieldError::new("outputSchema", m.to_string());
    let mut properties = Map::new();
    if let Some(props) = dsl.get("properties") {
        for (key, def) in props.as_object().ok_or_else(|| err("properties must be an object"))? {
            let ty = def
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| err("every property needs a type"))?;
            if !["string", "number", "boolean", "array", "object"].contains(&ty) {
                return Err(err(&format!("property {key:?} has an unknown type {ty:?}")));
            }
            properties.insert(key.clone(), json!({"type": ty}));
        }
    }
    let required = match dsl.get("requiredKeys") {
        None => Vec::new(),
        Some(Value::Array(keys)) => keys
            .iter()
            .map(|k| {
                k.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| err("requiredKeys must be strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(err("requiredKeys must be an array")),
    };
    let additional = match dsl.get("allowAdditionalKeys") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(allow)) => *allow,
        Some(_) => return Err(err("allowAdditionalKeys must be a boolean")),
    };
    Ok(json!({"type": "object", "required": required, "properties": properties, "additionalProperties": additional}))
}

fn output_schema(o: &Map<String, Value>) -> Result<Option<Value>, FieldError> {
    let schema = match o.get("outputSchema") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(m)) if m.get("kind").and_then(Value::as_str) == Some("http-json") => dsl_to_json_schema(m)?,
        Some(v @ Value::Object(_)) | Some(v @ Value::Bool(_)) => v.clone(),
        Some(_) => return Err(FieldError::new("outputSchema", "must be a JSON Schema object")),
    };
    jsonschema::validator_for(&schema)
        .map_err(|e| FieldError::new("outputSchema", format!("is not a valid JSON Schema: {e}")))?;
    Ok(Some(schema))
}

fn messages(o: &Map<String, Value>, json_mode: bool, schema: Option<&Value>) -> Result<Vec<ChatMessage>, FieldError> {
    let mut system = Vec::new();
    if json_mode {
        let mut s = "Answer with one JSON value only: no code fences, no prose.".to_string();
        if let Some(schema) = schema {
            s.push_str(&format!(" It must validate against this JSON Schema: {schema}"));
        }
        system.push(s);
    }
    let scopes = json!({
        "payload": o.get("payload").cloned().unwrap_or(json!({})),
        "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
        "variables": o.get("prompt").and_then(|p| p.get("variables")).cloned().unwrap_or(json!({})),
    });
    let mut out: Vec<ChatMessage> = Vec::new();
    match (o.get("prompt"), o.get("messages")) {
        (Some(Value::String(p)), _) => {
            if p.trim().is_empty() || p.len() > MAX_PROMPT {
                return Err(FieldError::new(
                    "prompt",
                    format!("must be a non-empty string of at most {MAX_PROMPT} bytes"),
                ));
            }
            out.push(ChatMessage::user(p.clone()));
        }
        (Some(Value::Object(p)), _) => {
            let template = string(p, "template", 1, MAX_PROMPT, true)
                .map_err(|e| FieldError::new("prompt.template", e.message))?
                .unwrap_or_default();
            if let Some(instructions) = string(p, "instructions", 0, MAX_PROMPT, false)
                .map_err(|e| FieldError::new("prompt.instructions", e.message))?
            {
                system.push(
                    render(&instructions, &scopes).map_err(|e| FieldError::new("prompt.instructions", e.message))?,
                );
            }
            if p.get("variables").is_some_and(|v| !v.is_object()) {
                return Err(FieldError::new("prompt.variables", "must be an object"));
            }
            out.push(ChatMessage::user(render(&template, &scopes)?));
        }
        (Some(_), _) => {
            return Err(FieldError::new(
                "prompt",
                "must be a string or {template, instructions, variables}",
            ))
        }
        (None, Some(Value::Array(items))) if !items.is_empty() && items.len() <= 100 => {
            for (i, m) in items.iter().enumerate() {
                let field = format!("messages[{i}]");
                let role = match m.get("role").and_then(Value::as_str) {
                    Some("system") => Role::System,
                    Some("user") => Role::User,
                    Some("assistant") => Role::Assistant,
                    _ => {
                        return Err(FieldError::new(
                            format!("{field}.role"),
                            "must be system, user or assistant",
                        ))
                    }
                };
                let content = m
                    .get("content")
                    .and_then(Value::as_str)
                    .filter(|c| c.len() <= MAX_PROMPT)
                    .ok_or_else(|| FieldError::new(format!("{field}.content"), "must be a string"))?;
                out.push(ChatMessage {
                    role,
                    content: content.to_string(),
                });
            }
        }
        (None, Some(_)) => {
            return Err(FieldError::new(
                "messages",
                "must be an array of 1 to 100 {role, content}",
            ))
        }
        (None, None) => return Err(FieldError::new("prompt", "is required (or give messages)")),
    }
    if !system.is_empty() {
        out.insert(0, ChatMessage::system(system.join("\n\n")));
    }
    Ok(out)
}

/// The JSON Schema of the request body, as [`GenerateRequest::from_json`] reads it (unknown keys are
/// ignored). The OpenAPI document serves it; a test there checks the parser agrees on every edge.
pub fn request_schema() -> Value {
    let dsl = json!({
        "type": "object",
        "description": "The old flat output DSL.",
        "required": ["kind"],
        "properties": {
            "kind": {"const": "http-json"},
            "requiredKeys": {"type": "array", "items": {"type": "string"}},
            "properties": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["type"],
                    "properties": {"type": {"enum": ["string", "number", "boolean", "array", "object"]}}
                }
            },
            "allowAdditionalKeys": {"type": "boolean", "default": true}
        },
        "examples": [{"kind": "http-json", "requiredKeys": ["a"], "properties": {"a": {"type": "string"}}}]
    });
    let text = |min: usize, max: usize, what: &str| json!({"type": "string", "minLength": min, "maxLength": max, "description": what});
    let mut properties = Map::new();
    for (name, schema) in [
        (
            "prompt",
            json!({"oneOf": [
                {"type": "string", "minLength": 1, "maxLength": MAX_PROMPT, "pattern": "\\S", "description": "The prompt itself."},
                {
                    "type": "object",
                    "description": "A template with `{{payload.x}}`, `{{metadata.x}}` and `{{variables.x}}` placeholders.",
                    "required": ["template"],
                    "properties": {
                        "template": text(1, MAX_PROMPT, "The user message."),
                        "instructions": text(0, MAX_PROMPT, "The system message."),
                        "variables": {"type": "object", "additionalProperties": true}
                    }
                }
            ]}),
        ),
        (
            "messages",
            json!({
                "type": "array",
                "minItems": 1,
                "maxItems": 100,
                "description": "A whole conversation; read only when `prompt` is absent.",
                "items": {
                    "type": "object",
                    "required": ["role", "content"],
                    "properties": {
                        "role": {"enum": ["system", "user", "assistant"]},
                        "content": {"type": "string", "maxLength": MAX_PROMPT}
                    }
                }
            }),
        ),
        (
            "payload",
            json!({"type": "object", "additionalProperties": true, "description": "Data for `{{payload.x}}` placeholders."}),
        ),
        (
            "metadata",
            json!({"type": "object", "additionalProperties": true, "description":
                "Data for `{{metadata.x}}` placeholders, kept with the job."}),
        ),
        ("responseMode", json!({"enum": ["json", "text"], "default": "json"})),
        (
            "outputSchema",
            json!({
                "description": "What the JSON answer must validate against: a JSON Schema, or the old flat DSL.",
                "oneOf": [
                    {
                        "type": ["object", "boolean"],
                        "additionalProperties": true,
                        "description": "A JSON Schema.",
                        "not": {"type": "object", "required": ["kind"], "properties": {"kind": {"const": "http-json"}}},
                        "examples": [{"type": "object", "required": ["colours"]}]
                    },
                    dsl
                ]
            }),
        ),
        ("temperature", json!({"type": "number", "minimum": 0, "maximum": 2})),
        (
            "maxTokens",
            json!({"type": "integer", "minimum": 1, "maximum": 32_768, "default": 1_024}),
        ),
        (
            "cacheKey",
            text(
                1,
                256,
                "The job's identity when given (else a hash of the prompt and options).",
            ),
        ),
        ("tenantId", text(1, 256, "Kept with the job.")),
        ("requestId", text(1, 256, "Kept with the job.")),
    ] {
        properties.insert(name.into(), schema);
    }
    properties.extend(common_schema_properties());
    json!({
        "type": "object",
        "description": "A generic job: `prompt` or `messages`, answered as JSON (optionally checked) or text.",
        "anyOf": [{"required": ["prompt"]}, {"required": ["messages"]}],
        "dependentSchemas": {"outputSchema": {"properties": {"responseMode": {"const": "json"}}}},
        "properties": properties,
    })
}

impl GenerateRequest {
    pub fn from_json(v: &Value) -> Result<Self, FieldError> {
        let o = object(v)?;
        for name in ["payload", "metadata"] {
            if o.get(name).is_some_and(|p| !p.is_object() && !p.is_null()) {
                return Err(FieldError::new(name, "must be an object"));
            }
        }
        let json_mode = match string(o, "responseMode", 1, 8, false)?.as_deref() {
            None | Some("json") => true,
            Some("text") => false,
            Some(_) => return Err(FieldError::new("responseMode", "must be \"json\" or \"text\"")),
        };
        let schema = output_schema(o)?;
        if schema.is_some() && !json_mode {
            return Err(FieldError::new("outputSchema", "needs responseMode \"json\""));
        }
        let temperature = match o.get("temperature") {
            None | Some(Value::Null) => None,
            Some(t) => Some(
                t.as_f64()
                    .filter(|t| (0.0..=2.0).contains(t))
                    .ok_or_else(|| FieldError::new("temperature", "must be a number from 0 to 2"))?
                    as f32,
            ),
        };
        let mut context = Map::new();
        for (from, to) in [("tenantId", "tenantId"), ("requestId", "requestId")] {
            if let Some(s) = string(o, from, 1, 256, false)? {
                context.insert(to.into(), json!(s));
            }
        }
        if let Some(m) = o.get("metadata").filter(|m| m.is_object()) {
            context.insert("metadata".into(), m.clone());
        }
        Ok(Self {
            messages: messages(o, json_mode, schema.as_ref())?,
            format: if json_mode {
                ResponseFormat::Json { schema }
            } else {
                ResponseFormat::Text
            },
            max_tokens: integer(o, "maxTokens", 1, 32_768)?.unwrap_or(1_024) as u32,
            temperature,
            cache_key: string(o, "cacheKey", 1, 256, false)?,
            context,
            deadline_seconds: deadline_seconds(o)?,
            targets: delivery_targets(o)?,
        })
    }

    /// `cacheKey` when given, else a hash of everything that shapes the answer.
    pub fn identity(&self) -> String {
        match &self.cache_key {
            Some(key) => format!("generic:key:{key}"),
            None => format!(
                "generic:v{PRESET_VERSION}:{}",
                digest(&json!([self.messages, self.format, self.max_tokens, self.temperature]))
            ),
        }
    }

    pub fn into_spec(&self) -> JobSpec {
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_placeholders_from_their_scopes() {
        let r = GenerateRequest::from_json(&json!({
            "prompt": {"template": "Summarise {{payload.title}} for {{metadata.user}} ({{variables.n}} {{payload.tags}})", "instructions": "Be brief.", "variables": {"n": 3}},
            "payload": {"title": "the release", "tags": ["a", "b"]},
            "metadata": {"user": "ann"},
            "responseMode": "text"
        }))
        .unwrap();
        assert_eq!(r.messages[0], ChatMessage::system("Be brief."));
        assert_eq!(r.messages[1].content, "Summarise the release for ann (3 [\"a\",\"b\"])");
        let err = GenerateRequest::from_json(&json!({"prompt": {"template": "{{payload.nope}}"}})).unwrap_err();
        assert_eq!(err.to_string(), "prompt.template: unknown placeholder {{payload.nope}}");
    }

    #[test]
    fn the_old_dsl_becomes_a_json_schema() {
        let r = GenerateRequest::from_json(&json!({
            "prompt": "x",
            "outputSchema": {"kind": "http-json", "requiredKeys": ["a"], "properties": {"a": {"type": "string"}, "b": {"type": "number"}}, "allowAdditionalKeys": false}
        }))
        .unwrap();
        let ResponseFormat::Json { schema: Some(schema) } = r.format else {
            panic!("json with schema")
        };
        assert_eq!(
            schema,
            json!({"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}, "b": {"type": "number"}}, "additionalProperties": false})
        );
        let bad = GenerateRequest::from_json(
            &json!({"prompt": "x", "outputSchema": {"kind": "http-json", "properties": {"a": {"type": "date"}}}}),
        );
        assert_eq!(bad.unwrap_err().field, "outputSchema");
        let invalid = GenerateRequest::from_json(&json!({"prompt": "x", "outputSchema": {"type": 12}}));
        assert!(invalid.unwrap_err().message.starts_with("is not a valid JSON Schema"));
    }

    #[test]
    fn identity_is_the_cache_key_or_the_request() {
        let a = GenerateRequest::from_json(&json!({"prompt": "x"})).unwrap();
        let b = GenerateRequest::from_json(&json!({"prompt": "x", "requestId": "r2"})).unwrap();
        let c = GenerateRequest::from_json(&json!({"prompt": "y"})).unwrap();
        assert_eq!(a.identity(), b.identity());
        assert_ne!(a.identity(), c.identity());
        let k = GenerateRequest::from_json(&json!({"prompt": "y", "cacheKey": "k1"})).unwrap();
        assert_eq!(k.identity(), "generic:key:k1");
    }

    #[test]
    fn bad_fields_are_named() {
        for (body, field) in [
            (json!({}), "prompt"),
            (json!({"prompt": 3}), "prompt"),
            (json!({"prompt": ""}), "prompt"),
            (json!({"prompt": "x", "responseMode": "xml"}), "responseMode"),
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
            assert_eq!(GenerateRequest::from_json(&body).unwrap_err().field, field, "{body}");
        }
    }
}
