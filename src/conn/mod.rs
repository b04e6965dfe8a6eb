//! One client connection, as a pipeline of small stages that reads top to bottom:
//!
//! 1. PROXY header, on listeners behind a load balancer ([`proxy_protocol`]): the client
//!    address becomes the header's;
//! 2. per-client limit ([`client_limit`]): the connection over `limits.per_client_ip` is
//!    closed before it costs a handshake;
//! 3. ClientHello → route (SNI lookup, allow list) → handshake, all under one deadline
//!    ([`accept`]);
//!    An ACME TLS-ALPN-01 validation ends here, answered with its challenge certificate;
//! 4. dispatch on the host's mode: `tcp`, the L4 relay ([`crate::l4`]), or `http`, HTTP/1.1
//!    and HTTP/2 proxying ([`crate::http`]).
//!
//! The snapshot is loaded once, at the start: everything this connection does comes from one
//! configuration even if a reload lands midway. [`serve`] is generic over the stream, so the
//! whole pipeline runs over `tokio::io::duplex` in tests. Every connection ends with exactly one
//! close line ([`crate::metrics::events`]), whichever stage it ended in.

pub mod accept;
pub mod client_limit;
pub(crate) mod listener;
pub mod proxy_protocol;
pub mod rewind;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::field::{Empty, display};

use crate::config::ProxyInput;
use crate::metrics::events;
use crate::runtime::Runtime;
use crate::snapshot::{Host, Mode, Snapshot};
use rewind::Rewind;

/// A listener's settings that its connections need.
#[derive(Debug)]
pub struct ListenerInfo {
    /// The bound address.
    pub addr: SocketAddr,
    /// PROXY protocol input, when a load balancer is in front.
    pub proxy_protocol: Option<ProxyInput>,
    /// What the listener serves.
    pub kind: ListenerKind,
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// TLS: the connection pipeline.
    Tls,
    /// Plain HTTP answering with redirects to https on `https_port`.
    Redirect {
        /// The port the redirects point to.
        https_port: u16,
    },
}

/// What is known about a connection before a byte is read.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer: the client, or the load balancer in front.
    pub peer: SocketAddr,
    /// Our address the peer connected to.
    pub local: SocketAddr,
    /// The listener it came in on.
    pub listener: Arc<ListenerInfo>,
}

/// Both ends of the connection as the client sees them: the socket's, or the PROXY header's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// The client.
    pub client: SocketAddr,
    /// The address the client connected to.
    pub server: SocketAddr,
}

/// How a server's shutdown reaches a connection.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled when draining starts: a mode may finish early (HTTP/2 GOAWAY); the L4 relay
    /// keeps relaying, since it cannot tell a safe moment to cut a byte stream.
    pub drain: CancellationToken,
    /// Cancelled at the drain deadline: whatever is still open is closed, with a close line.
    pub abort: CancellationToken,
}

/// Serves one accepted connection to its end.
pub async fn serve<IO>(rt: Arc<Runtime>, io: IO, info: ConnInfo, shutdown: Shutdown)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let snapshot = rt.snapshot.load_full();
    let span = tracing::info_span!(
        "conn",
        client.addr = %info.peer,
        tls.sni = Empty,
        tls.host = Empty,
        backend.addr = Empty,
    );
    let _open = rt.metrics.connection_opened();
    async {
        // The pipeline is polled first, so a relay that sees the abort itself reports its
        // byte counts; a connection still in an earlier stage is cut here. (It is created in
        // here, not before: a future moved into the block would be stored twice in the task.)
        tokio::select! {
            biased;
            () = pipeline(&rt, &snapshot, io, &info, &shutdown) => {}
            () = shutdown.abort.cancelled() => events::cut_at_drain_deadline(&rt.metrics),
        }
    }
    .instrument(span)
    .await;
}

async fn pipeline<IO>(
    rt: &Arc<Runtime>,
    snapshot: &Arc<Snapshot>,
    io: IO,
    info: &ConnInfo,
    shutdown: &Shutdown,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = Instant::now();
    // One deadline for everything before the first application byte.
    let deadline = started + snapshot.timeouts.handshake;
    let socket = Endpoints {
        client: info.peer,
        server: info.local,
    };
    let (io, ends) = match &info.listener.proxy_protocol {
        None => (Rewind::new(io), socket),
        Some(input) => match proxy_protocol::read(io, input, socket, deadline).await {
            Ok((io, ends)) => {
                tracing::Span::current().record("client.addr", display(ends.client));
                (io, ends)
            }
            Err(e) => return events::proxy_protocol_failed(&rt.metrics, &e),
        },
    };
    let _slot = match snapshot.per_client_ip {
        None => None,
        Some(limit) => match rt.client_limits.admit(ends.client.ip(), limit) {
            Some(slot) => Some(slot),
            None => return events::client_over_limit(&rt.metrics, limit),
        },
    };
    // The TLS stages run in one boxed future: their state (the ClientHello alone is 1.4 KiB) is
    // freed when they finish instead of sizing the task for its whole life, which is mostly
    // spent idle in a mode.
    let client = ends.client.ip();
    let tls_stages = accept::tls(snapshot, &rt.challenges, io, client, started, deadline);
    let (host, tls, negotiated) = match Box::pin(tls_stages).await {
        Ok(accept::Accepted::Host(host, tls, negotiated)) => (host, tls, negotiated),
        Ok(accept::Accepted::AcmeValidation(name)) => {
            return crate::metrics::acme::challenge_answered(&rt.metrics, "tls-alpn-01", &name);
        }
        Err(refusal) => return events::refused(&rt.metrics, &refusal),
    };
    events::handshake_done(&rt.metrics, &host, &negotiated);
    let end = dispatch(rt, snapshot, &host, tls, ends, &negotiated, shutdown).await;
    events::closed(&rt.metrics, &host, &negotiated, &end, started.elapsed());
}

/// The last stage: hand the decrypted connection to the host's mode.
async fn dispatch<IO>(
    rt: &Arc<Runtime>,
    snapshot: &Arc<Snapshot>,
    host: &Arc<Host>,
    tls: Box<tokio_rustls::server::TlsStream<Rewind<IO>>>,
    ends: Endpoints,
    negotiated: &accept::Negotiated,
    shutdown: &Shutdown,
) -> events::Closed
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match &host.mode {
        Mode::Http(http) => {
            let session = crate::http::Session {
                host,
                http,
                ends,
                negotiated,
            };
            // Boxed: hyper's connection state is large, and only HTTP hosts need it.
            Box::pin(crate::http::serve(rt, snapshot, tls, &session, shutdown)).await
        }
        Mode::Tcp => {
            let session = crate::l4::Session {
                host,
                ends,
                negotiated,
            };
            crate::l4::serve(rt, snapshot, tls, &session, &shutdown.abort).await
        }
    }
}

#[cfg(test)]
mod tests;
