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
//! Answers live outside the snapshot: they come and go with orders, not with reloads. With
//! ACME storage shared by a fleet, each answer is also written there (`challenges/`), because
//! the CA's validation reaches whichever instance the address leads to, not necessarily the
//! one ordering: an instance without the answer in memory looks in storage.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use rcgen::{CertificateParams, CustomExtension, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::ClientHello;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

use super::storage;

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
    /// The shared ACME storage's `challenges/` directory and the provider to answer from it.
    shared: OnceLock<(PathBuf, Arc<CryptoProvider>)>,
}

/// An answer as kept in shared storage.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    name: String,
    key_authorization: String,
}

impl Challenges {
    /// Also keeps answers in (and looks them up from) `dir`, shared with other instances.
    pub fn share(&self, dir: PathBuf, provider: Arc<CryptoProvider>) {
        let _ = self.shared.set((dir, provider));
    }

    /// Answers TLS-ALPN-01 for `name` with the key authorisation `key_authorization` until the
    /// returned guard is dropped.
    pub fn add_tls_alpn(
        self: &Arc<Self>,
        provider: &Arc<CryptoProvider>,
        name: &str,
        key_authorization: &str,
    ) -> Result<Answer, ChallengeError> {
        let name = name.to_ascii_lowercase();
        let config = tls_alpn_config(provider, &name, key_authorization)?;
        lock(&self.tls_alpn).insert(name.clone(), Arc::new(config));
        self.store(TLS_ALPN_DIR, &name, &name, key_authorization);
        Ok(Answer {
            challenges: Arc::clone(self),
            key: Key::TlsAlpn(name),
        })
    }

    /// Answers HTTP-01 `token` for `name` until the returned guard is dropped.
    pub fn add_http(self: &Arc<Self>, name: &str, token: &str, key_authorization: &str) -> Answer {
        let entry = (name.to_ascii_lowercase(), key_authorization.to_owned());
        lock(&self.http).insert(token.to_owned(), entry);
        self.store(HTTP_DIR, token, name, key_authorization);
        Answer {
            challenges: Arc::clone(self),
            key: Key::Http(token.to_owned()),
        }
    }

    /// The TLS configuration answering TLS-ALPN-01 for `name`, if one is pending here or in
    /// shared storage (read on a blocking thread: storage may be NFS).
    pub async fn tls_alpn(&self, name: &str) -> Option<Arc<ServerConfig>> {
        let name = name.to_ascii_lowercase();
        if let Some(config) = lock(&self.tls_alpn).get(&name) {
            return Some(Arc::clone(config));
        }
        let (dir, provider) = self.shared.get()?.clone();
        let build = move || {
            let stored = stored(&dir, TLS_ALPN_DIR, &name)?;
            let config = tls_alpn_config(&provider, &name, &stored.key_authorization).ok()?;
            Some(Arc::new(config))
        };
        tokio::task::spawn_blocking(build).await.ok().flatten()
    }

    /// The key authorisation answering HTTP-01 `token` asked for with `host`, if pending here
    /// or in shared storage (read on a blocking thread).
    pub async fn http(&self, token: &str, host: Option<&str>) -> Option<String> {
        let host = host?.trim_end_matches('.');
        let found = lock(&self.http).get(token).cloned();
        let (name, answer) = match found {
            Some(found) => found,
            None => {
                let (dir, _) = self.shared.get()?.clone();
                let token = token.to_owned();
                let read = move || stored(&dir, HTTP_DIR, &token);
                let stored = tokio::task::spawn_blocking(read).await.ok().flatten()?;
                (stored.name, stored.key_authorization)
            }
        };
        host.eq_ignore_ascii_case(&name).then_some(answer)
    }

