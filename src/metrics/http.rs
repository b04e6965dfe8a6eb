//! HTTP-mode events: each function writes the log line and bumps the counters of one event,
//! as [`super::events`] does for connections.
//!
//! Every request ends in one `request` line at info level — the HTTP access log — inside the
//! connection's span (`client.addr`, `tls.sni`, `tls.host`). Its `http.route`, `http.method`
//! and `http.status` fields are the `route`, `method` and `code` labels of
//! `tlsedge_http_requests_total`; label values are bounded (configured routes, the standard
//! methods or `other`, status codes).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use hyper::{Method, Request, StatusCode, Version};
use metrics::{Counter, Histogram, counter, histogram};
use tokio::time::Instant;

use super::Metrics;
use super::names::{
    HTTP_BACKEND_REQUESTS, HTTP_MISDIRECTED, HTTP_PROTOCOL_ERRORS, HTTP_REDIRECTS,
    HTTP_REQUEST_DURATION, HTTP_REQUESTS,
};
use crate::http::ConnCtx;

/// An answer tlsedge gives itself instead of a backend's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The request's host is not served by the connection's host (421).
    Misdirected,
    /// The request body is over `max_body_bytes` (413).
    TooLarge,
    /// The request could not be turned into a backend request (400).
    BadRequest,
    /// No backend is up (503).
    NoBackend,
    /// Connecting to or talking with the backend failed (502).
    BackendError,
    /// The backend did not start its response within `response_timeout` (504).
    BackendTimeout,
}

impl Answer {
    /// The status sent.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::NoBackend => StatusCode::SERVICE_UNAVAILABLE,
            Self::BackendError => StatusCode::BAD_GATEWAY,
            Self::BackendTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The log line's `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Misdirected => "misdirected",
            Self::TooLarge => "body_too_large",
            Self::BadRequest => "bad_request",
            Self::NoBackend => "no_backend",
            Self::BackendError => "backend_error",
            Self::BackendTimeout => "backend_timeout",
        }
    }

    /// The short text body.
    pub fn text(self) -> &'static str {
        match self {
            Self::Misdirected => {
                "421 misdirected request: this connection does not serve that host\n"
            }
            Self::TooLarge => "413 request body too large\n",
            Self::BadRequest => "400 bad request\n",
            Self::NoBackend => "503 no backend available\n",
            Self::BackendError => "502 bad gateway\n",
            Self::BackendTimeout => "504 backend timeout\n",
        }
    }
}

/// What a request's log line and metrics need, gathered as it goes.
#[derive(Debug)]
pub struct RequestDone {
    started: Instant,
    method: &'static str,
    /// The method's slot in [`HttpMetrics`]' keys.
    method_slot: u32,
    /// The request target (cheap to keep: it shares the request's bytes); its path is logged.
    uri: hyper::Uri,
    version: &'static str,
    route: Arc<str>,
    /// The route's slot: 0 for the default route, `i + 1` for `routes[i]`.
    route_slot: u32,
    /// The request id, if enabled.
    pub request_id: Option<String>,
    /// The backend it went to.
    pub backend: Option<Arc<str>>,
    /// Request body bytes passed to the backend.
    pub bytes_in: Arc<AtomicU64>,
    /// The status sent to the client.
    pub status: u16,
    /// Set when tlsedge answered itself.
    pub answer: Option<Answer>,
}

impl RequestDone {
    /// Starts the record of `req` on the route labelled `route` in slot `route_slot` (counted
    /// as active from now).
    pub fn start<B>(ctx: &ConnCtx, req: &Request<B>, route: &Arc<str>, route_slot: u32) -> Self {
        ctx.rt.metrics.http_active.increment(1.0);
        let method_slot = method_slot(req.method());
        Self {
            started: Instant::now(),
            method: METHOD_NAMES[method_slot as usize],
            method_slot,
            uri: req.uri().clone(),
            version: version_label(req.version()),
            route: Arc::clone(route),
            route_slot,
            request_id: None,
            backend: None,
            bytes_in: Arc::new(AtomicU64::new(0)),
            status: 0,
            answer: None,
        }
    }
}

/// Longest path logged.
const MAX_LOGGED_PATH: usize = 256;

