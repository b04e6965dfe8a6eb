//! Validation of the `acme:` section: the directory URL, contacts, storage, trust anchors for
//! the directory, external account binding, challenge type, key types and retry timing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::Validator;
use super::bounds::{DAY, Zero};
use crate::config::model::{AcmeChallenge, AcmeKeyType, RawAcme, RawConfig};
use crate::config::problem::Issue;

/// The longest `acme.retry.max` and `acme.renew_before`.
const MONTH: Duration = Duration::from_secs(30 * 86_400);

/// Validated ACME settings (fixed at start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The CA's directory URL.
    pub directory: String,
    /// Account contact URLs.
    pub contact: Vec<String>,
    /// The storage directory, resolved against the config file's directory.
    pub storage: PathBuf,
    /// CA certificates for the directory's HTTPS, if not the system's.
    pub ca: Option<Vec<CertificateDer<'static>>>,
    /// External account binding: key id and MAC key.
    pub eab: Option<(String, Vec<u8>)>,
    /// The challenge type.
    pub challenge: AcmeChallenge,
    /// Key types ordered per host, each once.
    pub key_types: Vec<AcmeKeyType>,
    /// The certificate profile to ask for.
    pub profile: Option<String>,
    /// Renew with this much lifetime left, instead of at two thirds.
    pub renew_before: Option<Duration>,
    /// The first wait after a failure.
    pub retry_first: Duration,
    /// The longest wait after failures.
    pub retry_max: Duration,
}

/// The storage directory `raw` names, resolved against `base` (default `acme/`).
pub fn storage_dir(raw: &RawAcme, base: &Path) -> PathBuf {
    base.join(raw.storage.as_deref().unwrap_or(Path::new("acme")))
}

