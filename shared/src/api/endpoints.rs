//! The route table: every route's method, path, serving function and whether it wants a key. The
//! routers (routes.rs) and `/openapi.json` (openapi.rs) are both built from it, and neither imports the
//! other.

use axum::http::Method;

/// The Lambda function that serves a route (`stepper-local` serves them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Submit,
    Poll,
    Purge,
}

/// Every route. The routers and `/openapi.json` are both built from this list (the document matches
/// on it exhaustively), so a route cannot be served without being documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    SubmitReport,
    SubmitGeneric,
    ReportImmediate,
    GenerateImmediate,
    GenerateBatch,
    PollReport,
    PollJob,
    PurgeReport,
    PurgeJob,
    Redeliver,
    Health,
    Ready,
    Providers,
    Budget,
    OpenApi,
    JobsOverview,
    Dashboard,
    ServiceInfo,
}

impl Endpoint {
    pub const ALL: [Endpoint; 18] = [
        Endpoint::SubmitReport,
        Endpoint::SubmitGeneric,
        Endpoint::ReportImmediate,
        Endpoint::GenerateImmediate,
        Endpoint::GenerateBatch,
        Endpoint::PollReport,
        Endpoint::PollJob,
        Endpoint::PurgeReport,
        Endpoint::PurgeJob,
        Endpoint::Redeliver,
        Endpoint::Health,
        Endpoint::Ready,
        Endpoint::Providers,
        Endpoint::Budget,
        Endpoint::OpenApi,
        Endpoint::JobsOverview,
        Endpoint::Dashboard,
        Endpoint::ServiceInfo,
    ];

    /// Each function serves one method: submit posts, purge deletes, poll answers every read. A `const
    /// fn`, so a function's router keeps only its own handlers at compile time (routes.rs).
    pub const fn function(self) -> Function {
        match self {
            Endpoint::SubmitReport
            | Endpoint::SubmitGeneric
            | Endpoint::ReportImmediate
            | Endpoint::GenerateImmediate
            | Endpoint::GenerateBatch
            | Endpoint::Redeliver => Function::Submit,
            Endpoint::PollReport
            | Endpoint::PollJob
            | Endpoint::Health
            | Endpoint::Ready
            | Endpoint::Providers
            | Endpoint::Budget
            | Endpoint::OpenApi
            | Endpoint::JobsOverview
            | Endpoint::Dashboard
            | Endpoint::ServiceInfo => Function::Poll,
            Endpoint::PurgeReport | Endpoint::PurgeJob => Function::Purge,
        }
    }

    /// The route's method, which its function decides.
    pub fn method(self) -> Method {
        match self.function() {
            Function::Submit => Method::POST,
            Function::Purge => Method::DELETE,
            Function::Poll => Method::GET,
        }
    }

    /// The path, in the `{name}` syntax that axum and OpenAPI share.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::SubmitReport | Endpoint::PurgeReport => "/v1/reports",
            Endpoint::SubmitGeneric => "/v1/generate",
            Endpoint::ReportImmediate => "/v1/reports/immediate",
            Endpoint::GenerateImmediate => "/v1/generate/immediate",
            Endpoint::GenerateBatch => "/v1/generate/batch",
            Endpoint::ServiceInfo => "/",
            Endpoint::PollReport => "/v1/reports/{jobId}",
            Endpoint::PollJob | Endpoint::PurgeJob => "/v1/jobs/{jobId}",
            Endpoint::Redeliver => "/v1/jobs/{jobId}/deliveries/redeliver",
            Endpoint::Health => "/health",
            Endpoint::Ready => "/ready",
            Endpoint::Providers => "/v1/providers",
            Endpoint::Budget => "/v1/budget",
            Endpoint::OpenApi => "/openapi.json",
            Endpoint::JobsOverview => "/v1/jobs",
            Endpoint::Dashboard => "/dashboard",
        }
    }

    /// The route's metric label, `METHOD /path` (built once per process).
    pub(crate) fn metric_route(self) -> &'static str {
        static LABELS: std::sync::OnceLock<Vec<(Endpoint, &'static str)>> = std::sync::OnceLock::new();
        let labels = LABELS.get_or_init(|| {
            Endpoint::ALL
                .into_iter()
                .map(|e| {
                    let label: &'static str = Box::leak(format!("{} {}", e.method(), e.path()).into_boxed_str());
                    (e, label)
                })
                .collect()
        });
        labels
            .iter()
            .find(|(e, _)| *e == self)
            .map_or("other", |(_, label)| *label)
    }

    /// Whether the route wants an API key (health, readiness, the service info, the document and the dashboard's
    /// page are public; the page asks for the key and sends it with the calls it makes).
    pub(crate) fn needs_key(self) -> bool {
        !matches!(
            self,
            Endpoint::Health | Endpoint::Ready | Endpoint::OpenApi | Endpoint::Dashboard | Endpoint::ServiceInfo
        )
    }

    /// What the route does, in a line (`GET /` lists these; the document's summaries say the same).
    pub(crate) fn summary(self) -> &'static str {
        match self {
            Endpoint::SubmitReport => "Submit a commit-report job",
            Endpoint::SubmitGeneric => "Submit a generic job",
            Endpoint::ReportImmediate => "Generate a commit report, waiting up to 25 s for it",
            Endpoint::GenerateImmediate => "Generate, waiting up to 25 s for the result",
            Endpoint::GenerateBatch => "Submit up to 100 generic requests as one batch",
            Endpoint::PollReport => "Poll a commit-report job",
            Endpoint::PollJob => "Poll a job or a batch",
            Endpoint::PurgeReport => "Forget a commit's report job",
            Endpoint::PurgeJob => "Forget a job",
            Endpoint::Redeliver => "Send a job's dead or failed webhooks and callbacks again",
            Endpoint::Health => "Health for a load balancer: up, and the store reachable",
            Endpoint::Ready => "Readiness: 200 while the instance takes work, 503 while it drains before it stops",
            Endpoint::Providers => "Providers and their shared quota state",
            Endpoint::Budget => "Upstash commands, Lambda invocations and SQS requests spent, and the month's projection",
            Endpoint::OpenApi => "This document",
            Endpoint::JobsOverview => "The owner's jobs at a glance (the dashboard's data)",
            Endpoint::Dashboard => "The dashboard: an HTML page that asks for an API key and shows providers, jobs, dead letters and the budget",
            Endpoint::ServiceInfo => "What this service is and the routes it serves",
        }
    }
}
