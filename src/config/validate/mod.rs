//! Raw YAML model → typed, checked [`Config`], with every problem located by file/host/field.
//!
//! Validation loads every referenced file (certificates, keys, CAs) so that what passes here is
//! what will be served. Problems about a host's files are scoped to that host, so a reload can
//! keep serving that host's previous certificate while applying everything else.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::ServerName;

use super::files::FileCache;
use super::model::{ClientAuthMode, ProxyProtocol, RawCerts, RawConfig};
use super::problem::{Issue, Problem, Scope, Severity};
use crate::tls::certs::LoadedCert;
use crate::tls::names::{HostName, NameIndex};
use crate::tls::policy::TlsPolicy;
use bounds::{DAY, WEEK, Zero};

use crate::upstream::{BackendAddr, Policy};
pub use http::{HttpConfig, HttpLimits, HttpProbe, RouteConfig};
pub use reuse::{Checked, Reuse};
pub use start::{ListenerConfig, ProxyInput, Reload, Sessions, StartConfig};

/// Certificates expiring sooner than this get a warning.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// A validated configuration: everything typed, every file loaded.
///
/// [`start`](Self::start) holds what is bound at start and needs a restart to change; every
/// other field is applied by a reload.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub source: PathBuf,
    /// Start-time settings: listeners, admin, connection limit, session cache, reload timing.
    pub start: StartConfig,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Backends tried per client connection.
    pub backend_attempts: usize,
    /// Concurrent connections allowed from one client IP address; `None`: no limit.
    pub per_client_ip: Option<NonZeroU32>,
    /// Shared ticket key file, resolved against the config's directory; re-read on reload.
    /// Without it, ticket keys are made and rotated in memory.
    pub ticket_key_file: Option<PathBuf>,
    /// Index into `hosts` of the host serving unknown or missing SNI.
    pub default_host: Option<usize>,
    /// The hosts, in file order (shared with the next load when unchanged, see [`Reuse`]).
    pub hosts: Vec<Arc<HostConfig>>,
}

/// Typed timeouts; see the model for meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Whole TLS handshake.
    pub handshake: Duration,
    /// One backend connect attempt.
    pub backend_connect: Duration,
    /// No traffic either way for this long closes a connection.
    pub idle: Duration,
    /// Shutdown drain limit.
    pub drain: Duration,
    /// How long a failed backend is skipped.
    pub backend_cooldown: Duration,
    /// Silence allowed after one side has closed its half.
    pub half_closed: Duration,
}

/// One validated host.
///
/// Two are equal when a host built from either is the same: settings by value, and loaded
/// files (certificates, CAs) by identity. The file cache hands out the same loaded certificate
/// while its files are unchanged, so an untouched host of a reload equals its previous self and
/// the snapshot keeps the host it built before. A file read again compares unequal, which costs
/// no more than a rebuild: CA files (`client_auth`, `backend_tls`) and OCSP responses are read
/// by every check of their host, so such a host is rebuilt whenever it is checked again (see
/// [`Reuse`] for when it is not).
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    /// Its label in metrics and logs: the first configured name.
    pub label: String,
    /// All its names.
    pub names: Vec<HostName>,
    /// Its certificates, ECDSA first. `None` when any of its files (certificates, keys, client
    /// CA) failed: the host cannot be served from this configuration.
    pub certs: Option<Vec<LoadedCert>>,
    /// Backends.
    pub backends: Vec<BackendConfig>,
    /// Selection policy.
    pub balance: Policy,
    /// ALPN protocols in preference order.
    pub alpn: Vec<Vec<u8>>,
    /// Versions, suites and key exchange groups.
    pub tls: TlsPolicy,
    /// Client certificate verification.
    pub client_auth: Option<ClientAuth>,
    /// PROXY protocol to send to backends.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Session resumption allowed.
    pub resumption: bool,
    /// Active health checks, if enabled.
    pub health_check: Option<HealthCheck>,
    /// TLS towards the backends, if enabled.
    pub backend_tls: Option<BackendTls>,
    /// Client networks allowed; empty allows every client.
    pub allow: Vec<IpNet>,
    /// HTTP settings; `Some` exactly when the host is in `mode: http`.
    pub http: Option<Arc<HttpConfig>>,
    /// Its certificates come from ACME (`certs: acme`): without any yet, it is served as
    /// pending (handshakes refused) instead of left out.
    pub acme: bool,
}

/// Loaded settings for TLS towards the backends.
#[derive(Debug, Clone)]
pub struct BackendTls {
    /// Trusted CAs for backend certificates.
    pub roots: Arc<RootCertStore>,
    /// The name to send and verify, when not derived from each backend's address.
    pub server_name: Option<ServerName<'static>>,
    /// The CA file, for reload watching.
    pub ca_path: PathBuf,
}

