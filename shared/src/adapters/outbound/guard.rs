//! The SSRF guard for every URL we call on a caller's behalf (webhooks, callbacks, custom HTTP providers).
//!
//! Two checks, because a URL can only be judged fully once its name is resolved:
//! - [`UrlGuard::check`] at submit time refuses URLs that are wrong on their face: not `https` (unless allow-listed),
//!   userinfo, internal host names, and IP literals in forbidden ranges in any spelling. The `url` crate parses hosts
//!   per WHATWG, which already folds decimal (`2130706433`), octal (`0177.0.0.1`), hex (`0x7f.0.0.1`), short
//!   (`127.1`), percent-encoded and full-width spellings into one IPv4 address, and bracketed IPv6 into one IPv6
//!   address; we then classify that address, looking inside IPv4-mapped, IPv4-compatible, NAT64 and 6to4 IPv6 forms.
//! - [`UrlGuard::resolve`] at send time resolves the name once, refuses if any address is forbidden, and returns a
//!   [`PinnedTarget`]; [`post`] connects only to those addresses, so a DNS answer cannot change between check and
//!   connect (DNS rebinding).
//!
//! Origins in `CALLBACK_ALLOWED_ORIGINS` (e.g. `http://127.0.0.1:8080` for a local receiver) skip the scheme, name
//! and address rules; userinfo is refused everywhere.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use url::{Host, Origin, Url};

/// Most of a response body we read: enough to record why a delivery failed, never enough to exhaust memory.
pub const RESPONSE_BODY_CAP: usize = 64 * 1024;

/// Host names refused on their face: they name this machine or a private network, never a caller's public endpoint.
const INTERNAL_NAME_SUFFIXES: &[&str] = &["localhost", "local", "internal", "localdomain", "home.arpa", "lan"];
/// Names of cloud instance-metadata services (their addresses are refused too; the names give a clearer reason).
const METADATA_NAMES: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Why an address may not be called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Unspecified,
    Loopback,
    Private,
    SharedAddressSpace,
    LinkLocal,
    CloudMetadata,
    UniqueLocal,
    Multicast,
    Broadcast,
    Documentation,
    Benchmarking,
    Reserved,
}

impl std::fmt::Display for AddressClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AddressClass::Unspecified => "unspecified (this network)",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::SharedAddressSpace => "shared address space (CGNAT)",
            AddressClass::LinkLocal => "link-local",
            AddressClass::CloudMetadata => "cloud metadata",
            AddressClass::UniqueLocal => "unique-local",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Documentation => "documentation",
            AddressClass::Benchmarking => "benchmarking",
            AddressClass::Reserved => "reserved or special-purpose",
        })
    }
}

/// Why a URL was refused. The `Display` text is the reason recorded on the job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("not a valid absolute URL: {0}")]
    InvalidUrl(String),
    #[error("scheme `{0}` is not allowed: use https")]
    UnsupportedScheme(String),
    #[error("plain http is only allowed for allow-listed origins: use https")]
    InsecureScheme,
    #[error("URLs with a user name or password are not allowed")]
    UserInfo,
    #[error("the URL has no host")]
    MissingHost,
    #[error("host name `{host}` is not allowed: {reason}")]
    ForbiddenHostName { host: String, reason: &'static str },
    #[error("address {address} is not allowed: {class}")]
    ForbiddenAddress { address: IpAddr, class: AddressClass },
    #[error("could not resolve `{host}`: {reason}")]
    ResolutionFailed { host: String, reason: String },
    #[error("`{0}` resolved to no address")]
    NoAddresses(String),
    #[error("allow-listed origin `{0}` must be scheme://host[:port] with nothing else")]
    InvalidAllowedOrigin(String),
}

impl GuardError {
    /// A stable machine-readable code, for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            GuardError::InvalidUrl(_) => "invalid_url",
            GuardError::UnsupportedScheme(_) => "unsupported_scheme",
            GuardError::InsecureScheme => "insecure_scheme",
            GuardError::UserInfo => "userinfo",
            GuardError::MissingHost => "missing_host",
            GuardError::ForbiddenHostName { .. } => "forbidden_host_name",
            GuardError::ForbiddenAddress { .. } => "forbidden_address",
            GuardError::ResolutionFailed { .. } => "resolution_failed",
            GuardError::NoAddresses(_) => "no_addresses",
            GuardError::InvalidAllowedOrigin(_) => "invalid_allowed_origin",
        }
    }
}

