//! One proxied request, top to bottom: route by path → check the request's host against the
//! handshake's (421) → limits (413) → rewrite headers → pick a backend and send, retrying a
//! request that was never sent → rewrite the response → stream it back. Every request ends
//! in one log line and its metrics ([`crate::metrics::http`]), whether a backend answered or
//! tlsedge did.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery};
use hyper::{Request, Response, StatusCode, Version};
use tokio::time::{Instant, timeout};

use super::body::{self, ProxyBody, RequestBody, ResponseBody};
use super::client::Sender;
use super::forward::{Outgoing, send};
use super::headers;
use super::{ConnCtx, InFlight};
use crate::metrics::http::{self as events, Answer, RequestDone};
use crate::upstream::Pool;

/// Which of the host's routes a request took.
#[derive(Debug, Clone, Copy)]
pub(super) enum RouteId {
    /// The host's own backends.
    Default,
    /// `routes[i]`.
    Prefix(usize),
}

/// A route's parts, borrowed from the host.
pub(super) struct RouteRef<'a> {
    pub(super) label: &'a Arc<str>,
    pub(super) pool: &'a Pool,
    pub(super) labels: &'a [Arc<str>],
    pub(super) conns: &'a [super::client::Conns],
}

pub(super) fn route_ref(ctx: &ConnCtx, id: RouteId) -> RouteRef<'_> {
    match id {
        RouteId::Default => RouteRef {
            label: &ctx.http.default_label,
            pool: &ctx.host.pool,
            labels: &ctx.host.backend_labels,
            conns: &ctx.http.conns,
        },
        RouteId::Prefix(i) => {
            let route = &ctx.http.routes[i];
            RouteRef {
                label: &route.prefix,
                pool: &route.pool,
                labels: &route.backend_labels,
                conns: &route.conns,
            }
        }
    }
}

/// The longest route prefix matching `path` (routes are sorted longest first).
fn route_for(ctx: &ConnCtx, path: &str) -> RouteId {
    ctx.http
        .routes
        .iter()
        .position(|r| path.starts_with(&*r.prefix))
        .map_or(RouteId::Default, RouteId::Prefix)
}

/// Serves one request (hyper's service function).
pub async fn handle(
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let route = route_for(&ctx, req.uri().path());
    let slot = match route {
        RouteId::Default => 0,
        RouteId::Prefix(i) => i as u32 + 1,
    };
    let done = RequestDone::start(&ctx, &req, route_ref(&ctx, route).label, slot);
    let in_flight = ctx.begin();
    Ok(match proxy(&ctx, route, req, done, in_flight).await {
        Ok(response) => response,
        Err((answer, mut done)) => {
            done.answer = Some(answer);
            let mut response = Response::new(body::text(answer.text()));
            *response.status_mut() = answer.status();
            finish_headers(
                &ctx,
                response.headers_mut(),
                done.request_id.as_deref(),
                None,
            );
            done.status = answer.status().as_u16();
            finish(&ctx, &done, true, 0);
            response
        }
    })
}

type Failed = (Answer, RequestDone);

async fn proxy(
    ctx: &Arc<ConnCtx>,
    route: RouteId,
    mut req: Request<Incoming>,
    mut done: RequestDone,
    in_flight: InFlight,
) -> Result<Response<ProxyBody>, Failed> {
    let config = &ctx.http.config;
    if let Some(host) = headers::request_host(&req) {
        let served_by = ctx.snapshot.host_for(Some(&host));
        if !served_by.is_some_and(|h| Arc::ptr_eq(h, &ctx.host)) {
            events::misdirected(&ctx.rt.metrics, &ctx.host.label);
            Box::pin(discard(req.into_body())).await;
            return Err((Answer::Misdirected, done));
        }
    }
    let Some(authority) = ClientAuthority::of(&req, &ctx.host.label) else {
        return Err((Answer::BadRequest, done));
    };
    let limit = config.limits.max_body_bytes;
    if req.body().size_hint().lower() > limit {
        Box::pin(discard(req.into_body())).await;
        return Err((Answer::TooLarge, done));
    }
    if let Some(name) = &config.request_id {
        let id = headers::request_id(req.headers_mut(), name, new_request_id);
        done.request_id = Some(id);
    }
    let upgrade = req.version() == Version::HTTP_11 && headers::wants_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, incoming) = req.into_parts();
    let mut head = parts.headers;
    let Some(host) = authority.host_value(&head) else {
        return Err((Answer::BadRequest, done));
    };
    rewrite_request(ctx, &mut head, &host, upgrade, parts.version);
    let seen = Arc::clone(&done.bytes_in);
    let mut request = Outgoing {
        method: parts.method,
        path: parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        authority: authority.parsed,
        host,
        headers: Some(head),
        upgrade,
    };
    let body = RequestBody::new(incoming, limit, seen).boxed_unsync();
    let sent = send(ctx, route, &mut request, body, &mut done).await;
    let (mut response, backend, sender, active) = match sent {
        Ok(sent) => sent,
        Err(answer) => {
            let answer = if done.bytes_in.load(Ordering::Relaxed) > limit {
                Answer::TooLarge
            } else {
                answer
            };
            return Err((answer, done));
        }
    };
    done.status = response.status().as_u16();
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching && let Some(client_upgrade) = client_upgrade {
        super::upgrade::relay(ctx, client_upgrade, hyper::upgrade::on(&mut response));
    }
    let (mut parts, incoming) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers, switching);
    if switching {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let via = Some(parts.version);
    finish_headers(ctx, &mut parts.headers, done.request_id.as_deref(), via);
    parts.version = Version::default();
    // Only a complete exchange leaves an HTTP/1.1 connection reusable (not an upgraded one).
    let reusable = match sender {
        Sender::H1(h1) if !switching => Some(h1),
        _ => None,
    };
    let ctx_end = Arc::clone(ctx);
    let on_end: body::OnEnd = Box::new(move |complete, bytes_out| {
        drop(active);
        if complete && let Some(h1) = reusable {
            route_ref(&ctx_end, route).conns[backend].checkin(h1);
        }
        finish(&ctx_end, &done, complete, bytes_out);
        drop(in_flight);
    });
    let body = ResponseBody::new(incoming, on_end).boxed_unsync();
    Ok(Response::from_parts(parts, body))
}

