//! Forwarding one request to a backend of its route: pick a backend, take a pooled
//! connection or make one (TCP, optional TLS, HTTP handshake), send, and move on to the next
//! backend or connection when the request never left. Called by [`super::service`], which
//! owns everything before (routing, checks, header rewrites) and after (the response).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Method, Request, Response, Uri, Version};
use tokio::time::timeout;

use super::ConnCtx;
use super::body::ProxyBody;
use super::client::Sender;
use super::headers;
use super::service::{RouteId, RouteRef, route_ref};
use crate::config::model::BackendProtocol;
use crate::metrics::http::{self as events, Answer, RequestDone};
use crate::upstream::ActiveGuard;
use crate::upstream::connect::{connect_one, pick_context};

/// The request as it goes to a backend, kept apart from its body: a request that never
/// left (hyper gives it back) is rebuilt for another connection, possibly of the other
/// protocol.
pub(super) struct Outgoing {
    pub(super) method: Method,
    pub(super) path: PathAndQuery,
    pub(super) authority: Authority,
    /// `authority` as a `Host` value.
    pub(super) host: HeaderValue,
    /// The rewritten headers, until a build takes them (a request given back returns them).
    pub(super) headers: Option<HeaderMap>,
    pub(super) upgrade: bool,
}

impl Outgoing {
    /// The request for a connection speaking `version`: origin-form with `Host` for
    /// HTTP/1.1, absolute with `:authority` for HTTP/2. `None` once the headers are gone.
    fn build(
        &mut self,
        version: Version,
        tls: bool,
        body: ProxyBody,
    ) -> Option<Request<ProxyBody>> {
        let mut headers = self.headers.take()?;
        let uri = if version == Version::HTTP_2 {
            headers.remove(header::HOST);
            if self.upgrade {
                headers::remove_hop_by_hop(&mut headers, false);
            }
            let scheme = if tls { Scheme::HTTPS } else { Scheme::HTTP };
            Uri::builder()
                .scheme(scheme)
                .authority(self.authority.clone())
                .path_and_query(self.path.clone())
                .build()
                .ok()?
        } else {
            headers.insert(header::HOST, self.host.clone());
            Uri::from(self.path.clone())
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = version;
        *req.headers_mut() = headers;
        Some(req)
    }

    /// Takes back a request that was never sent; returns its body.
    fn given_back(&mut self, req: Request<ProxyBody>) -> ProxyBody {
        let (parts, body) = req.into_parts();
        self.headers = Some(parts.headers);
        body
    }
}

pub(super) type Sent = (Response<Incoming>, usize, Sender, ActiveGuard);

/// Sends the request to a backend of the route. A backend that cannot be connected to is
/// skipped for the next; a request that never left its connection (it was closing) goes to
/// another connection. A request that failed after leaving is not re-sent: the backend may
/// have acted on it.
pub(super) async fn send(
    ctx: &ConnCtx,
    route: RouteId,
    request: &mut Outgoing,
    body: ProxyBody,
    done: &mut RequestDone,
) -> Result<Sent, Answer> {
    let r = route_ref(ctx, route);
    let snapshot = &ctx.snapshot;
    let attempts = snapshot.backend_attempts.min(r.pool.backends().len());
    let mut tried = Vec::with_capacity(attempts);
    let mut body = Some(body);
    let mut failed = None;
    // Failed fresh connections count against `backend_attempts`; failed pooled ones get one
    // more try each, bounded here.
    for attempt in 0..attempts * 2 + 1 {
        if tried.len() >= attempts {
            break;
        }
        let pick = pick_context(&ctx.rt, ctx.ends.client.ip(), attempt);
        let Some(index) = r.pool.pick(&pick, &tried) else {
            break;
        };
        let Some((mut sender, fresh)) = connection(ctx, &r, index).await else {
            tried.push(index);
            failed = Some(Answer::BackendError);
            continue;
        };
        let Some(this_body) = body.take() else {
            break;
        };
        let tls = ctx.host.upstream_tls.is_some();
        let Some(req) = request.build(sender.version(), tls, this_body) else {
            break;
        };
        let backend = &r.pool.backends()[index];
        let active = backend.state.track();
        done.backend = Some(Arc::clone(&r.labels[index]));
        let limit = ctx.http.config.limits.response_timeout;
        match timeout(limit, sender.send(req)).await {
            Ok(Ok(response)) => {
                events::backend_answered(ctx, &r.labels[index], response.status().as_u16());
                return Ok((response, index, sender, active));
            }
            Ok(Err(mut e)) => {
                body = e.take_message().map(|req| request.given_back(req));
                events::backend_request_failed(ctx, &r.labels[index], e.error());
                failed = Some(Answer::BackendError);
                if fresh {
                    tried.push(index);
                }
            }
            Err(_) => {
                events::backend_timed_out(ctx, &r.labels[index]);
                return Err(Answer::BackendTimeout);
            }
        }
    }
    Err(failed.unwrap_or(Answer::NoBackend))
}

/// A connection to backend `index` of the route: a pooled one, else a new one (`true`).
/// `None` when connecting failed (logged and counted).
async fn connection(ctx: &ConnCtx, r: &RouteRef<'_>, index: usize) -> Option<(Sender, bool)> {
    if let Some(sender) = r.conns[index].checkout(ctx.http.config.backend_idle).await {
        return Some((sender, false));
    }
    // Boxed: connecting (TCP, TLS, HTTP handshake) is the large, rare path; unboxed it would
    // size every request's future for it.
    let sender = Box::pin(connect_new(ctx, r, index)).await?;
    Some((sender, true))
}

/// A new connection to backend `index` of the route. `None` when it failed (logged and
/// counted).
async fn connect_new(ctx: &ConnCtx, r: &RouteRef<'_>, index: usize) -> Option<Sender> {
    let config = &ctx.http.config;
    let backend = &r.pool.backends()[index];
    let label = &r.labels[index];
    let snapshot = &ctx.snapshot;
    let host = &*ctx.host.label;
    let stream = connect_one(&ctx.rt, snapshot, host, backend, label)
        .await
        .ok()?;
    let conns = &r.conns[index];
    let handshake = match &ctx.host.upstream_tls {
        None => {
            let h2 = config.backend_protocol == BackendProtocol::H2;
            conns.handshake(stream, h2).await
        }
        Some(tls) => {
            let secured = timeout(
                snapshot.timeouts.backend_connect,
                tls.connect(&backend.addr, stream),
            )
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
            let secure = match secured {
                Ok(secure) => secure,
                Err(e) => {
                    crate::metrics::events::backend_tls_failed(&ctx.rt.metrics, host, label, &e);
                    return None;
                }
            };
            let h2 = match config.backend_protocol {
                BackendProtocol::H2 => true,
                BackendProtocol::Http1 => false,
                BackendProtocol::Auto => secure.get_ref().1.alpn_protocol() == Some(b"h2"),
            };
            conns.handshake(secure, h2).await
        }
    };
    match handshake {
        Ok(sender) => Some(sender),
        Err(e) => {
            events::backend_request_failed(ctx, label, &e);
            None
        }
    }
}
