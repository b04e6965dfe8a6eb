//! The header rewrites of a proxied request and response, as pure functions over a
//! `HeaderMap`: hop-by-hop removal, forwarding headers, the request id, `Via`, HSTS.
//!
//! Nothing here does I/O or reads the clock, so every rule has a unit test below.

use std::net::IpAddr;

use hyper::HeaderMap;
use hyper::header::{self, HeaderName, HeaderValue};

use crate::config::model::ForwardedHeaders;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1, plus the non-standard
/// `Proxy-Connection` and `Keep-Alive` that old clients send).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Removes the hop-by-hop headers: the fixed list and every header `Connection` names. An
/// upgrade keeps `Upgrade` (and gets `Connection: upgrade` back from the caller); otherwise
/// `Upgrade` goes too. `TE: trailers` stays: it is the one `TE` value HTTP/2 allows, and gRPC
/// servers require it.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(&HOP_BY_HOP) {
        if *name == header::UPGRADE && keep_upgrade {
            continue;
        }
        headers.remove(name);
    }
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Whether a request asks to switch protocols (`Connection: upgrade` with an `Upgrade`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// A connection's client as the forwarding headers write it, made once per connection.
#[derive(Debug, Clone)]
pub struct Client {
    /// The address (the PROXY header's, when one was read), for `X-Forwarded-For`.
    ip: HeaderValue,
    /// The RFC 7239 element `for=…;proto=https`.
    node: String,
    /// The port it connected to, for `X-Forwarded-Port`.
    port: HeaderValue,
}

impl Client {
    /// The client at `ip` that connected to our `port`.
    pub fn new(ip: IpAddr, port: u16) -> Self {
        let ip = ip.to_canonical();
        // RFC 7239 §6: an IPv6 address is bracketed and the value quoted.
        let node = match ip {
            IpAddr::V4(v4) => format!("for={v4};proto=https"),
            IpAddr::V6(v6) => format!("for=\"[{v6}]\";proto=https"),
        };
        Self {
            // An address's text is always a valid header value.
            ip: HeaderValue::try_from(ip.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            node,
            port: HeaderValue::from(port),
        }
    }
}

/// Sets the forwarding headers for a request from `client` for `host`. From a `trusted`
/// client the incoming ones are kept and the client is appended; from anyone else they are
/// removed first, so a client cannot claim an address it does not have.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    which: ForwardedHeaders,
    trusted: bool,
    client: &Client,
    host: &HeaderValue,
) {
    if !trusted {
        for name in [
            &X_FORWARDED_FOR,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
            &X_FORWARDED_PORT,
            &X_REAL_IP,
            &header::FORWARDED,
        ] {
            headers.remove(name);
        }
    }
    if matches!(which, ForwardedHeaders::XForwarded | ForwardedHeaders::Both) {
        match client.ip.to_str() {
            Ok(ip) if trusted => append_list(headers, X_FORWARDED_FOR, ip),
            _ => {
                headers.insert(X_FORWARDED_FOR, client.ip.clone());
            }
        }
        if !trusted || !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
            headers.insert(X_FORWARDED_HOST, host.clone());
            headers.insert(X_FORWARDED_PORT, client.port.clone());
        }
    }
    if matches!(which, ForwardedHeaders::Forwarded | ForwardedHeaders::Both) {
        let mut element = client.node.clone();
        if let Ok(host) = host.to_str()
            && host.bytes().all(is_token_or_colon)
        {
            element.push_str(";host=");
            element.push_str(host);
        }
        append_list(headers, header::FORWARDED, &element);
    }
}

fn is_token_or_colon(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:[]".contains(&b)
}

/// Appends `value` to a comma-separated list header, joining what is there into one line.
fn append_list(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    let mut joined = String::new();
    for old in headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        joined.push_str(old);
        joined.push_str(", ");
    }
    joined.push_str(value);
    if let Ok(v) = HeaderValue::from_str(&joined) {
        headers.insert(name, v);
    }
}

/// Longest request id kept from a client; a longer or non-printable one is replaced.
const MAX_REQUEST_ID: usize = 128;

/// The request's id: its own `name` header when it has a usable one, else `generate()`,
/// which is then set on the request.
pub fn request_id(
    headers: &mut HeaderMap,
    name: &HeaderName,
    generate: impl FnOnce() -> String,
) -> String {
    if let Some(id) = headers.get(name).and_then(|v| v.to_str().ok())
        && !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id.bytes().all(|b| b.is_ascii_graphic())
    {
        return id.to_owned();
    }
    let id = generate();
    if let Ok(mut value) = HeaderValue::from_str(&id) {
        // Unique per request: not worth a place in HTTP/2's header compression table.
        value.set_sensitive(true);
        headers.insert(name.clone(), value);
    }
    id
}

