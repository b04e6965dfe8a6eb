//! Certificate and key loading: PEM files → a rustls `CertifiedKey` plus the facts we check and
//! report (names, expiry, serial, key algorithm).
//!
//! PEM parsing is rustls-pki-types', X.509 parsing is x509-parser's; this module only glues them
//! and turns every failure into a [`CertError`] that names the file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a certificate/key pair could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid PEM of the expected kind.
    #[error("{} is not a valid PEM {what}: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was expected ("certificate chain", "private key").
        what: &'static str,
        /// The parser's error.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The file holds no certificate.
    #[error("{} contains no certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The leaf certificate is not valid X.509.
    #[error("{} holds an unparsable certificate: {reason}", path.display())]
    X509 {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// The private key's algorithm is not supported by the crypto provider.
    #[error("unsupported private key in {}: {source}", path.display())]
    UnsupportedKey {
        /// The key file.
        path: PathBuf,
        /// rustls' error.
        #[source]
        source: rustls::Error,
    },
    /// The OCSP response file is empty.
    #[error("OCSP response file {} is empty", path.display())]
    EmptyOcsp {
        /// The file.
        path: PathBuf,
    },
    /// The private key does not belong to the certificate.
    #[error("private key {} does not match certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
}

/// The signature algorithm family of a certificate's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyAlgorithm {
    /// ECDSA (P-256, P-384): preferred, cheap to sign.
    Ecdsa,
    /// Ed25519.
    Ed25519,
    /// RSA: for old clients.
    Rsa,
    /// Anything else the provider accepts.
    Other,
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ecdsa => "ecdsa",
            Self::Ed25519 => "ed25519",
            Self::Rsa => "rsa",
            Self::Other => "other",
        })
    }
}

/// A loaded, checked certificate chain with its signing key. Cloning it is cheap (shared parts
/// only): every host naming the same files gets a clone from the file cache.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// The chain file.
    pub cert_path: Arc<Path>,
    /// The key file.
    pub key_path: Arc<Path>,
    /// DNS names of the leaf (subjectAltName, else the subject CN), lowercase.
    pub names: Arc<[String]>,
    /// Leaf `notAfter`, seconds since the Unix epoch.
    pub not_after: i64,
    /// Leaf serial number in hex.
    pub serial: Arc<str>,
    /// Key algorithm family.
    pub algorithm: KeyAlgorithm,
    /// The raw bytes of both files, to tell a real change from a touched file.
    pub fingerprint: u64,
    /// Its position in the host's `certs` list as configured.
    pub index: usize,
}

/// By identity of what rustls serves: the file cache hands out the same key while the files are
/// unchanged (see `HostConfig`).
impl PartialEq for LoadedCert {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.key, &other.key)
            && self.index == other.index
            && self.cert_path == other.cert_path
            && self.key_path == other.key_path
    }
}

impl LoadedCert {
    /// Attaches the DER OCSP response in `path` (if any) to be stapled in handshakes.
    pub fn with_ocsp(mut self, path: Option<&Path>) -> Result<Self, CertError> {
        let Some(path) = path else {
            return Ok(self);
        };
        let der = read(path)?;
        if der.is_empty() {
            return Err(CertError::EmptyOcsp {
                path: path.to_owned(),
            });
        }
        self.fingerprint = fingerprint(&[&self.fingerprint.to_le_bytes(), &der]);
        let mut key = CertifiedKey::clone(&self.key);
        key.ocsp = Some(der);
        self.key = Arc::new(key);
        Ok(self)
    }

    /// The metric label: its configured position and key type (`0:ecdsa`, `1:rsa`). Unique per
    /// host and stable across rotations, where a file name is not: certbot's ECDSA and RSA
    /// lineages are both `fullchain.pem`, two Kubernetes Secrets both `tls.crt`.
    pub fn label(&self) -> String {
        format!("{}:{}", self.index, self.algorithm)
    }

    /// The same certificate as the `index`th of its host's list.
    pub fn at_index(mut self, index: usize) -> Self {
        self.index = index;
        self
    }
}

/// Reads a certificate chain and its key, checks that they match and extracts the leaf's facts.
pub fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<LoadedCert, CertError> {
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    parse_pair(cert_path, &cert_pem, key_path, &key_pem, provider)
}

/// [`load_pair`] on files already read: `cert_pem` from `cert_path`, `key_pem` from `key_path`.
pub fn parse_pair(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<LoadedCert, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertError::Pem {
            path: cert_path.to_owned(),
            what: "certificate chain",
            source,
        })?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::NoCertificate {
            path: cert_path.to_owned(),
        });
    };
    let facts = leaf_facts(leaf.as_ref()).map_err(|reason| CertError::X509 {
        path: cert_path.to_owned(),
        reason,
    })?;
    let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| CertError::Pem {
        path: key_path.to_owned(),
        what: "private key",
        source,
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|source| CertError::UnsupportedKey {
            path: key_path.to_owned(),
            source,
        })?;
    let algorithm = match signing_key.algorithm() {
        rustls::SignatureAlgorithm::ECDSA => KeyAlgorithm::Ecdsa,
        rustls::SignatureAlgorithm::ED25519 => KeyAlgorithm::Ed25519,
        rustls::SignatureAlgorithm::RSA => KeyAlgorithm::Rsa,
        _ => KeyAlgorithm::Other,
    };
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|_| CertError::KeyMismatch {
        key: key_path.to_owned(),
        cert: cert_path.to_owned(),
    })?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        cert_path: cert_path.into(),
        key_path: key_path.into(),
        names: facts.names.into(),
        not_after: facts.not_after,
        serial: facts.serial.into(),
        algorithm,
        fingerprint: fingerprint(&[cert_pem, key_pem]),
        index: 0,
    })
}

/// The largest certificate, key, CA or OCSP file read (a CA bundle of every public root is
/// about 250 KiB).
pub const MAX_FILE: u64 = 16 << 20;

/// Reads a whole file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    read_bounded(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a regular file of at most [`MAX_FILE`] bytes. A FIFO, a device (`/dev/zero`) or a
/// runaway file is an error, never a hang or an unbounded allocation.
pub fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_FILE} bytes"
        )));
    }
    Ok(bytes)
}

/// A cheap content hash, to notice whether files really changed.
pub fn fingerprint(parts: &[&[u8]]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    for part in parts {
        part.hash(&mut hasher);
    }
    hasher.finish()
}

struct LeafFacts {
    names: Vec<String>,
    not_after: i64,
    serial: String,
}

fn leaf_facts(der: &[u8]) -> Result<LeafFacts, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        // RFC 6125 only falls back to the CN when there is no DNS SAN at all.
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    Ok(LeafFacts {
        names,
        not_after: cert.validity().not_after.timestamp(),
        serial: cert.raw_serial_as_string().replace(':', ""),
    })
}

/// The subject distinguished name of a DER certificate (`CN=client-7, O=Example`), for logs.
pub fn subject(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.subject().to_string())
}

#[cfg(test)]
mod tests {
    use super::{CertError, read};

    #[test]
    fn devices_and_fifos_are_refused_not_read_forever() {
        let err = read(std::path::Path::new("/dev/zero")).unwrap_err();
        assert!(matches!(err, CertError::Read { .. }), "{err}");
        assert!(
            err.to_string().contains("/dev/zero: not a regular file"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.pem");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Opening a FIFO for reading blocks until a writer comes: one does, and never writes.
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(fifo))
        };
        let err = read(&fifo).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        drop(writer.join());
    }
}
