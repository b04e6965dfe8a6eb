//! The `tcp` mode: after the handshake, pick a backend, optionally secure it with TLS and send
//! it a PROXY v2 header, then relay the decrypted byte stream both ways ([`relay`]).
//!
//! [`serve`] returns how the connection ended; the pipeline turns that into the close line and
//! the counters, so every exit path here (no backend, backend TLS failure, header failure, relay
//! end, drain deadline) is reported the same way.

pub mod proxy_header;
pub mod relay;

use std::error::Error;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::config::model::ProxyProtocol;
use crate::conn::Endpoints;
use crate::conn::accept::{ALERT_TIMEOUT, Negotiated};
use crate::metrics::Outcome;
use crate::metrics::events::{self, Closed};
use crate::runtime::Runtime;
use crate::snapshot::{Host, Snapshot};
use crate::upstream::connect::{self as backend, BackendError};
use relay::{RelayEnd, RelayOutcome};

/// What the mode needs to know about the connection.
#[derive(Debug)]
pub struct Session<'a> {
    /// The host it was routed to.
    pub host: &'a Host,
    /// The client and server addresses (the PROXY header's, when one was read).
    pub ends: Endpoints,
    /// What the handshake settled.
    pub negotiated: &'a Negotiated,
}

/// Relays `tls` to a backend of the session's host until either side is done.
pub async fn serve<IO>(
    rt: &Runtime,
    snapshot: &Snapshot,
    mut tls: Box<TlsStream<IO>>,
    session: &Session<'_>,
    abort: &CancellationToken,
) -> Closed
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let host = session.host;
    let header = match host.proxy_protocol {
        None => None,
        Some(ProxyProtocol::V2) => {
            match proxy_header::build(session.ends, tls.get_ref().1, session.negotiated) {
                Ok(header) => Some(header),
                Err(e) => return close_client(&mut tls, Outcome::ProxyHeaderError, Some(e)).await,
            }
        }
    };
    // Boxed: the connect future's state is freed once connected.
    let connected = Box::pin(backend::connect(rt, snapshot, host, session.ends.client)).await;
    let (mut upstream, index, _active) = match connected {
        Ok(found) => found,
        Err(e @ BackendError::NoneAvailable) => {
            return close_client(&mut tls, Outcome::NoBackend, Some(e)).await;
        }
    };
    tracing::Span::current().record("backend.addr", &*host.backend_labels[index]);
    if let Some(header) = header
        && let Err(e) = upstream.write_all(&header).await
    {
        return close_client(&mut tls, Outcome::BackendError, Some(e)).await;
    }
    let quiet = relay::Quiet {
        idle: snapshot.timeouts.idle,
        half_closed: snapshot.timeouts.half_closed,
    };
    let relayed = match &host.upstream_tls {
        None => relay::relay(&mut *tls, &mut upstream, quiet, abort).await,
        Some(upstream_tls) => {
            let backend = &host.pool.backends()[index].addr;
            let secured = timeout(
                snapshot.timeouts.backend_connect,
                Box::pin(upstream_tls.connect(backend, upstream)),
            )
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
            match secured {
                Ok(mut secure) => relay::relay(&mut *tls, &mut *secure, quiet, abort).await,
                Err(e) => {
                    let label = &host.backend_labels[index];
                    events::backend_tls_failed(&rt.metrics, &host.label, label, &e);
                    return close_client(&mut tls, Outcome::BackendTlsError, Some(e)).await;
                }
            }
        }
    };
    relay_end(relayed)
}

/// Closes the client cleanly (close_notify, best effort) after a failure on our side.
async fn close_client<IO, E>(tls: &mut TlsStream<IO>, outcome: Outcome, error: Option<E>) -> Closed
where
    IO: AsyncRead + AsyncWrite + Unpin,
    E: Error + Send + Sync + 'static,
{
    let _ = timeout(ALERT_TIMEOUT, tls.shutdown()).await;
    Closed::new(outcome, error)
}

fn relay_end(relayed: RelayOutcome) -> Closed {
    let (outcome, error) = match relayed.end {
        RelayEnd::Done => (Outcome::Ok, None),
        RelayEnd::IdleTimeout => (Outcome::IdleTimeout, None),
        RelayEnd::HalfClosedTimeout => (Outcome::HalfClosedTimeout, None),
        RelayEnd::Aborted => (Outcome::DrainTimeout, None),
        RelayEnd::Client(e) => (Outcome::ClientError, Some(e)),
        RelayEnd::Backend(e) => (Outcome::BackendError, Some(e)),
    };
    Closed {
        bytes_in: relayed.client_to_backend,
        bytes_out: relayed.backend_to_client,
        ..Closed::new(outcome, error)
    }
}
