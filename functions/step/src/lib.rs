//! The step function's handler: an SQS batch in, one step per record, partial batch failures out.
//! Kept apart from `main.rs` so tests can hand it batches exactly as Lambda would.

use std::panic::AssertUnwindSafe;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures::FutureExt;
use shared::domain::message::Message;
use shared::engine::Engine;
use tracing::{error, info, warn};

/// Runs every record of the batch (concurrently: each is one provider attempt at most) and reports
/// the ones that must come back (`ReportBatchItemFailures`), so only those are retried. A record whose
/// step panics is one of those: the panic is caught (the release profile unwinds), the other records
/// of the batch keep their outcome.
pub async fn handle_batch(engine: &Engine, event: SqsEvent) -> SqsBatchResponse {
    let runs = event.records.into_iter().map(|record| async move {
        let id = record.message_id.clone().unwrap_or_default();
        match AssertUnwindSafe(handle_record(engine, record)).catch_unwind().await {
            Ok(failure) => failure,
            Err(panic) => {
                let reason = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                error!(message_id = %id, panic = %reason, "step panicked; the message will be retried");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                Some(failure)
            }
        }
    });
    let failures = futures::future::join_all(runs).await.into_iter().flatten().collect();
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures;
    response
}

/// One record: `Some` failure when its message must come back.
async fn handle_record(engine: &Engine, record: aws_lambda_events::event::sqs::SqsMessage) -> Option<BatchItemFailure> {
    {
        let id = record.message_id.clone().unwrap_or_default();
        let receive_count = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let Some(body) = record.body.as_deref() else {
            warn!(message_id = %id, "dropping an SQS record without a body");
            return None;
        };
        let message: Message = match serde_json::from_str(body) {
            Ok(m) => m,
            Err(e) => {
                // Retrying cannot fix it; the redrive policy would only move it to the DLQ later.
                warn!(message_id = %id, error = %e, "dropping an unreadable step message");
                return None;
            }
        };
        let result = engine.handle(&message, receive_count).await;
        match result {
            Ok(outcome) => {
                info!(message_id = %id, ?outcome, "step done");
                None
            }
            Err(e) => {
                error!(message_id = %id, error = %e, receive_count, "step failed; the message will be retried");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                Some(failure)
            }
        }
    }
}

/// The function's entry: an SQS event, or `{"action":"redrive"}` sent by hand.
pub async fn handle(engine: &Engine, payload: serde_json::Value) -> Result<serde_json::Value, lambda_runtime::Error> {
    if payload.get("action").and_then(serde_json::Value::as_str) == Some("redrive") {
        let redriven = engine.redrive_unfinished().await?;
        info!(redriven, "re-drove jobs with work left");
        return Ok(serde_json::json!({ "redriven": redriven }));
    }
    let event: SqsEvent = serde_json::from_value(payload)?;
    Ok(serde_json::to_value(handle_batch(engine, event).await)?)
}
