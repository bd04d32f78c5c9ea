//! SQS as the step function sees it: one record of an SQS event, as Lambda hands it over.

use serde_json::{json, Value};

/// An SQS event record carrying `body` (a step message as JSON), received once: read it as
/// `aws_lambda_events`' `SqsMessage`.
pub fn record(message_id: &str, body: String) -> Value {
    json!({
        "messageId": message_id,
        "receiptHandle": format!("handle-{message_id}"),
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1795600800000"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:steps",
        "awsRegion": "us-east-1"
    })
}
