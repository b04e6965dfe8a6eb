//! Connections to HTTP backends, pooled per backend and reused across client connections.
//!
//! HTTP/1.1 connections carry one request at a time: a finished one goes back to its
//! backend's idle list, and a request takes the most recently used idle one that is still
//! open and younger than `backend_idle` (so it is never one a backend is about to close). An
//! HTTP/2 connection is shared by every request to its backend while it stays open.
//!
//! Built on hyper's connection-level client (`hyper::client::conn`) rather than a ready-made
//! pooled client, because the balancer — not the request's authority — decides which backend
//! a request goes to, and the request keeps its own `Host`/`:authority`.

use std::sync::Mutex;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::body::ProxyBody;

/// Idle HTTP/1.1 connections kept per backend; more are closed when they come back.
const MAX_IDLE_PER_BACKEND: usize = 256;

/// A stream to a backend: TCP, or TLS over TCP.
pub trait BackendIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> BackendIo for T {}

/// A connection's request sender.
#[derive(Debug)]
pub enum Sender {
    /// HTTP/1.1: one request at a time; back to the pool after a complete response.
    H1(http1::SendRequest<ProxyBody>),
    /// HTTP/2: shared.
    H2(http2::SendRequest<ProxyBody>),
}

impl Sender {
    /// Sends `req`. When the request was not sent at all (the connection was closing), the
    /// error gives it back, so it can go to another connection.
    pub async fn send(
        &mut self,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<ProxyBody>>> {
        match self {
            Self::H1(s) => s.try_send_request(req).await,
            Self::H2(s) => s.try_send_request(req).await,
        }
    }

    /// The HTTP version of requests on this connection.
    pub fn version(&self) -> hyper::Version {
        match self {
            Self::H1(_) => hyper::Version::HTTP_11,
            Self::H2(_) => hyper::Version::HTTP_2,
        }
    }
}

/// One backend's open connections.
#[derive(Debug, Default)]
pub struct Conns {
    idle: Mutex<Vec<(http1::SendRequest<ProxyBody>, Instant)>>,
    shared: Mutex<Option<http2::SendRequest<ProxyBody>>>,
}

impl Conns {
    /// A ready connection from the pool: the shared HTTP/2 one, else the most recent idle
    /// HTTP/1.1 one not older than `max_idle`. `None`: connect a new one.
    pub async fn checkout(&self, max_idle: Duration) -> Option<Sender> {
        let shared = self
            .lock_shared()
            .as_ref()
            .filter(|s| !s.is_closed())
            .cloned();
        if let Some(mut h2) = shared {
            if h2.ready().await.is_ok() {
                return Some(Sender::H2(h2));
            }
            self.lock_shared().take();
        }
        loop {
            let (mut h1, since) = self.lock_idle().pop()?;
            if since.elapsed() >= max_idle || h1.is_closed() {
                // The older ones behind it are older still.
                self.lock_idle().clear();
                return None;
            }
            // Ready once the connection has finished the previous exchange; an error means
            // the backend closed it meanwhile.
            if h1.ready().await.is_ok() {
                return Some(Sender::H1(h1));
            }
        }
    }

    /// Gives back an HTTP/1.1 connection after a complete exchange.
    pub fn checkin(&self, sender: http1::SendRequest<ProxyBody>) {
        let mut idle = self.lock_idle();
        if idle.len() < MAX_IDLE_PER_BACKEND && !sender.is_closed() {
            idle.push((sender, Instant::now()));
        }
    }

    /// Closes idle HTTP/1.1 connections older than `max_idle` (and forgets a closed HTTP/2 one),
    /// so a backend never sees a connection of ours sit idle past its own keep-alive timeout.
    pub fn sweep(&self, max_idle: Duration) {
        // Oldest first: the list is in check-in order.
        let mut idle = self.lock_idle();
        let expired = idle
            .iter()
            .position(|(_, since)| since.elapsed() < max_idle)
            .unwrap_or(idle.len());
        idle.drain(..expired);
        drop(idle);
        let mut shared = self.lock_shared();
        if shared.as_ref().is_some_and(http2::SendRequest::is_closed) {
            *shared = None;
        }
    }

    /// Keeps a new HTTP/2 connection for every request to this backend.
    fn share(&self, sender: &http2::SendRequest<ProxyBody>) {
        *self.lock_shared() = Some(sender.clone());
    }

    // A poisoned lock only means a panic elsewhere mid-push; the list itself is still sound.
    fn lock_idle(
        &self,
    ) -> std::sync::MutexGuard<'_, Vec<(http1::SendRequest<ProxyBody>, Instant)>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_shared(&self) -> std::sync::MutexGuard<'_, Option<http2::SendRequest<ProxyBody>>> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs the HTTP handshake on a new stream to this backend (HTTP/2 when `h2`), spawns the
    /// connection's task and returns its sender.
    pub async fn handshake(&self, io: impl BackendIo, h2: bool) -> Result<Sender, hyper::Error> {
        let io = TokioIo::new(io);
        if h2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "backend HTTP/2 connection ended");
                }
            });
            self.share(&sender);
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = http1::Builder::new().handshake(io).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "backend HTTP/1.1 connection ended");
                }
            });
            Ok(Sender::H1(sender))
        }
    }
}

/// Sends one request on a new connection over `io` and returns the response head (for the
/// HTTP health probe); the connection closes when the response is dropped.
pub async fn one_request(
    io: impl BackendIo,
    h2: bool,
    req: Request<ProxyBody>,
) -> Result<Response<Incoming>, hyper::Error> {
    let conns = Conns::default();
    let mut sender = conns.handshake(io, h2).await?;
    sender.send(req).await.map_err(TrySendError::into_error)
}

/// How often idle backend connections are looked at.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// Closes expired idle backend connections of every HTTP host, until aborted. (Connections
/// of an older snapshot close when it is dropped.)
pub(crate) async fn sweep_idle(rt: std::sync::Arc<crate::runtime::Runtime>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let snapshot = rt.snapshot.load_full();
        for host in snapshot.http.iter().map(|&i| &snapshot.hosts[i]) {
            if let crate::snapshot::Mode::Http(http) = &host.mode {
                let max_idle = http.config.backend_idle;
                let routes = http.routes.iter().flat_map(|r| &r.conns);
                for conns in http.conns.iter().chain(routes) {
                    conns.sweep(max_idle);
                }
            }
        }
    }
}
