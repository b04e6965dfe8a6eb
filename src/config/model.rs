//! The YAML configuration as written by an operator: plain serde structs, no validation.
//!
//! Every struct denies unknown fields so that a typo (`bakends:`) is an error instead of a
//! silently ignored setting. Turning this raw model into something the proxy can serve is the
//! job of [`super::validate`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

mod acme;
pub use acme::{AcmeChallenge, AcmeKeyType, LETS_ENCRYPT, RawAcme, RawAcmeRetry, RawCerts, RawEab};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// TLS listeners: `0.0.0.0:443`, `[::]:443`, or objects with options.
    pub listeners: Vec<RawListener>,
    /// The separate metrics and health listener.
    #[serde(default)]
    pub admin: RawAdmin,
    /// Handshake, backend connect, idle and drain timeouts.
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// Connection limits.
    #[serde(default)]
    pub limits: RawLimits,
    /// TLS session resumption settings shared by every host.
    #[serde(default)]
    pub sessions: RawSessions,
    /// How configuration and certificate changes are picked up.
    #[serde(default)]
    pub reload: RawReload,
    /// A configured host name that serves clients sending no SNI or an unknown one.
    #[serde(default)]
    pub default_host: Option<String>,
    /// Plain HTTP listeners (`0.0.0.0:80`): every configured name is redirected to https.
    #[serde(default)]
    pub http_listeners: Vec<String>,
    /// Automatic certificates (ACME), for hosts with `certs: acme`.
    #[serde(default)]
    pub acme: Option<RawAcme>,
    /// In-place upgrades: where a running tlsedge hands its sockets to its successor.
    #[serde(default)]
    pub upgrade: RawUpgrade,
    /// The hosts (virtual servers) this proxy terminates TLS for.
    pub hosts: Vec<RawHost>,
}

/// One `listeners` entry: a plain `"ip:port"` string, or an object with options.
#[derive(Debug, Clone, PartialEq)]
pub enum RawListener {
    /// `"0.0.0.0:443"`.
    Addr(String),
    /// `{ bind: "0.0.0.0:8443", proxy_protocol: { ... } }`.
    Object(RawListenerObject),
}

// Deserialized like `#[serde(untagged)]`, but written out: an untagged enum reports every
// mistake in the object form as "data did not match any variant", losing serde's own message
// (`unknown field `bnd`, expected `bind` or `proxy_protocol``).
impl<'de> Deserialize<'de> for RawListener {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListenerVisitor;

        impl<'de> Visitor<'de> for ListenerVisitor {
            type Value = RawListener;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address \"ip:port\" or an object { bind, proxy_protocol }")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawListener, E> {
                Ok(RawListener::Addr(value.to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawListener, A::Error> {
                let object = de::value::MapAccessDeserializer::new(map);
                RawListenerObject::deserialize(object).map(RawListener::Object)
            }
        }

        deserializer.deserialize_any(ListenerVisitor)
    }
}

/// A listener written as an object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerObject {
    /// The listen address `ip:port`.
    pub bind: String,
    /// Accept a PROXY protocol header (v1 or v2) from trusted load balancers in front.
    #[serde(default)]
    pub proxy_protocol: Option<RawProxyInput>,
}

/// PROXY protocol input on a listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxyInput {
    /// Addresses (CIDRs or single IPs) allowed to send the header; must not be empty.
    #[serde(default)]
    pub trusted: Vec<String>,
    /// How long a connection may take to send its header.
    #[serde(default = "default_proxy_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_proxy_timeout() -> Duration {
    Duration::from_secs(3)
}

/// The admin (metrics and health) listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Address of the admin listener; `null` disables it.
    #[serde(default = "default_admin_bind")]
    pub bind: Option<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            bind: default_admin_bind(),
        }
    }
}

fn default_admin_bind() -> Option<String> {
    Some("127.0.0.1:9900".to_owned())
}

