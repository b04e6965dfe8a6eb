//! Validation of a host's `mode: http` settings (the `http:` block) and of HTTP health probes:
//! header names, routes, forwarding, limits. What passes here is what the HTTP service uses
//! as is: header names parsed, route prefixes sorted longest first.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderName;
use ipnet::IpNet;

use super::bounds::{DAY, WEEK, Zero};
use super::host::policy;
use super::{BackendConfig, Validator};
use crate::config::model::{
    BackendProtocol, ForwardedHeaders, HostMode, ProxyProtocol, RawHost, RawHttp, RawHttpLimits,
    RawHttpProbe, RawRequestId,
};
use crate::config::problem::Issue;
use crate::upstream::Policy;

/// Largest accepted `max_headers`, `max_header_bytes`, `h2_max_streams` and reset limits.
const MAX_HEADER_LIMIT: u64 = 1 << 20;
/// The protocols an HTTP host can serve to clients.
const HTTP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A host's validated HTTP settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// The protocol spoken to backends.
    pub backend_protocol: BackendProtocol,
    /// Path-prefix routes, longest prefix first.
    pub routes: Vec<RouteConfig>,
    /// Which forwarding headers are set.
    pub forwarded: ForwardedHeaders,
    /// Clients whose incoming forwarding headers are kept.
    pub trusted: Vec<IpNet>,
    /// `Strict-Transport-Security` max-age, if enabled.
    pub hsts: Option<Duration>,
    /// The request id header, if enabled.
    pub request_id: Option<HeaderName>,
    /// The header carrying the client certificate subject, if enabled.
    pub client_cert_header: Option<HeaderName>,
    /// Add `Via`.
    pub via: bool,
    /// Idle pooled backend connections are closed after this.
    pub backend_idle: Duration,
    /// Limits and timeouts.
    pub limits: HttpLimits,
}

/// One route: requests whose path starts with `prefix` go to its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// The path prefix.
    pub prefix: String,
    /// Its backends.
    pub backends: Vec<BackendConfig>,
    /// Its policy.
    pub balance: Policy,
}

/// Validated HTTP limits (see the model for meanings).
pub type HttpLimits = RawHttpLimits;

/// A validated HTTP health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbe {
    /// The request target.
    pub path: String,
    /// Passing statuses.
    pub expect: RangeInclusive<u16>,
    /// The `Host` header, when not the host's first name.
    pub host: Option<String>,
}

