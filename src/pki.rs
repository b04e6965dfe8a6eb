//! A small private PKI for the demo and the tests: a CA that issues server and client
//! certificates (rcgen). Nothing here is used when serving real traffic.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, RsaKeySize, SerialNumber,
};

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen failed.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A validity time is out of range.
    #[error("timestamp {0} out of range")]
    Time(i64),
}

/// The kind of key to issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256.
    Ecdsa,
    /// RSA 2048.
    Rsa,
}

/// An issued certificate with its key, as PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Leaf certificate PEM.
    pub cert_pem: String,
    /// Private key PEM (PKCS#8).
    pub key_pem: String,
    /// Leaf certificate DER.
    pub cert_der: Vec<u8>,
    /// Serial number, lowercase hex without separators.
    pub serial: String,
}

/// Options for [`Ca::issue_with`].
#[derive(Debug, Clone)]
pub struct IssueOptions<'a> {
    /// DNS names (subjectAltName).
    pub names: &'a [&'a str],
    /// Key algorithm.
    pub key: KeyKind,
    /// Validity as (not_before, not_after) Unix seconds; `None` = from yesterday, for 90 days
    /// (as Let's Encrypt issues them).
    pub validity: Option<(i64, i64)>,
    /// A client certificate (clientAuth EKU) instead of a server one.
    pub client: bool,
}

/// A certificate authority that signs with its own ECDSA key.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A fresh self-signed CA named `common_name`.
    pub fn new(common_name: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        Ok(Self {
            issuer: CertifiedIssuer::self_signed(params, key)?,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    /// Issues a server certificate for `names`, valid for 90 days.
    pub fn issue(&self, names: &[&str], key: KeyKind) -> Result<Issued, PkiError> {
        self.issue_with(&IssueOptions {
            names,
            key,
            validity: None,
            client: false,
        })
    }

    /// Issues a certificate as described by `opts`.
    pub fn issue_with(&self, opts: &IssueOptions<'_>) -> Result<Issued, PkiError> {
        let names: Vec<String> = opts.names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names)?;
        if let Some(first) = opts.names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        let serial = random_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let (from, until) = opts.validity.unwrap_or((now - 86_400, now + 89 * 86_400));
        params.not_before = time_from_unix(from)?;
        params.not_after = time_from_unix(until)?;
        // As public CAs issue them: scanners (sslyze) refuse a chain without the key identifier.
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if opts.client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = match opts.key {
            KeyKind::Ecdsa => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?,
            KeyKind::Rsa => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)?,
        };
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            serial: serial.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }
}

fn time_from_unix(secs: i64) -> Result<time::OffsetDateTime, PkiError> {
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(|_| PkiError::Time(secs))
}

/// A positive 16-byte serial from the OS random source.
fn random_serial() -> [u8; 16] {
    use std::hash::{BuildHasher, RandomState};
    let mut serial = [0_u8; 16];
    let a = RandomState::new().hash_one(1_u8).to_be_bytes();
    let b = RandomState::new().hash_one(2_u8).to_be_bytes();
    serial[..8].copy_from_slice(&a);
    serial[8..].copy_from_slice(&b);
    serial[0] = (serial[0] & 0x7f) | 0x10; // positive, and no leading zero byte to strip
    serial
}
