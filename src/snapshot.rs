//! The immutable runtime configuration: everything one connection needs, built once per
//! (re)load and published through a single `ArcSwap`.
//!
//! A connection loads the snapshot once and uses it to the end, so its certificate, ALPN, client
//! auth and backend pool always come from the same configuration. Building one is the expensive
//! part of a reload (`ServerConfig`s, pools) and happens off the accept path; publishing is one
//! pointer store.
//!
//! The build is pure: it reads no file and asks no resolver. Certificates come loaded in the
//! [`Config`], and the DNS answers for backend names it has not seen before come from the
//! caller ([`Snapshot::names_to_look_up`] says which), who decides which thread may block.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use ipnet::IpNet;
use rustls::ServerConfig;

use crate::config::model::ProxyProtocol;
use crate::config::validate::BackendConfig;
use crate::config::validate::HealthCheck;
use crate::config::{Config, HostConfig, Timeouts};
use crate::http::{HttpHost, Route};
use crate::metrics::host::HostMetrics;
use crate::tls::certs::LoadedCert;
use crate::tls::names::NameIndex;
use crate::tls::{BuildError, TlsShared};
use crate::upstream::dns::{self, Answers};
use crate::upstream::tls::UpstreamTls;
use crate::upstream::{Backend, BackendAddr, BackendState, Policy, Pool};

/// What a host does with a decrypted connection.
#[derive(Debug)]
pub enum Mode {
    /// Relay the byte stream to a backend (layer 4).
    Tcp,
    /// Serve HTTP/1.1 and HTTP/2 and proxy each request; the host's own pool is the default
    /// route.
    Http(Arc<HttpHost>),
}

/// One host as served.
#[derive(Debug)]
pub struct Host {
    /// Bounded label for metrics and logs (the first configured name).
    pub label: Arc<str>,
    /// What it does after the handshake.
    pub mode: Mode,
    /// Its metric handles.
    pub metrics: HostMetrics,
    /// Its ALPN protocols as log field values, parallel to the configured list.
    pub alpn: Vec<(Vec<u8>, Arc<str>)>,
    /// The prebuilt TLS configuration.
    pub tls: Arc<ServerConfig>,
    /// Backends and policy.
    pub pool: Pool,
    /// Backend metric labels, parallel to `pool.backends()`.
    pub backend_labels: Vec<Arc<str>>,
    /// PROXY protocol towards backends.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// The certificates being served.
    pub certs: Vec<LoadedCert>,
    /// True when the host's files failed to load and it serves certificates from an earlier
    /// snapshot.
    pub stale: bool,
    /// Active health checks of its backends, if enabled.
    pub health_check: Option<HealthCheck>,
    /// TLS towards its backends, if enabled.
    pub upstream_tls: Option<UpstreamTls>,
    /// Client networks allowed; empty allows every client.
    pub allow: Vec<IpNet>,
}

impl Host {
    /// Whether a client at `ip` may use this host.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// Every backend of the host with its metric label, each once: the host's own, then each
    /// route's (a backend listed twice shares one live state).
    pub fn all_backends(&self) -> Vec<(&Backend, &Arc<str>)> {
        let routes = match &self.mode {
            Mode::Tcp => &[][..],
            Mode::Http(http) => &http.routes[..],
        };
        let own = self.pool.backends().iter().zip(&self.backend_labels);
        let listed = routes
            .iter()
            .flat_map(|r| r.pool.backends().iter().zip(&r.backend_labels));
        let mut all: Vec<(&Backend, &Arc<str>)> = Vec::new();
        for (backend, label) in own.chain(listed) {
            if !all
                .iter()
                .any(|(b, _)| Arc::ptr_eq(&b.state, &backend.state))
            {
                all.push((backend, label));
            }
        }
        all
    }

    /// The log value of a negotiated ALPN protocol (always one of the host's own).
    pub fn alpn_label(&self, protocol: &[u8]) -> Option<Arc<str>> {
        self.alpn
            .iter()
            .find(|(p, _)| p == protocol)
            .map(|(_, label)| Arc::clone(label))
    }
}

