//! TLS: certificate loading, host names, per-host certificate choice, and the per-host rustls
//! `ServerConfig`s built once per snapshot.
//!
//! [`TlsShared`] holds what must outlive any one configuration: the crypto provider, the TLS 1.2
//! session-ID cache and the ticketer. Every host's `ServerConfig` points at the same ones, so a
//! ticket issued before a reload still resumes after it.

pub mod certs;
pub mod names;
pub mod resolver;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{
    NoServerSessionStorage, ProducesTickets, ServerSessionMemoryCache, StoresServerSessions,
    WebPkiClientVerifier,
};
use rustls::{ServerConfig, sign::CertifiedKey, version};

use crate::config::HostConfig;
use crate::config::model::ClientAuthMode;
use resolver::HostCertResolver;

/// How many TLS 1.3 tickets a full handshake sends: clients use one per future connection, and
/// each costs an AEAD seal on the handshake path.
const TLS13_TICKETS: usize = 1;

/// Process-wide TLS state shared by every snapshot.
#[derive(Debug, Clone)]
pub struct TlsShared {
    /// The crypto provider for keys, handshakes and tickets.
    pub provider: Arc<CryptoProvider>,
    /// TLS 1.2 session-ID cache.
    pub session_cache: Arc<dyn StoresServerSessions>,
    /// Stateless ticket producer (TLS 1.2 tickets and TLS 1.3 PSKs).
    pub ticketer: Arc<dyn ProducesTickets>,
}

/// Why a host's `ServerConfig` could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// rustls refused the settings.
    #[error("tls settings rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-auth verifier could not be built.
    #[error("client-auth verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

impl TlsShared {
    /// The default provider (aws-lc-rs), a session cache of `cache_size` entries and a rotating
    /// in-memory ticketer.
    pub fn new(cache_size: usize) -> Result<Self, rustls::Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        Ok(Self {
            provider,
            session_cache: ServerSessionMemoryCache::new(cache_size.max(1)),
            ticketer: rustls::crypto::aws_lc_rs::Ticketer::new()?,
        })
    }

    /// Builds the `ServerConfig` for one host, serving `certs` (in preference order).
    pub fn server_config(
        &self,
        host: &HostConfig,
        certs: Vec<Arc<CertifiedKey>>,
    ) -> Result<Arc<ServerConfig>, BuildError> {
        let versions: &[&rustls::SupportedProtocolVersion] = if host.allow_tls12 {
            &[&version::TLS13, &version::TLS12]
        } else {
            &[&version::TLS13]
        };
        let builder = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(versions)?;
        let builder = match &host.client_auth {
            None => builder.with_no_client_auth(),
            Some(auth) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::clone(&auth.roots),
                    Arc::clone(&self.provider),
                );
                let verifier = match auth.mode {
                    ClientAuthMode::Required => verifier.build()?,
                    ClientAuthMode::Optional => verifier.allow_unauthenticated().build()?,
                };
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(HostCertResolver::new(certs)));
        config.alpn_protocols.clone_from(&host.alpn);
        if host.resumption {
            config.session_storage = Arc::clone(&self.session_cache);
            config.ticketer = Arc::clone(&self.ticketer);
            config.send_tls13_tickets = TLS13_TICKETS;
        } else {
            config.session_storage = Arc::new(NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        Ok(Arc::new(config))
    }
}
