//! The `http` mode: the decrypted connection is served as HTTP/1.1 or HTTP/2 — chosen by
//! the ALPN the handshake negotiated, never by sniffing — and each request is proxied on its
//! own ([`service`]) to a backend picked per request, over pooled connections ([`client`]).
//!
//! [`serve`] runs one client connection: hyper's server connection plus three watchers — the
//! drain (graceful shutdown: HTTP/2 GOAWAY, idle HTTP/1.1 connections closed, requests in
//! flight finish), the abort at the drain deadline, and the idle timeout (no request in
//! flight for `limits.idle_timeout`). Upgraded requests (WebSocket) are relayed by tasks the
//! connection waits for, so they drain with it.

pub mod activity;
pub mod body;
pub mod client;
mod forward;
pub mod headers;
pub mod redirect;
pub mod service;
pub mod upgrade;

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::header::HeaderValue;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::model::BackendProtocol;
use crate::config::validate::HttpConfig;
use crate::conn::accept::Negotiated;
use crate::conn::{Endpoints, Shutdown};
use crate::metrics::Outcome;
use crate::metrics::events::Closed;
use crate::runtime::Runtime;
use crate::snapshot::{Host, Snapshot};
use crate::upstream::Pool;
use activity::{Activity, Expired, HeadWatch};
use client::Conns;

/// A host's HTTP side, as served: settings, routes and the pooled backend connections.
#[derive(Debug)]
pub struct HttpHost {
    /// The validated settings.
    pub config: Arc<HttpConfig>,
    /// Path-prefix routes, longest prefix first.
    pub routes: Vec<Route>,
    /// Pooled connections of the host's own backends (the default route), parallel to its pool.
    pub conns: Vec<Conns>,
    /// The `Strict-Transport-Security` value, if enabled.
    pub hsts: Option<HeaderValue>,
    /// The default route's metric label.
    pub default_label: Arc<str>,
    /// The host's request metric handles.
    pub metrics: crate::metrics::http::HttpMetrics,
}

impl HttpHost {
    /// The HTTP side of host `label` whose own pool has `backends` backends.
    pub fn new(
        label: &Arc<str>,
        config: Arc<HttpConfig>,
        routes: Vec<Route>,
        backends: usize,
    ) -> Self {
        let hsts = config.hsts.map(|d| headers::hsts_value(d.as_secs()));
        let metrics = crate::metrics::http::HttpMetrics::new(label, routes.len());
        Self {
            metrics,
            config,
            routes,
            conns: (0..backends).map(|_| Conns::default()).collect(),
            hsts,
            default_label: Arc::from("default"),
        }
    }
}

/// One path-prefix route with its own backends.
#[derive(Debug)]
pub struct Route {
    /// The prefix; also the `route` metric label.
    pub prefix: Arc<str>,
    /// Its backends and policy.
    pub pool: Pool,
    /// Backend metric labels, parallel to the pool.
    pub backend_labels: Vec<Arc<str>>,
    /// Pooled connections, parallel to the pool.
    pub conns: Vec<Conns>,
}

impl Route {
    /// A route for `prefix` over `pool`.
    pub fn new(prefix: &str, pool: Pool, backend_labels: Vec<Arc<str>>) -> Self {
        let conns = (0..pool.backends().len())
            .map(|_| Conns::default())
            .collect();
        Self {
            prefix: Arc::from(prefix),
            pool,
            backend_labels,
            conns,
        }
    }
}

/// The ALPN protocols offered to backends over `backend_tls`.
pub fn backend_alpn(protocol: BackendProtocol) -> Vec<&'static [u8]> {
    match protocol {
        BackendProtocol::Http1 => vec![b"http/1.1"],
        BackendProtocol::H2 => vec![b"h2"],
        BackendProtocol::Auto => vec![b"h2", b"http/1.1"],
    }
}

/// What one client connection shares with its requests.
#[derive(Debug)]
pub struct ConnCtx {
    /// The server.
    pub rt: Arc<Runtime>,
    /// The snapshot the connection was accepted with.
    pub snapshot: Arc<Snapshot>,
    /// The host the handshake chose.
    pub host: Arc<Host>,
    /// Its HTTP side.
    pub http: Arc<HttpHost>,
    /// Client and server addresses.
    pub ends: Endpoints,
    /// The handshake, for the request log line.
    pub handshake: crate::metrics::host::Handshake,
    /// The verified client certificate subject, for `client_cert_header`.
    pub client_subject: Option<HeaderValue>,
    /// The client as the forwarding headers write it.
    pub client: headers::Client,
    /// Whether the client may bring its own forwarding headers.
    pub trusted: bool,
    /// Requests in flight and the request-head clock, for the idle and header timeouts.
    pub activity: Arc<Activity>,
    /// Body bytes each way, for the connection's close line.
    pub bytes_in: AtomicU64,
    /// Body bytes from backends to the client.
    pub bytes_out: AtomicU64,
    /// Relays of upgraded requests; the connection ends after them.
    pub upgrades: TaskTracker,
    /// The server's shutdown signals.
    pub shutdown: Shutdown,
}

/// A request in flight (see [`ConnCtx::begin`]).
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// What the mode needs to know about the connection.
#[derive(Debug)]
pub struct Session<'a> {
    /// The host it was routed to.
    pub host: &'a Arc<Host>,
    /// Its HTTP side.
    pub http: &'a Arc<HttpHost>,
    /// The client and server addresses.
    pub ends: Endpoints,
    /// What the handshake settled.
    pub negotiated: &'a Negotiated,
}