/// Everything a connection needs, consistent as a whole.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every published snapshot.
    pub generation: u64,
    /// SNI → index into `hosts`.
    pub names: NameIndex,
    /// The servable hosts.
    pub hosts: Vec<Arc<Host>>,
    /// Host for clients without SNI or with an unknown name.
    pub default_host: Option<usize>,
    /// Names of `certs: acme` hosts without a certificate yet → index into `pending`.
    pub pending_names: NameIndex,
    /// The labels of those hosts: their handshakes are refused (`cert_pending`), never
    /// served by another host's certificate.
    pub pending: Vec<Arc<str>>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Backends tried per connection.
    pub backend_attempts: usize,
    /// Open connections allowed per client address, if limited.
    pub per_client_ip: Option<NonZeroU32>,
    /// The validated configuration this was built from.
    pub config: Arc<Config>,
    /// How many of `hosts` were built for this snapshot; the others are the previous
    /// snapshot's, carried over because their settings and files did not change.
    pub built: usize,
    /// Indices into `hosts` of those with health checks, and of those in HTTP mode: what the
    /// periodic tasks visit, so that with 100,000 hosts they do not walk them all 10 times a
    /// second.
    pub health_checked: Vec<usize>,
    /// See `health_checked`.
    pub http: Vec<usize>,
}

/// A host that was left out of a snapshot, and why.
#[derive(Debug)]
pub struct Skipped {
    /// The host's label.
    pub host: String,
    /// Why.
    pub reason: SkipReason,
}

/// Why a host was left out.
#[derive(Debug, thiserror::Error)]
pub enum SkipReason {
    /// Its files failed and no earlier certificate exists for it.
    #[error("its certificate files failed and there is no earlier certificate to keep")]
    NoUsableCertificate,
    /// rustls refused its settings.
    #[error(transparent)]
    Build(#[from] BuildError),
}

impl Snapshot {
    /// Builds a snapshot from `config`. A host whose settings and files equal those `previous`
    /// built it from is `previous`'s very host (same TLS config, pools, metric handles): a reload
    /// of many hosts rebuilds only the ones that changed. Hosts whose files failed keep the
    /// certificates they have in `previous` (marked stale), or are left out. Backend live state
    /// is carried over from `previous` for backends a host keeps; a new backend named by DNS
    /// starts with its entry in `answers` (see [`names_to_look_up`](Self::names_to_look_up)).
    pub fn build(
        config: Arc<Config>,
        tls: &TlsShared,
        previous: Option<&Self>,
        generation: u64,
        answers: &Answers,
    ) -> (Self, Vec<Skipped>) {
        let previous = Previous::new(previous);
        let mut names = NameIndex::with_capacity(config.hosts.len());
        let mut hosts = Vec::with_capacity(config.hosts.len());
        let mut skipped = Vec::new();
        let mut default_host = None;
        let (mut pending_names, mut pending) = (NameIndex::default(), Vec::new());
        let mut built = 0;
        let (mut health_checked, mut http) = (Vec::new(), Vec::new());
        for (i, host) in config.hosts.iter().enumerate() {
            let old = previous.host(hosts.len(), &host.label);
            let unchanged = old.filter(|old| {
                !old.stale
                    && host.certs.is_some()
                    && previous
                        .config(i, &host.label)
                        .is_some_and(|was| Arc::ptr_eq(was, host) || **was == **host)
            });
            let result = match unchanged {
                Some(old) => Ok(Arc::clone(old)),
                None => {
                    built += 1;
                    build_host(host, tls, old.map(Arc::as_ref), answers).map(Arc::new)
                }
            };
            match result {
                Ok(host_built) => {
                    let index = hosts.len();
                    for name in &host.names {
                        names.insert(name, index);
                    }
                    if config.default_host == Some(i) {
                        default_host = Some(index);
                    }
                    if host_built.health_check.is_some() {
                        health_checked.push(index);
                    }
                    if matches!(host_built.mode, Mode::Http(_)) {
                        http.push(index);
                    }
                    hosts.push(host_built);
                }
                Err(SkipReason::NoUsableCertificate) if host.acme => {
                    for name in &host.names {
                        pending_names.insert(name, pending.len());
                    }
                    pending.push(Arc::from(host.label.as_str()));
                }
                Err(reason) => skipped.push(Skipped {
                    host: host.label.clone(),
                    reason,
                }),
            }
        }
        let snapshot = Self {
            generation,
            names,
            hosts,
            health_checked,
            http,
            default_host,
            pending_names,
            pending,
            timeouts: config.timeouts,
            backend_attempts: config.backend_attempts,
            per_client_ip: config.per_client_ip,
            config,
            built,
        };
        (snapshot, skipped)
    }

