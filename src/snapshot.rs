//! The immutable runtime configuration: everything one connection needs, built once per
//! (re)load and published through a single `ArcSwap`.
//!
//! A connection loads the snapshot once and uses it to the end, so its certificate, ALPN, client
//! auth and backend pool always come from the same configuration. Building one is the expensive
//! part of a reload (`ServerConfig`s, pools) and happens off the accept path; publishing is one
//! pointer store.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use rustls::ServerConfig;

use crate::config::model::ProxyProtocol;
use crate::config::validate::HealthCheck;
use crate::config::{Config, HostConfig, Timeouts};
use crate::tls::certs::LoadedCert;
use crate::tls::names::NameIndex;
use crate::tls::{BuildError, TlsShared};
use crate::upstream::tls::UpstreamTls;
use crate::upstream::{Backend, BackendAddr, BackendState, Pool};

/// One host as served.
#[derive(Debug)]
pub struct Host {
    /// Bounded label for metrics and logs (the first configured name).
    pub label: Arc<str>,
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
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Backends tried per connection.
    pub backend_attempts: usize,
    /// The validated configuration this was built from.
    pub config: Arc<Config>,
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
    /// Builds a snapshot from `config`. Hosts whose files failed keep the certificates they have
    /// in `previous` (marked stale), or are left out. Backend live state is carried over from
    /// `previous` for backends a host keeps.
    pub fn build(
        config: Arc<Config>,
        tls: &TlsShared,
        previous: Option<&Self>,
        generation: u64,
    ) -> (Self, Vec<Skipped>) {
        let old_hosts: HashMap<&str, &Host> = previous
            .map(|p| p.hosts.iter().map(|h| (&*h.label, &**h)).collect())
            .unwrap_or_default();
        let mut names = NameIndex::default();
        let mut hosts = Vec::with_capacity(config.hosts.len());
        let mut skipped = Vec::new();
        let mut default_host = None;
        for (i, host) in config.hosts.iter().enumerate() {
            let old = old_hosts.get(host.label.as_str()).copied();
            match build_host(host, tls, old) {
                Ok(built) => {
                    let index = hosts.len();
                    for name in &host.names {
                        names.insert(name, index);
                    }
                    if config.default_host == Some(i) {
                        default_host = Some(index);
                    }
                    hosts.push(Arc::new(built));
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
            default_host,
            timeouts: config.timeouts,
            backend_attempts: config.backend_attempts,
            config,
        };
        (snapshot, skipped)
    }

    /// The host serving `sni` (or a missing SNI), falling back to the default host.
    pub fn resolve(&self, sni: Option<&str>) -> Option<&Arc<Host>> {
        sni.and_then(|name| self.names.lookup(name))
            .or(self.default_host)
            .map(|i| &self.hosts[i])
    }
}

fn build_host(host: &HostConfig, tls: &TlsShared, old: Option<&Host>) -> Result<Host, SkipReason> {
    let (certs, stale) = match (&host.certs, old) {
        (Some(certs), _) => (certs.clone(), false),
        (None, Some(old)) => (old.certs.clone(), true),
        (None, None) => return Err(SkipReason::NoUsableCertificate),
    };
    let keys = certs.iter().map(|c| Arc::clone(&c.key)).collect();
    let server_config = tls.server_config(host, keys)?;
    let old_states: HashMap<&BackendAddr, &Arc<BackendState>> = old
        .map(|o| {
            o.pool
                .backends()
                .iter()
                .map(|b| (&b.addr, &b.state))
                .collect()
        })
        .unwrap_or_default();
    let backends = host
        .backends
        .iter()
        .map(|b| {
            let state = old_states
                .get(&b.addr)
                .map_or_else(|| Arc::new(resolve_now(&b.addr)), |s| Arc::clone(s));
            Backend::new(b.addr.clone(), b.weight, state)
        })
        .collect::<Vec<_>>();
    let backend_labels = backends
        .iter()
        .map(|b| Arc::from(b.addr.to_string()))
        .collect();
    Ok(Host {
        label: Arc::from(host.label.as_str()),
        tls: server_config,
        pool: Pool::new(backends, host.balance),
        backend_labels,
        proxy_protocol: host.proxy_protocol,
        certs,
        stale,
        health_check: host.health_check,
        upstream_tls: host
            .backend_tls
            .as_ref()
            .map(|settings| UpstreamTls::new(&tls.provider, settings))
            .transpose()?,
        allow: host.allow.clone(),
    })
}

/// State for a new backend; a DNS name is resolved once right away (blocking: snapshots are
/// built off the accept path), so the backend is usable from the first connection. The
/// resolver task keeps it fresh from then on.
fn resolve_now(addr: &BackendAddr) -> BackendState {
    let state = BackendState::default();
    if let BackendAddr::Name { host, port } = addr {
        match crate::upstream::dns::lookup(host, *port) {
            Ok(addrs) => {
                state.set_addrs(addrs);
            }
            Err(e) => {
                tracing::warn!(backend.addr = %addr, error = %e, "backend name does not resolve yet")
            }
        }
    }
    state
}
