//! Connection events: each function here writes the log line and bumps the counters of one
//! event, so logs and metrics never disagree.
//!
//! Every connection ends with exactly one `connection closed` line at info level — the access
//! log — whichever stage it ended in. The span around it carries `client.addr` (the PROXY
//! header's address when there is one), `tls.sni`, `tls.host` and `backend.addr` as far as they
//! became known. The line's own `outcome` and `reason` fields are the values of the metric
//! labels of the same names; its `tls.host` is the `host` label.

use std::error::Error;
use std::num::NonZeroU32;
use std::time::Duration;

use metrics::counter;

use std::net::SocketAddr;

use super::names::{
    ACCEPT_ERRORS, BACKEND_CONNECT_ERRORS, BACKEND_STATE_CHANGES, BACKEND_TLS_ERRORS,
    HANDSHAKE_FAILURES, HEALTH_CHECK_FAILURES, LOCAL_ERRORS, PROXY_PROTOCOL_ERRORS, RESOLVE_ERRORS,
    UPGRADES,
};
use super::{HandshakeFailure, Metrics, Outcome};
use crate::conn::accept::{Negotiated, Refusal};
use crate::conn::proxy_protocol::ProxyError;
use crate::snapshot::Host;

/// How a connection that reached a host ended.
#[derive(Debug)]
pub struct Closed {
    /// The outcome label.
    pub outcome: Outcome,
    /// Plaintext bytes from the client to the backend.
    pub bytes_in: u64,
    /// Bytes from the backend to the client.
    pub bytes_out: u64,
    /// What failed, if anything.
    pub error: Option<Box<dyn Error + Send + Sync>>,
}

impl Closed {
    /// An end with no bytes moved.
    pub fn new<E: Error + Send + Sync + 'static>(outcome: Outcome, error: Option<E>) -> Self {
        Self {
            outcome,
            bytes_in: 0,
            bytes_out: 0,
            error: error.map(|e| Box::new(e) as _),
        }
    }
}

/// A handshake completed: counted by version, cipher and resumption, timed.
pub fn handshake_done(m: &Metrics, host: &Host, negotiated: &Negotiated) {
    host.metrics
        .handshake(m, negotiated.handshake, negotiated.took.as_secs_f64());
    host.metrics.routed(m);
}

/// A connection that reached a host ended, `open_for` after it was accepted: the access log
/// line.
pub fn closed(m: &Metrics, host: &Host, negotiated: &Negotiated, end: &Closed, open_for: Duration) {
    host.metrics
        .closed(m, end.outcome, end.bytes_in, end.bytes_out);
    let hs = &negotiated.handshake;
    tracing::info!(
        outcome = end.outcome.as_str(),
        tls.version = hs.version,
        tls.cipher = hs.cipher(),
        tls.group = hs.group(),
        tls.resumed = hs.resumed,
        tls.alpn = negotiated.alpn.as_deref(),
        tls.client_subject = negotiated.client_subject.as_deref(),
        handshake_ms = millis(negotiated.took),
        duration_ms = millis(open_for),
        bytes.client_to_backend = end.bytes_in,
        bytes.backend_to_client = end.bytes_out,
        error = end.error.as_ref().map(tracing::field::display),
        "connection closed"
    );
}

/// A connection was refused before or during its handshake.
pub fn refused(m: &Metrics, refusal: &Refusal) {
    let reason = refusal.reason.as_str();
    if refusal.reason == HandshakeFailure::CertPending {
        // Said once per host when it is found without a certificate (`acme::pending`), not
        // for every client that tries it meanwhile.
        tracing::debug!(
            outcome = "handshake_failed",
            reason,
            detail = refusal.detail,
            "connection closed"
        );
    } else {
        tracing::info!(
            outcome = "handshake_failed",
            reason,
            detail = refusal.detail,
            "connection closed"
        );
    }
    m.with(|| counter!(HANDSHAKE_FAILURES, "reason" => reason).increment(1));
}

/// The client address already had `limit` connections open.
pub fn client_over_limit(m: &Metrics, limit: NonZeroU32) {
    let reason = HandshakeFailure::ClientLimit.as_str();
    tracing::info!(
        outcome = "handshake_failed",
        reason,
        limit = limit.get(),
        "connection closed"
    );
    m.with(|| counter!(HANDSHAKE_FAILURES, "reason" => reason).increment(1));
}

/// The PROXY header was missing, malformed, late, or from an untrusted peer.
pub fn proxy_protocol_failed(m: &Metrics, error: &ProxyError) {
    let reason = error.reason();
    tracing::info!(
        outcome = "proxy_protocol_error",
        reason,
        error = %error,
        "connection closed"
    );
    m.with(|| counter!(PROXY_PROTOCOL_ERRORS, "reason" => reason).increment(1));
}

