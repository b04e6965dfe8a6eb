//! Diagnostics found while validating a configuration.
//!
//! A [`Problem`] always says which file, which host and which field it is about, so an operator
//! can fix it without guessing. Problems are collected, not returned one by one: `tlsedge check`
//! prints them all.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::tls::certs::CertError;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The configuration cannot be served as written.
    Error,
    /// Served, but an operator should act (e.g. a certificate expiring soon).
    Warning,
}

/// What a problem blocks when it is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The configuration file itself: the whole config is unusable.
    Config,
    /// Files of one host (certificates, CA): only that host is affected.
    HostFiles(usize),
}

/// What is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Issue {
    /// A certificate or key file failed to load.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// A list that must not be empty is.
    #[error("must not be empty")]
    Empty,
    /// A socket address failed to parse.
    #[error("invalid socket address {value:?} (expected ip:port)")]
    BadAddress {
        /// What was written.
        value: String,
    },
    /// A backend address is neither `ip:port` nor `dns-name:port`.
    #[error("invalid backend address {value:?} (expected ip:port or dns-name:port)")]
    BadBackendAddress {
        /// What was written.
        value: String,
    },
    /// An `allow` entry is neither a CIDR nor an IP address.
    #[error(
        "invalid address range {value:?} (expected e.g. 10.0.0.0/8, 2001:db8::/32 or 192.0.2.7)"
    )]
    BadCidr {
        /// What was written.
        value: String,
    },
    /// A host name is not a valid exact or wildcard DNS name.
    #[error("invalid host name {name:?} (expected e.g. shop.example.com or *.example.com)")]
    BadName {
        /// What was written.
        name: String,
    },
    /// Two hosts claim the same name.
    #[error("name {name} is already claimed by hosts[{other}]")]
    DuplicateName {
        /// The name.
        name: String,
        /// The index of the host that claimed it first.
        other: usize,
    },
    /// The certificate does not cover a configured name.
    #[error("certificate {cert} does not cover host name {name} (it covers: {covers})")]
    NameNotCovered {
        /// The configured name.
        name: String,
        /// The certificate file.
        cert: String,
        /// The names the certificate carries.
        covers: String,
    },
    /// The certificate has expired.
    #[error("certificate {cert} expired at {not_after} (unix time)")]
    Expired {
        /// The certificate file.
        cert: String,
        /// Its notAfter.
        not_after: i64,
    },
    /// The certificate expires within 14 days.
    #[error("certificate {cert} expires in {days} days")]
    ExpiresSoon {
        /// The certificate file.
        cert: String,
        /// Whole days left.
        days: i64,
    },
    /// `default_host` names no configured host.
    #[error("{name:?} is not a name of any configured host")]
    UnknownDefaultHost {
        /// What was written.
        name: String,
    },
    /// A backend weight is out of range.
    #[error("weight {weight} is out of range 1..=1000")]
    BadWeight {
        /// What was written.
        weight: u32,
    },
    /// `min_tls` is not "1.2" or "1.3".
    #[error("invalid TLS version {value:?} (expected \"1.2\" or \"1.3\")")]
    BadTlsVersion {
        /// What was written.
        value: String,
    },
    /// A cipher suite name that the provider does not have.
    #[error("unknown cipher suite {value:?} (known: {known})")]
    UnknownSuite {
        /// What was written.
        value: String,
        /// The names that would be accepted.
        known: String,
    },
    /// A key exchange group name that the provider does not have.
    #[error("unknown key exchange group {value:?} (known: {known})")]
    UnknownGroup {
        /// What was written.
        value: String,
        /// The names that would be accepted.
        known: String,
    },
    /// A TLS setting contradicts another one of the same host.
    #[error("{0}")]
    TlsConflict(&'static str),
    /// An ALPN protocol is empty or longer than 255 bytes.
    #[error("invalid ALPN protocol {value:?}")]
    BadAlpn {
        /// What was written.
        value: String,
    },
    /// In-memory ticket keys would pile up: one per rotation is kept for a ticket lifetime.
    #[error(
        "rotating every {rotate:?} keeps {keys} keys alive for a ticket lifetime of {lifetime:?} (at most {max}): rotate less often or shorten sessions.ticket_lifetime"
    )]
    TicketKeysPileUp {
        /// The rotation period.
        rotate: Duration,
        /// The ticket lifetime.
        lifetime: Duration,
        /// Keys that would be alive at once.
        keys: u64,
        /// The most accepted.
        max: u64,
    },
    /// A number that must be positive is zero.
    #[error("must be greater than zero")]
    Zero,
    /// A number or duration above its upper bound.
    #[error("{value} is more than the maximum of {max}")]
    TooLarge {
        /// What was written.
        value: Quantity,
        /// The largest accepted value.
        max: Quantity,
    },
    /// Two listeners (or a listener and the admin listener) on the same address.
    #[error("address {addr} is already used by listeners[{other}]")]
    DuplicateListener {
        /// The address.
        addr: SocketAddr,
        /// The index of the listener that uses it first.
        other: usize,
    },
    /// PROXY protocol input without a list of trusted senders.
    #[error(
        "must list the addresses allowed to send a PROXY header (a header from anyone would let \
         every client claim any address)"
    )]
    NoTrustedProxies,
    /// A ticket lifetime above the 24 h that scanners flag.
    #[error("ticket lifetime must be between 1s and 24h")]
    TicketLifetime,
    /// The client-auth CA file holds no usable CA certificate.
    #[error("no usable CA certificate in {path}: {reason}")]
    BadCa {
        /// The CA file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A value that does not parse as what the field holds.
    #[error("invalid {what} {value:?} (expected {expected})")]
    Invalid {
        /// What the field holds.
        what: &'static str,
        /// What was written.
        value: String,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// A setting that only means something in another mode.
    #[error("applies to mode {mode} only")]
    WrongMode {
        /// The mode it applies to.
        mode: &'static str,
    },
    /// Two routes of a host with the same prefix.
    #[error("path {path:?} is already routed by routes[{other}]")]
    DuplicateRoute {
        /// The prefix.
        path: String,
        /// The index of the route that claimed it first.
        other: usize,
    },
    /// `certs: acme` without a top-level `acme:` section.
    #[error("`certs: acme` needs a top-level `acme:` section (directory, contact, storage)")]
    AcmeNotConfigured,
    /// A wildcard name on a host with `certs: acme`.
    #[error(
        "{name} is a wildcard: ACME issues wildcards only by the DNS-01 challenge, which tlsedge does not do; give this host certificate files (e.g. from certbot's DNS plugins)"
    )]
    AcmeWildcard {
        /// The wildcard.
        name: String,
    },
    /// The HTTP-01 challenge without a plain-HTTP listener to answer it on.
    #[error("http-01 is answered on port 80: add an `http_listeners` entry, or use tls-alpn-01")]
    AcmeNoHttpListener,
    /// A value listed twice.
    #[error("{value} is listed twice")]
    Repeated {
        /// The value.
        value: String,
    },
    /// A file that could not be read or used.
    #[error("cannot use {path}: {reason}")]
    BadFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A private key file is readable by others, or by a group this process is not in.
    #[error(
        "private key {path} is readable by others or by a group tlsedge is not in (mode {mode:o})"
    )]
    KeyPermissions {
        /// The key file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
}

/// A configured number or duration, as shown in a [`Issue::TooLarge`] message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    /// A count or size.
    Number(u64),
    /// A duration, shown like it is written (`1day`, `10s`).
    Duration(Duration),
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Duration(d) => {
                write!(f, "{}", humantime::format_duration(*d))
            }
        }
    }
}

/// One problem, located by file, host and field.
#[derive(Debug)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// What an error blocks.
    pub scope: Scope,
    /// The configuration file.
    pub file: PathBuf,
    /// Where in it, e.g. `hosts[2] (shop.example.com): certs[0].key`.
    pub place: String,
    /// What is wrong.
    pub issue: Issue,
}

impl Problem {
    /// Whether this problem is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{level}: {}: {}: {}",
            self.file.display(),
            self.place,
            self.issue
        )
    }
}

/// A list of problems that prevents using a configuration.
#[derive(Debug)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self.0.iter().filter(|p| p.is_error()).count();
        write!(f, "{errors} configuration error(s)")?;
        for problem in &self.0 {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}
