//! One client connection: read the ClientHello, pick the host by SNI, finish the handshake with
//! that host's prebuilt `ServerConfig`, connect a backend, relay, and log one line at close.
//!
//! The snapshot is loaded once at the start, so everything this connection does comes from one
//! configuration even if a reload lands midway.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::server::Acceptor;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::Instrument;

use super::relay::{RelayEnd, RelayOutcome, relay};
use crate::metrics::{HandshakeFailure, HandshakeInfo};
use crate::runtime::Runtime as Shared;
use crate::snapshot::{Host, Snapshot};
use crate::upstream::connect::{self as backend, BackendError};

/// A TLS alert record: fatal `unrecognized_name` (RFC 6066), sent in plaintext before any
/// ServerHello when the SNI matches no host.
const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];
/// A fatal `access_denied` alert, for clients outside a host's `allow` list.
const ACCESS_DENIED_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31];

/// Serves one accepted client connection to its end.
pub(crate) async fn serve(shared: Arc<Shared>, stream: TcpStream, client: SocketAddr) {
    let snapshot = shared.snapshot.load_full();
    let span = tracing::debug_span!("conn", client.addr = %client);
    async move {
        shared.metrics.connection_opened();
        // The handshake and the backend connect run in boxed futures: their state (several
        // KiB) is freed when they finish instead of sizing the task for its whole life, which
        // is mostly spent idle in the relay.
        let handshake = Box::pin(handshake(&shared, &snapshot, stream, client));
        if let Some((tls, host, info)) = handshake.await {
            proxy(&shared, &snapshot, tls, &host, client, info).await;
        }
        shared.metrics.connection_closed();
    }
    .instrument(span)
    .await;
}

/// What the close log line reports about the handshake.
struct Negotiated {
    version: &'static str,
    resumed: bool,
    sni: Option<String>,
}

async fn handshake(
    shared: &Shared,
    snapshot: &Snapshot,
    stream: TcpStream,
    client: SocketAddr,
) -> Option<(Box<TlsStream<TcpStream>>, Arc<Host>, Negotiated)> {
    let started = Instant::now();
    // One deadline for the whole handshake: ClientHello and the rest share the budget.
    let deadline = started + snapshot.timeouts.handshake;
    let fail = |reason, detail: &str| shared.metrics.handshake_failed(client, reason, detail);
    let hello = match timeout_at(
        deadline,
        LazyConfigAcceptor::new(Acceptor::default(), stream),
    )
    .await
    {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => {
            fail(classify(&e), &e.to_string());
            return None;
        }
        Err(_) => {
            fail(HandshakeFailure::Timeout, "no ClientHello in time");
            return None;
        }
    };
    let sni = hello.client_hello().server_name().map(str::to_owned);
    let Some(host) = snapshot.host_for(sni.as_deref()).cloned() else {
        let reason = match sni {
            Some(_) => HandshakeFailure::UnknownSni,
            None => HandshakeFailure::NoSni,
        };
        // The raw name stays out of metrics; it is only logged at debug.
        fail(reason, sni.as_deref().unwrap_or(""));
        let mut io = hello.io;
        let _ = timeout(ALERT_TIMEOUT, io.write_all(&UNRECOGNIZED_NAME_ALERT)).await;
        return None;
    };
    if !host.allows(client.ip()) {
        fail(HandshakeFailure::Denied, &host.label);
        let mut io = hello.io;
        let _ = timeout(ALERT_TIMEOUT, io.write_all(&ACCESS_DENIED_ALERT)).await;
        return None;
    }
    let tls = match timeout_at(deadline, hello.into_stream(Arc::clone(&host.tls))).await {
        // Boxed: the stream (over 1 KiB) is then one allocation, not a field of every future
        // it passes through.
        Ok(Ok(tls)) => Box::new(tls),
        Ok(Err(e)) => {
            fail(classify(&e), &e.to_string());
            return None;
        }
        Err(_) => {
            fail(HandshakeFailure::Timeout, "handshake not finished in time");
            return None;
        }
    };
    let conn = tls.get_ref().1;
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "other",
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str())
        .unwrap_or("unknown");
    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    shared.metrics.handshake_ok(&HandshakeInfo {
        host: &host.label,
        version,
        cipher,
        resumed,
        duration: started.elapsed(),
    });
    let negotiated = Negotiated {
        version,
        resumed,
        sni,
    };
    Some((tls, host, negotiated))
}