    fn store(&self, kind: &str, key: &str, name: &str, key_authorization: &str) {
        let Some((dir, _)) = self.shared.get() else {
            return;
        };
        if !plain(key) {
            return;
        }
        let record = Stored {
            name: name.to_owned(),
            key_authorization: key_authorization.to_owned(),
        };
        let path = dir.join(kind).join(key);
        let written = serde_json::to_vec(&record)
            .map_err(std::io::Error::other)
            .map_err(|source| storage::StorageError {
                path: path.clone(),
                source,
            })
            .and_then(|json| storage::write_private(&path, &json));
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot share the ACME challenge answer with other instances");
        }
    }

    fn unshare(&self, kind: &str, key: &str) {
        if let Some((dir, _)) = self.shared.get()
            && plain(key)
        {
            let _ = std::fs::remove_file(dir.join(kind).join(key));
        }
    }
}

/// An answer another instance shared.
fn stored(dir: &Path, kind: &str, key: &str) -> Option<Stored> {
    if !plain(key) {
        return None;
    }
    let bytes = std::fs::read(dir.join(kind).join(key)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether `key` is a plain file name. Keys come from clients (an SNI, a URL path) and from the
/// CA (tokens, names), so nothing else is ever joined to a storage path.
fn plain(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 255
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

const TLS_ALPN_DIR: &str = "tls-alpn-01";
const HTTP_DIR: &str = "http-01";

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
                self.challenges.unshare(TLS_ALPN_DIR, name);
            }
            Key::Http(token) => {
                lock(&self.challenges.http).remove(token);
                self.challenges.unshare(HTTP_DIR, token);
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
/// `name` with the critical `acmeIdentifier` extension holding the SHA-256 of the key
/// authorisation, offering only `acme-tls/1`.
fn tls_alpn_config(
    provider: &Arc<CryptoProvider>,
    name: &str,
    key_authorization: &str,
) -> Result<ServerConfig, ChallengeError> {
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_authorization.as_bytes());
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(vec![name.to_owned()])?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest.as_ref())];
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

    #[tokio::test]
    async fn answers_exist_while_their_guard_lives() {
        let challenges = Arc::new(Challenges::default());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = challenges.add_tls_alpn(&provider, "a.test", "x.y").unwrap();
        let http = challenges.add_http("a.test", "tok", "tok.thumb");
        assert!(challenges.tls_alpn("A.test").await.is_some());
        assert!(challenges.tls_alpn("b.test").await.is_none());
        assert_eq!(
            challenges.http("tok", Some("a.test.")).await.as_deref(),
            Some("tok.thumb")
        );
        assert_eq!(
            challenges.http("tok", Some("b.test")).await,
            None,
            "bound to its name"
        );
        assert_eq!(challenges.http("tok", None).await, None);
        drop((tls, http));
        assert!(challenges.tls_alpn("a.test").await.is_none());
        assert_eq!(challenges.http("tok", Some("a.test")).await, None);
    }

    #[tokio::test]
    async fn shared_answers_reach_other_instances_and_only_plain_names_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (ordering, other) = (Arc::new(Challenges::default()), Challenges::default());
        for c in [&*ordering, &other] {
            c.share(dir.path().to_owned(), Arc::clone(&provider));
        }
        let tls = ordering.add_tls_alpn(&provider, "a.test", "x.y").unwrap();
        let http = ordering.add_http("a.test", "tok-1_A", "tok.thumb");
        assert!(other.tls_alpn("a.test").await.is_some());
        assert_eq!(
            other.http("tok-1_A", Some("a.test")).await.as_deref(),
            Some("tok.thumb")
        );
        std::fs::write(
            dir.path().join("secret"),
            r#"{"name":"a.test","key_authorization":"s"}"#,
        )
        .unwrap();
        assert_eq!(
            other.http("../secret", Some("a.test")).await,
            None,
            "no path outside its folder"
        );
        drop((tls, http));
        assert!(
            other.tls_alpn("a.test").await.is_none(),
            "withdrawn for every instance"
        );
        assert_eq!(other.http("tok-1_A", Some("a.test")).await, None);
    }
}