/// Timeouts, written as `10s`, `500ms`, `5m`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTimeouts {
    /// Whole TLS handshake, from accept to the last handshake message.
    #[serde(with = "humantime_serde")]
    pub handshake: Duration,
    /// One TCP connect attempt to a backend.
    #[serde(with = "humantime_serde")]
    pub backend_connect: Duration,
    /// A proxied connection with no bytes in either direction for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    /// On shutdown, how long open connections may take to finish.
    #[serde(with = "humantime_serde")]
    pub drain: Duration,
    /// How long a backend that refused a connection is skipped.
    #[serde(with = "humantime_serde")]
    pub backend_cooldown: Duration,
    /// Once one side of a relayed connection has closed its half, how long the other may stay
    /// silent before the connection is closed (HAProxy's `client-fin`/`server-fin`).
    #[serde(with = "humantime_serde")]
    pub half_closed: Duration,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(10),
            backend_connect: Duration::from_secs(5),
            idle: Duration::from_secs(300),
            drain: Duration::from_secs(30),
            backend_cooldown: Duration::from_secs(10),
            half_closed: Duration::from_secs(5),
        }
    }
}

/// Connection limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Maximum concurrent client connections over all listeners; further clients wait in the
    /// kernel's accept queue.
    pub max_connections: usize,
    /// Maximum backends tried for one client connection before giving up.
    pub backend_attempts: usize,
    /// Maximum concurrent connections from one client IP address; absent: no limit.
    pub per_client_ip: Option<u32>,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            backend_attempts: 3,
            per_client_ip: None,
        }
    }
}

/// In-place upgrades (`tlsedge run --upgrade`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpgrade {
    /// The Unix socket on which a running tlsedge hands its listening sockets to a new one;
    /// relative to the config file's directory. No socket: upgrades are off.
    #[serde(default)]
    pub socket: Option<PathBuf>,
}

/// File watching and reload timing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawReload {
    /// Watch the config file and every file it references, and reload on change.
    pub watch: bool,
    /// Quiet time after the last file event before reloading.
    #[serde(with = "humantime_serde")]
    pub debounce: Duration,
    /// Longest delay from the first event of a burst to the reload.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Safety net: re-check every file's content this often, events or not.
    #[serde(with = "humantime_serde")]
    pub recheck_every: Duration,
    /// How often backend DNS names (`name:port` addresses) are resolved again.
    #[serde(with = "humantime_serde")]
    pub dns_refresh: Duration,
}

impl Default for RawReload {
    fn default() -> Self {
        Self {
            watch: true,
            debounce: Duration::from_millis(500),
            max_delay: Duration::from_secs(2),
            recheck_every: Duration::from_secs(60),
            dns_refresh: Duration::from_secs(30),
        }
    }
}

/// TLS session resumption, shared by all hosts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSessions {
    /// Entries in the TLS 1.2 session-ID cache.
    pub cache_size: usize,
    /// File of shared ticket keys (one base64 line per key, newest first); without it a random
    /// key set is made at start and rotated in memory.
    pub ticket_key_file: Option<PathBuf>,
    /// How often a new in-memory ticket key is made; with `ticket_key_file`, how often the
    /// fleet rotates the file (for the key-age alert).
    #[serde(with = "humantime_serde")]
    pub ticket_rotate_every: Duration,
    /// How long a key new in `ticket_key_file` only decrypts before it encrypts, so every
    /// instance has read the file first.
    #[serde(with = "humantime_serde")]
    pub ticket_key_grace: Duration,
    /// Lifetime of a ticket, and the hint sent to clients (at most 24h).
    #[serde(with = "humantime_serde")]
    pub ticket_lifetime: Duration,
}

impl Default for RawSessions {
    fn default() -> Self {
        Self {
            cache_size: 20_000,
            ticket_key_file: None,
            ticket_rotate_every: Duration::from_secs(6 * 3600),
            ticket_key_grace: Duration::from_secs(5 * 60),
            ticket_lifetime: Duration::from_secs(12 * 3600),
        }
    }
}

