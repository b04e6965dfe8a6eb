//! Validation of one `hosts[]` entry: names, certificates and keys, backends, TLS settings,
//! client auth, TLS to backends, allow lists and health checks. Problems with the host's files
//! are scoped to the host, so a reload can keep its last good certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use super::acme::AcmeConfig;
use super::bounds::{DAY, MAX_HEALTH_COUNT, Zero};
use super::{
    BackendConfig, BackendTls, ClientAuth, EXPIRY_WARNING, HealthCheck, HostConfig, Validator,
};
use crate::config::model::{
    BalancePolicy, RawBackend, RawBackendTls, RawCert, RawCerts, RawClientAuth, RawHealthCheck,
    RawHost,
};
use crate::config::problem::{Issue, Scope, Severity};
use crate::tls::certs::{self, LoadedCert};
use crate::tls::names::{HostName, NameIndex};
use crate::upstream::{BackendAddr, Policy};

impl Validator<'_> {
    pub(super) fn host(
        &mut self,
        i: usize,
        raw: &RawHost,
        index: &mut NameIndex,
        acme: Option<&AcmeConfig>,
    ) -> HostConfig {
        let label = label(raw);
        let at = place(i, &label);
        if raw.names.is_empty() {
            self.error(format!("{at}: names"), Issue::Empty);
        }
        let mut names = Vec::new();
        for (n, name) in raw.names.iter().enumerate() {
            let Some(parsed) = HostName::parse(name) else {
                let issue = Issue::BadName { name: name.clone() };
                self.error(format!("{at}: names[{n}]"), issue);
                continue;
            };
            self.claim_name(index, i, &label, n, &parsed);
            names.push(parsed);
        }
        let certs = match &raw.certs {
            RawCerts::Files(files) => self.host_certs(i, &at, files, &names),
            RawCerts::Acme => self.acme_certs(i, &at, acme, &names),
        };
        let backends = self.backends(&format!("{at}: backends"), &raw.backends);
        let tls = self.tls_policy(&at, raw);
        let mut alpn = Vec::new();
        for (a, proto) in raw.alpn.iter().enumerate() {
            if proto.is_empty() || proto.len() > 255 {
                let issue = Issue::BadAlpn {
                    value: proto.clone(),
                };
                self.error(format!("{at}: alpn[{a}]"), issue);
            } else {
                alpn.push(proto.as_bytes().to_vec());
            }
        }
        let http = self.http(&at, raw);
        if http.is_some() {
            alpn = self.http_alpn(&at, alpn);
        }
        let client_auth = raw
            .client_auth
            .as_ref()
            .and_then(|auth| self.client_auth(i, &at, auth));
        let backend_tls = raw
            .backend_tls
            .as_ref()
            .and_then(|tls| self.backend_tls(i, &at, tls));
        // A host whose CA failed must never be served without client authentication, nor
        // relay in plaintext what should be re-encrypted.
        let certs = certs.filter(|_| raw.client_auth.is_none() || client_auth.is_some());
        let certs = certs.filter(|_| raw.backend_tls.is_none() || backend_tls.is_some());
        HostConfig {
            label,
            names,
            certs,
            backends,
            balance: policy(raw.balance),
            alpn,
            tls,
            client_auth,
            proxy_protocol: raw.proxy_protocol,
            resumption: raw.resumption,
            health_check: raw
                .health_check
                .as_ref()
                .and_then(|hc| self.health_check(&at, hc)),
            backend_tls,
            allow: self.nets(&format!("{at}: allow"), &raw.allow),
            http,
            acme: matches!(raw.certs, RawCerts::Acme),
        }
    }

    /// Enters `name`, host `i`'s `names[n]`, into `index`, reporting it if an earlier host
    /// has it.
    pub(super) fn claim_name(
        &mut self,
        index: &mut NameIndex,
        i: usize,
        label: &str,
        n: usize,
        name: &HostName,
    ) {
        if let Some(other) = index.insert(name, i) {
            let issue = Issue::DuplicateName {
                name: name.to_string(),
                other,
            };
            self.error(format!("{}: names[{n}]", place(i, label)), issue);
        }
    }

    /// The certificates ACME has issued for a `certs: acme` host so far, from storage: `None`
    /// (pending) until the first one exists, or when a stored one fails to load (the host keeps
    /// what it served; the ACME client orders anew).
    fn acme_certs(
        &mut self,
        i: usize,
        at: &str,
        acme: Option<&AcmeConfig>,
        names: &[HostName],
    ) -> Option<Vec<LoadedCert>> {
        let Some(acme) = acme else {
            self.error(format!("{at}: certs"), Issue::AcmeNotConfigured);
            return None;
        };
        for (n, name) in names.iter().enumerate() {
            if let HostName::Wildcard { .. } = name {
                let issue = Issue::AcmeWildcard {
                    name: name.to_string(),
                };
                self.error(format!("{at}: names[{n}]"), issue);
            }
        }
        let Some(HostName::Exact(label)) = names.first() else {
            return None;
        };
        // Each key type on its own: a bad RSA file must not keep a good ECDSA one from
        // serving. Storage is the ACME client's to repair (it orders anew), so a bad file there
        // is a warning: it never stops a start or a reload.
        let mut certs = Vec::new();
        for (k, kind) in acme.key_types.iter().enumerate() {
            let file = crate::acme::storage::cert_file(&acme.storage, label, *kind);
            if !file.exists() {
                continue;
            }
            let pair = RawCert {
                cert: file.clone(),
                key: file,
                ocsp: None,
            };
            let before = self.problems.len();
            let loaded = self.host_certs(i, at, std::slice::from_ref(&pair), names);
            for problem in &mut self.problems[before..] {
                problem.severity = Severity::Warning;
            }
            certs.extend(loaded.into_iter().flatten().map(|c| c.at_index(k)));
        }
        certs.sort_by_key(|c| c.algorithm);
        (!certs.is_empty()).then_some(certs)
    }

    /// Parses a `backends` list, reporting problems at `place[b]`.
    pub(super) fn backends(&mut self, place: &str, raw: &[RawBackend]) -> Vec<BackendConfig> {
        if raw.is_empty() {
            self.error(place, Issue::Empty);
        }
        let mut backends = Vec::new();
        for (b, backend) in raw.iter().enumerate() {
            let addr = BackendAddr::parse(&backend.address);
            if addr.is_none() {
                let issue = Issue::BadBackendAddress {
                    value: backend.address.clone(),
                };
                self.error(format!("{place}[{b}].address"), issue);
            }
            if !(1..=1000).contains(&backend.weight) {
                let issue = Issue::BadWeight {
                    weight: backend.weight,
                };
                self.error(format!("{place}[{b}].weight"), issue);
            }
            if let Some(addr) = addr {
                let weight = backend.weight.clamp(1, 1000);
                backends.push(BackendConfig { addr, weight });
            }
        }
        backends
    }

    fn health_check(&mut self, at: &str, hc: &RawHealthCheck) -> Option<HealthCheck> {
        let mut ok = true;
        for (field, value) in [("interval", hc.interval), ("timeout", hc.timeout)] {
            ok &= self.duration(
                format!("{at}: health_check.{field}"),
                value,
                Zero::Refused,
                DAY,
            );
        }
        for (field, value) in [("fall", hc.fall), ("rise", hc.rise)] {
            let max = u64::from(MAX_HEALTH_COUNT);
            ok &= self.count(
                format!("{at}: health_check.{field}"),
                value.into(),
                Zero::Refused,
                max,
            );
        }
        let http = match &hc.http {
            None => None,
            Some(probe) => Some(Arc::new(self.http_probe(at, probe)?)),
        };
        ok.then_some(HealthCheck {
            interval: hc.interval,
            timeout: hc.timeout,
            fall: hc.fall,
            rise: hc.rise,
            http,
        })
    }

    fn host_certs(
        &mut self,
        i: usize,
        at: &str,
        raw: &[RawCert],
        names: &[HostName],
    ) -> Option<Vec<LoadedCert>> {
        if raw.is_empty() {
            self.error(format!("{at}: certs"), Issue::Empty);
            return None;
        }
        let scope = Scope::HostFiles(i);
        let mut loaded = Vec::new();
        let mut failed = false;
        for (c, pair) in raw.iter().enumerate() {
            let place = format!("{at}: certs[{c}]");
            let (cert_path, key_path) = (self.base.join(&pair.cert), self.base.join(&pair.key));
            self.check_key_permissions(scope, &place, &key_path);
            let ocsp_path = pair.ocsp.as_ref().map(|p| self.base.join(p));
            let result = (self.cache)
                .load_pair(&cert_path, &key_path, self.provider)
                .and_then(|cert| cert.with_ocsp(ocsp_path.as_deref()))
                .map(|cert| cert.at_index(c));
            let cert = match result {
                Ok(cert) => cert,
                Err(e) => {
                    self.report(Severity::Error, scope, place, e.into());
                    failed = true;
                    continue;
                }
            };
            let file = || pair.cert.display().to_string();
            for name in names {
                if !name.covered_by(&cert.names) {
                    let issue = Issue::NameNotCovered {
                        name: name.to_string(),
                        cert: file(),
                        covers: cert.names.join(", "),
                    };
                    self.report(Severity::Error, scope, place.clone(), issue);
                    failed = true;
                }
            }
            let left = cert.not_after - self.now;
            if left <= 0 {
                let issue = Issue::Expired {
                    cert: file(),
                    not_after: cert.not_after,
                };
                self.report(Severity::Error, scope, place, issue);
                failed = true;
            } else if left < EXPIRY_WARNING.as_secs() as i64 {
                let issue = Issue::ExpiresSoon {
                    cert: file(),
                    days: left / 86_400,
                };
                self.report(Severity::Warning, scope, place, issue);
            }
            loaded.push(cert);
        }
        // ECDSA first: the certificate choice offers the first certificate whose key the client can use.
        loaded.sort_by_key(|c| c.algorithm);
        (!failed).then_some(loaded)
    }

    /// Warns about a key others can read, or a group other than this process's own. A key
    /// readable by the service's group is the deliberate pattern of certbot's deploy hook and of
    /// Kubernetes Secret volumes with `fsGroup` (0440 root:fsGroup).
    fn check_key_permissions(&mut self, scope: Scope, place: &str, key: &Path) {
        if let Some(stamp) = self.cache.stamp(key) {
            let mode = stamp.mode & 0o777;
            let others = mode & 0o004 != 0;
            let foreign_group = mode & 0o040 != 0 && !is_own_group(stamp.gid);
            if others || foreign_group {
                let issue = Issue::KeyPermissions {
                    path: key.display().to_string(),
                    mode,
                };
                self.report(Severity::Warning, scope, format!("{place}.key"), issue);
            }
        }
    }

    fn client_auth(&mut self, i: usize, at: &str, raw: &RawClientAuth) -> Option<ClientAuth> {
        let place = format!("{at}: client_auth.ca");
        let (roots, ca_path) = self.ca_roots(i, place, &raw.ca)?;
        Some(ClientAuth {
            roots,
            mode: raw.mode,
            ca_path,
        })
    }

    fn backend_tls(&mut self, i: usize, at: &str, raw: &RawBackendTls) -> Option<BackendTls> {
        let server_name = match &raw.server_name {
            None => None,
            Some(name) => match ServerName::try_from(name.as_str()) {
                Ok(parsed) => Some(parsed.to_owned()),
                Err(_) => {
                    let issue = Issue::BadName { name: name.clone() };
                    self.error(format!("{at}: backend_tls.server_name"), issue);
                    return None;
                }
            },
        };
        let place = format!("{at}: backend_tls.ca");
        let (roots, ca_path) = self.ca_roots(i, place, &raw.ca)?;
        Some(BackendTls {
            roots,
            server_name,
            ca_path,
        })
    }

    /// Loads a PEM file of CA certificates (a problem of host `i`'s files when it fails).
    fn ca_roots(
        &mut self,
        i: usize,
        place: String,
        raw: &Path,
    ) -> Option<(Arc<RootCertStore>, PathBuf)> {
        let ca_path = self.base.join(raw);
        let scope = Scope::HostFiles(i);
        let bad_ca = |reason: String| Issue::BadCa {
            path: raw.display().to_string(),
            reason,
        };
        let pem = match certs::read(&ca_path) {
            Ok(pem) => pem,
            Err(e) => {
                self.report(Severity::Error, scope, place, e.into());
                return None;
            }
        };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let added = cert
                .map_err(|e| e.to_string())
                .and_then(|c| roots.add(c).map_err(|e| e.to_string()));
            if let Err(reason) = added {
                self.report(Severity::Error, scope, place, bad_ca(reason));
                return None;
            }
        }
        if roots.is_empty() {
            let issue = bad_ca("the file holds no certificate".into());
            self.report(Severity::Error, scope, place, issue);
            return None;
        }
        Some((Arc::new(roots), ca_path))
    }
}

