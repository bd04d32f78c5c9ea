//! The queue contract: the same cases against every Queue adapter — the local delay queue of
//! `stepper-local`, and SQS (`shared::adapters::queue::sqs`, the functions' own client) on moto's server, read
//! back with the AWS SDK as an independent client. Then what only the SQS client does: its request
//! (SQS's AWS JSON 1.0 protocol, SigV4-signed) and its error mapping, against a scripted server.
//!
//! Needs the `sqs` feature (on in `cargo test --workspace`; alone:
//! `cargo test -p stepper-shared --features sqs --test queue_contract`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use shared::adapters::queue::local::{LocalQueue, Received};
use shared::adapters::queue::sqs::{RetryPolicy, SqsConfig, SqsQueue};
use shared::domain::job::StepRef;
use shared::domain::message::{Hint, Message};
use shared::ports::{Queue, QueueError, SystemClock};
use testkit::stack::MotoServer;
use tokio::sync::mpsc::UnboundedReceiver;

/// An adapter under test and a way to read what it delivered.
enum Adapter {
    Local {
        queue: LocalQueue,
        rx: tokio::sync::Mutex<UnboundedReceiver<Received>>,
    },
    Sqs {
        queue: SqsQueue,
        reader: aws_sdk_sqs::Client,
        queue_url: String,
        _moto: MotoServer,
    },
}

impl Adapter {
    fn local() -> Self {
        let (queue, rx) = LocalQueue::new();
        Adapter::Local {
            queue,
            rx: tokio::sync::Mutex::new(rx),
        }
    }

    async fn sqs() -> Self {
        let moto = MotoServer::start().await.unwrap();
        let reader = sdk_client(&moto.endpoint);
        let queue_url = reader
            .create_queue()
            .queue_name("contract")
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let queue = SqsQueue::new(moto_config(&moto.endpoint), queue_url.clone(), Arc::new(SystemClock)).unwrap();
        Adapter::Sqs {
            queue,
            reader,
            queue_url,
            _moto: moto,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Adapter::Local { .. } => "local",
            Adapter::Sqs { .. } => "sqs",
        }
    }

    fn queue(&self) -> &dyn Queue {
        match self {
            Adapter::Local { queue, .. } => queue,
            Adapter::Sqs { queue, .. } => queue,
        }
    }

    /// What is delivered within `wait` (at most `max` messages), each removed from the queue.
    async fn receive(&self, max: usize, wait: Duration) -> Vec<Message> {
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        while got.len() < max && Instant::now() < deadline {
            let left = deadline - Instant::now();
            match self {
                Adapter::Local { rx, .. } => {
                    if let Ok(Some(d)) = tokio::time::timeout(left, rx.lock().await.recv()).await {
                        got.push(d.message);
                    }
                }
                Adapter::Sqs { reader, queue_url, .. } => {
                    let received = reader
                        .receive_message()
                        .queue_url(queue_url)
                        .max_number_of_messages(10)
                        .wait_time_seconds(left.as_secs().clamp(0, 1) as i32)
                        .send()
                        .await
                        .unwrap();
                    for m in received.messages.unwrap_or_default() {
                        got.push(serde_json::from_str(m.body.as_deref().unwrap()).unwrap());
                        reader
                            .delete_message()
                            .queue_url(queue_url)
                            .receipt_handle(m.receipt_handle.unwrap())
                            .send()
                            .await
                            .unwrap();
                    }
                }
            }
        }
        got
    }
}

fn moto_config(endpoint: &str) -> SqsConfig {
    SqsConfig {
        endpoint: endpoint.to_string(),
        region: "us-east-1".into(),
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
        session_token: None,
    }
}