impl Validator<'_> {
    /// The host's HTTP settings: `Some` in `mode: http`. An `http:` block or HTTP-only setting
    /// on a `tcp` host is an error, as is what a pooled HTTP backend cannot take.
    pub(super) fn http(&mut self, at: &str, raw: &RawHost) -> Option<Arc<HttpConfig>> {
        if raw.mode == HostMode::Tcp {
            if raw.http.is_some() {
                self.error(format!("{at}: http"), Issue::WrongMode { mode: "http" });
            }
            return None;
        }
        if raw.proxy_protocol == Some(ProxyProtocol::V2) {
            // Pooled connections carry many clients' requests: a PROXY header cannot name one.
            let place = format!("{at}: proxy_protocol");
            self.error(place, Issue::WrongMode { mode: "tcp" });
        }
        let default = RawHttp::default();
        let http = raw.http.as_deref().unwrap_or(&default);
        let at = format!("{at}: http");
        let routes = self.routes(&at, http);
        let header = |v: &mut Self, field: &str, name: &str| v.header_name(&at, field, name);
        let request_id = match &http.request_id {
            RawRequestId::Enabled(false) => None,
            RawRequestId::Enabled(true) => Some(HeaderName::from_static("x-request-id")),
            RawRequestId::Header(name) => header(self, "request_id", name),
        };
        let client_cert_header = http
            .client_cert_header
            .as_ref()
            .and_then(|name| header(self, "client_cert_header", name));
        if let Some(hsts) = http.hsts {
            self.duration(format!("{at}.hsts"), hsts, Zero::Allowed, 2 * 365 * DAY);
        }
        let idle = http.backend_idle;
        self.duration(format!("{at}.backend_idle"), idle, Zero::Refused, DAY);
        self.http_limits(&at, &http.limits);
        Some(Arc::new(HttpConfig {
            backend_protocol: http.backend_protocol,
            routes,
            forwarded: http.forwarded.headers,
            trusted: self.nets(&format!("{at}.forwarded.trusted"), &http.forwarded.trusted),
            hsts: http.hsts,
            request_id,
            client_cert_header,
            via: http.via,
            backend_idle: idle,
            limits: http.limits,
        }))
    }

    /// The ALPN list of an HTTP host: `h2, http/1.1` unless configured, and nothing else.
    pub(super) fn http_alpn(&mut self, at: &str, alpn: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        if alpn.is_empty() {
            return HTTP_ALPN.iter().map(|p| p.to_vec()).collect();
        }
        for (a, proto) in alpn.iter().enumerate() {
            if !HTTP_ALPN.contains(&proto.as_slice()) {
                let issue = Issue::Invalid {
                    what: "ALPN protocol for mode http",
                    value: String::from_utf8_lossy(proto).into_owned(),
                    expected: "h2 or http/1.1",
                };
                self.error(format!("{at}: alpn[{a}]"), issue);
            }
        }
        alpn
    }

    fn routes(&mut self, at: &str, http: &RawHttp) -> Vec<RouteConfig> {
        let mut routes: Vec<RouteConfig> = Vec::with_capacity(http.routes.len());
        for (r, route) in http.routes.iter().enumerate() {
            let place = format!("{at}.routes[{r}]");
            if !route.path.starts_with('/') || route.path.contains(['?', '#']) {
                let issue = Issue::Invalid {
                    what: "route path",
                    value: route.path.clone(),
                    expected: "a path prefix starting with /, e.g. /api/",
                };
                self.error(format!("{place}.path"), issue);
            }
            if let Some(other) = http.routes[..r].iter().position(|o| o.path == route.path) {
                let issue = Issue::DuplicateRoute {
                    path: route.path.clone(),
                    other,
                };
                self.error(format!("{place}.path"), issue);
            }
            routes.push(RouteConfig {
                prefix: route.path.clone(),
                backends: self.backends(&format!("{place}.backends"), &route.backends),
                balance: policy(route.balance),
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        routes
    }

    fn http_limits(&mut self, at: &str, limits: &RawHttpLimits) {
        for (field, value, max) in [
            ("header_timeout", limits.header_timeout, DAY),
            ("response_timeout", limits.response_timeout, DAY),
            ("idle_timeout", limits.idle_timeout, WEEK),
        ] {
            self.duration(format!("{at}.limits.{field}"), value, Zero::Refused, max);
        }
        for (field, value) in [
            ("max_headers", limits.max_headers as u64),
            ("max_header_bytes", limits.max_header_bytes as u64),
            ("h2_max_streams", u64::from(limits.h2_max_streams)),
            ("h2_max_pending_resets", limits.h2_max_pending_resets as u64),
            ("h2_max_error_resets", limits.h2_max_error_resets as u64),
        ] {
            let place = format!("{at}.limits.{field}");
            self.count(place, value, Zero::Refused, MAX_HEADER_LIMIT);
        }
        let body = format!("{at}.limits.max_body_bytes");
        self.count(body, limits.max_body_bytes, Zero::Allowed, u64::MAX / 2);
    }

    fn header_name(&mut self, at: &str, field: &str, name: &str) -> Option<HeaderName> {
        let parsed = HeaderName::from_bytes(name.as_bytes()).ok();
        if parsed.is_none() {
            let issue = Issue::Invalid {
                what: "header name",
                value: name.to_owned(),
                expected: "a token such as x-request-id",
            };
            self.error(format!("{at}.{field}"), issue);
        }
        parsed
    }

    /// An HTTP health probe: a path, a status range, an optional `Host`.
    pub(super) fn http_probe(&mut self, at: &str, raw: &RawHttpProbe) -> Option<HttpProbe> {
        let place = format!("{at}: health_check.http");
        let mut ok = true;
        if !raw.path.starts_with('/') || raw.path.parse::<hyper::Uri>().is_err() {
            let issue = Issue::Invalid {
                what: "probe path",
                value: raw.path.clone(),
                expected: "a path such as /healthz",
            };
            self.error(format!("{place}.path"), issue);
            ok = false;
        }
        let expect = parse_status_range(&raw.expect);
        if expect.is_none() {
            let issue = Issue::Invalid {
                what: "status range",
                value: raw.expect.clone(),
                expected: "a status or a range such as 200-399",
            };
            self.error(format!("{place}.expect"), issue);
        }
        if let Some(host) = &raw.host
            && hyper::header::HeaderValue::from_str(host).is_err()
        {
            let issue = Issue::BadName { name: host.clone() };
            self.error(format!("{place}.host"), issue);
            ok = false;
        }
        Some(HttpProbe {
            path: raw.path.clone(),
            expect: expect?,
            host: raw.host.clone(),
        })
        .filter(|_| ok)
    }
}

/// `"200"` or `"200-399"`, statuses 100..=599, low ≤ high.
fn parse_status_range(text: &str) -> Option<RangeInclusive<u16>> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let status = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|n| (100..=599).contains(n))
    };
    let (low, high) = (status(low)?, status(high)?);
    (low <= high).then_some(low..=high)
}

