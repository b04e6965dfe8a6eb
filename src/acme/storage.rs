//! The ACME storage directory, shared by every instance that points at it:
//!
//! ```text
//! <storage>/accounts/<ca host>.json      account credentials per CA directory (0600)
//! <storage>/certs/<host>/<key type>.pem  private key + certificate chain (0600)
//! <storage>/locks/<host>.lock            lease of the instance ordering for <host>
//! ```
//!
//! A certificate and its key are one file, replaced by one rename: a reader (this instance's
//! reload, or another instance's watcher) sees the old pair or the new pair, never a mix. The
//! snapshot build loads these files like any configured pair.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::model::AcmeKeyType;

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct StorageError {
    /// The file or directory.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

impl StorageError {
    fn at(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self {
            path: path.to_owned(),
            source,
        }
    }
}

/// The key and chain of host `label`'s certificate of `kind`.
pub fn cert_file(storage: &Path, label: &str, kind: AcmeKeyType) -> PathBuf {
    storage
        .join("certs")
        .join(label)
        .join(format!("{}.pem", kind.as_str()))
}

/// The account credentials for the CA at `directory` (by its host and port, so staging and
/// production keep separate accounts).
pub fn account_file(storage: &Path, directory: &str) -> PathBuf {
    let authority = directory
        .parse::<hyper::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_else(|| "default".to_owned());
    let name: String = authority
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    storage.join("accounts").join(format!("{name}.json"))
}

/// Writes `bytes` to `path` readable by the owner only, atomically: a temporary file in the same
/// directory, synced, then renamed over `path`.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(StorageError::at(dir))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(StorageError::at(path)(e));
    }
    // The rename itself survives a crash only once the directory is synced.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates the directories certificates of `labels` are written to, so the reload watcher can
/// watch them before the first certificate arrives.
pub fn prepare(storage: &Path, labels: &[&str]) -> Result<(), StorageError> {
    for label in labels {
        let dir = storage.join("certs").join(label);
        std::fs::create_dir_all(&dir).map_err(StorageError::at(&dir))?;
    }
    Ok(())
}

/// Renames `from` over `to` (same directory): the one atomic step that publishes a file.
pub fn replace(from: &Path, to: &Path) -> Result<(), StorageError> {
    std::fs::rename(from, to).map_err(StorageError::at(to))
}

/// What a lease file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseRecord {
    /// The instance and the attempt (`host/pid/nonce`).
    owner: String,
    /// Unix seconds.
    expires: u64,
}

/// A lease in the future beyond this is not believed (a corrupt or hostile file).
const LONGEST_LEASE: Duration = Duration::from_secs(32 * 86_400);

/// A held lease on ordering for one host; released (removed, if still ours) when dropped.
#[derive(Debug)]
pub struct Lease {
    path: PathBuf,
    record: LeaseRecord,
    keep: bool,
}

