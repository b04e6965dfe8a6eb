//! Per-host TLS policy: protocol versions, cipher suites in server preference order, and key
//! exchange groups. The profiles follow Mozilla's Server Side TLS 6.0 (`modern`: TLS 1.3 only;
//! `intermediate`: TLS 1.2 and 1.3 with the six ECDHE-AEAD TLS 1.2 suites); explicit lists
//! override them.
//!
//! Suites are chosen in the server's order (AES-128-GCM first: it is as strong as needed and
//! the cheapest where AES and SHA-256 have hardware support). Key exchange groups are chosen in
//! the client's order among those the host allows, which is how rustls negotiates them; the
//! hybrid post-quantum `X25519MLKEM768` is listed first, so a hello retry asks for it whenever
//! the client supports it.

use std::sync::{Arc, LazyLock};

use rustls::crypto::aws_lc_rs::{ALL_CIPHER_SUITES, ALL_KX_GROUPS, cipher_suite, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::{SupportedCipherSuite, SupportedProtocolVersion, version};

use crate::config::model::TlsProfile;

/// TLS 1.3 suites, in the order both profiles prefer them.
const TLS13_SUITES: [SupportedCipherSuite; 3] = [
    cipher_suite::TLS13_AES_128_GCM_SHA256,
    cipher_suite::TLS13_AES_256_GCM_SHA384,
    cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
];

/// The intermediate profile's TLS 1.2 suites, in Mozilla's order.
const TLS12_SUITES: [SupportedCipherSuite; 6] = [
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// The default key exchange groups: hybrid post-quantum first, as Mozilla 6.0, Chrome, Go 1.24
/// and OpenSSL 3.5 order them.
const DEFAULT_GROUPS: [&dyn SupportedKxGroup; 4] = [
    kx_group::X25519MLKEM768,
    kx_group::X25519,
    kx_group::SECP256R1,
    kx_group::SECP384R1,
];

/// The profiles' lists, shared by every host that does not set its own (with 100,000 hosts,
/// two allocations less per host and reload).
static DEFAULTS: LazyLock<Defaults> = LazyLock::new(|| Defaults {
    tls13_only: TLS13_SUITES.into(),
    both: TLS13_SUITES.iter().chain(&TLS12_SUITES).copied().collect(),
    groups: DEFAULT_GROUPS.into(),
});

struct Defaults {
    tls13_only: Arc<[SupportedCipherSuite]>,
    both: Arc<[SupportedCipherSuite]>,
    groups: Arc<[&'static dyn SupportedKxGroup]>,
}

/// A validated policy for one host.
#[derive(Debug, Clone)]
pub struct TlsPolicy {
    /// Whether TLS 1.2 is accepted (TLS 1.3 always is).
    pub tls12: bool,
    /// Suites in server preference order (TLS 1.2 ones only when `tls12`).
    pub suites: Arc<[SupportedCipherSuite]>,
    /// Key exchange groups.
    pub groups: Arc<[&'static dyn SupportedKxGroup]>,
}

/// Groups compare by name (they are `'static` implementations).
impl PartialEq for TlsPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.tls12 == other.tls12
            && self.suites == other.suites
            && self.groups.len() == other.groups.len()
            && self
                .groups
                .iter()
                .zip(other.groups.iter())
                .all(|(a, b)| a.name() == b.name())
    }
}

impl TlsPolicy {
    /// The profile's defaults, with TLS 1.2 turned off when `tls12` is false.
    pub fn profile(profile: TlsProfile, tls12: bool) -> Self {
        let tls12 = tls12 && profile == TlsProfile::Intermediate;
        let defaults = &*DEFAULTS;
        let suites = if tls12 {
            &defaults.both
        } else {
            &defaults.tls13_only
        };
        Self {
            tls12,
            suites: Arc::clone(suites),
            groups: Arc::clone(&defaults.groups),
        }
    }

    /// The protocol versions to enable.
    pub fn versions(&self) -> &'static [&'static SupportedProtocolVersion] {
        const BOTH: &[&SupportedProtocolVersion] = &[&version::TLS13, &version::TLS12];
        const TLS13_ONLY: &[&SupportedProtocolVersion] = &[&version::TLS13];
        if self.tls12 { BOTH } else { TLS13_ONLY }
    }

    /// `base` restricted to this policy's suites and groups, in its order.
    pub fn provider(&self, base: &CryptoProvider) -> CryptoProvider {
        CryptoProvider {
            cipher_suites: self.suites.to_vec(),
            kx_groups: self.groups.to_vec(),
            ..base.clone()
        }
    }
}

/// The suite an IANA name (`TLS_AES_128_GCM_SHA256`,
/// `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`) or rustls' spelling (`TLS13_AES_128_GCM_SHA256`)
/// names, ignoring case.
pub fn suite_named(name: &str) -> Option<SupportedCipherSuite> {
    ALL_CIPHER_SUITES.iter().copied().find(|suite| {
        let rustls_name = suite.suite().as_str().unwrap_or_default();
        let iana = rustls_name.replacen("TLS13_", "TLS_", 1);
        name.eq_ignore_ascii_case(rustls_name) || name.eq_ignore_ascii_case(&iana)
    })
}

/// The IANA name of a suite, as `suite_named` accepts it and the `cipher` metric label shows it.
pub fn suite_name(suite: SupportedCipherSuite) -> String {
    suite
        .suite()
        .as_str()
        .unwrap_or("unknown")
        .replacen("TLS13_", "TLS_", 1)
}

/// The group a name (`X25519MLKEM768`, `X25519`, `secp256r1` or `P-256`, `secp384r1` or
/// `P-384`) names, ignoring case.
pub fn group_named(name: &str) -> Option<&'static dyn SupportedKxGroup> {
    let name = match name.to_ascii_lowercase().as_str() {
        "p-256" | "prime256v1" => "secp256r1".to_owned(),
        "p-384" => "secp384r1".to_owned(),
        other => other.to_owned(),
    };
    ALL_KX_GROUPS
        .iter()
        .copied()
        .find(|group| name.eq_ignore_ascii_case(group.name().as_str().unwrap_or_default()))
}