/// Most of a refused request's body read and dropped before answering: a client still
/// sending when the answer arrives may see its stream reset (HTTP/2) or its connection closed
/// (HTTP/1.1) instead of the answer.
const DISCARD_BYTES: u64 = 1 << 20;
/// The longest wait for a refused request's body.
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads and drops a refused request's body, when it is small enough to be worth it
/// ([`DISCARD_BYTES`], [`DISCARD_TIME`]); a larger one is left, and the client is answered
/// anyway.
async fn discard(mut body: Incoming) {
    if body.is_end_stream() || body.size_hint().lower() > DISCARD_BYTES {
        return;
    }
    let drain = async {
        let mut read = 0;
        while read <= DISCARD_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
                _ => return,
            }
        }
    };
    let _ = timeout(DISCARD_TIME, drain).await;
}

/// A request ended: its bytes join the connection's, and it is logged and counted.
fn finish(ctx: &ConnCtx, done: &RequestDone, complete: bool, bytes_out: u64) {
    let bytes_in = done.bytes_in.load(Ordering::Relaxed);
    ctx.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
    ctx.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    events::request_done(ctx, done, complete, bytes_out);
}

/// The authority the client asked for, as sent (with its port): the backend's `Host` /
/// `:authority`.
struct ClientAuthority {
    parsed: Authority,
    /// Whether it came from the `Host` header (which can then be passed on as it is).
    from_host_header: bool,
}

impl ClientAuthority {
    /// The request's URI authority (HTTP/2 `:authority`, absolute-form), else its `Host`,
    /// else the host's label (HTTP/1.0 without `Host`). `None` when it does not parse.
    fn of<B>(req: &Request<B>, label: &str) -> Option<Self> {
        if let Some(authority) = req.uri().authority() {
            return Some(Self {
                parsed: authority.clone(),
                from_host_header: false,
            });
        }
        match req.headers().get(header::HOST) {
            Some(host) => Some(Self {
                parsed: Authority::try_from(host.as_bytes()).ok()?,
                from_host_header: true,
            }),
            None => Some(Self {
                parsed: Authority::try_from(label).ok()?,
                from_host_header: false,
            }),
        }
    }

    /// The `Host` value for HTTP/1.1 backends.
    fn host_value(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        match headers.get(header::HOST) {
            Some(host) if self.from_host_header => Some(host.clone()),
            _ => HeaderValue::from_str(self.parsed.as_str()).ok(),
        }
    }
}

/// The request-side header rewrites: hop-by-hop, forwarding, client certificate, `Via` (with
/// the protocol the request was `received` in).
fn rewrite_request(
    ctx: &ConnCtx,
    head: &mut HeaderMap,
    host: &HeaderValue,
    upgrade: bool,
    received: Version,
) {
    let config = &ctx.http.config;
    headers::remove_hop_by_hop(head, upgrade);
    if upgrade {
        head.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    headers::set_forwarded(head, config.forwarded, ctx.trusted, &ctx.client, host);
    if let Some(name) = &config.client_cert_header {
        head.remove(name);
        if let Some(subject) = &ctx.client_subject {
            head.insert(name.clone(), subject.clone());
        }
    }
    if config.via {
        headers::add_via(head, received);
    }
}

/// The response-side additions: HSTS, `Via` for a response `received` from a backend in that
/// protocol, the request id.
fn finish_headers(
    ctx: &ConnCtx,
    head: &mut HeaderMap,
    request_id: Option<&str>,
    received: Option<Version>,
) {
    let config = &ctx.http.config;
    if let Some(hsts) = &ctx.http.hsts {
        head.entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert_with(|| hsts.clone());
    }
    if config.via
        && let Some(version) = received
    {
        headers::add_via(head, version);
    }
    if let (Some(name), Some(id)) = (&config.request_id, request_id)
        && let Ok(mut value) = HeaderValue::from_str(id)
    {
        // A new value every time: HTTP/2's header compression would only churn its table.
        value.set_sensitive(true);
        head.insert(name.clone(), value);
    }
}

/// A new request id: 128 bits, unique per process (a random prefix chosen at start and a
/// counter), as 32 hex digits.
fn new_request_id() -> String {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(Instant::now())
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix:016x}{n:016x}")
}