/// Validated active health check settings (see the model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Time between probes of one backend.
    pub interval: Duration,
    /// A probe not done by then failed.
    pub timeout: Duration,
    /// Failures in a row that mark a backend down.
    pub fall: u32,
    /// Passes in a row that mark it up again.
    pub rise: u32,
    /// An HTTP request instead of a TCP connect.
    pub http: Option<Arc<HttpProbe>>,
}

/// One backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// Its address: fixed, or a DNS name resolved at run time.
    pub addr: BackendAddr,
    /// Its weight.
    pub weight: u32,
}

/// Loaded client-auth settings.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// Trusted CAs.
    pub roots: Arc<RootCertStore>,
    /// Required or optional.
    pub mode: ClientAuthMode,
    /// The CA file, for reload watching.
    pub ca_path: PathBuf,
}

/// By identity of the loaded CA (see [`HostConfig`]).
impl PartialEq for BackendTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.roots, &other.roots)
            && self.server_name == other.server_name
            && self.ca_path == other.ca_path
    }
}

/// By identity of the loaded CA (see [`HostConfig`]).
impl PartialEq for ClientAuth {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.roots, &other.roots)
            && self.mode == other.mode
            && self.ca_path == other.ca_path
    }
}

/// Every file a configuration read from `source` references, the config file first (for the
/// reload watcher and its change check).
pub fn referenced_files(raw: &RawConfig, source: &Path) -> Vec<PathBuf> {
    let base = base_dir(source);
    let mut files = vec![source.to_owned()];
    // Each file once, in first-seen order: 100,000 hosts sharing one wildcard pair name two
    // files, not 200,000 (the reload hashes and watches each one).
    let mut seen = HashSet::new();
    let mut add = |path: PathBuf| {
        if !seen.contains(&path) {
            seen.insert(path.clone());
            files.push(path);
        }
    };
    for host in &raw.hosts {
        if let (RawCerts::Acme, Some(acme)) = (&host.certs, &raw.acme) {
            let storage = acme::storage_dir(acme, &base);
            let label = host::label(host);
            for kind in &acme.key_types {
                add(crate::acme::storage::cert_file(&storage, &label, *kind));
            }
        }
        for cert in host.certs.files() {
            add(base.join(&cert.cert));
            add(base.join(&cert.key));
            if let Some(ocsp) = &cert.ocsp {
                add(base.join(ocsp));
            }
        }
        if let Some(auth) = &host.client_auth {
            add(base.join(&auth.ca));
        }
        if let Some(tls) = &host.backend_tls {
            add(base.join(&tls.ca));
        }
    }
    if let Some(keys) = &raw.sessions.ticket_key_file {
        add(base.join(keys));
    }
    files
}

