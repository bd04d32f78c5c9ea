//! The SSRF guard and the pinned POST: every forbidden spelling of an internal address, names resolving inside,
//! DNS pinning, redirects reported and never followed, the response body cap, timeouts, no URL in errors.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, post as post_route};
use axum::Router;
use shared::adapters::outbound::guard::{
    classify, post, AddressClass, DeliveryError, GuardError, Resolver, SystemResolver, UrlGuard, RESPONSE_BODY_CAP,
};

// ---------------------------------------------------------------------------------------------------------------
// Submit-time checks
// ---------------------------------------------------------------------------------------------------------------

fn guard() -> UrlGuard {
    UrlGuard::new(&[]).unwrap()
}

#[test]
fn every_spelling_of_a_forbidden_address_is_refused() {
    use AddressClass::*;
    let table: &[(&str, AddressClass)] = &[
        // Loopback in every IPv4 spelling the WHATWG host parser accepts.
        ("https://127.0.0.1/", Loopback),
        ("https://2130706433/", Loopback),
        ("https://0177.0.0.1/", Loopback),
        ("https://017700000001/", Loopback),
        ("https://0x7f.0.0.1/", Loopback),
        ("https://0x7f000001/", Loopback),
        ("https://0X7F.1/", Loopback),
        ("https://127.1/", Loopback),
        ("https://127.0.1/", Loopback),
        ("https://127.0.0.1./", Loopback),
        ("https://%31%32%37.0.0.1/", Loopback),
        ("https://\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}/", Loopback),
        ("https://127.255.255.254:8443/x", Loopback),
        // Loopback in IPv6, bare and carrying IPv4.
        ("https://[::1]/", Loopback),
        ("https://[0:0:0:0:0:0:0:1]/", Loopback),
        ("https://[::ffff:127.0.0.1]/", Loopback),
        ("https://[0:0:0:0:0:ffff:7f00:1]/", Loopback),
        ("https://[::ffff:7f00:1]/", Loopback),
        ("https://[::127.0.0.1]/", Loopback),
        ("https://[64:ff9b::7f00:1]/", Loopback),
        ("https://[2002:7f00:1::]/", Loopback),
        // Private networks.
        ("https://10.0.0.1/", Private),
        ("https://012.1.2.3/", Private),
        ("https://172.16.0.1/", Private),
        ("https://172.31.255.255/", Private),
        ("https://192.168.1.1/", Private),
        ("https://3232235777/", Private),
        ("https://[::ffff:192.168.0.1]/", Private),
        ("https://[::ffff:a00:1]/", Private),
        ("https://[fec0::1]/", Private),
        // Link-local and cloud metadata.
        ("https://169.254.1.1/", LinkLocal),
        ("https://[fe80::1]/", LinkLocal),
        ("https://[febf::1]/", LinkLocal),
        ("https://169.254.169.254/", CloudMetadata),
        ("https://169.254.169.254/latest/meta-data/", CloudMetadata),
        ("https://2852039166/", CloudMetadata),
        ("https://0xa9fea9fe/", CloudMetadata),
        ("https://0251.0376.0251.0376/", CloudMetadata),
        ("https://[::ffff:169.254.169.254]/", CloudMetadata),
        ("https://[fd00:ec2::254]/", CloudMetadata),
        // CGNAT, unique-local, this-network, broadcast, multicast, reserved, documentation, benchmarking.
        ("https://100.64.0.1/", SharedAddressSpace),
        ("https://100.127.255.255/", SharedAddressSpace),
        ("https://100.100.100.200/", SharedAddressSpace),
        ("https://[fc00::1]/", UniqueLocal),
        ("https://[fd12:3456::1]/", UniqueLocal),
        ("https://0.0.0.0/", Unspecified),
        ("https://0/", Unspecified),
        ("https://0.1.2.3/", Unspecified),
        ("https://[::]/", Unspecified),
        ("https://255.255.255.255/", Broadcast),
        ("https://224.0.0.1/", Multicast),
        ("https://239.255.255.250/", Multicast),
        ("https://[ff02::1]/", Multicast),
        ("https://240.0.0.1/", Reserved),
        ("https://192.0.0.8/", Reserved),
        ("https://[2001::1]/", Reserved),
        ("https://[100::1]/", Reserved),
        ("https://[64:ff9b:1::1]/", Reserved),
        ("https://[4000::1]/", Reserved),
        ("https://192.0.2.1/", Documentation),
        ("https://198.51.100.7/", Documentation),
        ("https://203.0.113.9/", Documentation),
        ("https://[2001:db8::1]/", Documentation),
        ("https://[3fff::1]/", Documentation),
        ("https://198.18.0.1/", Benchmarking),
        ("https://198.19.255.255/", Benchmarking),
    ];
    let guard = guard();
    for (url, expected) in table {
        match guard.check(url) {
            Err(GuardError::ForbiddenAddress { class, .. }) => assert_eq!(class, *expected, "{url}"),
            other => panic!("{url}: expected a forbidden {expected:?} address, got {other:?}"),
        }
    }
}