/// One host: the names it answers to, its certificates and its backends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    /// Exact names (`shop.example.com`) and wildcards (`*.example.com`).
    pub names: Vec<String>,
    /// One or more certificate chain + private key pairs (e.g. one ECDSA and one RSA), or
    /// `acme` to have them obtained and renewed automatically.
    pub certs: RawCerts,
    /// Where decrypted connections go (in `http` mode: requests no route claims).
    pub backends: Vec<RawBackend>,
    /// Backend selection policy.
    #[serde(default)]
    pub balance: BalancePolicy,
    /// What is done with a decrypted connection: relay its bytes, or serve it as HTTP.
    #[serde(default)]
    pub mode: HostMode,
    /// HTTP settings, for `mode: http`. Boxed, like `health_check`: the two are over half of
    /// an entry's size and most entries have neither, and 100,000 entries are one vector that
    /// the parser grows by copying.
    #[serde(default)]
    pub http: Option<Box<RawHttp>>,
    /// ALPN protocols offered, in preference order, e.g. `[h2, http/1.1]`.
    #[serde(default)]
    pub alpn: Vec<String>,
    /// TLS defaults: `intermediate` (TLS 1.2 and 1.3) or `modern` (TLS 1.3 only).
    #[serde(default)]
    pub tls_profile: TlsProfile,
    /// Lowest TLS version accepted: `"1.2"` or `"1.3"` (default: the profile's).
    #[serde(default)]
    pub min_tls: Option<String>,
    /// Cipher suites in server preference order (default: the profile's).
    #[serde(default)]
    pub cipher_suites: Option<Vec<String>>,
    /// Key exchange groups (default: X25519MLKEM768, X25519, secp256r1, secp384r1).
    #[serde(default)]
    pub kx_groups: Option<Vec<String>>,
    /// Client certificate authentication (mTLS).
    #[serde(default)]
    pub client_auth: Option<RawClientAuth>,
    /// Send a PROXY protocol header to the backend: `v2`.
    #[serde(default)]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Allow TLS session resumption for this host.
    #[serde(default = "default_true")]
    pub resumption: bool,
    /// Active health checks of the backends (TCP connect probes); off when absent.
    #[serde(default)]
    pub health_check: Option<Box<RawHealthCheck>>,
    /// Re-encrypt towards the backends with TLS; plain TCP when absent.
    #[serde(default)]
    pub backend_tls: Option<RawBackendTls>,
    /// Client addresses allowed to use this host (CIDRs or single IPs); empty allows all.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// TLS towards the backends: tlsedge is the client and verifies the backend's certificate.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackendTls {
    /// PEM file of the CA certificates that backend certificates must chain to.
    pub ca: PathBuf,
    /// The name sent as SNI and verified in the backend's certificate. Default: the backend
    /// address's DNS name, or its IP address (which the certificate must then list).
    #[serde(default)]
    pub server_name: Option<String>,
}

/// Active health check settings: every `interval`, each backend gets a probe: a TCP connect,
/// or with `http` an HTTP request whose status must be in `expect`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHealthCheck {
    /// Probe with an HTTP GET instead of a TCP connect.
    pub http: Option<RawHttpProbe>,
    /// Time between probes of one backend.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A probe that has not connected by then failed.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Failed probes in a row that mark a backend down.
    pub fall: u32,
    /// Passed probes in a row that mark a down backend up again.
    pub rise: u32,
}

impl Default for RawHealthCheck {
    fn default() -> Self {
        Self {
            http: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            fall: 2,
            rise: 1,
        }
    }
}

/// An HTTP health probe: `GET path` with `Host: host`, passed when the status is in `expect`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpProbe {
    /// The path requested.
    #[serde(default = "default_probe_path")]
    pub path: String,
    /// Passing statuses: `"200"`, `"200-399"`.
    #[serde(default = "default_probe_expect")]
    pub expect: String,
    /// The `Host` header sent; default: the host's first name.
    #[serde(default)]
    pub host: Option<String>,
}

fn default_probe_path() -> String {
    "/".to_owned()
}

fn default_probe_expect() -> String {
    "200-399".to_owned()
}

/// What a host does with a decrypted connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostMode {
    /// Relay the byte stream to one backend (layer 4).
    #[default]
    Tcp,
    /// Terminate HTTP/1.1 and HTTP/2 and proxy each request to a backend.
    Http,
}

/// The `http:` block of a host in `mode: http`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    /// The protocol spoken to backends.
    pub backend_protocol: BackendProtocol,
    /// Path-prefix routes with their own backends; the longest matching prefix wins.
    pub routes: Vec<RawRoute>,
    /// Forwarding headers sent to backends.
    pub forwarded: RawForwarded,
    /// `Strict-Transport-Security` max-age added to responses; absent: no header.
    #[serde(with = "humantime_serde")]
    pub hsts: Option<Duration>,
    /// The request id header: kept when a request has one, generated when not, logged.
    pub request_id: RawRequestId,
    /// Pass the verified client certificate subject (mTLS) to backends in this header; a
    /// client's own header of that name is always removed.
    pub client_cert_header: Option<String>,
    /// Add a `Via` header to requests and responses.
    pub via: bool,
    /// Idle pooled backend connections are closed after this; keep it below the backends'
    /// own keep-alive timeout.
    #[serde(with = "humantime_serde")]
    pub backend_idle: Duration,
    /// Request limits and timeouts.
    pub limits: RawHttpLimits,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            backend_protocol: BackendProtocol::default(),
            routes: Vec::new(),
            forwarded: RawForwarded::default(),
            hsts: None,
            request_id: RawRequestId::default(),
            client_cert_header: None,
            via: false,
            backend_idle: Duration::from_secs(4),
            limits: RawHttpLimits::default(),
        }
    }
}

