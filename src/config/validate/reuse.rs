//! The hosts one load checked without a problem, offered to the next load of the same file.
//!
//! A host's checks read its `hosts[]` entry, the ACME settings, the files it names and the
//! clock, nothing else. So when a reload finds the entry at the same position unchanged, the
//! ACME settings unchanged and every referenced file unchanged (content, mode and owner, as the
//! reloader's fingerprint says), the checks would find what they found before: the host is the
//! `Arc<HostConfig>` they made then, not checked again. The clock is covered by a deadline: a
//! host is taken as it was only while its first certificate is further from expiry than the
//! warning period. A host whose checks reported anything is always checked again, so every
//! problem is reported on every load.
//!
//! With 100,000 hosts this is what keeps a reload that changes a few entries well under a
//! second (benches/README.md): checking every host again cost about half of it.

use std::sync::Arc;

use super::acme::AcmeConfig;
use super::{EXPIRY_WARNING, HostConfig};
use crate::config::model::RawHost;

/// What one load found about each host, beside its [`HostConfig`].
#[derive(Debug, Default)]
pub struct Checked {
    /// The ACME settings the hosts were checked with.
    pub(super) acme: Option<AcmeConfig>,
    /// Per host: `Some(until)` when its checks reported nothing, and nothing time-dependent
    /// (certificate expiry) can be reported before `until` (seconds since the epoch).
    pub(super) clean: Vec<Option<i64>>,
}

/// A previous load's clean hosts, keyed by position.
#[derive(Debug, Default)]
pub struct Reuse {
    /// The fingerprint of the referenced files the hosts were checked against.
    files: u64,
    acme: Option<AcmeConfig>,
    hosts: Vec<Option<Kept>>,
}

#[derive(Debug)]
struct Kept {
    raw: RawHost,
    config: Arc<HostConfig>,
    until: i64,
}

impl Reuse {
    /// The clean hosts of a load of `raw` into `hosts` (`checked` says which), while the
    /// referenced files fingerprint to `files`.
    pub fn new(files: u64, raw: Vec<RawHost>, hosts: &[Arc<HostConfig>], checked: Checked) -> Self {
        let hosts = raw
            .into_iter()
            .zip(hosts)
            .zip(checked.clean)
            .map(|((raw, config), clean)| {
                clean.map(|until| Kept {
                    raw,
                    config: Arc::clone(config),
                    until,
                })
            })
            .collect();
        Self {
            files,
            acme: checked.acme,
            hosts,
        }
    }

    /// Itself, if the referenced files still fingerprint to what its hosts were checked
    /// against.
    pub fn for_files(&self, files: u64) -> Option<&Self> {
        (self.files == files).then_some(self)
    }

    /// Whether the hosts were checked with these ACME settings.
    pub(super) fn same_acme(&self, acme: Option<&AcmeConfig>) -> bool {
        self.acme.as_ref() == acme
    }

    /// The host checked from an entry equal to `raw` at position `i`, if it was clean and
    /// still is at `now`.
    pub(super) fn host(&self, i: usize, raw: &RawHost, now: i64) -> Option<&Arc<HostConfig>> {
        let kept = self.hosts.get(i)?.as_ref()?;
        (now < kept.until && kept.raw == *raw).then_some(&kept.config)
    }
}

