//! Per-host certificate choice: among a host's certificates (ECDSA first), serve the first one
//! whose key can sign with a scheme the client offered. Modern clients get ECDSA; clients that
//! only speak RSA signatures get the RSA certificate.
//!
//! A client none of them fits still gets the first one, so that rustls refuses the hello with
//! `handshake_failure` (no suite or signature scheme in common), which scanners and clients read
//! as "incompatible", rather than `access_denied` for a resolver that found nothing.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A host's certificates, in preference order.
#[derive(Debug)]
pub struct CertChoice {
    certs: Vec<Arc<CertifiedKey>>,
}

impl CertChoice {
    /// `certs` must be in preference order (ECDSA before RSA).
    pub fn new(certs: Vec<Arc<CertifiedKey>>) -> Self {
        Self { certs }
    }
}

impl ResolvesServerCert for CertChoice {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        self.certs
            .iter()
            .find(|c| c.key.choose_scheme(schemes).is_some())
            .or_else(|| self.certs.first())
            .cloned()
    }
}