/// The directory relative paths in `source` are resolved against.
pub fn base_dir(source: &Path) -> PathBuf {
    source
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Validates `raw` (read from `source`), loading every referenced file, and taking the hosts
/// `reuse` offers as they are (see [`Reuse`]).
/// Returns the typed config, all problems found, and which hosts were clean (for the next
/// [`Reuse`]); the config is only usable as a whole when no problem is a [`Scope::Config`]
/// error.
pub fn validate(
    raw: &RawConfig,
    source: &Path,
    provider: &CryptoProvider,
    cache: &mut FileCache,
    now: SystemTime,
    reuse: Option<&Reuse>,
) -> (Config, Vec<Problem>, Checked) {
    let mut v = Validator {
        file: source.to_owned(),
        base: base_dir(source),
        provider,
        cache,
        now: now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        problems: Vec::new(),
    };
    let (config, checked) = v.config(raw, reuse);
    (config, v.problems, checked)
}

struct Validator<'a> {
    file: PathBuf,
    base: PathBuf,
    provider: &'a CryptoProvider,
    /// Certificate pairs and stamps of earlier loads (see [`FileCache`]).
    cache: &'a mut FileCache,
    now: i64,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn report(&mut self, severity: Severity, scope: Scope, place: String, issue: Issue) {
        self.problems.push(Problem {
            severity,
            scope,
            file: self.file.clone(),
            place,
            issue,
        });
    }

    fn error(&mut self, place: impl Into<String>, issue: Issue) {
        self.report(Severity::Error, Scope::Config, place.into(), issue);
    }

    fn addr(&mut self, place: String, value: &str) -> Option<SocketAddr> {
        let parsed = value.parse().ok();
        if parsed.is_none() {
            self.error(
                place,
                Issue::BadAddress {
                    value: value.to_owned(),
                },
            );
        }
        parsed
    }

    /// Parses CIDRs or single IP addresses (a `hosts[].allow` list, trusted PROXY senders),
    /// reporting a bad entry at `place[i]`.
    fn nets(&mut self, place: &str, raw: &[String]) -> Vec<IpNet> {
        let mut nets = Vec::with_capacity(raw.len());
        for (i, text) in raw.iter().enumerate() {
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => nets.push(net.trunc()),
                Err(_) => {
                    let issue = Issue::BadCidr {
                        value: text.clone(),
                    };
                    self.error(format!("{place}[{i}]"), issue);
                }
            }
        }
        nets
    }

    fn config(&mut self, raw: &RawConfig, reuse: Option<&Reuse>) -> (Config, Checked) {
        let start = self.start(raw);
        let timeouts = self.timeouts(raw);
        let limits = &raw.limits;
        let attempts = limits.backend_attempts;
        let max = bounds::MAX_BACKEND_ATTEMPTS as u64;
        self.count(
            "limits.backend_attempts",
            attempts as u64,
            Zero::Refused,
            max,
        );
        let per_client_ip = limits.per_client_ip.and_then(|n| {
            let max = u64::from(bounds::MAX_PER_CLIENT_IP);
            self.count("limits.per_client_ip", n.into(), Zero::Refused, max);
            NonZeroU32::new(n)
        });
        if raw.hosts.is_empty() {
            self.error("hosts", Issue::Empty);
        }
        let mut index = NameIndex::with_capacity(raw.hosts.len());
        let acme = start.acme.as_ref();
        let reuse = reuse.filter(|r| r.same_acme(acme));
        let mut clean = Vec::with_capacity(raw.hosts.len());
        let hosts: Vec<Arc<HostConfig>> = raw
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let before = self.problems.len();
                let host = match reuse.and_then(|r| r.host(i, h, self.now)) {
                    Some(kept) => {
                        // A clean host parsed all its names: `names[n]` is the entry's too.
                        for (n, name) in kept.names.iter().enumerate() {
                            self.claim_name(&mut index, i, &kept.label, n, name);
                        }
                        Arc::clone(kept)
                    }
                    None => Arc::new(self.host(i, h, &mut index, acme)),
                };
                clean.push((self.problems.len() == before).then(|| reuse::clean_until(&host)));
                host
            })
            .collect();
        let default_host = self.default_host(raw, &hosts, &index);
        let checked = Checked {
            acme: start.acme.clone(),
            clean,
        };
        let config = Config {
            source: self.file.clone(),
            start,
            timeouts,
            backend_attempts: attempts,
            per_client_ip,
            ticket_key_file: raw
                .sessions
                .ticket_key_file
                .as_ref()
                .map(|p| self.base.join(p)),
            default_host,
            hosts,
        };
        (config, checked)
    }

    fn timeouts(&mut self, raw: &RawConfig) -> Timeouts {
        let t = &raw.timeouts;
        for (field, value, zero, max) in [
            ("timeouts.handshake", t.handshake, Zero::Refused, DAY),
            (
                "timeouts.backend_connect",
                t.backend_connect,
                Zero::Refused,
                DAY,
            ),
            ("timeouts.idle", t.idle, Zero::Refused, WEEK),
            ("timeouts.drain", t.drain, Zero::Allowed, DAY),
            (
                "timeouts.backend_cooldown",
                t.backend_cooldown,
                Zero::Allowed,
                DAY,
            ),
            ("timeouts.half_closed", t.half_closed, Zero::Refused, WEEK),
        ] {
            self.duration(field, value, zero, max);
        }
        Timeouts {
            handshake: t.handshake,
            backend_connect: t.backend_connect,
            idle: t.idle,
            drain: t.drain,
            backend_cooldown: t.backend_cooldown,
            half_closed: t.half_closed,
        }
    }

    fn default_host(
        &mut self,
        raw: &RawConfig,
        hosts: &[Arc<HostConfig>],
        index: &NameIndex,
    ) -> Option<usize> {
        let name = raw.default_host.as_deref()?;
        let found = HostName::parse(name).and_then(|n| match n {
            HostName::Exact(exact) => index.lookup(&exact),
            wildcard => hosts.iter().position(|h| h.names.contains(&wildcard)),
        });
        if found.is_none() {
            self.error(
                "default_host",
                Issue::UnknownDefaultHost {
                    name: name.to_owned(),
                },
            );
        }
        found
    }
}

pub mod acme;
pub mod bounds;
mod host;
mod http;
mod reuse;
mod start;
#[cfg(test)]
mod tests;
mod tls;