#[test]
fn public_addresses_and_names_pass_the_face_check() {
    let guard = guard();
    for url in [
        "https://93.184.216.34/hook",
        "https://1.1.1.1/",
        "https://172.32.0.1/",
        "https://172.15.255.255/",
        "https://100.128.0.1/",
        "https://100.63.255.255/",
        "https://169.255.0.1/",
        "https://[2606:4700:4700::1111]/",
        "https://[::ffff:8.8.8.8]/",
        "https://[2002:808:808::1]/",
        "https://example.com/hook?x=1",
        "https://hooks.example.co.uk:8443/a/b",
        "https://xn--caf-dma.example/",
    ] {
        assert!(guard.check(url).is_ok(), "{url}: {:?}", guard.check(url));
    }
}

#[test]
fn internal_host_names_are_refused() {
    let guard = guard();
    for url in [
        "https://localhost/",
        "https://LOCALHOST./",
        "https://api.localhost/",
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://METADATA.GOOGLE.INTERNAL./",
        "https://metadata/",
        "https://metadata.goog/",
        "https://instance-data/",
        "https://service.internal/",
        "https://intranet/",
        "https://printer.local/",
        "https://router.home.arpa/",
        "https://nas.lan/",
        "https://box.localdomain/",
    ] {
        assert!(
            matches!(guard.check(url), Err(GuardError::ForbiddenHostName { .. })),
            "{url}: {:?}",
            guard.check(url)
        );
    }
    // Look-alikes that merely contain those words are ordinary public names.
    for url in [
        "https://localhost.example.com/",
        "https://mylocal.com/",
        "https://internal-tools.example.org/",
    ] {
        assert!(guard.check(url).is_ok(), "{url}: {:?}", guard.check(url));
    }
}

#[test]
fn schemes_userinfo_and_malformed_urls_are_refused() {
    let guard = guard();
    let cases: &[(&str, &str)] = &[
        ("http://example.com/hook", "insecure_scheme"),
        ("HTTP://example.com/hook", "insecure_scheme"),
        ("ftp://example.com/", "unsupported_scheme"),
        ("file:///etc/passwd", "unsupported_scheme"),
        ("gopher://example.com:70/", "unsupported_scheme"),
        ("javascript:alert(1)", "unsupported_scheme"),
        ("https://user:pass@example.com/", "userinfo"),
        ("https://user@example.com/", "userinfo"),
        ("https://:pass@example.com/", "userinfo"),
        ("not a url", "invalid_url"),
        ("/relative/path", "invalid_url"),
        ("https://", "invalid_url"),
        ("https://256.0.0.1/", "invalid_url"),
        ("https://[::1/", "invalid_url"),
    ];
    for (url, code) in cases {
        let error = guard.check(url).unwrap_err();
        assert_eq!(error.code(), *code, "{url}: {error}");
        assert!(!error.to_string().is_empty());
    }
    // The reason text is what gets recorded on the job.
    let reason = guard.check("https://[::ffff:127.0.0.1]/").unwrap_err().to_string();
    assert_eq!(reason, "address ::ffff:127.0.0.1 is not allowed: loopback");
}

#[test]
fn allow_listed_origins_skip_the_scheme_and_address_rules_only_for_that_origin() {
    let guard = UrlGuard::new(&["http://127.0.0.1:8080".to_owned(), "http://receiver:9000/".to_owned()]).unwrap();
    assert!(guard.check("http://127.0.0.1:8080/hook").is_ok());
    assert!(guard.check("http://127.0.0.1:8080").is_ok());
    assert!(guard.check("http://receiver:9000/callback?job=1").is_ok());
    assert_eq!(
        guard.check("http://127.0.0.1:8081/").unwrap_err(),
        GuardError::InsecureScheme
    );
    assert!(matches!(
        guard.check("https://127.0.0.1:8080/"),
        Err(GuardError::ForbiddenAddress { .. })
    ));
    assert!(matches!(
        guard.check("https://127.0.0.2/"),
        Err(GuardError::ForbiddenAddress { .. })
    ));
    // Userinfo is refused even on an allow-listed origin.
    assert_eq!(
        guard.check("http://user:pw@127.0.0.1:8080/").unwrap_err(),
        GuardError::UserInfo
    );
}

