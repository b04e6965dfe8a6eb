//! The accept loop: one per listening socket. A connection needs a permit from the shared
//! semaphore (the `max_connections` limit) before it is accepted, so excess clients wait in the
//! kernel's backlog instead of costing memory here. Each accepted socket becomes one task that
//! runs [`super::serve`] with the connection's [`ConnInfo`].

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ConnInfo, ListenerInfo, ListenerKind, Shutdown};
use crate::metrics::events;
use crate::runtime::Runtime;

/// The longest pause after repeated accept failures (e.g. out of file descriptors).
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Tokens that steer a listener's life.
#[derive(Debug, Clone)]
pub(crate) struct Lifecycle {
    /// Cancelled to stop accepting.
    pub(crate) stop_accepting: CancellationToken,
    /// Cancelled when the drain deadline passes: open connections are closed.
    pub(crate) abort: CancellationToken,
    /// Tracks connection tasks, to wait for them while draining.
    pub(crate) tasks: TaskTracker,
}

/// Accepts until `stop_accepting` is cancelled.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    info: Arc<ListenerInfo>,
    rt: Arc<Runtime>,
    limit: Arc<Semaphore>,
    life: Lifecycle,
) {
    let local = info.addr;
    let shutdown = Shutdown {
        drain: life.stop_accepting.clone(),
        abort: life.abort.clone(),
    };
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            () = life.stop_accepting.cancelled() => break,
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = life.stop_accepting.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            // The client gave up before we accepted: nothing to back off from.
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                events::accept_failed(&rt.metrics, local, &e);
                tokio::select! {
                    () = life.stop_accepting.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(5);
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo {
            peer,
            // A wildcard listener's connections each have their own local address.
            local: if local.ip().is_unspecified() {
                stream.local_addr().unwrap_or(local)
            } else {
                local
            },
            listener: Arc::clone(&info),
        };
        let rt = Arc::clone(&rt);
        let shutdown = shutdown.clone();
        life.tasks.spawn(async move {
            match conn.listener.kind {
                ListenerKind::Tls => super::serve(rt, stream, conn, shutdown).await,
                ListenerKind::Redirect { https_port } => {
                    crate::http::redirect::serve(rt, stream, https_port, shutdown).await;
                }
            }
            drop(permit);
        });
    }
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}
