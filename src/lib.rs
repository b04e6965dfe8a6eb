//! tlsedge: a TLS-terminating load balancer for many domains.
//!
//! A tour, in the order a connection travels:
//! - [`server`] opens the listeners ([`sockets`]: passed by systemd or by the tlsedge being
//!   replaced, else bound) and runs the accept loops ([`conn::listener`]), the admin listener
//!   ([`admin`]) and graceful shutdown (drain, then the abort at the deadline), or the hand-over
//!   of every socket to a successor ([`upgrade`]);
//! - each connection is one [`conn::serve`] pipeline over any stream: it loads the current
//!   [`snapshot::Snapshot`] once from the [`runtime::Runtime`]'s `ArcSwap`, reads the PROXY
//!   header on listeners behind a load balancer ([`conn::proxy_protocol`]), applies the
//!   per-client limit ([`conn::client_limit`]), reads the ClientHello, finds the host by SNI
//!   ([`snapshot::Snapshot::host_for`], [`tls::names`]) and finishes the handshake with that
//!   host's prebuilt rustls config ([`conn::accept`], [`tls`], [`tls::cert_choice`]);
//! - the pipeline ends in the host's mode: `tcp` is [`l4`], which picks and connects a backend
//!   ([`upstream`]: the pure [`upstream::pool`] policies, `upstream::connect`, re-encryption in
//!   [`upstream::tls`]; names kept fresh by [`upstream::dns`], backends probed by
//!   `upstream::probe`), sends it a PROXY v2 header if asked ([`l4::proxy_header`]) and relays
//!   ([`l4::relay`]);
//! - `http` is [`http`]: hyper serves HTTP/1.1 or HTTP/2 by the negotiated ALPN
//!   ([`http::activity`] keeps the idle and header clocks), and each request is proxied by
//!   [`http::service`] — route, 421 check, limits, header rewrites ([`http::headers`]) — and
//!   forwarded (`http::forward`) over pooled backend connections ([`http::client`]), bodies streaming through [`http::body`],
//!   upgrades relayed by [`http::upgrade`]; plain-HTTP listeners redirect ([`http::redirect`]);
//! - every event is logged and counted in one place ([`metrics::events`]), through per-host
//!   handles ([`metrics::host`]); each connection ends with one close line, each HTTP request
//!   with one request line ([`metrics::http`]).
//!
//! Configuration flows the other way: [`config`] reads and validates YAML, [`reload`] watches
//! the files and re-reads them on change, and [`runtime::Runtime::install`] looks up new backend
//! names, builds a new snapshot and publishes it with one store.

pub mod acme;
mod admin;
pub mod config;
pub mod conn;
pub mod demo;
pub mod http;
pub mod l4;
pub mod metrics;
pub mod pki;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod snapshot;
pub mod sockets;
pub mod tls;
pub mod upgrade;
pub mod upstream;

pub use server::{Server, StartError};
