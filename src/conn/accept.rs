//! The TLS stages of the pipeline: read the ClientHello, route it to a host (SNI lookup, allow
//! list), and finish the handshake with that host's prebuilt `ServerConfig`, all under the one
//! handshake deadline. An ACME TLS-ALPN-01 validation (a ClientHello offering only
//! `acme-tls/1`) is answered here with its challenge certificate and goes no further.
//!
//! Each stage either hands the connection on or returns a [`Refusal`]: the bounded reason, a
//! detail for the log line, and the alert to send, if any.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, StartHandshake};

use crate::acme::challenges::{self, Challenges};
use crate::metrics::HandshakeFailure;
use crate::metrics::host::Handshake;
use crate::snapshot::{Host, Snapshot};

/// A TLS alert record: fatal `unrecognized_name` (RFC 6066), sent in plaintext before any
/// ServerHello when the SNI matches no host.
const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];
/// A fatal `handshake_failure` alert, for a host that has no certificate yet (ACME pending).
const HANDSHAKE_FAILURE_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];
/// A fatal `access_denied` alert, for clients outside a host's `allow` list.
const ACCESS_DENIED_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31];
/// How long we try to deliver an alert to a client we are refusing.
pub(crate) const ALERT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a connection was refused before or during its handshake.
#[derive(Debug)]
pub struct Refusal {
    /// The bounded reason (a metric label).
    pub reason: HandshakeFailure,
    /// What happened, for the log line only (may hold client input such as the SNI).
    pub detail: String,
}

impl Refusal {
    fn new(reason: HandshakeFailure, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// What the handshake settled, for metrics and the close line.
#[derive(Debug)]
pub struct Negotiated {
    /// Version, suite and resumption.
    pub handshake: Handshake,
    /// The ALPN protocol chosen, one of the host's configured ones.
    pub alpn: Option<Arc<str>>,
    /// The subject of the verified client certificate (mutual TLS only).
    pub client_subject: Option<String>,
    /// From accept to the end of the handshake.
    pub took: Duration,
}

/// What the TLS stages end in.
#[derive(Debug)]
pub enum Accepted<IO> {
    /// A finished handshake with one of the hosts: on to its mode.
    Host(Arc<Host>, Box<TlsStream<IO>>, Negotiated),
    /// An ACME TLS-ALPN-01 validation of this name, answered: the connection is done.
    AcmeValidation(String),
}

/// The TLS stages in order: ClientHello, route, handshake. A ClientHello that is an ACME
/// TLS-ALPN-01 validation is answered from `challenges` instead. The span's `tls.sni` and
/// `tls.host` are recorded as they become known.
pub async fn tls<IO>(
    snapshot: &Snapshot,
    challenges: &Challenges,
    io: IO,
    client: IpAddr,
    started: Instant,
    deadline: Instant,
) -> Result<Accepted<IO>, Refusal>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut hello = client_hello(io, deadline).await?;
    if let Some(sni) = hello.client_hello().server_name() {
        tracing::Span::current().record("tls.sni", sni);
    }
    if challenges::is_validation(&hello.client_hello()) {
        return acme_validation(challenges, hello, deadline)
            .await
            .map(Accepted::AcmeValidation);
    }
    let host = route(snapshot, &mut hello, client).await?;
    tracing::Span::current().record("tls.host", &*host.label);
    let (tls, negotiated) = handshake(hello, &host, started, deadline).await?;
    Ok(Accepted::Host(host, tls, negotiated))
}

/// Answers a TLS-ALPN-01 validation with the challenge certificate of its name, then closes.
/// A name without a pending challenge is refused.
async fn acme_validation<IO>(
    challenges: &Challenges,
    mut hello: StartHandshake<IO>,
    deadline: Instant,
) -> Result<String, Refusal>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let name = hello.client_hello().server_name().map(str::to_owned);
    let config = match name.as_deref() {
        Some(name) => timeout_at(deadline, challenges.tls_alpn(name))
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let (Some(name), Some(config)) = (name.clone(), config) else {
        send_alert(&mut hello, &UNRECOGNIZED_NAME_ALERT).await;
        let detail = name.unwrap_or_default();
        return Err(Refusal::new(HandshakeFailure::AcmeNoChallenge, detail));
    };
    let mut tls = match timeout_at(deadline, hello.into_stream(config)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(Refusal::new(classify(&e), e.to_string())),
        Err(_) => {
            let detail = "validation handshake not finished in time";
            return Err(Refusal::new(HandshakeFailure::Timeout, detail));
        }
    };
    let _ = timeout(ALERT_TIMEOUT, tls.shutdown()).await;
    Ok(name)
}

/// Reads the ClientHello.
pub async fn client_hello<IO>(io: IO, deadline: Instant) -> Result<StartHandshake<IO>, Refusal>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match timeout_at(deadline, LazyConfigAcceptor::new(Acceptor::default(), io)).await {
        Ok(Ok(start)) => Ok(start),
        Ok(Err(e)) => Err(Refusal::new(classify(&e), e.to_string())),
        Err(_) => Err(Refusal::new(
            HandshakeFailure::Timeout,
            "no ClientHello in time",
        )),
    }
}