/// The `method` labels: the standard methods, then `other`.
const METHOD_NAMES: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "other",
];

/// The slot of a method's label in [`METHOD_NAMES`].
fn method_slot(method: &Method) -> u32 {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    STANDARD
        .iter()
        .position(|m| m == method)
        .map_or(STANDARD.len() as u32, |i| i as u32)
}

/// The first `max` bytes of `path`, cut at a character boundary.
fn bounded(path: &str, max: usize) -> &str {
    let mut end = path.len().min(max);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

fn version_label(version: Version) -> &'static str {
    match version {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_09 => "HTTP/0.9",
        _ => "HTTP/1.1",
    }
}

/// A request ended: `complete` when the whole response reached the client.
pub fn request_done(ctx: &ConnCtx, done: &RequestDone, complete: bool, bytes_out: u64) {
    let m = &ctx.rt.metrics;
    m.http_active.decrement(1.0);
    let seconds = done.started.elapsed().as_secs_f64();
    let handles = &ctx.http.metrics;
    handles.request(m, done).increment(1);
    handles.duration(m, done).record(seconds);
    tracing::info!(
        request.id = done.request_id.as_deref(),
        http.method = done.method,
        http.path = bounded(done.uri.path(), MAX_LOGGED_PATH),
        http.version = done.version,
        http.route = &*done.route,
        http.status = done.status,
        reason = done.answer.map(Answer::as_str),
        complete,
        backend.addr = done.backend.as_deref(),
        bytes.client_to_backend = done.bytes_in.load(Ordering::Relaxed),
        bytes.backend_to_client = bytes_out,
        duration_ms = (seconds * 1000.0) as u64,
        tls.version = ctx.handshake.version,
        tls.resumed = ctx.handshake.resumed,
        "request"
    );
}

/// The `code` label: statuses are numbers from 100 to 999, a bounded set; two pseudo
/// statuses name a backend request that got no answer.
fn status_label(status: u16) -> String {
    match status {
        BACKEND_ERROR => "error".to_owned(),
        BACKEND_TIMEOUT => "timeout".to_owned(),
        status => status.to_string(),
    }
}

/// The `code` of a backend request that failed before its response head.
const BACKEND_ERROR: u16 = 0;
/// The `code` of a backend request that timed out.
const BACKEND_TIMEOUT: u16 = 1;

/// One HTTP host's metric handles, registered on first use and then found by a small integer
/// key, so a request neither builds label sets nor hashes label strings.
#[derive(Debug)]
pub struct HttpMetrics {
    host: Arc<str>,
    /// `(route slot, method slot, status)` → `tlsedge_http_requests_total`.
    requests: RwLock<HashMap<u64, Counter>>,
    /// Per route slot: `tlsedge_http_request_duration_seconds`.
    durations: Vec<OnceLock<Histogram>>,
    /// `(backend label, code)` → `tlsedge_http_backend_requests_total`.
    backends: RwLock<HashMap<(Arc<str>, u16), Counter>>,
}

impl HttpMetrics {
    /// Handles for host `host` with `routes` prefix routes (registered on first use).
    pub fn new(host: &Arc<str>, routes: usize) -> Self {
        Self {
            host: Arc::clone(host),
            requests: RwLock::default(),
            durations: (0..=routes).map(|_| OnceLock::new()).collect(),
            backends: RwLock::default(),
        }
    }

    fn request(&self, m: &Metrics, done: &RequestDone) -> Counter {
        let key = u64::from(done.route_slot) << 32
            | u64::from(done.method_slot) << 16
            | u64::from(done.status);
        cached(&self.requests, key, || {
            m.with(|| {
                counter!(HTTP_REQUESTS, "host" => Arc::clone(&self.host),
                    "route" => Arc::clone(&done.route), "method" => done.method,
                    "code" => status_label(done.status))
            })
        })
    }

    fn duration(&self, m: &Metrics, done: &RequestDone) -> &Histogram {
        let slot = (done.route_slot as usize).min(self.durations.len() - 1);
        self.durations[slot].get_or_init(|| {
            m.with(|| {
                histogram!(HTTP_REQUEST_DURATION, "host" => Arc::clone(&self.host),
                    "route" => Arc::clone(&done.route))
            })
        })
    }