/// The AWS SDK, as a second client that reads what ours sent (on ring, the workspace's TLS provider).
fn sdk_client(endpoint: &str) -> aws_sdk_sqs::Client {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .http_client(http)
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

async fn adapters() -> Vec<Adapter> {
    vec![Adapter::local(), Adapter::sqs().await]
}

fn step(seq: u64, not_before_ms: Option<u64>) -> Message {
    Message::Step {
        step: StepRef {
            // Non-ASCII and quotes: the body must come back byte for byte.
            owner: "ownér \"q\" 🚀".into(),
            job_id: format!("job-{seq}"),
            gen: "g1".into(),
            seq,
        },
        not_before_ms,
        hint: Hint {
            providers: vec!["alpha".into(), "béta".into()],
            tenant: Some("ténant".into()),
        },
    }
}

fn sorted(mut messages: Vec<Message>) -> Vec<String> {
    let mut keys: Vec<String> = messages.drain(..).map(|m| serde_json::to_string(&m).unwrap()).collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_kind_comes_back_as_it_was_sent() {
    for adapter in adapters().await {
        let sent = vec![
            step(1, None),
            step(2, Some(1_767_225_600_000)),
            Message::Sweep {
                token: "sweeper-token".into(),
                round: 7,
            },
        ];
        for m in &sent {
            adapter.queue().send(m, Duration::ZERO).await.unwrap();
        }
        let got = adapter.receive(sent.len(), Duration::from_secs(10)).await;
        assert_eq!(sorted(got), sorted(sent), "{}", adapter.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_comes_after_its_delay_and_not_before() {
    for adapter in adapters().await {
        let started = Instant::now();
        adapter
            .queue()
            .send(&step(3, None), Duration::from_secs(2))
            .await
            .unwrap();
        assert!(
            adapter.receive(1, Duration::from_millis(1_200)).await.is_empty(),
            "{}: delivered before its delay",
            adapter.name()
        );
        let got = adapter.receive(1, Duration::from_secs(10)).await;
        let elapsed = started.elapsed();
        assert_eq!(sorted(got), sorted(vec![step(3, None)]), "{}", adapter.name());
        assert!(
            elapsed >= Duration::from_millis(1_900),
            "{}: delivered after {elapsed:?}",
            adapter.name()
        );
        println!(
            "queue contract: {} delivered a 2 s delay after {elapsed:?}",
            adapter.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_concurrently_each_arrive_once() {
    for adapter in adapters().await {
        let sent: Vec<Message> = (10..30).map(|seq| step(seq, None)).collect();
        let sends = sent.iter().map(|m| adapter.queue().send(m, Duration::ZERO));
        for result in futures::future::join_all(sends).await {
            result.unwrap();
        }
        let got = adapter.receive(sent.len(), Duration::from_secs(15)).await;
        assert_eq!(sorted(got), sorted(sent), "{}", adapter.name());
        assert!(
            adapter.receive(1, Duration::from_millis(500)).await.is_empty(),
            "{}: a duplicate",
            adapter.name()
        );
    }
}

// What only the SQS client does.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_past_fifteen_minutes_goes_to_sqs_as_a_fifteen_minute_hop() {
    let Adapter::Sqs {
        queue,
        reader,
        queue_url,
        _moto,
    } = Adapter::sqs().await
    else {
        unreachable!()
    };
    queue.send(&step(40, None), Duration::from_secs(3_600)).await.unwrap();
    let attrs = reader
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    assert_eq!(
        attrs
            .get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .map(String::as_str),
        Some("1"),
        "the message waits in the queue, delayed: {attrs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_that_does_not_exist_fails_at_once() {
    let moto = MotoServer::start().await.unwrap();
    let queue = SqsQueue::new(
        moto_config(&moto.endpoint),
        format!("{}/123456789012/missing", moto.endpoint),
        Arc::new(SystemClock),
    )
    .unwrap();
    // Twice: moto answers its first request slowly (a cold Python server, seen past 1 s on a busy
    // machine), so the time is held on the second. Each must fail after one attempt, with no back-off.
    for call in ["first", "second"] {
        let started = Instant::now();
        let QueueError::Unavailable(message) = queue.send(&step(1, None), Duration::ZERO).await.unwrap_err();
        assert!(message.contains("after 1 attempt"), "{call}: {message}");
        assert!(message.contains("QueueDoesNotExist"), "{call}: {message}");
        if call == "second" {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "no back-off: {:?}",
                started.elapsed()
            );
        }
    }
}

/// A scripted SQS: answers the requests it gets with the statuses and bodies it was given, in order,
/// and keeps each request's headers and body.
#[derive(Clone, Default)]
struct Scripted {
    answers: Arc<Mutex<VecDeque<(u16, &'static str)>>>,
    requests: Arc<Mutex<Vec<(HeaderMap, serde_json::Value)>>>,
}

async fn scripted_sqs(answers: &[(u16, &'static str)]) -> (Scripted, String) {
    let script = Scripted {
        answers: Arc::new(Mutex::new(answers.iter().copied().collect())),
        requests: Arc::default(),
    };
    async fn answer(State(s): State<Scripted>, headers: HeaderMap, body: String) -> (StatusCode, String) {
        s.requests
            .lock()
            .unwrap()
            .push((headers, serde_json::from_str(&body).unwrap_or_default()));
        let (status, body) = s
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or((500, "script exhausted"));
        (StatusCode::from_u16(status).unwrap(), body.to_string())
    }
    let app = axum::Router::new()
        .route("/", axum::routing::post(answer))
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (script, endpoint)
}

fn scripted_queue(endpoint: &str, session_token: Option<&str>) -> SqsQueue {
    let config = SqsConfig {
        endpoint: endpoint.to_string(),
        region: "eu-west-1".into(),
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "secret".into(),
        session_token: session_token.map(str::to_string),
    };
    SqsQueue::new(
        config,
        "https://sqs.eu-west-1.amazonaws.com/123456789012/steps",
        Arc::new(SystemClock),
    )
    .unwrap()
    .with_retry(RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(20),
    })
}

const SENT: (u16, &str) = (200, r#"{"MD5OfMessageBody":"x","MessageId":"m-1"}"#);
const THROTTLED: (u16, &str) = (
    400,
    r#"{"__type":"com.amazonaws.sqs#RequestThrottled","message":"Request is throttled."}"#,
);
const INTERNAL: (u16, &str) = (500, r#"{"__type":"com.amazonaws.sqs#InternalError","message":"boom"}"#);
const DENIED: (u16, &str) = (
    403,
    r#"{"__type":"com.amazon.coral.service#AccessDeniedException","message":"not allowed"}"#,
);

#[tokio::test]
async fn the_request_is_a_signed_aws_json_send_message() {
    let (script, endpoint) = scripted_sqs(&[SENT]).await;
    let queue = scripted_queue(&endpoint, Some("session-token"));
    queue.send(&step(5, None), Duration::from_millis(1_500)).await.unwrap();
    let requests = script.requests.lock().unwrap();
    assert_eq!(requests.len(), 1);
    let (headers, body) = &requests[0];
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(header("x-amz-target"), "AmazonSQS.SendMessage");
    assert_eq!(header("content-type"), "application/x-amz-json-1.0");
    assert_eq!(header("x-amz-security-token"), "session-token");
    assert!(!header("x-amz-date").is_empty());
    let authorization = header("authorization");
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
            && authorization.contains("/eu-west-1/sqs/aws4_request")
            && authorization.contains("x-amz-target")
            && authorization.contains("Signature="),
        "{authorization}"
    );
    assert_eq!(
        body["QueueUrl"],
        "https://sqs.eu-west-1.amazonaws.com/123456789012/steps"
    );
    assert_eq!(body["DelaySeconds"], 2, "a part second rounds up");
    let carried: Message = serde_json::from_str(body["MessageBody"].as_str().unwrap()).unwrap();
    assert_eq!(carried, step(5, None));
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_then_succeed() {
    let (script, endpoint) = scripted_sqs(&[THROTTLED, INTERNAL, SENT]).await;
    scripted_queue(&endpoint, None)
        .send(&step(6, None), Duration::ZERO)
        .await
        .unwrap();
    let requests = script.requests.lock().unwrap();
    assert_eq!(requests.len(), 3);
    assert!(requests[0].0.get("x-amz-security-token").is_none());
}

/// A send of step `seq` to a scripted SQS answering `answers` in turn, which must fail: how many
/// requests it made, and why it says it failed.
async fn refused_send(answers: &[(u16, &'static str)], seq: u64) -> (usize, String) {
    let (script, endpoint) = scripted_sqs(answers).await;
    let QueueError::Unavailable(message) = scripted_queue(&endpoint, None)
        .send(&step(seq, None), Duration::ZERO)
        .await
        .unwrap_err();
    let requests = script.requests.lock().unwrap().len();
    (requests, message)
}

#[tokio::test]
async fn retries_stop_after_three_attempts() {
    let (requests, message) = refused_send(&[INTERNAL, THROTTLED, INTERNAL, SENT], 7).await;
    assert_eq!(requests, 3);
    assert!(
        message.contains("after 3 attempt(s): HTTP 500 InternalError: boom"),
        "{message}"
    );
}

#[tokio::test]
async fn a_permanent_error_is_not_retried() {
    let (requests, message) = refused_send(&[DENIED, SENT], 8).await;
    assert_eq!(requests, 1);
    assert!(
        message.contains("HTTP 403 AccessDeniedException: not allowed"),
        "{message}"
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_retried_then_reported() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let QueueError::Unavailable(message) = scripted_queue(&format!("http://127.0.0.1:{port}"), None)
        .send(&step(9, None), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(message.contains("after 3 attempt(s)"), "{message}");
}
