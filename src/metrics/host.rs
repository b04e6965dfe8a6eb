//! Per-host metric handles: the series a connection touches on its way (handshakes, handshake
//! duration, connections, outcomes, bytes), registered once per host and then reused, so the
//! data path neither allocates label strings nor looks up the registry per connection.
//!
//! Each series is registered the first time it is used (a host that never sees TLS 1.2 gets no
//! TLS 1.2 series), then it is an index into a fixed array. A snapshot's hosts each own one
//! [`HostMetrics`]; a reload building the same host again registers the same series (same
//! labels), so counts continue.

use std::sync::OnceLock;

use metrics::{Counter, Histogram, counter, histogram};
use rustls::{CipherSuite, NamedGroup};

use super::names::*;
use super::{Metrics, Outcome};

/// The cipher suites the provider can negotiate, in label order; anything else is "other".
const SUITES: [CipherSuite; 9] = [
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];
/// Slots per resumption state: the known suites and "other".
const SUITE_SLOTS: usize = SUITES.len() + 1;

/// The key exchange groups the provider can negotiate, in label order; then "other" and "none".
const GROUPS: [NamedGroup; 4] = [
    NamedGroup::X25519MLKEM768,
    NamedGroup::X25519,
    NamedGroup::secp256r1,
    NamedGroup::secp384r1,
];

/// What a completed handshake is counted by.
#[derive(Debug, Clone, Copy)]
pub struct Handshake {
    /// The negotiated suite.
    pub suite: CipherSuite,
    /// "TLSv1.3" or "TLSv1.2".
    pub version: &'static str,
    /// Whether the session was resumed.
    pub resumed: bool,
    /// The key exchange group, if one was used (a resumed TLS 1.2 session has none).
    pub group: Option<NamedGroup>,
}

impl Handshake {
    /// The suite's IANA name, the `cipher` label.
    pub fn cipher(&self) -> &'static str {
        self.suite.as_str().unwrap_or("other")
    }

    /// The group's name, the `group` label (and `tls.group` in the access log).
    pub fn group(&self) -> &'static str {
        match self.group {
            Some(group) => group.as_str().unwrap_or("other"),
            None => "none",
        }
    }

    fn group_slot(&self) -> usize {
        match self.group {
            Some(group) => GROUPS
                .iter()
                .position(|g| *g == group)
                .unwrap_or(GROUPS.len()),
            None => GROUPS.len() + 1,
        }
    }
}

/// One host's handles.
#[derive(Debug)]
pub struct HostMetrics {
    host: String,
    handshakes: [[OnceLock<Counter>; SUITE_SLOTS]; 2],
    groups: [OnceLock<Counter>; GROUPS.len() + 2],
    durations: [[OnceLock<Histogram>; 2]; 2],
    connections: OnceLock<Counter>,
    closed: [OnceLock<Counter>; Outcome::ALL.len()],
    bytes_in: OnceLock<Counter>,
    bytes_out: OnceLock<Counter>,
}

impl HostMetrics {
    /// Handles for the host labelled `host` (registered on first use).
    pub fn new(host: &str) -> Self {
        Self {
            host: host.to_owned(),
            handshakes: Default::default(),
            groups: Default::default(),
            durations: Default::default(),
            connections: OnceLock::new(),
            closed: Default::default(),
            bytes_in: OnceLock::new(),
            bytes_out: OnceLock::new(),
        }
    }

    /// Counts a completed handshake and records how long it took.
    pub fn handshake(&self, m: &Metrics, hs: Handshake, seconds: f64) {
        let slot = SUITES.iter().position(|s| *s == hs.suite);
        let resumed = usize::from(hs.resumed);
        let resumed_label = if hs.resumed { "true" } else { "false" };
        let counter = &self.handshakes[resumed][slot.unwrap_or(SUITES.len())];
        let counter = counter.get_or_init(|| {
            m.with(|| {
                counter!(HANDSHAKES, "host" => self.host.clone(), "version" => hs.version,
                    "cipher" => hs.cipher(), "resumed" => resumed_label)
            })
        });
        counter.increment(1);
        let group =
            || counter!(HANDSHAKE_GROUPS, "host" => self.host.clone(), "group" => hs.group());
        registered(&self.groups[hs.group_slot()], m, group).increment(1);
        let tls13 = usize::from(hs.version == "TLSv1.3");
        let histogram = self.durations[tls13][resumed].get_or_init(|| {
            m.with(|| {
                histogram!(HANDSHAKE_DURATION, "host" => self.host.clone(),
                    "version" => hs.version, "resumed" => resumed_label)
            })
        });
        histogram.record(seconds);
    }

    /// Counts a connection routed to this host (at the handshake's end).
    pub fn routed(&self, m: &Metrics) {
        let make = || counter!(CONNECTIONS, "host" => self.host.clone());
        registered(&self.connections, m, make).increment(1);
    }

    /// Counts a connection of this host that ended with `outcome` after moving these bytes.
    pub fn closed(&self, m: &Metrics, outcome: Outcome, bytes_in: u64, bytes_out: u64) {
        let closed = || counter!(CONNECTIONS_CLOSED, "host" => self.host.clone(), "outcome" => outcome.as_str());
        registered(&self.closed[outcome as usize], m, closed).increment(1);
        // Registered even at zero bytes, so both directions always show.
        let up =
            || counter!(BYTES, "host" => self.host.clone(), "direction" => "client_to_backend");
        registered(&self.bytes_in, m, up).increment(bytes_in);
        let down =
            || counter!(BYTES, "host" => self.host.clone(), "direction" => "backend_to_client");
        registered(&self.bytes_out, m, down).increment(bytes_out);
    }
}

/// The handle in `cell`, registered in `m` by `make` on first use.
fn registered<'a>(
    cell: &'a OnceLock<Counter>,
    m: &Metrics,
    make: impl FnOnce() -> Counter,
) -> &'a Counter {
    cell.get_or_init(|| m.with(make))
}