    /// The backend names whose addresses a build from `config` on top of `previous` needs:
    /// every `name:port` backend that its host does not already have live state for (a kept
    /// backend keeps its addresses, which the DNS refresh task updates). Each name once.
    pub fn names_to_look_up(config: &Config, previous: Option<&Self>) -> Vec<dns::Name> {
        let previous = Previous::new(previous);
        let mut names = Vec::new();
        for (i, host) in config.hosts.iter().enumerate() {
            let routes = host.http.iter().flat_map(|h| &h.routes);
            let backends = host.backends.iter().chain(routes.flat_map(|r| &r.backends));
            if !backends
                .clone()
                .any(|b| matches!(b.addr, BackendAddr::Name { .. }))
            {
                continue;
            }
            let old = old_states(previous.host(i, &host.label).map(Arc::as_ref));
            for backend in backends {
                if let BackendAddr::Name { host, port } = &backend.addr
                    && !old.contains_key(&backend.addr)
                {
                    names.push((host.clone(), *port));
                }
            }
        }
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The label of the ACME host waiting for its first certificate that `sni` names, if any.
    pub fn pending_for(&self, sni: &str) -> Option<&Arc<str>> {
        self.pending_names.lookup(sni).map(|i| &self.pending[i])
    }

    /// Whether `name` is one of the configured names (served or pending).
    pub fn knows(&self, name: &str) -> bool {
        self.names.lookup(name).is_some() || self.pending_for(name).is_some()
    }

    /// The host serving `sni` (or a missing SNI), falling back to the default host.
    pub fn host_for(&self, sni: Option<&str>) -> Option<&Arc<Host>> {
        sni.and_then(|name| self.names.lookup(name))
            .or(self.default_host)
            .map(|i| &self.hosts[i])
    }
}

/// The previous snapshot's hosts, and the settings it built them from, by label: what a host of
/// the new configuration continues. A reload mostly keeps the hosts' order, so the same
/// position is tried first; the maps by label are built only when a position misses (with
/// 100,000 hosts they cost more than the rest of a build that changes nothing).
struct Previous<'a> {
    snapshot: Option<&'a Snapshot>,
    hosts: OnceCell<HashMap<&'a str, &'a Arc<Host>>>,
    configs: OnceCell<HashMap<&'a str, &'a Arc<HostConfig>>>,
}

impl<'a> Previous<'a> {
    fn new(snapshot: Option<&'a Snapshot>) -> Self {
        Self {
            snapshot,
            hosts: OnceCell::new(),
            configs: OnceCell::new(),
        }
    }

    /// The served host labelled `label`, looked for at `position` among the served hosts first.
    fn host(&self, position: usize, label: &str) -> Option<&'a Arc<Host>> {
        let hosts = &self.snapshot?.hosts;
        match hosts.get(position) {
            Some(host) if *host.label == *label => Some(host),
            _ => self
                .hosts
                .get_or_init(|| hosts.iter().map(|h| (&*h.label, h)).collect())
                .get(label)
                .copied(),
        }
    }

    /// The settings of the configured host labelled `label`, looked for at `position` first.
    fn config(&self, position: usize, label: &str) -> Option<&'a Arc<HostConfig>> {
        let configs = &self.snapshot?.config.hosts;
        match configs.get(position) {
            Some(config) if config.label == label => Some(config),
            _ => self
                .configs
                .get_or_init(|| configs.iter().map(|h| (h.label.as_str(), h)).collect())
                .get(label)
                .copied(),
        }
    }
}