/// The names `suite_named` knows, for error messages.
pub fn known_suites() -> String {
    let names: Vec<String> = ALL_CIPHER_SUITES.iter().map(|s| suite_name(*s)).collect();
    names.join(", ")
}

/// The names `group_named` knows, for error messages.
pub fn known_groups() -> String {
    let names: Vec<&str> = ALL_KX_GROUPS
        .iter()
        .filter_map(|g| g.name().as_str())
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_in_iana_and_rustls_spelling() {
        let aes128 = cipher_suite::TLS13_AES_128_GCM_SHA256.suite();
        assert_eq!(
            suite_named("TLS_AES_128_GCM_SHA256").unwrap().suite(),
            aes128
        );
        assert_eq!(
            suite_named("tls13_aes_128_gcm_sha256").unwrap().suite(),
            aes128
        );
        assert!(suite_named("TLS_RSA_WITH_AES_128_CBC_SHA").is_none());
        assert_eq!(
            group_named("p-256").unwrap().name(),
            kx_group::SECP256R1.name()
        );
        assert_eq!(
            group_named("x25519mlkem768").unwrap().name(),
            kx_group::X25519MLKEM768.name()
        );
        assert!(group_named("ffdhe2048").is_none());
    }

    #[test]
    fn profiles_follow_mozilla() {
        let modern = TlsPolicy::profile(TlsProfile::Modern, true);
        assert!(!modern.tls12, "modern is TLS 1.3 only");
        assert_eq!(modern.suites.len(), 3);
        let intermediate = TlsPolicy::profile(TlsProfile::Intermediate, true);
        assert_eq!(intermediate.suites.len(), 9);
        assert_eq!(intermediate.suites[0].suite(), TLS13_SUITES[0].suite());
        assert_eq!(
            intermediate.groups[0].name(),
            kx_group::X25519MLKEM768.name()
        );
        let names: Vec<String> = intermediate.suites[3..]
            .iter()
            .map(|s| suite_name(*s))
            .collect();
        assert_eq!(names[0], "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
        assert_eq!(names[5], "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256");
    }
}