/// Appends this proxy to `Via` (RFC 9110 §7.6.3), as `1.1 tlsedge` or `2 tlsedge`.
pub fn add_via(headers: &mut HeaderMap, version: hyper::Version) {
    let hop = match version {
        hyper::Version::HTTP_2 => "2 tlsedge",
        hyper::Version::HTTP_10 => "1.0 tlsedge",
        _ => "1.1 tlsedge",
    };
    append_list(headers, header::VIA, hop);
}

/// The `Strict-Transport-Security` value for a max-age in seconds.
pub fn hsts_value(max_age: u64) -> HeaderValue {
    // Digits only: always a valid value.
    HeaderValue::try_from(format!("max-age={max_age}"))
        .unwrap_or_else(|_| HeaderValue::from_static("max-age=0"))
}

/// The request's host, lowercased, without port or trailing dot: the URI's authority (HTTP/2
/// `:authority`, or an absolute-form target), else `Host`.
pub fn request_host<B>(req: &hyper::Request<B>) -> Option<String> {
    let raw = match req.uri().authority() {
        Some(authority) => authority.host(),
        None => req.headers().get(header::HOST)?.to_str().ok()?,
    };
    let host = match raw.strip_prefix('[') {
        // An IPv6 literal: `[::1]:8443`.
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => raw.rsplit_once(':').map_or(raw, |(h, _)| h),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    Some(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "gzip"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h, false);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept"]);
        let mut grpc = map(&[("te", "trailers, deflate")]);
        remove_hop_by_hop(&mut grpc, false);
        assert_eq!(
            get(&grpc, "te"),
            Some("trailers"),
            "gRPC's TE: trailers is kept"
        );
    }

    #[test]
    fn an_upgrade_keeps_its_upgrade_header() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(wants_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(get(&h, "upgrade"), Some("websocket"));
        assert!(!wants_upgrade(&map(&[("upgrade", "websocket")])));
    }

    fn forward(h: &mut HeaderMap, which: ForwardedHeaders, trusted: bool, client: &str) {
        let client = Client::new(client.parse().unwrap(), 443);
        let host = HeaderValue::from_static("app.test");
        set_forwarded(h, which, trusted, &client, &host);
    }

    #[test]
    fn untrusted_forwarding_headers_are_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        forward(&mut h, ForwardedHeaders::Both, false, "192.0.2.7");
        assert_eq!(get(&h, "x-forwarded-for"), Some("192.0.2.7"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("https"));
        assert_eq!(get(&h, "x-forwarded-host"), Some("app.test"));
        assert_eq!(get(&h, "x-forwarded-port"), Some("443"));
        assert_eq!(get(&h, "x-real-ip"), None);
        assert_eq!(
            get(&h, "forwarded"),
            Some("for=192.0.2.7;proto=https;host=app.test")
        );
    }

    #[test]
    fn trusted_forwarding_headers_are_appended_to() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "http"),
        ]);
        forward(&mut h, ForwardedHeaders::XForwarded, true, "10.0.0.1");
        assert_eq!(get(&h, "x-forwarded-for"), Some("203.0.113.9, 10.0.0.1"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&h, "forwarded"), None);
    }

    #[test]
    fn forwarded_quotes_ipv6() {
        let mut h = HeaderMap::new();
        forward(&mut h, ForwardedHeaders::Forwarded, false, "2001:db8::1");
        assert_eq!(
            get(&h, "forwarded"),
            Some("for=\"[2001:db8::1]\";proto=https;host=app.test")
        );
        assert_eq!(get(&h, "x-forwarded-for"), None);
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        let name = HeaderName::from_static("x-request-id");
        let mut h = map(&[("x-request-id", "abc-123")]);
        assert_eq!(request_id(&mut h, &name, || "new".into()), "abc-123");
        let long = "x".repeat(MAX_REQUEST_ID + 1);
        let mut h = map(&[("x-request-id", &long)]);
        assert_eq!(request_id(&mut h, &name, || "new".into()), "new");
        assert_eq!(get(&h, "x-request-id"), Some("new"));
    }

    #[test]
    fn request_host_strips_port_dot_and_case() {
        let req = |uri: &str, host: Option<&str>| {
            let mut b = hyper::Request::builder().uri(uri);
            if let Some(host) = host {
                b = b.header("host", host);
            }
            b.body(()).unwrap()
        };
        assert_eq!(
            request_host(&req("/", Some("App.Test.:8443"))).as_deref(),
            Some("app.test")
        );
        assert_eq!(
            request_host(&req("https://b.test/x", Some("a.test"))).as_deref(),
            Some("b.test")
        );
        assert_eq!(
            request_host(&req("/", Some("[::1]:443"))).as_deref(),
            Some("::1")
        );
        assert_eq!(request_host(&req("/", None)), None);
    }

    #[test]
    fn via_and_hsts() {
        let mut h = map(&[("via", "1.1 cdn")]);
        add_via(&mut h, hyper::Version::HTTP_2);
        assert_eq!(get(&h, "via"), Some("1.1 cdn, 2 tlsedge"));
        assert_eq!(hsts_value(31_536_000), "max-age=31536000");
    }
}