/// The live state of `old`'s backends by address: what a host that keeps a backend carries over.
fn old_states(old: Option<&Host>) -> HashMap<&BackendAddr, &Arc<BackendState>> {
    old.map(|o| {
        o.all_backends()
            .into_iter()
            .map(|(b, _)| (&b.addr, &b.state))
            .collect()
    })
    .unwrap_or_default()
}

fn build_host(
    host: &HostConfig,
    tls: &TlsShared,
    old: Option<&Host>,
    answers: &Answers,
) -> Result<Host, SkipReason> {
    let (certs, server_config, alpn, stale) = match (&host.certs, old) {
        (Some(certs), _) => {
            let keys = certs.iter().map(|c| Arc::clone(&c.key)).collect();
            let alpn = host
                .alpn
                .iter()
                .map(|p| (p.clone(), Arc::from(String::from_utf8_lossy(p))))
                .collect();
            (certs.clone(), tls.server_config(host, keys)?, alpn, false)
        }
        // Its files failed: the host's whole TLS side stays as it was (certificates, client
        // auth, versions, ALPN), since a client CA that failed to load must not turn mutual
        // TLS off. Its backends follow the new configuration.
        (None, Some(old)) => (
            old.certs.clone(),
            Arc::clone(&old.tls),
            old.alpn.clone(),
            true,
        ),
        (None, None) => return Err(SkipReason::NoUsableCertificate),
    };
    let mut states = old_states(old)
        .into_iter()
        .map(|(addr, state)| (addr.clone(), Arc::clone(state)))
        .collect();
    let (own_pool, backend_labels) = pool(&host.backends, host.balance, &mut states, answers);
    let label: Arc<str> = Arc::from(host.label.as_str());
    let mode = match &host.http {
        None => Mode::Tcp,
        Some(http) => {
            let routes = http
                .routes
                .iter()
                .map(|route| {
                    let (pool, labels) = pool(&route.backends, route.balance, &mut states, answers);
                    Route::new(&route.prefix, pool, labels)
                })
                .collect();
            Mode::Http(Arc::new(HttpHost::new(
                &label,
                Arc::clone(http),
                routes,
                host.backends.len(),
            )))
        }
    };
    let alpn_to_backends = match &host.http {
        None => Vec::new(),
        Some(http) => crate::http::backend_alpn(http.backend_protocol),
    };
    Ok(Host {
        label,
        mode,
        metrics: HostMetrics::new(&host.label),
        alpn,
        tls: server_config,
        pool: own_pool,
        backend_labels,
        proxy_protocol: host.proxy_protocol,
        certs,
        stale,
        health_check: host.health_check.clone(),
        upstream_tls: upstream_tls(host, tls, old, stale, &alpn_to_backends)?,
        allow: host.allow.clone(),
    })
}

/// The host's TLS client for its backends: the previous one while the settings are unchanged,
/// so backend sessions keep resuming across reloads.
fn upstream_tls(
    host: &HostConfig,
    tls: &TlsShared,
    old: Option<&Host>,
    stale: bool,
    alpn: &[&[u8]],
) -> Result<Option<UpstreamTls>, BuildError> {
    let previous = old.and_then(|o| o.upstream_tls.as_ref());
    match &host.backend_tls {
        Some(settings) => {
            UpstreamTls::carry_over(previous, &tls.provider, settings, alpn).map(Some)
        }
        // A stale host's files failed, and a backend CA that failed leaves no settings: keep
        // re-encrypting as before rather than fall back to plaintext.
        None if stale => Ok(previous.cloned()),
        None => Ok(None),
    }
}

/// A pool of `backends` with their metric labels. A backend keeps the live state it has in
/// `states` (from the previous snapshot, or from an earlier route of this host listing it
/// too); a new one starts from the DNS `answers`.
fn pool(
    backends: &[BackendConfig],
    policy: Policy,
    states: &mut HashMap<BackendAddr, Arc<BackendState>>,
    answers: &Answers,
) -> (Pool, Vec<Arc<str>>) {
    let backends: Vec<Backend> = backends
        .iter()
        .map(|b| {
            let state = states
                .entry(b.addr.clone())
                .or_insert_with(|| Arc::new(new_state(&b.addr, answers)));
            Backend::new(b.addr.clone(), b.weight, Arc::clone(state))
        })
        .collect();
    let labels = backends
        .iter()
        .map(|b| Arc::from(b.addr.to_string()))
        .collect();
    (Pool::new(backends, policy), labels)
}