#[cfg(test)]
mod tests {
    use super::parse_status_range;
    use crate::config::validate::tests::host_problems as problems;

    #[test]
    fn http_settings_are_checked_and_named() {
        assert_eq!(problems("", "    mode: http\n"), Vec::<String>::new());
        let at = "hosts[0] (a.test)";
        assert_eq!(
            problems("", "    http: { via: true }\n"),
            [format!("{at}: http: applies to mode http only")]
        );
        assert_eq!(
            problems("", "    mode: http\n    proxy_protocol: v2\n"),
            [format!("{at}: proxy_protocol: applies to mode tcp only")]
        );
        assert_eq!(
            problems("", "    mode: http\n    alpn: [h2, smtp]\n"),
            [format!(
                "{at}: alpn[1]: invalid ALPN protocol for mode http \"smtp\" (expected h2 or http/1.1)"
            )]
        );
        let routes = "    mode: http\n    http:\n      request_id: \"bad header\"\n      routes:\n        - { path: api, backends: [{ address: \"127.0.0.1:1\" }] }\n        - { path: api, backends: [] }\n      limits: { max_headers: 0, idle_timeout: 8d }\n";
        assert_eq!(
            problems("", routes),
            [
                format!(
                    "{at}: http.routes[0].path: invalid route path \"api\" (expected a path prefix starting with /, e.g. /api/)"
                ),
                format!(
                    "{at}: http.routes[1].path: invalid route path \"api\" (expected a path prefix starting with /, e.g. /api/)"
                ),
                format!("{at}: http.routes[1].path: path \"api\" is already routed by routes[0]"),
                format!("{at}: http.routes[1].backends: must not be empty"),
                format!(
                    "{at}: http.request_id: invalid header name \"bad header\" (expected a token such as x-request-id)"
                ),
                format!("{at}: http.limits.idle_timeout: 8days is more than the maximum of 7days"),
                format!("{at}: http.limits.max_headers: must be greater than zero"),
            ]
        );
        let probe = "    health_check: { http: { path: healthz, expect: 5xx } }\n";
        assert_eq!(
            problems("", probe),
            [
                format!(
                    "{at}: health_check.http.path: invalid probe path \"healthz\" (expected a path such as /healthz)"
                ),
                format!(
                    "{at}: health_check.http.expect: invalid status range \"5xx\" (expected a status or a range such as 200-399)"
                ),
            ]
        );
        assert_eq!(
            problems("http_listeners: [\"127.0.0.1:443\", \"nope\"]\n", ""),
            [
                "http_listeners[0]: address 127.0.0.1:443 is already used by listeners[0]"
                    .to_owned(),
                "http_listeners[1]: invalid socket address \"nope\" (expected ip:port)".to_owned(),
            ]
        );
    }

    #[test]
    fn status_ranges() {
        assert_eq!(parse_status_range("200"), Some(200..=200));
        assert_eq!(parse_status_range("200-399"), Some(200..=399));
        for bad in ["", "2xx", "399-200", "99", "200-600", "-"] {
            assert_eq!(parse_status_range(bad), None, "{bad}");
        }
    }
}
