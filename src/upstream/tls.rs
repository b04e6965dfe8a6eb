//! TLS towards backends (re-encryption): tlsedge is the client, verifies the backend's
//! certificate against the host's `backend_tls.ca`, and resumes its sessions with each backend
//! (rustls' in-memory client session cache) so that re-encryption mostly costs a resumed
//! handshake.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::addr::BackendAddr;
use crate::config::validate::BackendTls;
use crate::tls::BuildError;

/// A host's prebuilt TLS client for its backends.
#[derive(Clone)]
pub struct UpstreamTls {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// Builds the client configuration (TLS 1.2 and 1.3, the host's CAs, no client cert).
    pub fn new(provider: &Arc<CryptoProvider>, settings: &BackendTls) -> Result<Self, BuildError> {
        let config = ClientConfig::builder_with_provider(Arc::clone(provider))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(Arc::clone(&settings.roots))
            .with_no_client_auth();
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: settings.server_name.clone(),
        })
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