    fn backend(&self, m: &Metrics, backend: &Arc<str>, code: u16) -> Counter {
        let key = (Arc::clone(backend), code);
        cached(&self.backends, key, || {
            m.with(|| {
                counter!(HTTP_BACKEND_REQUESTS, "host" => Arc::clone(&self.host),
                    "backend" => Arc::clone(backend), "code" => status_label(code))
            })
        })
    }
}

/// The handle under `key`, registered by `make` the first time. (A poisoned lock only means
/// a panic elsewhere mid-insert; the map is still sound.)
fn cached<K: std::hash::Hash + Eq>(
    map: &RwLock<HashMap<K, Counter>>,
    key: K,
    make: impl FnOnce() -> Counter,
) -> Counter {
    if let Some(counter) = map
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
    {
        return counter.clone();
    }
    let mut map = map
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    map.entry(key).or_insert_with(make).clone()
}

/// A request named a host this connection does not serve.
pub fn misdirected(m: &Metrics, host: &Arc<str>) {
    m.with(|| counter!(HTTP_MISDIRECTED, "host" => Arc::clone(host)).increment(1));
}

/// A backend answered with `status`.
pub fn backend_answered(ctx: &ConnCtx, backend: &Arc<str>, status: u16) {
    let m = &ctx.rt.metrics;
    ctx.http.metrics.backend(m, backend, status).increment(1);
}

/// A request to a backend failed before its response head (the connection broke, or the
/// backend's answer was not HTTP).
pub fn backend_request_failed(ctx: &ConnCtx, backend: &Arc<str>, error: &hyper::Error) {
    tracing::warn!(backend.addr = &**backend, error = %error, "backend request failed");
    let m = &ctx.rt.metrics;
    ctx.http
        .metrics
        .backend(m, backend, BACKEND_ERROR)
        .increment(1);
}

/// A backend did not start its response within `response_timeout`.
pub fn backend_timed_out(ctx: &ConnCtx, backend: &Arc<str>) {
    tracing::warn!(backend.addr = &**backend, "backend response timed out");
    let m = &ctx.rt.metrics;
    ctx.http
        .metrics
        .backend(m, backend, BACKEND_TIMEOUT)
        .increment(1);
}

/// A client connection ended with an HTTP protocol error (bad request line, header timeout,
/// too many or too large headers, an HTTP/2 protocol violation). hyper has answered 400 or
/// 431 already where HTTP/1.1 allows it.
pub fn connection_error(
    m: &Metrics,
    host: &Arc<str>,
    error: &(dyn std::error::Error + 'static),
) -> super::Outcome {
    let reason = protocol_error_reason(error);
    tracing::info!(reason, error = %error, "HTTP connection error");
    m.with(|| {
        counter!(HTTP_PROTOCOL_ERRORS, "host" => Arc::clone(host), "reason" => reason).increment(1)
    });
    super::Outcome::ClientError
}

/// A client began a request head and did not finish it within `header_timeout` (a slowloris
/// client, or a stalled one): its connection is closed.
pub fn header_timeout(m: &Metrics, host: &Arc<str>) -> super::Outcome {
    let reason = "header_timeout";
    tracing::info!(
        reason,
        "HTTP request head not complete in time, connection closed"
    );
    m.with(|| {
        counter!(HTTP_PROTOCOL_ERRORS, "host" => Arc::clone(host), "reason" => reason).increment(1)
    });
    super::Outcome::ClientError
}

fn protocol_error_reason(error: &(dyn std::error::Error + 'static)) -> &'static str {
    match error.downcast_ref::<hyper::Error>() {
        Some(e) if e.is_timeout() => "header_timeout",
        Some(e) if e.is_parse_too_large() => "headers_too_large",
        Some(e) if e.is_parse() => "malformed",
        Some(e) if e.is_incomplete_message() => "incomplete",
        _ => "other",
    }
}

/// A request on a redirect listener: `redirected` to https, or `unknown_host` (404).
pub fn redirect(m: &Metrics, result: &'static str) {
    m.with(|| counter!(HTTP_REDIRECTS, "result" => result).increment(1));
}
