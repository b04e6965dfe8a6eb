//! The `acme:` section and a host's `certs: acme`, as written by an operator.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::RawCert;

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// Automatic certificates from an ACME CA (RFC 8555).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    /// The CA's directory URL.
    #[serde(default = "default_directory")]
    pub directory: String,
    /// Contact URLs for the account, e.g. `mailto:ops@example.com`.
    #[serde(default)]
    pub contact: Vec<String>,
    /// Where the account key, issued certificates and leases are kept (relative to the config
    /// file's directory). Default: `acme` beside the config file.
    #[serde(default)]
    pub storage: Option<PathBuf>,
    /// PEM file of CA certificates trusted for the directory's own HTTPS (private CAs, tests);
    /// default: the system's trust store.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// External account binding, for CAs that require one.
    #[serde(default)]
    pub eab: Option<RawEab>,
    /// How control of a name is proven.
    #[serde(default)]
    pub challenge: AcmeChallenge,
    /// The key of each certificate ordered per host; two entries serve dual certificates.
    #[serde(default = "default_key_types")]
    pub key_types: Vec<AcmeKeyType>,
    /// A certificate profile offered by the CA (draft-aaron-acme-profiles), e.g. `shortlived`.
    #[serde(default)]
    pub profile: Option<String>,
    /// Renew when this little of a certificate's lifetime is left, instead of at two thirds of
    /// it (or the CA's ARI window).
    #[serde(default, with = "humantime_serde")]
    pub renew_before: Option<Duration>,
    /// Waiting after a failed order: doubles from `first` up to `max`.
    #[serde(default)]
    pub retry: RawAcmeRetry,
}

/// External account binding credentials.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEab {
    /// The key identifier the CA gave.
    pub kid: String,
    /// A file holding the base64url MAC key the CA gave.
    pub hmac_key_file: PathBuf,
}

/// The ACME challenge type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AcmeChallenge {
    /// Answered on the TLS listener (needs nothing else).
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// Answered on a plain-HTTP listener (`http_listeners`, port 80).
    #[serde(rename = "http-01")]
    Http01,
}

/// The key type of an ordered certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcmeKeyType {
    /// ECDSA on P-256 (the default).
    EcdsaP256,
    /// RSA 2048-bit, for old clients.
    Rsa2048,
}

impl AcmeKeyType {
    /// Its name in the file and in storage file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa_p256",
            Self::Rsa2048 => "rsa2048",
        }
    }
}

/// Retry timing after a failed order.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcmeRetry {
    /// The first wait.
    #[serde(default = "default_retry_first", with = "humantime_serde")]
    pub first: Duration,
    /// The longest wait.
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub max: Duration,
}

impl Default for RawAcmeRetry {
    fn default() -> Self {
        Self {
            first: default_retry_first(),
            max: default_retry_max(),
        }
    }
}

fn default_directory() -> String {
    LETS_ENCRYPT.to_owned()
}

fn default_key_types() -> Vec<AcmeKeyType> {
    vec![AcmeKeyType::EcdsaP256]
}

fn default_retry_first() -> Duration {
    Duration::from_secs(60)
}

fn default_retry_max() -> Duration {
    Duration::from_secs(86_400)
}

/// A host's certificates: file pairs, or `acme`.
#[derive(Debug, Clone, PartialEq)]
pub enum RawCerts {
    /// Certificate chain and key files.
    Files(Vec<RawCert>),
    /// Obtained and renewed by the ACME client, kept in `acme.storage`.
    Acme,
}

impl RawCerts {
    /// The file pairs (none for `acme`).
    pub fn files(&self) -> &[RawCert] {
        match self {
            Self::Files(files) => files,
            Self::Acme => &[],
        }
    }
}

// Written out rather than `#[serde(untagged)]`, which would report every mistake in a file pair
// as "data did not match any variant".
impl<'de> Deserialize<'de> for RawCerts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CertsVisitor;

        impl<'de> Visitor<'de> for CertsVisitor {
            type Value = RawCerts;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of { cert, key } pairs, or `acme`")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawCerts, E> {
                match value {
                    "acme" => Ok(RawCerts::Acme),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawCerts, A::Error> {
                let list = de::value::SeqAccessDeserializer::new(seq);
                Vec::<RawCert>::deserialize(list).map(RawCerts::Files)
            }
        }

        deserializer.deserialize_any(CertsVisitor)
    }
}
