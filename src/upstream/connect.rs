//! Connecting to a backend: ask the pool, try the choice under the connect timeout, and on
//! failure mark it down for its cooldown and try the next (a bounded number of times).
//!
//! A connect that fails for a local reason (out of file descriptors, socket buffers or local
//! ports) says nothing about the backend: it is counted as a local error, the backend stays up,
//! and no other backend is tried (it would fail the same way).

use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;
use tokio::time::timeout;

use super::pool::{Backend, PickContext};
use super::state::ActiveGuard;
use crate::metrics::events;
use crate::runtime::Runtime;
use crate::snapshot::{Host, Snapshot};

/// Why no backend connection was made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    /// Every backend is down, or every attempt failed.
    #[error("no backend available")]
    NoneAvailable,
}

/// Connects to a backend of `host` for `client`. Returns the socket, the backend's index in the
/// pool, and a guard counting the connection as active on that backend.
pub(crate) async fn connect(
    rt: &Runtime,
    snapshot: &Snapshot,
    host: &Host,
    client: SocketAddr,
) -> Result<(TcpStream, usize, ActiveGuard), BackendError> {
    let backends = host.pool.backends();
    let attempts = snapshot.backend_attempts.min(backends.len());
    let mut tried = Vec::with_capacity(attempts);
    while tried.len() < attempts {
        let ctx = pick_context(rt, client.ip(), tried.len());
        let Some(index) = host.pool.pick(&ctx, &tried) else {
            break;
        };
        tried.push(index);
        let backend = &backends[index];
        let label = &*host.backend_labels[index];
        match connect_one(rt, snapshot, &host.label, backend, label).await {
            Ok(stream) => return Ok((stream, index, backend.state.track())),
            Err(e) if local_cause(&e).is_some() => break,
            Err(_) => {}
        }
    }
    Err(BackendError::NoneAvailable)
}

/// The moment and client a pick is made for; `salt` varies the random number between attempts.
pub(crate) fn pick_context(rt: &Runtime, client: IpAddr, salt: usize) -> PickContext {
    PickContext {
        client_ip: client,
        now_ms: rt.now_ms(),
        random: std::collections::hash_map::RandomState::new().hash_one(salt),
    }
}

/// One connect attempt to `backend` under the connect timeout. A failure is logged, counted
/// and puts the backend in its cooldown; a success after failures marks it up again.
pub(crate) async fn connect_one(
    rt: &Runtime,
    snapshot: &Snapshot,
    host: &str,
    backend: &Backend,
    label: &str,
) -> std::io::Result<TcpStream> {
    let result = timeout(
        snapshot.timeouts.backend_connect,
        connect_any(&backend.state.addrs()),
    )
    .await
    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
    match result {
        Ok(stream) => {
            let _ = stream.set_nodelay(true);
            if backend.state.mark_ok() {
                events::backend_changed(&rt.metrics, host, label, true);
            }
            Ok(stream)
        }
        Err(e) if let Some(cause) = local_cause(&e) => {
            events::local_error(&rt.metrics, "backend_connect", cause, &e);
            Err(e)
        }
        Err(e) => {
            events::backend_connect_failed(&rt.metrics, host, label, &e);
            let cooldown_ms = snapshot.timeouts.backend_cooldown.as_millis() as u64;
            if backend.state.mark_failed(rt.now_ms(), cooldown_ms) {
                events::backend_changed(&rt.metrics, host, label, false);
            }
            Err(e)
        }
    }
}

/// The bounded name of a local cause of `error`, if it has one: this process or machine ran out
/// of something, and the peer is not to blame.
pub(crate) fn local_cause(error: &std::io::Error) -> Option<&'static str> {
    Some(match error.raw_os_error()? {
        libc::EMFILE => "emfile",
        libc::ENFILE => "enfile",
        libc::ENOBUFS => "enobufs",
        libc::ENOMEM => "enomem",
        libc::EADDRNOTAVAIL => "eaddrnotavail",
        _ => return None,
    })
}

/// Connects to the first of `addrs` that accepts (a DNS name may resolve to several; one
/// refusing address must not fail the backend while another answers).
pub(crate) async fn connect_any(addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(
        std::io::ErrorKind::NotFound,
        "backend name has not resolved yet",
    );
    for &addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            // Another address would fail the same way.
            Err(e) if local_cause(&e).is_some() => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}
