//! The start-time part of a configuration: what is bound when the process starts — the
//! sockets, the connection semaphore, the session cache and ticket timing, the reload watcher's
//! timing — and so cannot change on reload.
//!
//! Keeping it in one [`StartConfig`] makes "does this edit need a restart?" one comparison; a
//! reload that finds a difference keeps the running values and names each differing setting
//! ([`StartConfig::changed`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::Validator;
use super::acme::AcmeConfig;
use super::bounds::{self, DAY, WEEK, Zero};
use crate::config::model::{RawConfig, RawListener, RawProxyInput};
use crate::config::problem::Issue;

/// Everything bound at start; a reload that changes any of it keeps the running values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartConfig {
    /// TLS listeners, in file order.
    pub listeners: Vec<ListenerConfig>,
    /// Plain HTTP listeners that redirect to https.
    pub http_listeners: Vec<SocketAddr>,
    /// Admin listener address, if enabled.
    pub admin: Option<SocketAddr>,
    /// Whole-proxy connection limit (the accept semaphore).
    pub max_connections: usize,
    /// Session cache size and ticket timing.
    pub sessions: Sessions,
    /// Reload timing (the watcher task and the DNS refresh task read it once).
    pub reload: Reload,
    /// The ACME client's settings, if enabled.
    pub acme: Option<AcmeConfig>,
    /// The upgrade hand-over socket, if enabled (resolved against the config's directory).
    pub upgrade_socket: Option<PathBuf>,
}

/// One TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// The address to bind.
    pub addr: SocketAddr,
    /// PROXY protocol input, if enabled.
    pub proxy_protocol: Option<ProxyInput>,
}

/// PROXY protocol (v1 or v2) accepted from load balancers in front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyInput {
    /// Peers allowed to send the header (never empty).
    pub trusted: Vec<IpNet>,
    /// How long a connection may take to send its header.
    pub timeout: Duration,
}

/// Typed session resumption settings that are fixed at start. The ticket key *file* is
/// reloadable: see [`super::Config::ticket_key_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sessions {
    /// TLS 1.2 session-ID cache entries.
    pub cache_size: usize,
    /// Key rotation period (in memory; or the fleet's, with a key file).
    pub ticket_rotate_every: Duration,
    /// How long a new key from the key file only decrypts.
    pub ticket_key_grace: Duration,
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

impl StartConfig {
    /// The settings, by their name in the file (`reload.debounce`), whose value differs between
    /// `self` and `other`, in file order.
    pub fn changed(&self, other: &Self) -> Vec<&'static str> {
        // Destructured, so that a field added to these structs cannot be forgotten here.
        let Self {
            listeners,
            http_listeners,
            admin,
            max_connections,
            sessions,
            reload,
            acme,
            upgrade_socket,
        } = self;
        let Sessions {
            cache_size,
            ticket_rotate_every,
            ticket_key_grace,
            ticket_lifetime,
        } = sessions;
        let Reload {
            watch,
            debounce,
            max_delay,
            recheck_every,
            dns_refresh,
        } = reload;
        let (os, or) = (&other.sessions, &other.reload);
        [
            ("listeners", *listeners != other.listeners),
            ("http_listeners", *http_listeners != other.http_listeners),
            ("admin.bind", *admin != other.admin),
            (
                "limits.max_connections",
                *max_connections != other.max_connections,
            ),
            ("sessions.cache_size", *cache_size != os.cache_size),
            (
                "sessions.ticket_rotate_every",
                *ticket_rotate_every != os.ticket_rotate_every,
            ),
            (
                "sessions.ticket_key_grace",
                *ticket_key_grace != os.ticket_key_grace,
            ),
            (
                "sessions.ticket_lifetime",
                *ticket_lifetime != os.ticket_lifetime,
            ),
            ("reload.watch", *watch != or.watch),
            ("reload.debounce", *debounce != or.debounce),
            ("reload.max_delay", *max_delay != or.max_delay),
            ("reload.recheck_every", *recheck_every != or.recheck_every),
            ("reload.dns_refresh", *dns_refresh != or.dns_refresh),
            ("acme", *acme != other.acme),
            ("upgrade.socket", *upgrade_socket != other.upgrade_socket),
        ]
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect()
    }
}

