//! (compile shim until the presets module lands)
#[derive(Debug, Clone, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}
pub mod commit_report {
    use super::FieldError;
    use crate::job::JobSpec;
    pub struct ReportRequest {
        pub deadline_seconds: Option<u64>,
    }
    impl ReportRequest {
        pub fn from_json(_v: &serde_json::Value) -> Result<Self, FieldError> {
            Err(FieldError { field: "x".into(), message: "shim".into() })
        }
        pub fn identity(&self) -> String {
            String::new()
        }
        pub fn into_spec(&self) -> JobSpec {
            unimplemented!()
        }
    }
    pub fn report_identity(_u: &str, _c: &str, _t: Option<&str>) -> String {
        String::new()
    }
}
pub mod generic {
    pub use super::commit_report::ReportRequest as GenerateRequest;
}
