//! Validation of a host's TLS policy: `tls_profile`, `min_tls`, `cipher_suites` and
//! `kx_groups`. Unknown names and contradictions are errors naming the field.

use super::Validator;
use crate::config::model::{RawHost, TlsProfile};
use crate::config::problem::Issue;
use crate::tls::policy::{self, TlsPolicy};

impl Validator<'_> {
    pub(super) fn tls_policy(&mut self, at: &str, raw: &RawHost) -> TlsPolicy {
        let tls12 = match raw.min_tls.as_deref() {
            None | Some("1.2") => true,
            Some("1.3") => false,
            Some(other) => {
                let issue = Issue::BadTlsVersion {
                    value: other.to_owned(),
                };
                self.error(format!("{at}: min_tls"), issue);
                true
            }
        };
        if raw.tls_profile == TlsProfile::Modern && raw.min_tls.as_deref() == Some("1.2") {
            let issue = Issue::TlsConflict("tls_profile modern is TLS 1.3 only");
            self.error(format!("{at}: min_tls"), issue);
        }
        let mut tls = TlsPolicy::profile(raw.tls_profile, tls12);
        if let Some(names) = &raw.cipher_suites {
            tls.suites = self.suites(at, names, tls.tls12).into();
        }
        if let Some(names) = &raw.kx_groups {
            tls.groups = self.groups(at, names).into();
            let tls12_group = tls
                .groups
                .iter()
                .any(|g| g.usable_for_version(rustls::ProtocolVersion::TLSv1_2));
            if tls.tls12 && !tls.groups.is_empty() && !tls12_group {
                let issue = Issue::TlsConflict(
                    "lists no group usable with TLS 1.2 (X25519MLKEM768 is TLS 1.3 only)",
                );
                self.error(format!("{at}: kx_groups"), issue);
            }
        }
        tls
    }

    fn suites(
        &mut self,
        at: &str,
        names: &[String],
        tls12: bool,
    ) -> Vec<rustls::SupportedCipherSuite> {
        let mut suites: Vec<rustls::SupportedCipherSuite> = Vec::new();
        for (n, name) in names.iter().enumerate() {
            let place = format!("{at}: cipher_suites[{n}]");
            let Some(suite) = policy::suite_named(name) else {
                let known = policy::known_suites();
                let value = name.clone();
                self.error(place, Issue::UnknownSuite { value, known });
                continue;
            };
            if suites.iter().any(|s| s.suite() == suite.suite()) {
                self.error(
                    place,
                    Issue::Repeated {
                        value: name.clone(),
                    },
                );
            } else if suite.tls13().is_none() && !tls12 {
                let issue = Issue::TlsConflict(
                    "a TLS 1.2 suite on a TLS 1.3 only host (tls_profile modern or min_tls \"1.3\")",
                );
                self.error(place, issue);
            } else {
                suites.push(suite);
            }
        }
        let place = format!("{at}: cipher_suites");
        if !suites.iter().any(|s| s.tls13().is_some()) {
            let issue = Issue::TlsConflict("lists no TLS 1.3 suite (TLS 1.3 is always enabled)");
            self.error(place, issue);
        } else if tls12 && suites.iter().all(|s| s.tls13().is_some()) {
            let issue = Issue::TlsConflict(
                "lists no TLS 1.2 suite while TLS 1.2 is enabled (add one, or set min_tls: \"1.3\")",
            );
            self.error(place, issue);
        }
        suites
    }

    fn groups(
        &mut self,
        at: &str,
        names: &[String],
    ) -> Vec<&'static dyn rustls::crypto::SupportedKxGroup> {
        let mut groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup> = Vec::new();
        for (n, name) in names.iter().enumerate() {
            let place = format!("{at}: kx_groups[{n}]");
            match policy::group_named(name) {
                None => {
                    let known = policy::known_groups();
                    let value = name.clone();
                    self.error(place, Issue::UnknownGroup { value, known });
                }
                Some(group) if groups.iter().any(|g| g.name() == group.name()) => {
                    self.error(
                        place,
                        Issue::Repeated {
                            value: name.clone(),
                        },
                    );
                }
                Some(group) => groups.push(group),
            }
        }
        if names.is_empty() {
            self.error(format!("{at}: kx_groups"), Issue::Empty);
        }
        groups
    }
}