/// Picks the host for the ClientHello and checks the client may use it. A refused client is
/// sent the matching alert.
pub async fn route<IO>(
    snapshot: &Snapshot,
    hello: &mut StartHandshake<IO>,
    client: IpAddr,
) -> Result<Arc<Host>, Refusal>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let found = {
        let client_hello = hello.client_hello();
        let sni = client_hello.server_name();
        let pending = sni.and_then(|name| snapshot.pending_for(name));
        match snapshot.host_for(sni) {
            _ if let Some(label) = pending => {
                Err(Refusal::new(HandshakeFailure::CertPending, &**label))
            }
            Some(host) => Ok(Arc::clone(host)),
            None if sni.is_some() => Err(Refusal::new(
                HandshakeFailure::UnknownSni,
                sni.unwrap_or_default(),
            )),
            None => Err(Refusal::new(HandshakeFailure::NoSni, "")),
        }
    };
    let host = match found {
        Ok(host) => host,
        Err(refusal) => {
            let alert = match refusal.reason {
                HandshakeFailure::CertPending => &HANDSHAKE_FAILURE_ALERT,
                _ => &UNRECOGNIZED_NAME_ALERT,
            };
            send_alert(hello, alert).await;
            return Err(refusal);
        }
    };
    if !host.allows(client) {
        send_alert(hello, &ACCESS_DENIED_ALERT).await;
        return Err(Refusal::new(HandshakeFailure::Denied, &*host.label));
    }
    Ok(host)
}

async fn send_alert<IO: AsyncRead + AsyncWrite + Unpin>(
    hello: &mut StartHandshake<IO>,
    alert: &[u8],
) {
    // Best effort: the client may already be gone.
    let _ = timeout(ALERT_TIMEOUT, hello.io.write_all(alert)).await;
}

/// Finishes the handshake with the host's configuration.
pub async fn handshake<IO>(
    hello: StartHandshake<IO>,
    host: &Host,
    started: Instant,
    deadline: Instant,
) -> Result<(Box<TlsStream<IO>>, Negotiated), Refusal>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let tls = match timeout_at(deadline, hello.into_stream(Arc::clone(&host.tls))).await {
        // Boxed: the stream (over 1 KiB) is then one allocation, not a field of every future
        // it passes through.
        Ok(Ok(tls)) => Box::new(tls),
        Ok(Err(e)) => return Err(Refusal::new(classify(&e), e.to_string())),
        Err(_) => {
            return Err(Refusal::new(
                HandshakeFailure::Timeout,
                "handshake not finished in time",
            ));
        }
    };
    let conn = tls.get_ref().1;
    let handshake = Handshake {
        suite: conn
            .negotiated_cipher_suite()
            .map_or(rustls::CipherSuite::Unknown(0), |s| s.suite()),
        version: match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "other",
        },
        resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        group: conn.negotiated_key_exchange_group().map(|g| g.name()),
    };
    let negotiated = Negotiated {
        handshake,
        alpn: conn.alpn_protocol().and_then(|p| host.alpn_label(p)),
        client_subject: conn
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|leaf| crate::tls::certs::subject(leaf)),
        took: started.elapsed(),
    };
    Ok((tls, negotiated))
}

/// Maps a handshake error to its bounded failure reason.
fn classify(error: &io::Error) -> HandshakeFailure {
    use rustls::Error as E;
    let tls = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(E::NoCertificatesPresented | E::InvalidCertificate(_)) => HandshakeFailure::ClientAuth,
        Some(E::PeerIncompatible(_) | E::NoApplicationProtocol) => HandshakeFailure::Incompatible,
        Some(E::AlertReceived(_)) => HandshakeFailure::ClientAlert,
        Some(_) => HandshakeFailure::Protocol,
        None if error.kind() == io::ErrorKind::InvalidData => HandshakeFailure::Protocol,
        None => HandshakeFailure::Io,
    }
}
