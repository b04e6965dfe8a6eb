//! TLS: certificate loading, host names, per-host certificate choice, and the per-host rustls
//! `ServerConfig`s built once per snapshot.
//!
//! [`TlsShared`] holds what must outlive any one configuration: the crypto provider, the TLS 1.2
//! session-ID cache and the ticketer. Every host's `ServerConfig` points at the same ones, so a
//! ticket issued before a reload still resumes after it.

pub mod cert_choice;
pub mod certs;
pub mod names;
pub mod policy;
pub mod tickets;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{
    NoServerSessionStorage, ServerSessionMemoryCache, StoresServerSessions, WebPkiClientVerifier,
};
use rustls::{ServerConfig, sign::CertifiedKey};

use crate::config::HostConfig;
use crate::config::model::ClientAuthMode;
use crate::config::validate::Sessions;
use cert_choice::CertChoice;
use tickets::{FileTiming, TicketError, TicketKeys};

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
    /// The one ticket key set (TLS 1.2 tickets and TLS 1.3 PSKs).
    pub tickets: Arc<TicketKeys>,
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
    /// The default provider (aws-lc-rs), a session-ID cache sized by `sessions`, and ticket
    /// keys from the shared `ticket_key_file`, or made in memory.
    pub fn new(sessions: &Sessions, ticket_key_file: Option<&Path>) -> Result<Self, TicketError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tickets = match ticket_key_file {
            Some(path) => TicketKeys::from_file(
                path,
                FileTiming {
                    lifetime: sessions.ticket_lifetime,
                    rotate_every: sessions.ticket_rotate_every,
                    grace: sessions.ticket_key_grace,
                },
            )?,
            None => TicketKeys::in_memory(sessions.ticket_rotate_every, sessions.ticket_lifetime)?,
        };
        Ok(Self {
            provider,
            session_cache: ServerSessionMemoryCache::new(sessions.cache_size.max(1)),
            tickets: Arc::new(tickets),
        })
    }

    /// Builds the `ServerConfig` for one host, serving `certs` (in preference order).
    pub fn server_config(
        &self,
        host: &HostConfig,
        certs: Vec<Arc<CertifiedKey>>,
    ) -> Result<Arc<ServerConfig>, BuildError> {
        let provider = Arc::new(host.tls.provider(&self.provider));
        let builder = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(host.tls.versions())?;
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
        let mut config = builder.with_cert_resolver(Arc::new(CertChoice::new(certs)));
        // Suites in the policy's order, not the client's: see `policy`.
        config.ignore_client_order = true;
        config.alpn_protocols.clone_from(&host.alpn);
        if host.resumption {
            // Hosts with client auth keep no TLS 1.2 session-ID entries in the shared cache;
            // their tickets are bound to their own context like every host's.
            if host.client_auth.is_none() {
                config.session_storage = Arc::new(HostSessions {
                    cache: Arc::clone(&self.session_cache),
                    context: ticket_context(host).to_be_bytes(),
                });
            } else {
                config.session_storage = Arc::new(NoServerSessionStorage {});
            }
            config.ticketer = self.tickets.for_host(ticket_context(host));
            config.send_tls13_tickets = TLS13_TICKETS;
        } else {
            config.session_storage = Arc::new(NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        Ok(Arc::new(config))
    }
}

/// One host's view of the shared TLS 1.2 session-ID cache: keys are prefixed with the host's
/// context, so a session ID only resumes on the host that issued it (rustls itself only checks
/// that the SNI matches, which a reload moving a name to another host keeps).
#[derive(Debug)]
struct HostSessions {
    cache: Arc<dyn StoresServerSessions>,
    context: [u8; 8],
}

impl HostSessions {
    fn key(&self, id: &[u8]) -> Vec<u8> {
        [&self.context[..], id].concat()
    }
}

impl StoresServerSessions for HostSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.cache.put(self.key(&key), value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cache.get(&self.key(key))
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cache.take(&self.key(key))
    }

    fn can_cache(&self) -> bool {
        self.cache.can_cache()
    }
}

/// What a ticket is bound to: the host and its client-auth policy. A ticket resumes only where
/// both are the same as where it was issued.
fn ticket_context(host: &HostConfig) -> u64 {
    let mut parts: Vec<&[u8]> = vec![host.label.as_bytes()];
    if let Some(auth) = &host.client_auth {
        parts.push(match auth.mode {
            ClientAuthMode::Required => b"required",
            ClientAuthMode::Optional => b"optional",
        });
        for root in &auth.roots.roots {
            parts.push(root.subject.as_ref());
            parts.push(root.subject_public_key_info.as_ref());
        }
    }
    certs::fingerprint(&parts)
}