/// Name resolution, behind a trait so tests can make any name resolve anywhere.
#[async_trait]
pub trait Resolver: Send + Sync {
    async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// The operating system's resolver, through `tokio::net::lookup_host`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait]
impl Resolver for SystemResolver {
    async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// A URL that passed the guard, with the only addresses [`post`] may connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedTarget {
    url: Url,
    addrs: Vec<SocketAddr>,
}

impl PinnedTarget {
    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

/// Decides which URLs we may call; see the module documentation.
#[derive(Clone)]
pub struct UrlGuard {
    allowed_origins: Vec<Origin>,
    resolver: Arc<dyn Resolver>,
}

impl std::fmt::Debug for UrlGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let origins: Vec<String> = self.allowed_origins.iter().map(Origin::ascii_serialization).collect();
        f.debug_struct("UrlGuard")
            .field("allowed_origins", &origins)
            .finish_non_exhaustive()
    }
}

impl UrlGuard {
    /// A guard with the system resolver and these allow-listed origins (`scheme://host[:port]`).
    pub fn new(allowed: &[String]) -> Result<Self, GuardError> {
        let allowed_origins = allowed
            .iter()
            .map(|origin| parse_allowed_origin(origin))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            allowed_origins,
            resolver: Arc::new(SystemResolver),
        })
    }

    /// The same guard resolving names through `resolver`.
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// Submit-time check of a URL on its face (no DNS). The route answers 400 `invalid_callback_url` on error.
    pub fn check(&self, url: &str) -> Result<Url, GuardError> {
        let parsed = Url::parse(url).map_err(|error| GuardError::InvalidUrl(error.to_string()))?;
        self.check_parsed(&parsed)?;
        Ok(parsed)
    }

    /// Send-time check: resolves the host once and pins the result. Re-applies [`UrlGuard::check`]'s rules, since
    /// the URL may have been stored under an older configuration.
    pub async fn resolve(&self, url: &Url) -> Result<PinnedTarget, GuardError> {
        let allow_listed = self.check_parsed(url)?;
        let port = url.port_or_known_default().ok_or(GuardError::MissingHost)?;
        let addrs = match url.host() {
            Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
            Some(Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
            Some(Host::Domain(name)) => {
                let resolved =
                    self.resolver
                        .lookup(name, port)
                        .await
                        .map_err(|error| GuardError::ResolutionFailed {
                            host: name.to_owned(),
                            reason: error.to_string(),
                        })?;
                if resolved.is_empty() {
                    return Err(GuardError::NoAddresses(name.to_owned()));
                }
                resolved
            }
            None => return Err(GuardError::MissingHost),
        };
        if !allow_listed {
            for addr in &addrs {
                refuse_forbidden(addr.ip())?;
            }
        }
        Ok(PinnedTarget {
            url: url.clone(),
            addrs,
        })
    }

    fn is_allow_listed(&self, url: &Url) -> bool {
        let origin = url.origin();
        self.allowed_origins.contains(&origin)
    }

    /// The face-value rules; returns whether the URL's origin is allow-listed.
    fn check_parsed(&self, url: &Url) -> Result<bool, GuardError> {
        if !url.username().is_empty() || url.password().is_some() {
            return Err(GuardError::UserInfo);
        }
        if self.is_allow_listed(url) {
            return Ok(true);
        }
        match url.scheme() {
            "https" => {}
            "http" => return Err(GuardError::InsecureScheme),
            other => return Err(GuardError::UnsupportedScheme(other.to_owned())),
        }
        match url.host() {
            None => return Err(GuardError::MissingHost),
            Some(Host::Ipv4(ip)) => refuse_forbidden(IpAddr::V4(ip))?,
            Some(Host::Ipv6(ip)) => refuse_forbidden(IpAddr::V6(ip))?,
            Some(Host::Domain(name)) => refuse_internal_name(name)?,
        }
        Ok(false)
    }
}

fn parse_allowed_origin(text: &str) -> Result<Origin, GuardError> {
    let invalid = || GuardError::InvalidAllowedOrigin(text.to_owned());
    let url = Url::parse(text.trim()).map_err(|_| invalid())?;
    let bare = url.username().is_empty()
        && url.password().is_none()
        && matches!(url.path(), "" | "/")
        && url.query().is_none()
        && url.fragment().is_none()
        && matches!(url.scheme(), "http" | "https")
        && url.host().is_some();
    if !bare {
        return Err(invalid());
    }
    Ok(url.origin())
}

fn refuse_internal_name(name: &str) -> Result<(), GuardError> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let forbidden = |reason| {
        Err(GuardError::ForbiddenHostName {
            host: name.clone(),
            reason,
        })
    };
    if METADATA_NAMES.contains(&name.as_str()) {
        return forbidden("cloud metadata service");
    }
    if !name.contains('.') {
        return forbidden("single-label names resolve inside a private network");
    }
    let internal = INTERNAL_NAME_SUFFIXES.iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|head| head.is_empty() || head.ends_with('.'))
    });
    if internal {
        return forbidden("reserved for local or private networks");
    }
    Ok(())
}

