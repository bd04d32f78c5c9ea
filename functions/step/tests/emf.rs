//! The Lambda functions' metrics: a submit through the shared router and its first step through the
//! step function's handler, on the EMF recorder the functions install (`shared::wiring::lambda::init_metrics`).
//! Every line flushed is validated against the Embedded Metric Format schema (docs/emf.schema.json,
//! from the specification) and against the rules a schema cannot express, and carries what the
//! invocation recorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use serde_json::{json, Value};
use shared::adapters::queue::local::LocalQueue;
use shared::domain::message::Message;
use testkit::fake::{FakeProvider, FakeReply, Wire};
use testkit::router::call;

fn record(message: &Message) -> SqsMessage {
    let body = serde_json::to_string(message).unwrap();
    serde_json::from_value(testkit::sqs::record("m-1", body)).unwrap()
}

/// Flushes the recorder; every line is one EMF document, checked against the schema and the spec.
fn flush(validator: &jsonschema::Validator) -> Vec<Value> {
    let mut out = Vec::new();
    shared::wiring::lambda::flush_metrics(&mut out);
    let text = String::from_utf8(out).expect("UTF-8");
    text.lines()
        .map(|line| {
            let document: Value = serde_json::from_str(line).expect("each line is one JSON document");
            let errors: Vec<String> = validator.iter_errors(&document).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "not EMF: {errors:?}\n{line}");
            for directive in document["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
                for set in directive["Dimensions"].as_array().unwrap() {
                    for dimension in set.as_array().unwrap() {
                        let name = dimension.as_str().unwrap();
                        assert!(
                            document[name].is_string(),
                            "dimension {name} has no string target: {line}"
                        );
                    }
                }
                for metric in directive["Metrics"].as_array().unwrap() {
                    let name = metric["Name"].as_str().unwrap();
                    let target = &document[name];
                    let ok = target.is_number()
                        || target
                            .as_array()
                            .is_some_and(|values| values.len() <= 100 && values.iter().all(Value::is_number));
                    assert!(ok, "metric {name} has no numeric target: {line}");
                }
            }
            document
        })
        .collect()
}

/// The value of `metric` in the one document whose dimensions are these.
fn value<'a>(documents: &'a [Value], metric: &str, dimensions: &[(&str, &str)]) -> &'a Value {
    let found: Vec<&Value> = documents
        .iter()
        .filter(|d| d.get(metric).is_some() && dimensions.iter().all(|(k, v)| d[*k] == *v))
        .collect();
    assert_eq!(found.len(), 1, "{metric} {dimensions:?} in {documents:#?}");
    &found[0][metric]
}

#[tokio::test]
async fn an_invocation_flushes_valid_emf_lines_with_what_it_recorded() {
    shared::wiring::lambda::init_metrics("step");
    let schema_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/emf.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(schema_path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let wrong_unit = json!({"_aws": {"Timestamp": 1, "CloudWatchMetrics": [{"Namespace": "n", "Dimensions": [[]],
        "Metrics": [{"Name": "m", "Unit": "Lightyears"}]}]}, "m": 1});
    assert!(!validator.is_valid(&wrong_unit), "the schema holds the units");
    assert!(!validator.is_valid(&json!({"m": 1})), "the schema wants _aws");

    let provider = FakeProvider::start(Wire::OpenAi).await.unwrap();
    provider.set_default(FakeReply::openai_text("a generated answer"));
    let dir = std::env::temp_dir().join(format!("stepper-emf-{}", std::process::id()));
    let config = testkit::fake::config_calling(&provider, &dir);
    let (queue, mut deliveries) = LocalQueue::new();
    let service = Arc::new(shared::wiring::service::build(&config, Arc::new(queue)).unwrap());

    // The submit function's invocation.
    let submit = shared::api::submit_routes(service.clone());
    let body = json!({"prompt": "Say something", "responseMode": "text"});
    let (status, _) = call(&submit, "POST", "/v1/generate", None, Some(body)).await;
    assert_eq!(status, 202);
    let submit = flush(&validator);
    assert_eq!(
        *value(
            &submit,
            "cache_misses_total",
            &[("preset", "generic"), ("response_mode", "text")]
        ),
        1
    );
    assert_eq!(
        *value(
            &submit,
            "stepper_jobs_submitted_total",
            &[("kind", "generic"), ("owner", "public")]
        ),
        1
    );
    let create = [
        ("route", "POST /v1/generate"),
        ("operation", "create"),
        ("outcome", "ok"),
    ];
    assert_eq!(*value(&submit, "stepper_store_requests_total", &create), 1);
    for document in &submit {
        assert_eq!(document["function"], "step", "the function's dimension on every line");
        assert_eq!(document["_aws"]["CloudWatchMetrics"][0]["Namespace"], "stepper");
    }

    // The step function's invocation: the job's first step, as SQS hands it over.
    let first = loop {
        let message = tokio::time::timeout(Duration::from_secs(5), deliveries.recv())
            .await
            .unwrap()
            .unwrap()
            .message;
        if matches!(message, Message::Step { .. }) {
            break message;
        }
    };
    let mut event = SqsEvent::default();
    event.records = vec![record(&first)];
    let started = Instant::now();
    let payload = serde_json::to_value(event).unwrap();
    let answer = step::handle(&service.engine, payload).await.unwrap();
    assert_eq!(answer["batchItemFailures"], json!([]));
    let flush_started = Instant::now();
    let step = flush(&validator);
    let flush_took = flush_started.elapsed();
    let text_labels = [("provider", "fake"), ("preset", "generic"), ("response_mode", "text")];
    let attempted = [text_labels.as_slice(), &[("status", "attempted")]].concat();
    assert_eq!(*value(&step, "ai_requests_total", &attempted), 1);
    let success = [text_labels.as_slice(), &[("status", "success")]].concat();
    assert_eq!(*value(&step, "ai_requests_total", &success), 1);
    // A histogram is the array of values recorded during the invocation, in seconds.
    let durations = value(&step, "ai_request_duration_seconds", &text_labels)
        .as_array()
        .unwrap();
    assert_eq!(durations.len(), 1);
    assert!(durations[0].as_f64().unwrap() < started.elapsed().as_secs_f64() + 0.001);
    let processed = [
        ("status", "success"),
        ("kind", "generic"),
        ("owner", "public"),
        ("fallback", "false"),
    ];
    assert_eq!(*value(&step, "jobs_processed_total", &processed), 1);
    assert_eq!(
        *value(
            &step,
            "stepper_provider_attempts_total",
            &[("provider", "fake"), ("outcome", "ok")]
        ),
        1
    );
    let claim = [("route", "step"), ("operation", "claim"), ("outcome", "ok")];
    assert_eq!(*value(&step, "stepper_store_requests_total", &claim), 1);
    let units: Vec<(&str, &str)> = step
        .iter()
        .flat_map(|d| d["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap())
        .filter_map(|m| Some((m["Name"].as_str()?, m["Unit"].as_str()?)))
        .collect();
    assert!(units.contains(&("ai_request_duration_seconds", "Seconds")), "{units:?}");
    assert!(units.contains(&("ai_requests_total", "Count")), "{units:?}");

    // Counters are deltas: a flush with nothing recorded since writes nothing.
    assert!(flush(&validator).is_empty());
    println!(
        "emf: submit {} lines, step {} lines, step flush took {:?}",
        submit.len(),
        step.len(),
        flush_took
    );
    let _ = std::fs::remove_dir_all(&dir);
}
