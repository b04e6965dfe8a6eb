//! tlsedge: a TLS-terminating load balancer for many domains.
//!
//! A tour, in the order a connection travels:
//! - [`server`] binds the listeners and runs the accept loops ([`proxy`]), the admin listener
//!   ([`admin`]) and graceful shutdown;
//! - each connection loads the current [`snapshot::Snapshot`] once from the
//!   [`runtime::Runtime`]'s `ArcSwap`, reads the ClientHello, finds the host by SNI
//!   ([`snapshot::Snapshot::host_for`], [`tls::names`]), and finishes the handshake with that
//!   host's prebuilt rustls config ([`tls`], which picks the certificate in
//!   [`tls::cert_choice`]);
//! - the backend side lives in [`upstream`]: a backend is chosen by the host's policy
//!   ([`upstream::pool`], pure), connected (`upstream::connect`), re-encrypted to if the host
//!   asks ([`upstream::tls`]), and the decrypted stream is relayed ([`proxy::relay`]); backend
//!   names are looked up by [`upstream::dns`] and backends probed by `upstream::probe`;
//! - every event is logged and counted in one place ([`metrics`]).
//!
//! Configuration flows the other way: [`config`] reads and validates YAML, [`reload`] watches
//! the files and re-reads them on change, and [`runtime::Runtime::install`] looks up new backend
//! names, builds a new snapshot and publishes it with one store.

mod admin;
pub mod config;
pub mod demo;
pub mod metrics;
pub mod pki;
pub mod proxy;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod upstream;

pub use server::{Server, StartError};