fn refuse_forbidden(address: IpAddr) -> Result<(), GuardError> {
    match classify(address) {
        Some(class) => Err(GuardError::ForbiddenAddress { address, class }),
        None => Ok(()),
    }
}

/// The forbidden class of `address`, or `None` when it is a public unicast address we may call.
pub fn classify(address: IpAddr) -> Option<AddressClass> {
    match address {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(address: Ipv4Addr, network: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    u32::from(address) & mask == u32::from(Ipv4Addr::from(network)) & mask
}

fn classify_v4(address: Ipv4Addr) -> Option<AddressClass> {
    use AddressClass::*;
    const RANGES: &[([u8; 4], u32, AddressClass)] = &[
        ([169, 254, 169, 254], 32, CloudMetadata),
        ([0, 0, 0, 0], 8, Unspecified),
        ([10, 0, 0, 0], 8, Private),
        ([100, 64, 0, 0], 10, SharedAddressSpace),
        ([127, 0, 0, 0], 8, Loopback),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([172, 16, 0, 0], 12, Private),
        ([192, 0, 0, 0], 24, Reserved),
        ([192, 0, 2, 0], 24, Documentation),
        ([192, 88, 99, 0], 24, Reserved),
        ([192, 168, 0, 0], 16, Private),
        ([198, 18, 0, 0], 15, Benchmarking),
        ([198, 51, 100, 0], 24, Documentation),
        ([203, 0, 113, 0], 24, Documentation),
        ([224, 0, 0, 0], 4, Multicast),
        ([255, 255, 255, 255], 32, Broadcast),
        ([240, 0, 0, 0], 4, Reserved),
    ];
    RANGES
        .iter()
        .find(|(network, prefix, _)| in_v4(address, *network, *prefix))
        .map(|(_, _, class)| *class)
}

fn in_v6(address: Ipv6Addr, network: [u16; 8], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
    u128::from(address) & mask == u128::from(Ipv6Addr::from(network)) & mask
}

fn classify_v6(address: Ipv6Addr) -> Option<AddressClass> {
    use AddressClass::*;
    let bits = u128::from(address);
    if address == Ipv6Addr::UNSPECIFIED {
        return Some(Unspecified);
    }
    if address == Ipv6Addr::LOCALHOST {
        return Some(Loopback);
    }
    // Forms that carry an IPv4 address inside: judge the IPv4 address they reach.
    let low_v4 = Ipv4Addr::from((bits & 0xFFFF_FFFF) as u32);
    if in_v6(address, [0, 0, 0, 0, 0, 0xFFFF, 0, 0], 96) // IPv4-mapped ::ffff:a.b.c.d
        || in_v6(address, [0, 0, 0, 0, 0, 0, 0, 0], 96) // IPv4-compatible ::a.b.c.d (deprecated)
        || in_v6(address, [0x64, 0xFF9B, 0, 0, 0, 0, 0, 0], 96)
    // NAT64 well-known prefix
    {
        return classify_v4(low_v4);
    }
    if in_v6(address, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        // 6to4: the IPv4 address sits in bits 16..48.
        return classify_v4(Ipv4Addr::from((bits >> 80) as u32));
    }
    const RANGES: &[([u16; 8], u32, AddressClass)] = &[
        ([0xFD00, 0x0EC2, 0, 0, 0, 0, 0, 0x0254], 128, CloudMetadata),
        ([0x64, 0xFF9B, 1, 0, 0, 0, 0, 0], 48, Reserved),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, Reserved),
        ([0x2001, 0x0DB8, 0, 0, 0, 0, 0, 0], 32, Documentation),
        ([0x3FFF, 0, 0, 0, 0, 0, 0, 0], 20, Documentation),
        ([0x2001, 0x0002, 0, 0, 0, 0, 0, 0], 48, Benchmarking),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, Reserved),
        ([0xFC00, 0, 0, 0, 0, 0, 0, 0], 7, UniqueLocal),
        ([0xFE80, 0, 0, 0, 0, 0, 0, 0], 10, LinkLocal),
        ([0xFEC0, 0, 0, 0, 0, 0, 0, 0], 10, Private),
        ([0xFF00, 0, 0, 0, 0, 0, 0, 0], 8, Multicast),
    ];
    if let Some((_, _, class)) = RANGES
        .iter()
        .find(|(network, prefix, _)| in_v6(address, *network, *prefix))
    {
        return Some(*class);
    }
    // Only global unicast (2000::/3) is routable on the public internet.
    if in_v6(address, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3) {
        None
    } else {
        Some(Reserved)
    }
}

