//! Where a backend lives: a fixed `ip:port`, or a `dns-name:port` whose addresses are resolved
//! in the background (e.g. a Kubernetes Service) and kept in the backend's live state.

use std::fmt;
use std::net::SocketAddr;

/// A backend address as configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackendAddr {
    /// A fixed socket address.
    Ip(SocketAddr),
    /// A DNS name and port, re-resolved periodically.
    Name {
        /// The DNS name, lowercase, without a trailing dot.
        host: String,
        /// The port.
        port: u16,
    },
}

impl BackendAddr {
    /// Parses `ip:port`, `[v6]:port` or `dns-name:port`; `None` when it is none of them.
    pub fn parse(text: &str) -> Option<Self> {
        if let Ok(addr) = text.parse() {
            return Some(Self::Ip(addr));
        }
        let (host, port) = text.rsplit_once(':')?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let valid = !host.is_empty()
            && host.len() <= 253
            && !host.starts_with('[')
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            // All-numeric dotted names are malformed IP addresses, not DNS names.
            && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        valid.then_some(Self::Name { host, port })
    }

    /// The fixed address, if this is not a DNS name.
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            Self::Ip(addr) => Some(*addr),
            Self::Name { .. } => None,
        }
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(addr) => addr.fmt(f),
            Self::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_names() {
        assert_eq!(
            BackendAddr::parse("10.0.0.1:80"),
            Some(BackendAddr::Ip("10.0.0.1:80".parse().unwrap()))
        );
        assert_eq!(
            BackendAddr::parse("[::1]:8443").and_then(|a| a.ip()),
            Some("[::1]:8443".parse().unwrap())
        );
        let name = BackendAddr::parse("App.Default.svc.cluster.local.:8080").unwrap();
        assert_eq!(name.to_string(), "app.default.svc.cluster.local:8080");
        for bad in [
            "app",
            "app:0",
            "app:http",
            ":80",
            "-app:80",
            "a..b:80",
            "10.0.0.300:80",
            "[::1:80",
        ] {
            assert_eq!(BackendAddr::parse(bad), None, "{bad}");
        }
    }
}