/// Where host `i` is, in problems: `hosts[3] (shop.example)`.
fn place(i: usize, label: &str) -> String {
    format!("hosts[{i}] ({label})")
}

/// A host's label in metrics, logs and ACME storage: its first name, lowercase, without a
/// trailing dot.
pub(super) fn label(raw: &RawHost) -> String {
    raw.names.first().map_or_else(String::new, |n| {
        n.strip_suffix('.').unwrap_or(n).to_ascii_lowercase()
    })
}

/// The balancing policy a configured name stands for. The serde enum stays in the model so the
/// pure balancer does not depend on the configuration format.
pub(super) fn policy(raw: BalancePolicy) -> Policy {
    match raw {
        BalancePolicy::RoundRobin => Policy::RoundRobin,
        BalancePolicy::LeastConn => Policy::LeastConn,
        BalancePolicy::P2c => Policy::P2c,
        BalancePolicy::HashClientIp => Policy::HashClientIp,
    }
}

/// Whether `gid` is this process's effective group or one of its supplementary groups.
fn is_own_group(gid: u32) -> bool {
    use rustix::process::{Gid, getegid, getgroups};
    let gid = Gid::from_raw(gid);
    getegid() == gid || getgroups().is_ok_and(|groups| groups.contains(&gid))
}