/// What the receiver answered. Any status is an outcome; only 2xx counts as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostOutcome {
    pub status: u16,
    /// How many bytes of the response body were read (at most [`RESPONSE_BODY_CAP`]). The body itself is
    /// not kept: nothing reads a receiver's answer beyond its status (dead data), and it is
    /// read at all only so a short answer is taken whole before the connection closes.
    pub body_len: usize,
    /// Whether the body went on past the cap (the rest was not read).
    pub body_truncated: bool,
    /// The `Location` header of a redirect, which is reported and never followed.
    pub location: Option<String>,
}

impl PostOutcome {
    pub fn is_delivered(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Why this answer is a failed delivery, or `None` when it was delivered.
    pub fn failure_reason(&self) -> Option<String> {
        if self.is_delivered() {
            return None;
        }
        Some(match (&self.location, self.status) {
            (Some(location), 300..=399) => format!("HTTP {} redirect to `{location}` not followed", self.status),
            (None, 300..=399) => format!("HTTP {} redirect not followed", self.status),
            _ => format!("HTTP {}", self.status),
        })
    }
}

/// A POST that did not get an HTTP answer. Messages never carry the URL (it may hold a caller's token).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("invalid header `{0}`")]
    InvalidHeader(String),
    #[error("could not build the HTTP client: {0}")]
    Client(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
}

/// Refuses every name: the client may only reach the pinned host, whose addresses come from the override.
struct NoOtherNames;

impl reqwest::dns::Resolve for NoOtherNames {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let message = format!("`{}` is not the pinned host", name.as_str());
        Box::pin(async move { Err(message.into()) })
    }
}

/// A client that connects only to the pinned target's resolved addresses and never follows redirects (webhooks
/// and custom `http` providers).
pub(crate) fn pinned_client(
    target: &PinnedTarget,
    timeout: Duration,
    user_agent: &str,
) -> Result<reqwest::Client, DeliveryError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .user_agent(user_agent)
        .dns_resolver(Arc::new(NoOtherNames));
    if let Some(Host::Domain(name)) = target.url.host() {
        builder = builder.resolve_to_addrs(name, &target.addrs);
    }
    builder
        .build()
        .map_err(|error| DeliveryError::Client(error.without_url().to_string()))
}

/// POSTs `body` to the pinned target: connects only to its resolved addresses, never follows redirects, gives up
/// after `timeout`, and reads at most [`RESPONSE_BODY_CAP`] bytes of the answer. `Content-Type: application/json`
/// is sent unless `headers` set one.
pub async fn post(
    target: &PinnedTarget,
    headers: &[(String, String)],
    body: String,
    timeout: Duration,
) -> Result<PostOutcome, DeliveryError> {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, LOCATION};

    let mut header_map = HeaderMap::new();
    for (name, value) in headers {
        let header_name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| DeliveryError::InvalidHeader(name.clone()))?;
        let header_value = HeaderValue::from_str(value).map_err(|_| DeliveryError::InvalidHeader(name.clone()))?;
        header_map.append(header_name, header_value);
    }
    if !header_map.contains_key(CONTENT_TYPE) {
        header_map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }

    let client = pinned_client(target, timeout, concat!("stepper-webhook/", env!("CARGO_PKG_VERSION")))?;

    let classify_error = |error: reqwest::Error| {
        if error.is_timeout() {
            DeliveryError::Timeout(timeout)
        } else if error.is_connect() {
            DeliveryError::Connect(crate::adapters::error_chain(&error.without_url()))
        } else {
            DeliveryError::Request(crate::adapters::error_chain(&error.without_url()))
        }
    };
    let mut response = client
        .post(target.url.clone())
        .headers(header_map)
        .body(body)
        .send()
        .await
        .map_err(classify_error)?;
    let status = response.status().as_u16();
    let location = response.headers().get(LOCATION).map(|value| {
        let text = String::from_utf8_lossy(value.as_bytes());
        text.chars().take(512).collect()
    });

    let mut body_len = 0;
    let mut body_truncated = false;
    while let Some(chunk) = response.chunk().await.map_err(classify_error)? {
        let room = RESPONSE_BODY_CAP - body_len;
        if chunk.len() > room {
            body_len += room;
            body_truncated = true;
            break;
        }
        body_len += chunk.len();
    }
    Ok(PostOutcome {
        status,
        body_len,
        body_truncated,
        location,
    })
}
