//! The answers to pending ACME challenges, shared by the ACME client (which adds and removes
//! them) and the listeners (which serve them):
//!
//! - TLS-ALPN-01 (RFC 8737): a ClientHello that offers `acme-tls/1` and nothing else, for a
//!   name with a pending authorisation, gets a handshake with a self-signed certificate holding
//!   the `acmeIdentifier` extension, then the connection is closed. Ordinary clients never
//!   offer that protocol, so they never see it; a challenge client asking for a name without a
//!   pending authorisation is refused.
//! - HTTP-01: `GET /.well-known/acme-challenge/<token>` on a plain-HTTP listener, for the name
//!   the token was issued for, answers the key authorisation.
//!
//! Answers live outside the snapshot: they come and go with orders, not with reloads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rcgen::{CertificateParams, CustomExtension, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::ClientHello;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// The ALPN protocol of TLS-ALPN-01.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Building a challenge certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    /// rcgen refused the parameters.
    #[error("cannot make the challenge certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// rustls refused the certificate.
    #[error("cannot use the challenge certificate: {0}")]
    Tls(#[from] rustls::Error),
}

/// Pending challenge answers.
#[derive(Debug, Default)]
pub struct Challenges {
    /// Name → the TLS configuration presenting its challenge certificate.
    tls_alpn: Mutex<HashMap<String, Arc<ServerConfig>>>,
    /// Token → (name, key authorisation).
    http: Mutex<HashMap<String, (String, String)>>,
}

impl Challenges {
    /// Answers TLS-ALPN-01 for `name` with `config` until the returned guard is dropped.
    pub fn add_tls_alpn(self: &Arc<Self>, name: &str, config: ServerConfig) -> Answer {
        let mut map = lock(&self.tls_alpn);
        map.insert(name.to_owned(), Arc::new(config));
        Answer {
            challenges: Arc::clone(self),
            key: Key::TlsAlpn(name.to_owned()),
        }
    }

    /// Answers HTTP-01 `token` for `name` until the returned guard is dropped.
    pub fn add_http(self: &Arc<Self>, name: &str, token: &str, key_authorization: &str) -> Answer {
        let mut map = lock(&self.http);
        let entry = (name.to_owned(), key_authorization.to_owned());
        map.insert(token.to_owned(), entry);
        Answer {
            challenges: Arc::clone(self),
            key: Key::Http(token.to_owned()),
        }
    }

    /// The TLS configuration answering TLS-ALPN-01 for `name`, if one is pending.
    pub fn tls_alpn(&self, name: &str) -> Option<Arc<ServerConfig>> {
        let map = lock(&self.tls_alpn);
        map.get(&name.to_ascii_lowercase()).cloned()
    }

    /// The key authorisation answering HTTP-01 `token` asked for with `host`, if pending.
    pub fn http(&self, token: &str, host: Option<&str>) -> Option<String> {
        let map = lock(&self.http);
        let (name, answer) = map.get(token)?;
        let host = host?.trim_end_matches('.');
        host.eq_ignore_ascii_case(name).then(|| answer.clone())
    }
}

#[derive(Debug)]
enum Key {
    TlsAlpn(String),
    Http(String),
}

/// A registered answer; dropping it withdraws the answer.
#[derive(Debug)]
pub struct Answer {
    challenges: Arc<Challenges>,
    key: Key,
}

impl Drop for Answer {
    fn drop(&mut self) {
        match &self.key {
            Key::TlsAlpn(name) => {
                lock(&self.challenges.tls_alpn).remove(name);
            }
            Key::Http(token) => {
                lock(&self.challenges.http).remove(token);
            }
        }
    }
}

// The critical sections are map operations only, so a std mutex never blocks a worker for
// long; a panic elsewhere cannot leave a map half-updated.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether a ClientHello is a TLS-ALPN-01 validation: it offers `acme-tls/1` and nothing else.
pub fn is_validation(hello: &ClientHello<'_>) -> bool {
    let mut offered = hello.alpn().into_iter().flatten();
    offered.next() == Some(ACME_TLS_ALPN) && offered.next().is_none()
}

/// The TLS configuration answering TLS-ALPN-01 for `name`: a fresh self-signed certificate for
/// `name` with the critical `acmeIdentifier` extension holding `digest` (SHA-256 of the key
/// authorisation), offering only `acme-tls/1`.
pub fn tls_alpn_config(
    provider: &Arc<CryptoProvider>,
    name: &str,
    digest: &[u8],
) -> Result<ServerConfig, ChallengeError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(vec![name.to_owned()])?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing_key = provider.key_provider.load_private_key(key_der)?;
    // Through a resolver, not `with_single_cert`: that one parses the certificate as a web PKI
    // end entity and refuses the critical `acmeIdentifier` extension it does not know.
    let certified = CertifiedKey::new(vec![cert.der().clone()], signing_key);
    let mut config = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_exist_while_their_guard_lives() {
        let challenges = Arc::new(Challenges::default());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = tls_alpn_config(&provider, "a.test", &[7; 32]).unwrap();
        let tls = challenges.add_tls_alpn("a.test", config);
        let http = challenges.add_http("a.test", "tok", "tok.thumb");
        assert!(challenges.tls_alpn("A.test").is_some());
        assert!(challenges.tls_alpn("b.test").is_none());
        assert_eq!(
            challenges.http("tok", Some("a.test.")).as_deref(),
            Some("tok.thumb")
        );
        assert_eq!(
            challenges.http("tok", Some("b.test")),
            None,
            "bound to its name"
        );
        assert_eq!(challenges.http("tok", None), None);
        drop((tls, http));
        assert!(challenges.tls_alpn("a.test").is_none());
        assert_eq!(challenges.http("tok", Some("a.test")), None);
    }
}