#[test]
fn allow_list_entries_must_be_bare_origins() {
    for bad in [
        "http://127.0.0.1:8080/path",
        "not a url",
        "ftp://example.com",
        "http://u:p@example.com",
        "https://x/?q",
    ] {
        assert!(
            matches!(
                UrlGuard::new(&[bad.to_owned()]),
                Err(GuardError::InvalidAllowedOrigin(_))
            ),
            "{bad} should be refused"
        );
    }
}

#[test]
fn classify_sees_through_embedded_ipv4() {
    let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
    assert_eq!(classify(mapped), Some(AddressClass::Private));
    let public_mapped: IpAddr = "::ffff:1.1.1.1".parse().unwrap();
    assert_eq!(classify(public_mapped), None);
    assert_eq!(classify("8.8.8.8".parse().unwrap()), None);
}

// ---------------------------------------------------------------------------------------------------------------
// Send-time resolution
// ---------------------------------------------------------------------------------------------------------------

/// A resolver answering from a table, counting lookups.
#[derive(Default)]
struct TableResolver {
    answers: HashMap<String, Vec<IpAddr>>,
    lookups: AtomicUsize,
}

impl TableResolver {
    fn with(entries: &[(&str, &[&str])]) -> Arc<Self> {
        let answers = entries
            .iter()
            .map(|(name, ips)| (name.to_string(), ips.iter().map(|ip| ip.parse().unwrap()).collect()))
            .collect();
        Arc::new(Self {
            answers,
            lookups: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl Resolver for TableResolver {
    async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        match self.answers.get(host) {
            Some(ips) => Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()),
            None => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such host")),
        }
    }
}

fn url(text: &str) -> url::Url {
    url::Url::parse(text).unwrap()
}

#[tokio::test]
async fn a_name_resolving_to_any_forbidden_address_is_refused() {
    let resolver = TableResolver::with(&[
        ("rebind.example.com", &["93.184.216.34", "127.0.0.1"]),
        ("mapped.example.com", &["::ffff:10.0.0.1"]),
        ("metadata.example.com", &["169.254.169.254"]),
        ("v6.example.com", &["2606:4700::1", "fd00::1"]),
    ]);
    let guard = guard().with_resolver(resolver);
    let cases = [
        ("https://rebind.example.com/", AddressClass::Loopback),
        ("https://mapped.example.com/", AddressClass::Private),
        ("https://metadata.example.com/", AddressClass::CloudMetadata),
        ("https://v6.example.com/", AddressClass::UniqueLocal),
    ];
    for (target, expected) in cases {
        match guard.resolve(&url(target)).await {
            Err(GuardError::ForbiddenAddress { class, .. }) => assert_eq!(class, expected, "{target}"),
            other => panic!("{target}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_public_name_is_pinned_to_what_it_resolved_to() {
    let resolver = TableResolver::with(&[("hooks.example.com", &["93.184.216.34", "2606:2800:220:1::248"])]);
    let guard = guard().with_resolver(resolver.clone());
    let pinned = guard.resolve(&url("https://hooks.example.com/cb")).await.unwrap();
    assert_eq!(pinned.url().as_str(), "https://hooks.example.com/cb");
    let expected: Vec<SocketAddr> = vec![
        "93.184.216.34:443".parse().unwrap(),
        "[2606:2800:220:1::248]:443".parse().unwrap(),
    ];
    assert_eq!(pinned.addrs(), expected.as_slice());
    assert_eq!(resolver.lookups.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn resolution_failures_and_ip_literals() {
    let resolver = TableResolver::with(&[("empty.example.com", &[])]);
    let guard = guard().with_resolver(resolver.clone());
    assert!(matches!(
        guard.resolve(&url("https://nowhere.example.com/")).await,
        Err(GuardError::ResolutionFailed { .. })
    ));
    assert!(matches!(
        guard.resolve(&url("https://empty.example.com/")).await,
        Err(GuardError::NoAddresses(_))
    ));
    let lookups_before = resolver.lookups.load(Ordering::SeqCst);
    let pinned = guard.resolve(&url("https://1.1.1.1:8443/x")).await.unwrap();
    assert_eq!(pinned.addrs(), &["1.1.1.1:8443".parse::<SocketAddr>().unwrap()]);
    assert_eq!(
        resolver.lookups.load(Ordering::SeqCst),
        lookups_before,
        "an IP literal needs no lookup"
    );
    // resolve() re-applies the face checks to a URL stored earlier.
    assert_eq!(
        guard.resolve(&url("http://example.com/")).await.unwrap_err(),
        GuardError::InsecureScheme
    );
    assert!(matches!(
        guard.resolve(&url("https://0x7f000001/")).await,
        Err(GuardError::ForbiddenAddress { .. })
    ));
}

#[tokio::test]
async fn the_real_localhost_name_is_refused_and_resolves_to_loopback() {
    let guard = guard();
    assert!(matches!(
        guard.resolve(&url("https://localhost/")).await,
        Err(GuardError::ForbiddenHostName { .. })
    ));
    let addrs = SystemResolver.lookup("localhost", 443).await.unwrap();
    assert!(!addrs.is_empty());
    for addr in addrs {
        assert_eq!(classify(addr.ip()), Some(AddressClass::Loopback), "{addr}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The POST
// ---------------------------------------------------------------------------------------------------------------

#[derive(Default)]
struct Received {
    requests: Mutex<Vec<(HeaderMap, Bytes)>>,
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// A receiver recording every request, plus routes that redirect, stream forever, or stall.
async fn receiver(received: Arc<Received>, redirect_to: String) -> SocketAddr {
    let record = received.clone();
    let router = Router::new()
        .route(
            "/hook",
            post_route(move |headers: HeaderMap, body: Bytes| {
                let record = record.clone();
                async move {
                    record.requests.lock().unwrap().push((headers, body));
                    (StatusCode::OK, "thanks")
                }
            }),
        )
        .route(
            "/redirect",
            any(move || {
                let location = redirect_to.clone();
                async move { (StatusCode::FOUND, [("location", location)], "moved") }
            }),
        )
        .route(
            "/metadata-redirect",
            any(|| async {
                (
                    StatusCode::FOUND,
                    [("location", "http://169.254.169.254/latest/meta-data/")],
                    "",
                )
            }),
        )
        .route(
            "/endless",
            any(|| async {
                let chunk = Bytes::from(vec![b'x'; 8192]);
                let stream = futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
                Body::from_stream(stream).into_response()
            }),
        )
        .route(
            "/slow",
            any(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "late"
            }),
        )
        .route(
            "/teapot",
            any(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }),
        );
    serve(router).await
}

/// A second server that counts every request: it must never be reached through a redirect.
async fn canary() -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let router = Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            "canary"
        }
    });
    (serve(router).await, hits)
}

async fn local_setup() -> (UrlGuard, SocketAddr, Arc<Received>, Arc<AtomicUsize>) {
    let (canary_addr, canary_hits) = canary().await;
    let received = Arc::new(Received::default());
    let addr = receiver(received.clone(), format!("http://{canary_addr}/stolen")).await;
    let guard = UrlGuard::new(&[format!("http://{addr}")]).unwrap();
    (guard, addr, received, canary_hits)
}

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn posts_body_and_headers_to_an_allow_listed_loopback_origin() {
    let (guard, addr, received, _) = local_setup().await;
    let target = guard
        .resolve(&guard.check(&format!("http://{addr}/hook")).unwrap())
        .await
        .unwrap();
    let body = r#"{"jobId":"j1","status":"completed","text":"é😀"}"#.to_owned();
    let headers = vec![
        ("X-Custom".to_owned(), "yes".to_owned()),
        ("webhook-id".to_owned(), "msg_1".to_owned()),
    ];
    let outcome = post(&target, &headers, body.clone(), TIMEOUT).await.unwrap();
    assert!(outcome.is_delivered());
    assert_eq!(outcome.failure_reason(), None);
    assert_eq!(
        (outcome.status, outcome.body_len, outcome.body_truncated),
        (200, "thanks".len(), false)
    );

    let requests = received.requests.lock().unwrap();
    let (headers, received_body) = &requests[0];
    assert_eq!(received_body.as_ref(), body.as_bytes());
    assert_eq!(headers["x-custom"], "yes");
    assert_eq!(headers["webhook-id"], "msg_1");
    assert_eq!(headers["content-type"], "application/json");
}

#[tokio::test]
async fn a_name_is_reached_through_the_pinned_address_without_dns() {
    let (canary_addr, _) = canary().await;
    let received = Arc::new(Received::default());
    let addr = receiver(received.clone(), format!("http://{canary_addr}/")).await;
    // `receiver.invalid` exists in no DNS: only the pinned address can make this POST arrive.
    let origin = format!("http://receiver.invalid:{}", addr.port());
    let guard = UrlGuard::new(std::slice::from_ref(&origin))
        .unwrap()
        .with_resolver(TableResolver::with(&[("receiver.invalid", &["127.0.0.1"])]));
    let target = guard.resolve(&url(&format!("{origin}/hook"))).await.unwrap();
    let outcome = post(&target, &[], "{}".to_owned(), TIMEOUT).await.unwrap();
    assert_eq!(outcome.status, 200);
    assert_eq!(received.requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn the_system_resolver_reaches_an_allow_listed_localhost_origin() {
    let received = Arc::new(Received::default());
    let addr = receiver(received.clone(), String::new()).await;
    let origin = format!("http://localhost:{}", addr.port());
    let guard = UrlGuard::new(std::slice::from_ref(&origin)).unwrap();
    let target = guard.resolve(&url(&format!("{origin}/hook"))).await.unwrap();
    assert!(target.addrs().iter().all(|pinned| pinned.ip().is_loopback()));
    // localhost may also resolve to ::1, where nothing listens; the client tries the pinned addresses in turn.
    let outcome = post(&target, &[], "{}".to_owned(), TIMEOUT).await.unwrap();
    assert_eq!(outcome.status, 200);
}

#[tokio::test]
async fn a_redirect_is_reported_as_a_failure_and_never_followed() {
    let (guard, addr, _, canary_hits) = local_setup().await;
    let target = guard.resolve(&url(&format!("http://{addr}/redirect"))).await.unwrap();
    let outcome = post(&target, &[], "{}".to_owned(), TIMEOUT).await.unwrap();
    assert_eq!(outcome.status, 302);
    assert!(!outcome.is_delivered());
    assert!(outcome
        .location
        .as_deref()
        .is_some_and(|location| location.ends_with("/stolen")));
    assert!(
        outcome.failure_reason().unwrap().contains("not followed"),
        "{:?}",
        outcome.failure_reason()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        canary_hits.load(Ordering::SeqCst),
        0,
        "the redirect target was contacted"
    );

    let started = Instant::now();
    let target = guard
        .resolve(&url(&format!("http://{addr}/metadata-redirect")))
        .await
        .unwrap();
    let outcome = post(&target, &[], "{}".to_owned(), TIMEOUT).await.unwrap();
    assert_eq!(outcome.status, 302);
    assert_eq!(
        outcome.location.as_deref(),
        Some("http://169.254.169.254/latest/meta-data/")
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered without trying the metadata address"
    );
}

#[tokio::test]
async fn the_response_body_read_is_capped() {
    let (guard, addr, _, _) = local_setup().await;
    let target = guard.resolve(&url(&format!("http://{addr}/endless"))).await.unwrap();
    // The body never ends: without the cap this would run into the timeout.
    let outcome = post(&target, &[], "{}".to_owned(), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(outcome.status, 200);
    assert!(outcome.body_truncated);
    assert_eq!(outcome.body_len, RESPONSE_BODY_CAP);

    let target = guard.resolve(&url(&format!("http://{addr}/teapot"))).await.unwrap();
    let outcome = post(&target, &[], "{}".to_owned(), TIMEOUT).await.unwrap();
    assert_eq!(
        (outcome.status, outcome.body_len, outcome.body_truncated),
        (418, "short and stout".len(), false)
    );
    assert_eq!(outcome.failure_reason().as_deref(), Some("HTTP 418"));
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_errors_without_the_url() {
    let (guard, addr, _, _) = local_setup().await;
    let target = guard
        .resolve(&url(&format!("http://{addr}/slow?token=sekrit")))
        .await
        .unwrap();
    let started = Instant::now();
    let error = post(&target, &[], "{}".to_owned(), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(error, DeliveryError::Timeout(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // A port with nothing listening: bind, note the port, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let guard = UrlGuard::new(&[format!("http://{closed}")]).unwrap();
    let target = guard
        .resolve(&url(&format!("http://{closed}/hook?token=sekrit")))
        .await
        .unwrap();
    let error = post(&target, &[], "{}".to_owned(), TIMEOUT).await.unwrap_err();
    assert!(matches!(error, DeliveryError::Connect(_)), "{error:?}");
    assert!(!error.to_string().contains("sekrit"), "{error}");
}

#[tokio::test]
async fn invalid_headers_are_refused_before_sending() {
    let (guard, addr, received, _) = local_setup().await;
    let target = guard.resolve(&url(&format!("http://{addr}/hook"))).await.unwrap();
    for header in [
        ("bad name".to_owned(), "v".to_owned()),
        ("x-ok".to_owned(), "line\nbreak".to_owned()),
    ] {
        let error = post(&target, &[header], "{}".to_owned(), TIMEOUT).await.unwrap_err();
        assert!(matches!(error, DeliveryError::InvalidHeader(_)), "{error:?}");
    }
    assert!(received.requests.lock().unwrap().is_empty());
}