/// A connection still in its handshake (or connecting its backend) at the drain deadline was
/// closed.
pub fn cut_at_drain_deadline(m: &Metrics) {
    let reason = HandshakeFailure::Shutdown.as_str();
    tracing::info!(
        outcome = Outcome::DrainTimeout.as_str(),
        reason,
        "connection closed"
    );
    m.with(|| counter!(HANDSHAKE_FAILURES, "reason" => reason).increment(1));
}

// Backend and listener events.

/// A connect to a backend failed.
pub fn backend_connect_failed(m: &Metrics, host: &str, backend: &str, error: &std::io::Error) {
    tracing::warn!(tls.host = host, backend.addr = backend, error = %error, "backend connect failed");
    count_backend(m, BACKEND_CONNECT_ERRORS, host, backend);
}

/// An operation failed for a local reason (`cause`, e.g. `emfile`): no backend is blamed.
pub fn local_error(m: &Metrics, during: &'static str, cause: &'static str, error: &std::io::Error) {
    tracing::warn!(during, cause, error = %error, "out of a local resource; no backend is blamed");
    m.with(|| counter!(LOCAL_ERRORS, "during" => during, "cause" => cause).increment(1));
}

/// The TLS handshake with a backend failed (bad certificate, wrong name, not TLS, ...).
pub fn backend_tls_failed(m: &Metrics, host: &str, backend: &str, error: &std::io::Error) {
    tracing::warn!(tls.host = host, backend.addr = backend, error = %error, "backend TLS handshake failed");
    count_backend(m, BACKEND_TLS_ERRORS, host, backend);
}

/// A backend's DNS name failed to resolve; its last good addresses stay in use.
pub fn resolve_failed(m: &Metrics, host: &str, backend: &str, error: &std::io::Error) {
    tracing::warn!(tls.host = host, backend.addr = backend, error = %error, "backend name lookup failed");
    count_backend(m, RESOLVE_ERRORS, host, backend);
}

/// An active health probe of a backend failed (the transition, if any, is logged by
/// [`backend_changed`]).
pub fn health_check_failed(m: &Metrics, host: &str, backend: &str, error: &std::io::Error) {
    tracing::debug!(tls.host = host, backend.addr = backend, error = %error, "health probe failed");
    count_backend(m, HEALTH_CHECK_FAILURES, host, backend);
}

/// Counts one event of a backend-labelled counter.
fn count_backend(m: &Metrics, metric: &'static str, host: &str, backend: &str) {
    m.with(|| {
        counter!(metric, "host" => host.to_owned(), "backend" => backend.to_owned()).increment(1);
    });
}

/// A backend became usable again, or was marked down (its cooldown, or failed health checks).
/// Counted per direction; its `tlsedge_backend_up` gauge is rendered from the live state at
/// scrape time.
pub fn backend_changed(m: &Metrics, host: &str, backend: &str, up: bool) {
    let state = if up { "up" } else { "down" };
    m.with(|| {
        counter!(BACKEND_STATE_CHANGES, "host" => host.to_owned(),
            "backend" => backend.to_owned(), "state" => state)
        .increment(1);
    });
    if up {
        tracing::info!(tls.host = host, backend.addr = backend, "backend up");
    } else {
        tracing::warn!(
            tls.host = host,
            backend.addr = backend,
            "backend marked down"
        );
    }
}

/// An accept() call failed (e.g. EMFILE); the listener backs off.
pub fn accept_failed(m: &Metrics, listener: SocketAddr, error: &std::io::Error) {
    tracing::warn!(listener.addr = %listener, error = %error, "accept failed, backing off");
    m.with(|| counter!(ACCEPT_ERRORS).increment(1));
}

/// A successor took over the listening sockets: this process drains and exits.
pub fn upgrade_handed_over(m: &Metrics, socket: &std::path::Path) {
    tracing::info!(upgrade.socket = %socket.display(), "upgrade: the new process took over the sockets; draining");
    m.with(|| counter!(UPGRADES, "result" => "completed").increment(1));
}

/// A successor went away, or never said it was ready: this process keeps serving.
pub fn upgrade_aborted(m: &Metrics, socket: &std::path::Path, error: &std::io::Error) {
    tracing::warn!(upgrade.socket = %socket.display(), error = %error, "upgrade aborted; still serving");
    m.with(|| counter!(UPGRADES, "result" => "aborted").increment(1));
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
