//! Raw YAML model → typed, checked [`Config`], with every problem located by file/host/field.
//!
//! Validation loads every referenced file (certificates, keys, CAs) so that what passes here is
//! what will be served. Problems about a host's files are scoped to that host, so a reload can
//! keep serving that host's previous certificate while applying everything else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use super::model::{
    BalancePolicy, ClientAuthMode, ProxyProtocol, RawBackendTls, RawCert, RawClientAuth, RawConfig,
    RawHealthCheck, RawHost,
};
use super::problem::{Issue, Problem, Scope, Severity};
use crate::balance::BackendAddr;
use crate::tls::certs::{self, LoadedCert};
use crate::tls::names::{HostName, NameIndex};

/// Certificates expiring sooner than this get a warning.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// A validated configuration: everything typed, every file loaded.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub source: PathBuf,
    /// TLS listen addresses.
    pub listeners: Vec<SocketAddr>,
    /// Admin listener address, if enabled.
    pub admin: Option<SocketAddr>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Whole-proxy connection limit.
    pub max_connections: usize,
    /// Backends tried per client connection.
    pub backend_attempts: usize,
    /// Session resumption settings.
    pub sessions: Sessions,
    /// Reload timing.
    pub reload: Reload,
    /// Index into `hosts` of the host serving unknown or missing SNI.
    pub default_host: Option<usize>,
    /// The hosts, in file order.
    pub hosts: Vec<HostConfig>,
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
}

/// Typed session resumption settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sessions {
    /// TLS 1.2 session-ID cache entries.
    pub cache_size: usize,
    /// Shared ticket key file, resolved against the config's directory.
    pub ticket_key_file: Option<PathBuf>,
    /// In-memory key rotation period.
    pub ticket_rotate_every: Duration,
    /// Ticket lifetime.
    pub ticket_lifetime: Duration,
}

/// Typed reload settings; see the model for meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reload {
    /// Watch files.
    pub watch: bool,
    /// Trailing-edge debounce.
    pub debounce: Duration,
    /// Cap on the delay of a burst.
    pub max_delay: Duration,
    /// Periodic content re-check.
    pub recheck_every: Duration,
    /// Backend DNS re-resolution period.
    pub dns_refresh: Duration,
}

/// One validated host.
#[derive(Debug, Clone)]
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
    pub balance: BalancePolicy,
    /// ALPN protocols in preference order.
    pub alpn: Vec<Vec<u8>>,
    /// Whether TLS 1.2 is accepted (otherwise 1.3 only).
    pub allow_tls12: bool,
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
pub type HealthCheck = RawHealthCheck;

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

/// Every file a configuration read from `source` references, the config file first (for the
/// reload watcher and its change check).
pub fn referenced_files(raw: &RawConfig, source: &Path) -> Vec<PathBuf> {
    let base = base_dir(source);
    let mut files = vec![source.to_owned()];
    for host in &raw.hosts {
        for cert in &host.certs {
            files.push(base.join(&cert.cert));
            files.push(base.join(&cert.key));
            files.extend(cert.ocsp.as_ref().map(|f| base.join(f)));
        }
        if let Some(auth) = &host.client_auth {
            files.push(base.join(&auth.ca));
        }
        if let Some(tls) = &host.backend_tls {
            files.push(base.join(&tls.ca));
        }
    }
    files.extend(raw.sessions.ticket_key_file.as_ref().map(|f| base.join(f)));
    files
}

