//! TLS towards backends (re-encryption): tlsedge is the client, verifies the backend's
//! certificate against the host's `backend_tls.ca`, and resumes its sessions with each backend
//! (rustls' in-memory client session cache) so that re-encryption mostly costs a resumed
//! handshake.
//!
//! The cache lives in the host's [`UpstreamTls`], which a reload carries over
//! ([`UpstreamTls::carry_over`]) as long as the host verifies its backends exactly as before.
//! When the CA or the verified name changes, the host starts with an empty cache: a session
//! resumes without the certificate being checked again, so one established under the old
//! settings must not be offered under the new ones.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::addr::BackendAddr;
use crate::config::validate::BackendTls;
use crate::tls::BuildError;

/// A host's prebuilt TLS client for its backends, with its session cache.
#[derive(Clone)]
pub struct UpstreamTls {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
    /// The trust anchors it verifies with, to tell whether new settings verify the same way.
    roots: Arc<RootCertStore>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// Builds the client configuration (TLS 1.2 and 1.3, the host's CAs, no client cert),
    /// offering `alpn` (empty in `tcp` mode, the backend protocols in `http` mode).
    pub fn new(
        provider: &Arc<CryptoProvider>,
        settings: &BackendTls,
        alpn: &[&[u8]],
    ) -> Result<Self, BuildError> {
        let mut config = ClientConfig::builder_with_provider(Arc::clone(provider))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(Arc::clone(&settings.roots))
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: settings.server_name.clone(),
            roots: Arc::clone(&settings.roots),
        })
    }

    /// The client for a host with `settings` after a reload: `previous` (the host's client in
    /// the last snapshot) when it verifies exactly as `settings` would, so its sessions keep
    /// resuming; otherwise a new client with an empty session cache.
    pub fn carry_over(
        previous: Option<&Self>,
        provider: &Arc<CryptoProvider>,
        settings: &BackendTls,
        alpn: &[&[u8]],
    ) -> Result<Self, BuildError> {
        match previous {
            Some(previous)
                if previous.verifies_like(provider, settings)
                    && previous.connector.config().alpn_protocols == alpn =>
            {
                Ok(previous.clone())
            }
            _ => Self::new(provider, settings, alpn),
        }
    }

    /// Whether a client built from `provider` and `settings` would accept exactly the backend
    /// certificates this one accepts: same provider, same trust anchors (the CA file's
    /// contents, not its path or its bytes), same configured name.
    fn verifies_like(&self, provider: &Arc<CryptoProvider>, settings: &BackendTls) -> bool {
        Arc::ptr_eq(self.connector.config().crypto_provider(), provider)
            && self.server_name == settings.server_name
            && self.roots.roots == settings.roots.roots
    }

    /// The name to send and verify for a backend: the configured one, else the backend's DNS
    /// name, else the address it was reached at.
    fn server_name(&self, backend: &BackendAddr, peer: IpAddr) -> ServerName<'static> {
        if let Some(name) = &self.server_name {
            return name.clone();
        }
        match backend {
            BackendAddr::Name { host, .. } => ServerName::try_from(host.clone())
                .unwrap_or_else(|_| ServerName::IpAddress(peer.into())),
            BackendAddr::Ip(addr) => ServerName::IpAddress(addr.ip().into()),
        }
    }

    /// Runs the TLS handshake with a connected backend. The stream comes boxed: it is over
    /// 1 KiB, and a relay holds it for the connection's whole life.
    pub async fn connect(
        &self,
        backend: &BackendAddr,
        stream: TcpStream,
    ) -> std::io::Result<Box<TlsStream<TcpStream>>> {
        let peer = stream.peer_addr()?.ip();
        let name = self.server_name(backend, peer);
        self.connector.connect(name, stream).await.map(Box::new)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::pki::Ca;

    fn settings(ca: &Ca, name: &str) -> BackendTls {
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().into()).unwrap();
        BackendTls {
            roots: Arc::new(roots),
            server_name: Some(ServerName::try_from(name.to_owned()).unwrap()),
            ca_path: PathBuf::from("ca.pem"),
        }
    }

    /// Whether `b` shares `a`'s client configuration, and with it its session cache.
    fn shares_cache(a: &UpstreamTls, b: &UpstreamTls) -> bool {
        Arc::ptr_eq(a.connector.config(), b.connector.config())
    }

    #[test]
    fn session_cache_carries_over_only_while_verification_is_unchanged() {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (ca, other_ca) = (Ca::new("backend CA").unwrap(), Ca::new("other CA").unwrap());
        let first = UpstreamTls::new(&provider, &settings(&ca, "app.internal"), &[]).unwrap();
        // The CA file read again on reload: a new store with the same anchors.
        let reread = settings(&ca, "app.internal");
        let kept = UpstreamTls::carry_over(Some(&first), &provider, &reread, &[]).unwrap();
        assert!(shares_cache(&first, &kept));
        for changed in [
            settings(&other_ca, "app.internal"),
            settings(&ca, "other.internal"),
        ] {
            let fresh = UpstreamTls::carry_over(Some(&first), &provider, &changed, &[]).unwrap();
            assert!(!shares_cache(&first, &fresh));
        }
        let other_provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let fresh = UpstreamTls::carry_over(Some(&first), &other_provider, &reread, &[]).unwrap();
        assert!(!shares_cache(&first, &fresh));
    }
}
