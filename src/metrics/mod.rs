//! Metrics and the log lines that go with them.
//!
//! Each event a user could ask about has one function here that both logs it and counts it, so
//! logs and metrics never disagree. Names live in [`names`]. Label values are bounded: a host
//! label is a configured host's first name, never the client's SNI.
//!
//! Every server instance owns its own Prometheus recorder (used through
//! `metrics::with_local_recorder`) instead of the process-global one, so several servers in one
//! process — as in the test suite — keep separate numbers.

pub mod acme;
pub mod events;
pub mod host;
pub mod http;
pub mod names;
pub mod panics;
pub(crate) mod state;

use std::sync::Arc;

use metrics::{Gauge, counter, gauge};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use names::*;

/// Why a handshake did not complete. The `as_str` values are the metric's `reason` labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The SNI matched no host and there is no default host.
    UnknownSni,
    /// No SNI and no default host.
    NoSni,
    /// The handshake did not finish within the handshake timeout.
    Timeout,
    /// The client sent something that is not a valid TLS handshake.
    Protocol,
    /// Client certificate missing or invalid.
    ClientAuth,
    /// The client address already has `limits.per_client_ip` connections open.
    ClientLimit,
    /// The client's address is not in the host's `allow` list.
    Denied,
    /// No common protocol version, cipher suite, signature scheme or ALPN protocol.
    Incompatible,
    /// The client aborted with an alert (often: it does not trust our certificate).
    ClientAlert,
    /// The connection closed or failed mid-handshake.
    Io,
    /// The server's drain deadline passed before the connection reached its mode.
    Shutdown,
    /// The host's first ACME certificate has not been issued yet.
    CertPending,
    /// An ACME TLS-ALPN-01 validation for a name without a pending challenge.
    AcmeNoChallenge,
}

impl HandshakeFailure {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownSni => "unknown_sni",
            Self::NoSni => "no_sni",
            Self::Timeout => "timeout",
            Self::Protocol => "protocol",
            Self::ClientAuth => "client_auth",
            Self::ClientLimit => "client_limit",
            Self::Denied => "denied",
            Self::Incompatible => "incompatible",
            Self::ClientAlert => "client_alert",
            Self::Io => "io",
            Self::Shutdown => "shutdown",
            Self::CertPending => "cert_pending",
            Self::AcmeNoChallenge => "acme_no_challenge",
        }
    }
}

/// How a connection that reached a host ended: the `outcome` label of
/// `tlsedge_connections_closed_total` and the close line's field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Both sides finished.
    Ok,
    /// No byte either way for `timeouts.idle`.
    IdleTimeout,
    /// One side had closed its half; the other sent nothing for `timeouts.half_closed`.
    HalfClosedTimeout,
    /// Every backend was down or refused.
    NoBackend,
    /// Reading from or writing to the client failed.
    ClientError,
    /// Reading from or writing to the backend failed (or writing the PROXY header to it).
    BackendError,
    /// The TLS handshake with the backend failed.
    BackendTlsError,
    /// The PROXY header for the backend could not be built; the connection is closed rather
    /// than sent without it.
    ProxyHeaderError,
    /// Still open at the drain deadline of a shutdown, and closed.
    DrainTimeout,
}

impl Outcome {
    /// Every outcome, in `as usize` order.
    pub const ALL: [Self; 9] = [
        Self::Ok,
        Self::IdleTimeout,
        Self::HalfClosedTimeout,
        Self::NoBackend,
        Self::ClientError,
        Self::BackendError,
        Self::BackendTlsError,
        Self::ProxyHeaderError,
        Self::DrainTimeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::IdleTimeout => "idle_timeout",
            Self::HalfClosedTimeout => "half_closed_timeout",
            Self::NoBackend => "no_backend",
            Self::ClientError => "client_error",
            Self::BackendError => "backend_error",
            Self::BackendTlsError => "backend_tls_error",
            Self::ProxyHeaderError => "proxy_header_error",
            Self::DrainTimeout => "drain_timeout",
        }
    }
}

/// Histogram buckets for handshake duration, in seconds.
const HANDSHAKE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Histogram buckets for HTTP request duration, in seconds.
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Counts a connection in `tlsedge_connections_active` while it lives.
#[derive(Debug)]
pub struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.active.decrement(1.0);
    }
}

/// One server's metrics registry.
#[derive(Debug)]
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// `tlsedge_connections_active`, registered once: it moves twice per connection.
    active: Gauge,
    /// `tlsedge_http_requests_active`, likewise per request.
    pub(crate) http_active: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric described.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(HANDSHAKE_DURATION.to_owned()),
                HANDSHAKE_BUCKETS,
            )
            .expect("static, non-empty bucket list")
            .set_buckets_for_metric(
                Matcher::Full(HTTP_REQUEST_DURATION.to_owned()),
                REQUEST_BUCKETS,
            )
            .expect("static, non-empty bucket list")
            .build_recorder();
        let handle = recorder.handle();
        let active = metrics::with_local_recorder(&recorder, || gauge!(CONNECTIONS_ACTIVE));
        active.set(0.0);
        let http_active = metrics::with_local_recorder(&recorder, || gauge!(HTTP_REQUESTS_ACTIVE));
        http_active.set(0.0);
        let metrics = Self {
            recorder,
            handle,
            active,
            http_active,
        };
        metrics.with(describe_all);
        metrics
    }

    /// Runs `f` with this server's recorder as the target of `metrics` macros.
    pub fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// The Prometheus text exposition of the event metrics (see [`crate::runtime::Runtime::render_metrics`]
    /// for the full page with state gauges).
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Housekeeping for histograms; call every few seconds.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// A client connection was accepted; it counts as open until the guard drops (also when
    /// its task is cut at the drain deadline).
    pub fn connection_opened(self: &Arc<Self>) -> OpenConnection {
        self.active.increment(1.0);
        OpenConnection(Arc::clone(self))
    }

    /// A configuration load finished with `result` ("applied", "partial", "rejected",
    /// "unchanged").
    pub fn config_reload(&self, result: &'static str) {
        self.with(|| counter!(CONFIG_RELOADS, "result" => result).increment(1));
    }
}