impl Validator<'_> {
    /// Validates the start-time settings of `raw`.
    pub(super) fn start(&mut self, raw: &RawConfig) -> StartConfig {
        let listeners = self.listeners(&raw.listeners);
        let admin = raw
            .admin
            .bind
            .as_deref()
            .and_then(|b| self.addr("admin.bind".into(), b));
        if let Some(addr) = admin
            && let Some(other) = listeners
                .iter()
                .position(|l| l.addr == addr && addr.port() != 0)
        {
            self.error("admin.bind", Issue::DuplicateListener { addr, other });
        }
        let http_listeners = self.http_listeners(raw, &listeners, admin);
        let acme = self.acme(raw, http_listeners.len());
        let max_connections = raw.limits.max_connections;
        let max = bounds::MAX_CONNECTIONS as u64;
        self.count(
            "limits.max_connections",
            max_connections as u64,
            Zero::Refused,
            max,
        );
        StartConfig {
            listeners,
            http_listeners,
            admin,
            max_connections,
            sessions: self.sessions(raw),
            reload: self.reload(raw),
            acme,
            upgrade_socket: raw.upgrade.socket.as_ref().map(|p| self.base.join(p)),
        }
    }

    fn listeners(&mut self, raw: &[RawListener]) -> Vec<ListenerConfig> {
        if raw.is_empty() {
            self.error("listeners", Issue::Empty);
        }
        let mut listeners = Vec::with_capacity(raw.len());
        let mut seen = HashMap::new();
        for (i, listener) in raw.iter().enumerate() {
            let (bind, place, proxy) = match listener {
                RawListener::Addr(bind) => (bind, format!("listeners[{i}]"), None),
                RawListener::Object(object) => (
                    &object.bind,
                    format!("listeners[{i}].bind"),
                    object.proxy_protocol.as_ref(),
                ),
            };
            let addr = self.addr(place.clone(), bind);
            let proxy_protocol =
                proxy.map(|p| self.proxy_input(&format!("listeners[{i}].proxy_protocol"), p));
            let Some(addr) = addr else { continue };
            // Port 0 asks for an ephemeral port: two such listeners do not collide.
            if addr.port() != 0
                && let Some(&other) = seen.get(&addr)
            {
                self.error(place, Issue::DuplicateListener { addr, other });
            }
            seen.entry(addr).or_insert(i);
            listeners.push(ListenerConfig {
                addr,
                proxy_protocol,
            });
        }
        listeners
    }

    /// The redirect listeners: addresses used by no TLS or admin listener.
    fn http_listeners(
        &mut self,
        raw: &RawConfig,
        tls: &[ListenerConfig],
        admin: Option<SocketAddr>,
    ) -> Vec<SocketAddr> {
        let mut bound: Vec<SocketAddr> = tls.iter().map(|l| l.addr).chain(admin).collect();
        let mut addrs = Vec::with_capacity(raw.http_listeners.len());
        for (i, text) in raw.http_listeners.iter().enumerate() {
            let place = format!("http_listeners[{i}]");
            let Some(addr) = self.addr(place.clone(), text) else {
                continue;
            };
            if addr.port() != 0
                && let Some(other) = bound.iter().position(|a| *a == addr)
            {
                self.error(place, Issue::DuplicateListener { addr, other });
            }
            bound.push(addr);
            addrs.push(addr);
        }
        addrs
    }

    fn proxy_input(&mut self, at: &str, raw: &RawProxyInput) -> ProxyInput {
        if raw.trusted.is_empty() {
            self.error(format!("{at}.trusted"), Issue::NoTrustedProxies);
        }
        let trusted = self.nets(&format!("{at}.trusted"), &raw.trusted);
        let timeout = raw.timeout;
        self.duration(format!("{at}.timeout"), timeout, Zero::Refused, DAY);
        ProxyInput { trusted, timeout }
    }

    fn sessions(&mut self, raw: &RawConfig) -> Sessions {
        let s = &raw.sessions;
        if s.ticket_lifetime.is_zero() || s.ticket_lifetime > DAY {
            self.error("sessions.ticket_lifetime", Issue::TicketLifetime);
        }
        let rotate = s.ticket_rotate_every;
        if self.duration("sessions.ticket_rotate_every", rotate, Zero::Refused, WEEK) {
            let keys = (s.ticket_lifetime.as_millis() / rotate.as_millis().max(1)) as u64 + 1;
            if keys > bounds::MAX_TICKET_KEYS {
                let issue = Issue::TicketKeysPileUp {
                    rotate,
                    lifetime: s.ticket_lifetime,
                    keys,
                    max: bounds::MAX_TICKET_KEYS,
                };
                self.error("sessions.ticket_rotate_every", issue);
            }
        }
        // Zero is accepted as before: the cache then holds a single entry.
        let max = bounds::MAX_CACHE_SIZE as u64;
        self.count(
            "sessions.cache_size",
            s.cache_size as u64,
            Zero::Allowed,
            max,
        );
        self.duration(
            "sessions.ticket_key_grace",
            s.ticket_key_grace,
            Zero::Allowed,
            DAY,
        );
        Sessions {
            cache_size: s.cache_size,
            ticket_rotate_every: rotate,
            ticket_key_grace: s.ticket_key_grace,
            ticket_lifetime: s.ticket_lifetime,
        }
    }

    fn reload(&mut self, raw: &RawConfig) -> Reload {
        let r = &raw.reload;
        for (field, value, zero) in [
            ("reload.debounce", r.debounce, Zero::Allowed),
            ("reload.max_delay", r.max_delay, Zero::Allowed),
            ("reload.recheck_every", r.recheck_every, Zero::Refused),
            ("reload.dns_refresh", r.dns_refresh, Zero::Refused),
        ] {
            self.duration(field, value, zero, DAY);
        }
        Reload {
            watch: r.watch,
            debounce: r.debounce,
            max_delay: r.max_delay.max(r.debounce),
            recheck_every: r.recheck_every,
            dns_refresh: r.dns_refresh,
        }
    }
}
