//! The plain-HTTP listeners (`http_listeners`, port 80): every request for a configured name
//! is answered with a 308 redirect to the same path and query over https; any other host gets
//! 404. Nothing is proxied. `/.well-known/acme-challenge/<token>` answers a pending ACME
//! HTTP-01 challenge for the name asked ([`crate::acme::challenges`]), and 404 otherwise.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::body::{self, ProxyBody};
use super::headers::request_host;
use crate::conn::Shutdown;
use crate::metrics::http as events;
use crate::runtime::Runtime;

/// Where ACME HTTP-01 validation requests ask.
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// A request's header block must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one plain-HTTP connection until the client is done or the server drains.
pub async fn serve(rt: Arc<Runtime>, stream: TcpStream, https_port: u16, shutdown: Shutdown) {
    let svc = {
        let rt = Arc::clone(&rt);
        hyper::service::service_fn(move |req| {
            let rt = Arc::clone(&rt);
            async move { Ok::<_, Infallible>(answer(&rt, &req, https_port).await) }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    let mut conn = std::pin::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "redirect connection error");
                }
                return;
            }
            () = shutdown.drain.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = shutdown.abort.cancelled() => return,
        }
    }
}

/// The answer to one request.
async fn answer(rt: &Runtime, req: &Request<Incoming>, https_port: u16) -> Response<ProxyBody> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let host = request_host(req);
    if let Some(token) = path.strip_prefix(ACME_CHALLENGE) {
        return acme_answer(rt, token, host.as_deref()).await;
    }
    let snapshot = rt.snapshot.load();
    let known = host.filter(|host| snapshot.knows(host));
    let location = known.as_ref().and_then(|host| {
        let port = if https_port == 443 {
            String::new()
        } else {
            format!(":{https_port}")
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        HeaderValue::try_from(format!("https://{host}{port}{path}")).ok()
    });
    match location {
        Some(location) => {
            events::redirect(&rt.metrics, "redirected");
            let mut response = Response::new(body::empty());
            *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
            response.headers_mut().insert(header::LOCATION, location);
            response
        }
        _ => {
            events::redirect(&rt.metrics, "unknown_host");
            let mut response = Response::new(body::text("404 not found\n"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }
}

/// The HTTP-01 answer for `token`, if one is pending for the name asked (else 404).
async fn acme_answer(rt: &Runtime, token: &str, host: Option<&str>) -> Response<ProxyBody> {
    match rt.challenges.http(token, host).await {
        Some(key_authorization) => {
            crate::metrics::acme::challenge_answered(
                &rt.metrics,
                "http-01",
                host.unwrap_or_default(),
            );
            let mut response = Response::new(body::text(key_authorization));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            response
        }
        None => {
            events::redirect(&rt.metrics, "unknown_challenge");
            let mut response = Response::new(body::text("404 not found\n"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }
}