/// State for a new backend. A DNS name starts with the addresses the caller looked up, so the
/// backend is usable from the first connection; the DNS refresh task keeps it fresh from then on.
fn new_state(addr: &BackendAddr, answers: &Answers) -> BackendState {
    let state = BackendState::default();
    if let BackendAddr::Name { host, port } = addr {
        match answers.get(host, *port) {
            Some(Ok(addrs)) => {
                state.set_addrs(addrs.clone());
            }
            Some(Err(e)) => {
                tracing::warn!(backend.addr = %addr, error = %e, "backend name does not resolve yet")
            }
            None => {
                tracing::warn!(backend.addr = %addr, error = "not looked up", "backend name does not resolve yet")
            }
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::config::files::FileCache;
    use crate::pki::{Ca, KeyKind};

    /// A configuration of one host `app.test` with `backends`, its files in `dir`.
    fn config(dir: &std::path::Path, backends: &[&str]) -> Config {
        let issued = Ca::new("test CA")
            .unwrap()
            .issue(&["app.test"], KeyKind::Ecdsa)
            .unwrap();
        std::fs::write(dir.join("app.pem"), &issued.cert_pem).unwrap();
        std::fs::write(dir.join("app.key"), &issued.key_pem).unwrap();
        let mode = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(dir.join("app.key"), mode).unwrap();
        let mut text = String::from(
            "listeners: [\"127.0.0.1:0\"]\nhosts:\n  - names: [app.test]\n    certs:\n      - { cert: app.pem, key: app.key }\n    backends:\n",
        );
        for b in backends {
            text.push_str(&format!("      - {{ address: \"{b}\" }}\n"));
        }
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        crate::config::load::from_str(&text, &dir.join("tlsedge.yaml"), &provider)
            .and_then(crate::config::Loaded::strict)
            .unwrap()
            .config
    }

    fn addrs(snapshot: &Snapshot) -> Vec<Vec<SocketAddr>> {
        let pool = &snapshot.hosts[0].pool;
        pool.backends()
            .iter()
            .map(|b| b.state.addrs().to_vec())
            .collect()
    }

    #[test]
    fn new_backend_names_start_with_the_answers_passed_in() {
        let dir = tempfile::tempdir().unwrap();
        let first = config(
            dir.path(),
            &["127.0.0.1:9", "app.internal:80", "gone.internal:81"],
        );
        let tls = TlsShared::new(&first.start.sessions, None).unwrap();
        let wanted = Snapshot::names_to_look_up(&first, None);
        let name = |host: &str, port| (host.to_owned(), port);
        assert_eq!(
            wanted,
            [name("app.internal", 80), name("gone.internal", 81)]
        );
        let mut answers = Answers::none();
        let resolved: SocketAddr = "10.0.0.1:80".parse().unwrap();
        answers.insert(name("app.internal", 80), Ok(vec![resolved]));
        answers.insert(
            name("gone.internal", 81),
            Err(std::io::ErrorKind::NotFound.into()),
        );
        let (built, skipped) = Snapshot::build(Arc::new(first), &tls, None, 1, &answers);
        assert!(skipped.is_empty());
        let fixed: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(addrs(&built), [vec![fixed], vec![resolved], vec![]]);

        // Kept backends carry their state (and addresses) over: only the new name is asked for.
        let next = config(dir.path(), &["app.internal:80", "new.internal:82"]);
        let wanted = Snapshot::names_to_look_up(&next, Some(&built));
        assert_eq!(wanted, [name("new.internal", 82)]);
        let (rebuilt, _) = Snapshot::build(Arc::new(next), &tls, Some(&built), 2, &Answers::none());
        assert_eq!(addrs(&rebuilt), [vec![resolved], vec![]]);
        assert!(Arc::ptr_eq(
            &built.hosts[0].pool.backends()[1].state,
            &rebuilt.hosts[0].pool.backends()[0].state
        ));
    }

    /// Writes a certificate for `name` to `dir/name.pem` and its key to `dir/name.key`.
    fn issue(dir: &std::path::Path, name: &str) {
        let issued = Ca::new("test CA")
            .unwrap()
            .issue(&[name], KeyKind::Ecdsa)
            .unwrap();
        let key = dir.join(format!("{name}.key"));
        std::fs::write(dir.join(format!("{name}.pem")), &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Hosts `a.test` and `b.test` (b's backend on `b_port`; b first if `swap`), loaded through
    /// `cache` as a reload does.
    fn two_hosts(
        dir: &std::path::Path,
        b_port: u16,
        swap: bool,
        cache: &mut FileCache,
    ) -> Arc<Config> {
        let host = |name: &str, port: u16| {
            format!(
                "  - names: [{name}]\n    certs:\n      - {{ cert: {name}.pem, key: {name}.key }}\n    backends:\n      - {{ address: \"127.0.0.1:{port}\" }}\n"
            )
        };
        let (a, b) = (host("a.test", 9), host("b.test", b_port));
        let (first, second) = if swap { (b, a) } else { (a, b) };
        let text = format!("listeners: [\"127.0.0.1:0\"]\nhosts:\n{first}{second}");
        let path = dir.join("tlsedge.yaml");
        std::fs::write(&path, text).unwrap();
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        cache.begin();
        let loaded = crate::config::load::load_with(&path, &provider, cache);
        cache.end();
        Arc::new(
            loaded
                .and_then(crate::config::Loaded::strict)
                .unwrap()
                .config,
        )
    }

    #[test]
    fn a_reload_keeps_unchanged_hosts_and_rebuilds_the_changed_ones() {
        let dir = tempfile::tempdir().unwrap();
        issue(dir.path(), "a.test");
        issue(dir.path(), "b.test");
        let mut cache = FileCache::default();
        let first = two_hosts(dir.path(), 10, false, &mut cache);
        let tls = TlsShared::new(&first.start.sessions, None).unwrap();
        let none = Answers::none();
        let (s1, _) = Snapshot::build(first, &tls, None, 1, &none);
        assert_eq!(s1.built, 2);
        // A reload on top of `previous` with b's backend on `b_port` (b listed first if `swap`).
        let mut reload = |previous: &Snapshot, b_port, swap| {
            let config = two_hosts(dir.path(), b_port, swap, &mut cache);
            Snapshot::build(config, &tls, Some(previous), previous.generation + 1, &none).0
        };
        // Whether each host of `new` (in `order`) is the very host of `old`.
        let kept = |old: &Snapshot, new: &Snapshot, order: [usize; 2]| {
            [0, 1].map(|h| Arc::ptr_eq(&old.hosts[h], &new.hosts[order[h]]))
        };

        // Nothing changed: both hosts are the previous snapshot's, TLS config included.
        let s2 = reload(&s1, 10, false);
        assert_eq!((s2.built, kept(&s1, &s2, [0, 1])), (0, [true, true]));

        // b's backend changed: only b is built again.
        let s3 = reload(&s2, 11, false);
        assert_eq!((s3.built, kept(&s2, &s3, [0, 1])), (1, [true, false]));
        let port = s3.hosts[1].pool.backends()[0].state.addrs()[0].port();
        assert_eq!(port, 11);

        // a's certificate was replaced: only a is built again, and serves the new one.
        issue(dir.path(), "a.test");
        let s4 = reload(&s3, 11, false);
        assert_eq!((s4.built, kept(&s3, &s4, [0, 1])), (1, [false, true]));
        let (old_key, new_key) = (&s3.hosts[0].certs[0].key, &s4.hosts[0].certs[0].key);
        assert!(!Arc::ptr_eq(old_key, new_key));

        // The same hosts in another order: found by label.
        let s5 = reload(&s4, 11, true);
        assert_eq!((s5.built, kept(&s4, &s5, [1, 0])), (0, [true, true]));
    }
}