impl Lease {
    /// Keeps the lease, instead of releasing it, until `until`: after a failed order the other
    /// instances wait out the same backoff instead of ordering at once themselves.
    pub fn hold_until(mut self, until: SystemTime) {
        self.record.expires = unix(until);
        let body = serde_json::to_vec(&self.record).unwrap_or_default();
        self.keep = write_private(&self.path, &body).is_ok();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.keep && read_lease(&self.path).as_ref() == Some(&self.record) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The result of asking for a lease.
#[derive(Debug)]
pub enum LeaseAttempt {
    /// This instance may order.
    Acquired(Lease),
    /// Another instance is ordering (or waiting after a failure) until `until`.
    Held {
        /// Who holds it.
        owner: String,
        /// When its lease expires.
        until: SystemTime,
    },
}

/// Takes the lease on ordering for `label` for `ttl`, unless an unexpired one is held. An
/// expired or unreadable lease is taken over: its holder died.
///
/// The lease file appears with its content in one step (a hard link of a written temporary
/// file, which fails if the lease exists, also on NFS). A takeover first moves the stale file
/// aside under a name of its own and checks that what it moved is what it judged stale; if
/// another instance took the lease in between, that lease is put back.
pub fn lease(
    storage: &Path,
    label: &str,
    owner: &str,
    ttl: Duration,
) -> Result<LeaseAttempt, StorageError> {
    let dir = storage.join("locks");
    std::fs::create_dir_all(&dir).map_err(StorageError::at(&dir))?;
    let path = dir.join(format!("{label}.lock"));
    let nonce = format!("{:016x}", random_u64());
    let record = LeaseRecord {
        owner: format!("{owner}/{nonce}"),
        expires: unix(SystemTime::now() + ttl),
    };
    let staged = dir.join(format!(".{label}.lock.{nonce}"));
    let body = serde_json::to_vec(&record).unwrap_or_default();
    write_private(&staged, &body)?;
    let result = take(&path, &staged, &record);
    let _ = std::fs::remove_file(&staged);
    result
}

fn take(path: &Path, staged: &Path, record: &LeaseRecord) -> Result<LeaseAttempt, StorageError> {
    for _ in 0..2 {
        match std::fs::hard_link(staged, path) {
            Ok(()) => {
                return Ok(LeaseAttempt::Acquired(Lease {
                    path: path.to_owned(),
                    record: record.clone(),
                    keep: false,
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StorageError::at(path)(e)),
        }
        let held = read_lease(path);
        if let Some(held) = held.as_ref().filter(|h| valid(h)) {
            return Ok(LeaseAttempt::Held {
                owner: held.owner.clone(),
                until: at(held.expires),
            });
        }
        let aside = staged.with_extension("stale");
        if std::fs::rename(path, &aside).is_ok() {
            let moved = read_lease(&aside);
            if moved != held {
                // Not the stale lease we saw: a fresh one, taken meanwhile. Put it back.
                let _ = std::fs::hard_link(&aside, path);
                let _ = std::fs::remove_file(&aside);
                let until = moved.map_or(0, |m| m.expires);
                return Ok(LeaseAttempt::Held {
                    owner: "another instance".to_owned(),
                    until: at(until).min(SystemTime::now() + LONGEST_LEASE),
                });
            }
            let _ = std::fs::remove_file(&aside);
        }
    }
    Ok(LeaseAttempt::Held {
        owner: "another instance".to_owned(),
        until: SystemTime::now() + Duration::from_secs(1),
    })
}

/// Whether a lease is unexpired and believable.
fn valid(record: &LeaseRecord) -> bool {
    let now = SystemTime::now();
    record.expires > unix(now) && record.expires <= unix(now + LONGEST_LEASE)
}

fn read_lease(path: &Path) -> Option<LeaseRecord> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// 64 random bits from the OS (for lease nonces and jitter); the process id if that fails.
pub(super) fn random_u64() -> u64 {
    let mut bytes = [0_u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    u64::from_le_bytes(bytes) ^ u64::from(std::process::id())
}

/// The time `secs` after the Unix epoch (now, for a value past what the clock can hold).
fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or_else(SystemTime::now)
}

/// Seconds since the Unix epoch.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn writes_are_private_and_replace_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = cert_file(dir.path(), "app.test", AcmeKeyType::EcdsaP256);
        write_private(&file, b"one").unwrap();
        write_private(&file, b"two").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(file.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_lease_excludes_others_until_released_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let ttl = Duration::from_secs(60);
        let LeaseAttempt::Acquired(lease) = lease(dir.path(), "a.test", "one", ttl).unwrap() else {
            panic!("a free lease is acquired");
        };
        match super::lease(dir.path(), "a.test", "two", ttl).unwrap() {
            LeaseAttempt::Held { owner, .. } => assert!(owner.starts_with("one/"), "{owner}"),
            LeaseAttempt::Acquired(_) => panic!("a held lease is not acquired twice"),
        }
        drop(lease);
        assert!(matches!(
            super::lease(dir.path(), "a.test", "two", ttl).unwrap(),
            LeaseAttempt::Acquired(_)
        ));
        // An expired, unreadable or absurd lease (its holder died, or the file is corrupt) is
        // taken over.
        for stale in [
            r#"{"owner":"dead","expires":1}"#.to_owned(),
            String::new(),
            format!(r#"{{"owner":"x","expires":{}}}"#, u64::MAX),
        ] {
            std::fs::write(dir.path().join("locks/b.test.lock"), stale).unwrap();
            let LeaseAttempt::Acquired(lease) =
                super::lease(dir.path(), "b.test", "two", ttl).unwrap()
            else {
                panic!("a stale lease is taken over");
            };
            drop(lease);
        }
        let left: Vec<_> = std::fs::read_dir(dir.path().join("locks"))
            .unwrap()
            .collect();
        assert!(
            left.is_empty(),
            "released leases and temporary files are gone: {left:?}"
        );
    }

    #[test]
    fn a_lease_held_after_a_failure_makes_others_wait_and_is_only_released_by_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let ttl = Duration::from_secs(60);
        let LeaseAttempt::Acquired(first) = lease(dir.path(), "c.test", "one", ttl).unwrap() else {
            panic!("acquired");
        };
        let until = SystemTime::now() + Duration::from_secs(120);
        first.hold_until(until);
        match lease(dir.path(), "c.test", "two", ttl).unwrap() {
            LeaseAttempt::Held { until: held, .. } => assert_eq!(unix(held), unix(until)),
            LeaseAttempt::Acquired(_) => panic!("the backoff holds for every instance"),
        }
        // A lease that is no longer ours (taken over after expiring) is left alone on release.
        let path = dir.path().join("locks/d.test.lock");
        let LeaseAttempt::Acquired(mine) = lease(dir.path(), "d.test", "one", ttl).unwrap() else {
            panic!("acquired");
        };
        std::fs::write(&path, r#"{"owner":"other","expires":99999999999}"#).unwrap();
        drop(mine);
        assert!(path.exists());
    }

    #[test]
    fn accounts_are_kept_per_ca() {
        let s = Path::new("/s");
        let staging = account_file(s, "https://acme-staging-v02.api.letsencrypt.org/directory");
        let local = account_file(s, "https://127.0.0.1:14000/dir");
        assert_eq!(
            staging,
            Path::new("/s/accounts/acme-staging-v02.api.letsencrypt.org.json")
        );
        assert_eq!(local, Path::new("/s/accounts/127.0.0.1_14000.json"));
    }
}
