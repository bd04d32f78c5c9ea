//! (placeholder until the outputs module lands)
use crate::job::JobSpec;
use crate::llm::{FinishReason, ResponseFormat};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OutputError(String);

pub fn accept(text: &str, finish: FinishReason, spec: &JobSpec) -> Result<serde_json::Value, OutputError> {
    if finish == FinishReason::Length {
        return Err(OutputError("truncated".into()));
    }
    match spec.format {
        ResponseFormat::Text => Ok(serde_json::Value::String(text.to_string())),
        ResponseFormat::Json { .. } => serde_json::from_str(text).map_err(|e| OutputError(e.to_string())),
    }
}