/// The directory relative paths in `source` are resolved against.
pub fn base_dir(source: &Path) -> PathBuf {
    source
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Validates `raw` (read from `source`), loading every referenced file.
/// Returns the typed config and all problems found; the config is only usable as a whole when
/// no problem is a [`Scope::Config`] error.
pub fn validate(
    raw: &RawConfig,
    source: &Path,
    provider: &CryptoProvider,
    now: SystemTime,
) -> (Config, Vec<Problem>) {
    let mut v = Validator {
        file: source.to_owned(),
        base: base_dir(source),
        provider,
        now: now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        problems: Vec::new(),
    };
    let config = v.config(raw);
    (config, v.problems)
}

struct Validator<'a> {
    file: PathBuf,
    base: PathBuf,
    provider: &'a CryptoProvider,
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

    fn config(&mut self, raw: &RawConfig) -> Config {
        if raw.listeners.is_empty() {
            self.error("listeners", Issue::Empty);
        }
        let listeners = raw
            .listeners
            .iter()
            .enumerate()
            .filter_map(|(i, l)| self.addr(format!("listeners[{i}]"), l))
            .collect();
        let admin = raw
            .admin
            .bind
            .as_deref()
            .and_then(|b| self.addr("admin.bind".into(), b));
        let t = &raw.timeouts;
        for (field, value) in [
            ("timeouts.handshake", t.handshake),
            ("timeouts.backend_connect", t.backend_connect),
            ("timeouts.idle", t.idle),
        ] {
            if value.is_zero() {
                self.error(field, Issue::Zero);
            }
        }
        if raw.limits.max_connections == 0 {
            self.error("limits.max_connections", Issue::Zero);
        }
        if raw.limits.backend_attempts == 0 {
            self.error("limits.backend_attempts", Issue::Zero);
        }
        let s = &raw.sessions;
        if s.ticket_lifetime.is_zero() || s.ticket_lifetime > Duration::from_secs(24 * 3600) {
            self.error("sessions.ticket_lifetime", Issue::TicketLifetime);
        }
        if raw.reload.recheck_every.is_zero() {
            self.error("reload.recheck_every", Issue::Zero);
        }
        if raw.reload.dns_refresh.is_zero() {
            self.error("reload.dns_refresh", Issue::Zero);
        }
        if s.ticket_rotate_every.is_zero() {
            self.error("sessions.ticket_rotate_every", Issue::Zero);
        }
        if raw.hosts.is_empty() {
            self.error("hosts", Issue::Empty);
        }
        let mut index = NameIndex::default();
        let hosts: Vec<HostConfig> = raw
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| self.host(i, h, &mut index))
            .collect();
        let default_host = raw.default_host.as_deref().and_then(|name| {
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
        });
        Config {
            source: self.file.clone(),
            listeners,
            admin,
            timeouts: Timeouts {
                handshake: t.handshake,
                backend_connect: t.backend_connect,
                idle: t.idle,
                drain: t.drain,
                backend_cooldown: t.backend_cooldown,
            },
            max_connections: raw.limits.max_connections,
            backend_attempts: raw.limits.backend_attempts,
            sessions: Sessions {
                cache_size: s.cache_size,
                ticket_key_file: s.ticket_key_file.as_ref().map(|p| self.base.join(p)),
                ticket_rotate_every: s.ticket_rotate_every,
                ticket_lifetime: s.ticket_lifetime,
            },
            reload: Reload {
                watch: raw.reload.watch,
                debounce: raw.reload.debounce,
                max_delay: raw.reload.max_delay.max(raw.reload.debounce),
                recheck_every: raw.reload.recheck_every,
                dns_refresh: raw.reload.dns_refresh,
            },
            default_host,
            hosts,
        }
    }

    fn host(&mut self, i: usize, raw: &RawHost, index: &mut NameIndex) -> HostConfig {
        let label = raw.names.first().map_or_else(String::new, |n| {
            n.strip_suffix('.').unwrap_or(n).to_ascii_lowercase()
        });
        let at = format!("hosts[{i}] ({label})");
        if raw.names.is_empty() {
            self.error(format!("{at}: names"), Issue::Empty);
        }
        let mut names = Vec::new();
        for (n, name) in raw.names.iter().enumerate() {
            let Some(parsed) = HostName::parse(name) else {
                let issue = Issue::BadName { name: name.clone() };
                self.error(format!("{at}: names[{n}]"), issue);
                continue;
            };
            if let Some(other) = index.insert(&parsed, i) {
                let issue = Issue::DuplicateName {
                    name: parsed.to_string(),
                    other,
                };
                self.error(format!("{at}: names[{n}]"), issue);
            }
            names.push(parsed);
        }
        let certs = self.host_certs(i, &at, &raw.certs, &names);
        if raw.backends.is_empty() {
            self.error(format!("{at}: backends"), Issue::Empty);
        }
        let mut backends = Vec::new();
        for (b, backend) in raw.backends.iter().enumerate() {
            let addr = BackendAddr::parse(&backend.address);
            if addr.is_none() {
                let issue = Issue::BadBackendAddress {
                    value: backend.address.clone(),
                };
                self.error(format!("{at}: backends[{b}].address"), issue);
            }
            if !(1..=1000).contains(&backend.weight) {
                let issue = Issue::BadWeight {
                    weight: backend.weight,
                };
                self.error(format!("{at}: backends[{b}].weight"), issue);
            }
            if let Some(addr) = addr {
                let weight = backend.weight.clamp(1, 1000);
                backends.push(BackendConfig { addr, weight });
            }
        }
        let allow_tls12 = match raw.min_tls.as_str() {
            "1.2" => true,
            "1.3" => false,
            other => {
                let issue = Issue::BadTlsVersion {
                    value: other.to_owned(),
                };
                self.error(format!("{at}: min_tls"), issue);
                true
            }
        };
        let mut alpn = Vec::new();
        for (a, proto) in raw.alpn.iter().enumerate() {
            if proto.is_empty() || proto.len() > 255 {
                let issue = Issue::BadAlpn {
                    value: proto.clone(),
                };
                self.error(format!("{at}: alpn[{a}]"), issue);
            } else {
                alpn.push(proto.as_bytes().to_vec());
            }
        }
        let client_auth = raw
            .client_auth
            .as_ref()
            .and_then(|auth| self.client_auth(i, &at, auth));
        let backend_tls = raw
            .backend_tls
            .as_ref()
            .and_then(|tls| self.backend_tls(i, &at, tls));
        // A host whose CA failed must never be served without client authentication, nor
        // relay in plaintext what should be re-encrypted.
        let certs = certs.filter(|_| raw.client_auth.is_none() || client_auth.is_some());
        let certs = certs.filter(|_| raw.backend_tls.is_none() || backend_tls.is_some());
        HostConfig {
            label,
            names,
            certs,
            backends,
            balance: raw.balance,
            alpn,
            allow_tls12,
            client_auth,
            proxy_protocol: raw.proxy_protocol,
            resumption: raw.resumption,
            health_check: raw.health_check.filter(|hc| self.health_check(&at, hc)),
            backend_tls,
            allow: self.allow(&at, &raw.allow),
        }
    }

    fn allow(&mut self, at: &str, raw: &[String]) -> Vec<IpNet> {
        let mut nets = Vec::with_capacity(raw.len());
        for (a, text) in raw.iter().enumerate() {
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => nets.push(net.trunc()),
                Err(_) => {
                    let issue = Issue::BadCidr {
                        value: text.clone(),
                    };
                    self.error(format!("{at}: allow[{a}]"), issue);
                }
            }
        }
        nets
    }

    fn health_check(&mut self, at: &str, hc: &RawHealthCheck) -> bool {
        let before = self.problems.len();
        for (field, zero) in [
            ("interval", hc.interval.is_zero()),
            ("timeout", hc.timeout.is_zero()),
            ("fall", hc.fall == 0),
            ("rise", hc.rise == 0),
        ] {
            if zero {
                self.error(format!("{at}: health_check.{field}"), Issue::Zero);
            }
        }
        self.problems.len() == before
    }

    fn host_certs(
        &mut self,
        i: usize,
        at: &str,
        raw: &[RawCert],
        names: &[HostName],
    ) -> Option<Vec<LoadedCert>> {
        if raw.is_empty() {
            self.error(format!("{at}: certs"), Issue::Empty);
            return None;
        }
        let scope = Scope::HostFiles(i);
        let mut loaded = Vec::new();
        let mut failed = false;
        for (c, pair) in raw.iter().enumerate() {
            let place = format!("{at}: certs[{c}]");
            let (cert_path, key_path) = (self.base.join(&pair.cert), self.base.join(&pair.key));
            self.check_key_permissions(scope, &place, &key_path);
            let ocsp_path = pair.ocsp.as_ref().map(|p| self.base.join(p));
            let result = certs::load_pair(&cert_path, &key_path, self.provider)
                .and_then(|cert| cert.with_ocsp(ocsp_path.as_deref()));
            let cert = match result {
                Ok(cert) => cert,
                Err(e) => {
                    self.report(Severity::Error, scope, place, e.into());
                    failed = true;
                    continue;
                }
            };
            let file = pair.cert.display().to_string();
            for name in names {
                if !name.covered_by(&cert.names) {
                    let issue = Issue::NameNotCovered {
                        name: name.to_string(),
                        cert: file.clone(),
                        covers: cert.names.join(", "),
                    };
                    self.report(Severity::Error, scope, place.clone(), issue);
                    failed = true;
                }
            }
            let left = cert.not_after - self.now;
            if left <= 0 {
                let issue = Issue::Expired {
                    cert: file,
                    not_after: cert.not_after,
                };
                self.report(Severity::Error, scope, place, issue);
                failed = true;
            } else if left < EXPIRY_WARNING.as_secs() as i64 {
                let issue = Issue::ExpiresSoon {
                    cert: file,
                    days: left / 86_400,
                };
                self.report(Severity::Warning, scope, place, issue);
            }
            loaded.push(cert);
        }
        // ECDSA first: the resolver offers the first certificate whose key the client can use.
        loaded.sort_by_key(|c| c.algorithm);
        (!failed).then_some(loaded)
    }

    fn check_key_permissions(&mut self, scope: Scope, place: &str, key: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(key) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o044 != 0 {
                let issue = Issue::KeyPermissions {
                    path: key.display().to_string(),
                    mode,
                };
                self.report(Severity::Warning, scope, format!("{place}.key"), issue);
            }
        }
    }

    fn client_auth(&mut self, i: usize, at: &str, raw: &RawClientAuth) -> Option<ClientAuth> {
        let place = format!("{at}: client_auth.ca");
        let (roots, ca_path) = self.ca_roots(i, place, &raw.ca)?;
        Some(ClientAuth {
            roots,
            mode: raw.mode,
            ca_path,
        })
    }

    fn backend_tls(&mut self, i: usize, at: &str, raw: &RawBackendTls) -> Option<BackendTls> {
        let server_name = match &raw.server_name {
            None => None,
            Some(name) => match ServerName::try_from(name.as_str()) {
                Ok(parsed) => Some(parsed.to_owned()),
                Err(_) => {
                    let issue = Issue::BadName { name: name.clone() };
                    self.error(format!("{at}: backend_tls.server_name"), issue);
                    return None;
                }
            },
        };
        let place = format!("{at}: backend_tls.ca");
        let (roots, ca_path) = self.ca_roots(i, place, &raw.ca)?;
        Some(BackendTls {
            roots,
            server_name,
            ca_path,
        })
    }

    /// Loads a PEM file of CA certificates (a problem of host `i`'s files when it fails).
    fn ca_roots(
        &mut self,
        i: usize,
        place: String,
        raw: &Path,
    ) -> Option<(Arc<RootCertStore>, PathBuf)> {
        let ca_path = self.base.join(raw);
        let scope = Scope::HostFiles(i);
        let bad_ca = |reason: String| Issue::BadCa {
            path: raw.display().to_string(),
            reason,
        };
        let pem = match certs::read(&ca_path) {
            Ok(pem) => pem,
            Err(e) => {
                self.report(Severity::Error, scope, place, e.into());
                return None;
            }
        };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let added = cert
                .map_err(|e| e.to_string())
                .and_then(|c| roots.add(c).map_err(|e| e.to_string()));
            if let Err(reason) = added {
                self.report(Severity::Error, scope, place, bad_ca(reason));
                return None;
            }
        }
        if roots.is_empty() {
            let issue = bad_ca("the file holds no certificate".into());
            self.report(Severity::Error, scope, place, issue);
            return None;
        }
        Some((Arc::new(roots), ca_path))
    }
}