impl Validator<'_> {
    pub(super) fn acme(&mut self, raw: &RawConfig, http_listeners: usize) -> Option<AcmeConfig> {
        let acme = raw.acme.as_ref()?;
        let directory = acme.directory.trim().to_owned();
        let https = directory
            .parse::<hyper::Uri>()
            .is_ok_and(|u| u.scheme_str() == Some("https") && u.host().is_some());
        if !https {
            self.invalid("acme.directory", "directory URL", &directory, "https://…");
        }
        for (i, contact) in acme.contact.iter().enumerate() {
            let email = contact.strip_prefix("mailto:");
            let valid = email.is_some_and(|e| {
                e.split_once('@')
                    .is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'))
                    && !e.contains([',', ' ', '<', '>'])
            });
            if !valid {
                let place = format!("acme.contact[{i}]");
                self.invalid(place, "contact", contact, "mailto:name@example.com");
            }
        }
        if acme.challenge == AcmeChallenge::Http01 && http_listeners == 0 {
            self.error("acme.challenge", Issue::AcmeNoHttpListener);
        }
        if acme.key_types.is_empty() {
            self.error("acme.key_types", Issue::Empty);
        }
        let mut key_types = Vec::new();
        for (i, kind) in acme.key_types.iter().enumerate() {
            if key_types.contains(kind) {
                let issue = Issue::Repeated {
                    value: kind.as_str().to_owned(),
                };
                self.error(format!("acme.key_types[{i}]"), issue);
            } else {
                key_types.push(*kind);
            }
        }
        if acme.profile.as_deref().is_some_and(|p| p.trim().is_empty()) {
            self.error("acme.profile", Issue::Empty);
        }
        if let Some(before) = acme.renew_before {
            self.duration("acme.renew_before", before, Zero::Refused, MONTH);
        }
        let retry = acme.retry;
        self.duration("acme.retry.first", retry.first, Zero::Refused, DAY);
        self.duration("acme.retry.max", retry.max, Zero::Refused, MONTH);
        Some(AcmeConfig {
            directory,
            contact: acme.contact.clone(),
            storage: storage_dir(acme, &self.base),
            ca: acme.ca.as_ref().and_then(|ca| self.acme_ca(ca)),
            eab: acme.eab.as_ref().and_then(|eab| {
                let key = self.eab_key(&eab.hmac_key_file)?;
                Some((eab.kid.clone(), key))
            }),
            challenge: acme.challenge,
            key_types,
            profile: acme.profile.clone(),
            renew_before: acme.renew_before,
            retry_first: retry.first,
            retry_max: retry.max.max(retry.first),
        })
    }

    fn invalid(
        &mut self,
        place: impl Into<String>,
        what: &'static str,
        value: &str,
        expected: &'static str,
    ) {
        let issue = Issue::Invalid {
            what,
            value: value.to_owned(),
            expected,
        };
        self.error(place, issue);
    }

    fn acme_ca(&mut self, file: &Path) -> Option<Vec<CertificateDer<'static>>> {
        let path = self.base.join(file);
        let certs = CertificateDer::pem_file_iter(&path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>());
        let reason = match certs {
            Ok(certs) if !certs.is_empty() => return Some(certs),
            Ok(_) => "no PEM certificate in it".to_owned(),
            Err(e) => e.to_string(),
        };
        self.bad_file("acme.ca", &path, reason)
    }

    fn eab_key(&mut self, file: &Path) -> Option<Vec<u8>> {
        let path = self.base.join(file);
        let reason = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let text = text.trim().trim_end_matches('=');
                match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text) {
                    Ok(key) if !key.is_empty() => return Some(key),
                    Ok(_) => "it is empty".to_owned(),
                    Err(e) => format!("not base64url: {e}"),
                }
            }
            Err(e) => e.to_string(),
        };
        self.bad_file("acme.eab.hmac_key_file", &path, reason)
    }

    /// Reports that the file `path` named at `place` cannot be used, and why.
    fn bad_file<T>(&mut self, place: &str, path: &Path, reason: String) -> Option<T> {
        let issue = Issue::BadFile {
            path: path.display().to_string(),
            reason,
        };
        self.error(place, issue);
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use crate::config::load;
    use crate::config::problem::Severity;

    /// `(place, message)` of every error in a config with `acme` and `hosts` as given.
    fn errors(acme: &str, hosts: &str) -> Vec<(String, String)> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("eab.key"), "c2VjcmV0LW1hYy1rZXk\n").unwrap();
        std::fs::write(dir.path().join("bad.pem"), "nothing here").unwrap();
        let text = format!("listeners: [\"127.0.0.1:443\"]\n{acme}\nhosts:\n{hosts}");
        let file = dir.path().join("tlsedge.yaml");
        let raw = load::parse(&text, &file).expect("parses");
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let mut cache = crate::config::FileCache::default();
        let (_, problems, _) =
            super::super::validate(&raw, &file, &provider, &mut cache, SystemTime::now(), None);
        problems
            .into_iter()
            .filter(|p| p.severity == Severity::Error)
            .map(|p| (p.place, p.issue.to_string()))
            .collect()
    }

    const ACME_HOST: &str = "  - names: [a.test, www.a.test]\n    certs: acme\n    backends: [{ address: \"127.0.0.1:80\" }]\n";

    #[test]
    fn a_plain_acme_section_and_host_pass_and_the_host_starts_pending() {
        assert_eq!(
            errors("acme: { contact: [\"mailto:ops@example.com\"] }", ACME_HOST),
            []
        );
        let dir = tempfile::tempdir().unwrap();
        let text = format!("listeners: [\"127.0.0.1:443\"]\nacme: {{}}\nhosts:\n{ACME_HOST}");
        let file = dir.path().join("tlsedge.yaml");
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let loaded = load::from_str(&text, &file, &provider)
            .unwrap()
            .strict()
            .unwrap();
        let host = &loaded.config.hosts[0];
        assert!(host.acme && host.certs.is_none(), "nothing issued yet");
        let acme = loaded.config.start.acme.as_ref().unwrap();
        assert_eq!(acme.directory, crate::config::model::LETS_ENCRYPT);
        assert_eq!(
            acme.storage,
            dir.path().join("acme"),
            "beside the config file"
        );
        let watched = loaded.referenced_files();
        assert!(watched.contains(&dir.path().join("acme/certs/a.test/ecdsa_p256.pem")));
    }

    #[test]
    fn each_mistake_names_its_field() {
        let wildcard = "  - names: [\"*.a.test\"]\n    certs: acme\n    backends: [{ address: \"127.0.0.1:80\" }]\n";
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "",
                ACME_HOST,
                "hosts[0] (a.test): certs",
                "top-level `acme:`",
            ),
            (
                "acme: {}",
                wildcard,
                "hosts[0] (*.a.test): names[0]",
                "DNS-01",
            ),
            (
                "acme: { challenge: http-01 }",
                ACME_HOST,
                "acme.challenge",
                "http_listeners",
            ),
            (
                "acme: { directory: \"http://ca.test/dir\" }",
                ACME_HOST,
                "acme.directory",
                "https://",
            ),
            (
                "acme: { contact: [\"ops@example.com\"] }",
                ACME_HOST,
                "acme.contact[0]",
                "mailto:",
            ),
            (
                "acme: { key_types: [] }",
                ACME_HOST,
                "acme.key_types",
                "empty",
            ),
            (
                "acme: { key_types: [rsa2048, rsa2048] }",
                ACME_HOST,
                "acme.key_types[1]",
                "twice",
            ),
            ("acme: { ca: bad.pem }", ACME_HOST, "acme.ca", "bad.pem"),
            (
                "acme: { eab: { kid: k, hmac_key_file: missing.key } }",
                ACME_HOST,
                "acme.eab.hmac_key_file",
                "missing.key",
            ),
            (
                "acme: { retry: { first: 0s } }",
                ACME_HOST,
                "acme.retry.first",
                "",
            ),
        ];
        for (acme, hosts, place, says) in cases {
            let found = errors(acme, hosts);
            assert!(
                found.iter().any(|(p, m)| p == place && m.contains(says)),
                "{acme:?}: expected {place}: …{says}…, got {found:?}"
            );
        }
        assert_eq!(
            errors(
                "acme: { eab: { kid: k, hmac_key_file: eab.key } }",
                ACME_HOST
            ),
            []
        );
    }

    #[test]
    fn a_corrupt_stored_certificate_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let stored = dir.path().join("acme/certs/a.test/ecdsa_p256.pem");
        std::fs::create_dir_all(stored.parent().unwrap()).unwrap();
        std::fs::write(&stored, "garbage").unwrap();
        let text = format!("listeners: [\"127.0.0.1:443\"]\nacme: {{}}\nhosts:\n{ACME_HOST}");
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let file = dir.path().join("tlsedge.yaml");
        let loaded = load::from_str(&text, &file, &provider).unwrap();
        assert!(!loaded.has_errors(), "{:?}", loaded.problems);
        let warning = loaded
            .problems
            .iter()
            .find(|p| p.to_string().contains("ecdsa_p256.pem"));
        assert!(warning.is_some(), "names the file: {:?}", loaded.problems);
        assert!(
            loaded.config.hosts[0].certs.is_none(),
            "pending until ordered anew"
        );
    }
}
