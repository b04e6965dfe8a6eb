//! Connecting to a backend: ask the pool, try the choice under the connect timeout, and on
//! failure mark it down for its cooldown and try the next (a bounded number of times).

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
        if let Ok(stream) = connect_one(rt, snapshot, &host.label, backend, label).await {
            return Ok((stream, index, backend.state.track()));
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
            Err(e) => last = e,
        }
    }
    Err(last)
}