/// Until when a host with no problem stays without one: the expiry warning of its certificate
/// that expires first.
pub(super) fn clean_until(host: &HostConfig) -> i64 {
    let warning = EXPIRY_WARNING.as_secs() as i64;
    host.certs
        .iter()
        .flatten()
        .map(|c| c.not_after.saturating_sub(warning))
        .min()
        .unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::config::files::FileCache;
    use crate::config::problem::Issue;
    use crate::config::validate::{Config, validate};
    use crate::config::{Problem, load::parse};
    use crate::pki::{Ca, KeyKind};

    /// Writes `dir/name.pem` and `dir/name.key` (mode 0600) for `name`.
    fn issue(ca: &Ca, dir: &Path, name: &str) {
        let issued = ca.issue(&[name], KeyKind::Ecdsa).unwrap();
        let key = dir.join(format!("{name}.key"));
        std::fs::write(dir.join(format!("{name}.pem")), &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// One `hosts[]` entry per `(names, cert file, backend port)`, validated at `now` with what
    /// `reuse` offers; returns the config, its problems and the next `Reuse` (files
    /// fingerprint 1: the files are not changed between loads unless a test says so).
    fn load(
        dir: &Path,
        hosts: &[(&str, &str, u16)],
        now: SystemTime,
        reuse: Option<&Reuse>,
    ) -> (Config, Vec<Problem>, Reuse) {
        let mut text = String::from("listeners: [\"127.0.0.1:0\"]\nhosts:\n");
        for (names, file, port) in hosts {
            text.push_str(&format!(
                "  - names: [{names}]\n    certs: [{{ cert: {file}.pem, key: {file}.key }}]\n    backends: [{{ address: \"127.0.0.1:{port}\" }}]\n"
            ));
        }
        let path = dir.join("tlsedge.yaml");
        let mut raw = parse(&text, &path).unwrap();
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let mut cache = FileCache::default();
        let (config, problems, checked) = validate(&raw, &path, &provider, &mut cache, now, reuse);
        let next = Reuse::new(1, std::mem::take(&mut raw.hosts), &config.hosts, checked);
        (config, problems, next)
    }

    fn kept(old: &Config, new: &Config) -> Vec<bool> {
        old.hosts
            .iter()
            .zip(&new.hosts)
            .map(|(o, n)| Arc::ptr_eq(o, n))
            .collect()
    }

    #[test]
    fn unchanged_clean_hosts_are_taken_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("reuse test CA").unwrap();
        for name in ["a.test", "b.test", "c.test"] {
            issue(&ca, dir.path(), name);
        }
        let now = SystemTime::now();
        let a = ("a.test", "a.test", 9);
        let (first, problems, reuse) = load(dir.path(), &[a, ("b.test", "b.test", 10)], now, None);
        assert!(problems.is_empty(), "{problems:?}");

        // Nothing changed: both hosts are the very ones of the first load.
        let hosts = [a, ("b.test", "b.test", 10)];
        let (second, _, reuse) = load(dir.path(), &hosts, now, reuse.for_files(1));
        assert_eq!(kept(&first, &second), [true, true]);

        // b's backend changed: b is checked again, a is not.
        let hosts = [a, ("b.test", "b.test", 11)];
        let (third, _, reuse) = load(dir.path(), &hosts, now, reuse.for_files(1));
        assert_eq!(kept(&second, &third), [true, false]);
        assert_eq!(third.hosts[1].backends[0].addr.to_string(), "127.0.0.1:11");

        // A referenced file changed (another fingerprint): nothing is offered.
        assert!(reuse.for_files(2).is_none());
        let (fourth, _, _) = load(dir.path(), &hosts, now, None);
        assert_eq!(kept(&third, &fourth), [false, false]);
    }

    /// A kept host's names still enter the index: a changed host before it that takes one of
    /// them is refused, with the kept host's place.
    #[test]
    fn a_kept_host_still_claims_its_names() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("reuse test CA").unwrap();
        issue(&ca, dir.path(), "x.test");
        issue(&ca, dir.path(), "a.test");
        let now = SystemTime::now();
        let a = ("a.test", "a.test", 9);
        let (_, _, reuse) = load(dir.path(), &[("x.test", "x.test", 9), a], now, None);
        // x now also claims a.test (its certificate does not cover it either: an error of its
        // own, on x's place).
        let hosts = [("\"x.test\", \"a.test\"", "x.test", 9), a];
        let (_, problems, _) = load(dir.path(), &hosts, now, reuse.for_files(1));
        let duplicate = problems
            .iter()
            .find(|p| matches!(p.issue, Issue::DuplicateName { .. }))
            .expect("the duplicate is reported");
        assert_eq!(duplicate.place, "hosts[1] (a.test): names[0]");
    }

    /// A host with a problem is checked again on every load, so the problem is reported every
    /// time; so is a kept host once its certificate nears expiry.
    #[test]
    fn problems_are_reported_on_every_load() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("reuse test CA").unwrap();
        issue(&ca, dir.path(), "a.test");
        issue(&ca, dir.path(), "b.test");
        let open = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(dir.path().join("b.test.key"), open).unwrap();
        let hosts = [("a.test", "a.test", 9), ("b.test", "b.test", 9)];
        let now = SystemTime::now();
        let warned = |problems: &[Problem], issue: fn(&Issue) -> bool| {
            problems.iter().filter(|p| issue(&p.issue)).count()
        };
        let permissions = |i: &Issue| matches!(i, Issue::KeyPermissions { .. });
        let (first, problems, reuse) = load(dir.path(), &hosts, now, None);
        assert_eq!(warned(&problems, permissions), 1);
        let (second, problems, reuse) = load(dir.path(), &hosts, now, reuse.for_files(1));
        assert_eq!(warned(&problems, permissions), 1, "warned again");
        assert_eq!(kept(&first, &second), [true, false]);

        // Later, a's certificate is within the warning period: a is checked again.
        let not_after = second.hosts[0].certs.as_ref().unwrap()[0].not_after;
        let soon = not_after - EXPIRY_WARNING.as_secs() as i64 + 86_400;
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(soon as u64);
        let (third, problems, _) = load(dir.path(), &hosts, later, reuse.for_files(1));
        let expiry = |i: &Issue| matches!(i, Issue::ExpiresSoon { .. });
        assert_eq!(warned(&problems, expiry), 2, "{problems:?}");
        assert_eq!(kept(&second, &third), [false, false]);
    }
}