/// How long we try to deliver an alert to a client we are refusing.
const ALERT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Maps a handshake error to its bounded failure reason.
fn classify(error: &std::io::Error) -> HandshakeFailure {
    use rustls::Error as E;
    let tls = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(E::NoCertificatesPresented | E::InvalidCertificate(_)) => HandshakeFailure::ClientAuth,
        Some(E::PeerIncompatible(_) | E::NoApplicationProtocol) => HandshakeFailure::Incompatible,
        Some(E::AlertReceived(_)) => HandshakeFailure::ClientAlert,
        Some(_) => HandshakeFailure::Protocol,
        None if error.kind() == std::io::ErrorKind::InvalidData => HandshakeFailure::Protocol,
        None => HandshakeFailure::Io,
    }
}

async fn proxy(
    shared: &Shared,
    snapshot: &Snapshot,
    mut tls: Box<TlsStream<TcpStream>>,
    host: &Host,
    client: SocketAddr,
    negotiated: Negotiated,
) {
    let started = Instant::now();
    shared.metrics.routed(&host.label);
    let connected = Box::pin(backend::connect(shared, snapshot, host, client)).await;
    let (mut upstream, index, _active) = match connected {
        Ok(found) => found,
        Err(e @ BackendError::NoneAvailable) => {
            tracing::warn!(tls.host = &*host.label, error = %e, "no backend for client");
            shared.metrics.proxied(&host.label, "no_backend", 0, 0);
            let _ = timeout(ALERT_TIMEOUT, tls.shutdown()).await;
            return;
        }
    };
    if let Some(header) = super::proxy_header::build(host, client, &tls, negotiated.sni.as_deref())
        && let Err(e) = upstream.write_all(&header).await
    {
        shared.metrics.proxied(&host.label, "backend_error", 0, 0);
        tracing::debug!(error = %e, "writing PROXY header failed");
        return;
    }
    let Some(outcome) = relay_to_backend(shared, snapshot, &mut tls, host, index, upstream).await
    else {
        return;
    };
    let (label, error) = match &outcome.end {
        RelayEnd::Done => ("ok", None),
        RelayEnd::IdleTimeout => ("idle_timeout", None),
        RelayEnd::Client(e) => ("client_error", Some(e)),
        RelayEnd::Backend(e) => ("backend_error", Some(e)),
    };
    shared.metrics.proxied(
        &host.label,
        label,
        outcome.client_to_backend,
        outcome.backend_to_client,
    );
    tracing::info!(
        client.addr = %client,
        tls.host = &*host.label,
        tls.version = negotiated.version,
        tls.resumed = negotiated.resumed,
        backend.addr = &*host.backend_labels[index],
        bytes.client_to_backend = outcome.client_to_backend,
        bytes.backend_to_client = outcome.backend_to_client,
        duration_ms = started.elapsed().as_millis() as u64,
        outcome = label,
        error = error.map(tracing::field::display),
        "connection closed"
    );
}

/// Relays between the client and the backend, first securing the backend connection with TLS
/// when the host asks for it. `None` when that handshake failed (counted, client closed).
async fn relay_to_backend(
    shared: &Shared,
    snapshot: &Snapshot,
    tls: &mut TlsStream<TcpStream>,
    host: &Host,
    index: usize,
    mut upstream: TcpStream,
) -> Option<RelayOutcome> {
    let idle = snapshot.timeouts.idle;
    let Some(upstream_tls) = &host.upstream_tls else {
        return Some(relay(tls, &mut upstream, idle).await);
    };
    let backend = &host.pool.backends()[index].addr;
    let secured = timeout(
        snapshot.timeouts.backend_connect,
        Box::pin(upstream_tls.connect(backend, upstream)),
    )
    .await
    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
    match secured {
        Ok(mut secure) => Some(relay(tls, &mut *secure, idle).await),
        Err(e) => {
            let label = &host.backend_labels[index];
            shared.metrics.backend_tls_failed(&host.label, label, &e);
            shared
                .metrics
                .proxied(&host.label, "backend_tls_error", 0, 0);
            let _ = timeout(ALERT_TIMEOUT, tls.shutdown()).await;
            None
        }
    }
}