/// `request_id`: the header's name, or `false` to turn it off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RawRequestId {
    /// `request_id: false` turns request ids off.
    Enabled(bool),
    /// The header's name.
    Header(String),
}

impl Default for RawRequestId {
    fn default() -> Self {
        Self::Enabled(true)
    }
}

/// Protocols tlsedge speaks to HTTP backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (prior knowledge over TCP, ALPN `h2` over `backend_tls`).
    H2,
    /// HTTP/2 when the backend's TLS negotiates `h2` by ALPN, else HTTP/1.1.
    #[default]
    Auto,
}

/// One path-prefix route.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// The prefix, starting with `/`: `/api/` matches `/api/v1` but not `/apiary`.
    pub path: String,
    /// The route's backends.
    pub backends: Vec<RawBackend>,
    /// The route's backend selection policy.
    #[serde(default)]
    pub balance: BalancePolicy,
}

/// Forwarding headers.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawForwarded {
    /// Which headers to set.
    pub headers: ForwardedHeaders,
    /// Clients (CIDRs or IPs, e.g. a CDN) whose own forwarding headers are kept and appended to;
    /// from every other client they are removed.
    pub trusted: Vec<String>,
}

/// Which forwarding headers are set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeaders {
    /// `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`.
    #[default]
    XForwarded,
    /// `Forwarded` (RFC 7239).
    Forwarded,
    /// Both.
    Both,
}

/// Limits and timeouts of an HTTP host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttpLimits {
    /// A request's header block must arrive within this (HTTP/1.1).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Most header fields in a request (431 beyond).
    pub max_headers: usize,
    /// Largest request header block in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Largest request body in bytes (413 beyond).
    pub max_body_bytes: u64,
    /// A backend must start its response within this (504 beyond).
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// A client connection with no request in flight for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_max_streams: u32,
    /// HTTP/2 streams a client may reset before the server accepts them (Rapid Reset); beyond
    /// it the connection is closed.
    pub h2_max_pending_resets: usize,
    /// HTTP/2 streams the server may reset for protocol errors per connection before closing it.
    pub h2_max_error_resets: usize,
}

impl Default for RawHttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            max_headers: 100,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 100 * 1024 * 1024,
            response_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            h2_max_streams: 100,
            h2_max_pending_resets: 20,
            h2_max_error_resets: 1024,
        }
    }
}

fn default_true() -> bool {
    true
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCert {
    /// PEM file with the leaf certificate first, then intermediates.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Optional DER OCSP response to staple (e.g. refreshed by `openssl ocsp` from cron).
    #[serde(default)]
    pub ocsp: Option<PathBuf>,
}

/// One backend address.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// `ip:port`, `[v6]:port` or `dns-name:port` of the backend.
    pub address: String,
    /// Relative share of connections (1..=1000).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// A named set of TLS defaults (Mozilla Server Side TLS 6.0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsProfile {
    /// TLS 1.3 only.
    Modern,
    /// TLS 1.2 (ECDHE with AEAD suites) and TLS 1.3.
    #[default]
    Intermediate,
}

/// Backend selection policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancePolicy {
    /// Weighted round robin.
    #[default]
    RoundRobin,
    /// Fewest active connections relative to weight.
    LeastConn,
    /// Power of two random choices by active connections.
    P2c,
    /// Consistent (rendezvous) hashing of the client IP address.
    HashClientIp,
}

/// Client certificate settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientAuth {
    /// PEM file of the CA certificates that client certificates must chain to.
    pub ca: PathBuf,
    /// `required` or `optional`.
    #[serde(default)]
    pub mode: ClientAuthMode,
}

/// Whether a client certificate is required.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMode {
    /// Clients without a valid certificate are refused.
    #[default]
    Required,
    /// A certificate is verified when sent, but not demanded.
    Optional,
}

/// PROXY protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyProtocol {
    /// Binary PROXY protocol v2, with the SNI as an authority TLV.
    V2,
}