/// Serves HTTP on `tls` until the client is done, the idle timeout, or the drain deadline.
pub async fn serve<IO>(
    rt: &Arc<Runtime>,
    snapshot: &Arc<Snapshot>,
    tls: Box<TlsStream<IO>>,
    session: &Session<'_>,
    shutdown: &Shutdown,
) -> Closed
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &session.http.config;
    let client_subject = session.negotiated.client_subject.as_deref();
    let ctx = Arc::new(ConnCtx {
        rt: Arc::clone(rt),
        snapshot: Arc::clone(snapshot),
        host: Arc::clone(session.host),
        http: Arc::clone(session.http),
        ends: session.ends,
        handshake: session.negotiated.handshake,
        client: headers::Client::new(session.ends.client.ip(), session.ends.server.port()),
        client_subject: client_subject.and_then(|s| HeaderValue::from_str(s).ok()),
        trusted: config
            .trusted
            .iter()
            .any(|net| net.contains(&session.ends.client.ip().to_canonical())),
        activity: Arc::new(Activity::new()),
        bytes_in: AtomicU64::new(0),
        bytes_out: AtomicU64::new(0),
        upgrades: TaskTracker::new(),
        shutdown: shutdown.clone(),
    });
    let h2 = session.negotiated.alpn.as_deref() == Some("h2");
    let io = TokioIo::new(HeadWatch::new(tls, Arc::clone(&ctx.activity)));
    let svc = {
        let ctx = Arc::clone(&ctx);
        hyper::service::service_fn(move |req| service::handle(Arc::clone(&ctx), req))
    };
    let limits = &config.limits;
    let outcome = if h2 {
        let exec = SpanExecutor(tracing::Span::current());
        let mut builder = hyper::server::conn::http2::Builder::new(exec);
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_streams)
            .max_pending_accept_reset_streams(limits.h2_max_pending_resets)
            .max_local_error_reset_streams(limits.h2_max_error_resets)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        let conn = builder.serve_connection(io, svc);
        // HTTP/2 frames (pings, settings) flow between requests: only the idle clock applies.
        drive(&ctx, conn, None, |c| c.graceful_shutdown()).await
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            // The header clock is ours (see `activity`): hyper's would also cut idle keep-alive.
            .header_read_timeout(None)
            .max_headers(limits.max_headers)
            .max_header_size(limits.max_header_bytes)
            .max_buf_size(limits.max_header_bytes.max(8192) + 8192);
        let conn = builder.serve_connection(io, svc).with_upgrades();
        let header = Some(limits.header_timeout);
        drive(&ctx, conn, header, |c| c.graceful_shutdown()).await
    };
    Closed {
        outcome,
        bytes_in: ctx.bytes_in.load(Ordering::Relaxed),
        bytes_out: ctx.bytes_out.load(Ordering::Relaxed),
        error: None,
    }
}

/// Polls a server connection to its end while watching the drain, the idle timeout and the
/// abort; then waits for its upgraded relays.
async fn drive<C, E>(
    ctx: &Arc<ConnCtx>,
    conn: C,
    header: Option<std::time::Duration>,
    graceful_shutdown: impl Fn(Pin<&mut C>),
) -> Outcome
where
    C: Future<Output = Result<(), E>>,
    E: std::error::Error + 'static,
{
    let mut conn = pin!(conn);
    let idle = ctx.http.config.limits.idle_timeout;
    let mut outcome = Outcome::Ok;
    let mut closing = false;
    let result = loop {
        tokio::select! {
            biased;
            result = conn.as_mut() => break Some(result),
            () = ctx.shutdown.abort.cancelled() => {
                outcome = Outcome::DrainTimeout;
                break None;
            }
            () = ctx.shutdown.drain.cancelled(), if !closing => {
                closing = true;
                graceful_shutdown(conn.as_mut());
            }
            expired = ctx.activity.expired(idle, header), if !closing => match expired {
                Expired::Idle => {
                    closing = true;
                    outcome = Outcome::IdleTimeout;
                    graceful_shutdown(conn.as_mut());
                }
                Expired::Header => {
                    outcome = crate::metrics::http::header_timeout(&ctx.rt.metrics, &ctx.host.label);
                    break None;
                }
            },
        }
    };
    if let Some(Err(e)) = result {
        outcome = crate::metrics::http::connection_error(&ctx.rt.metrics, &ctx.host.label, &e);
    }
    ctx.upgrades.close();
    tokio::select! {
        () = ctx.upgrades.wait() => {}
        () = ctx.shutdown.abort.cancelled() => outcome = Outcome::DrainTimeout,
    }
    outcome
}

impl ConnCtx {
    /// A request started; it counts as in flight until the guard drops.
    pub fn begin(&self) -> InFlight {
        self.activity.begin();
        InFlight(Arc::clone(&self.activity))
    }
}

/// Spawns HTTP/2 stream tasks inside the connection's span, so their log lines carry the
/// connection's fields.
#[derive(Debug, Clone)]
struct SpanExecutor(tracing::Span);

impl<F> hyper::rt::Executor<F> for SpanExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        // Without a span (its level filtered out) the wrapper would only cost.
        if self.0.is_disabled() {
            tokio::spawn(future);
        } else {
            tokio::spawn(future.instrument(self.0.clone()));
        }
    }
}
