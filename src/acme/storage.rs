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

/// What a lease file holds.
#[derive(Debug, Serialize, Deserialize)]
struct LeaseRecord {
    owner: String,
    /// Unix seconds.
    expires: u64,
}

/// A held lease on ordering for one host; removed when dropped.
#[derive(Debug)]
pub struct Lease {
    path: PathBuf,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The result of asking for a lease.
#[derive(Debug)]
pub enum LeaseAttempt {
    /// This instance may order.
    Acquired(Lease),
    /// Another instance is ordering until `until`.
    Held {
        /// Who holds it.
        owner: String,
        /// When its lease expires.
        until: SystemTime,
    },
}

/// Takes the lease on ordering for `label` for `ttl`, unless another instance holds an
/// unexpired one (an expired or unreadable lease is taken over: its holder died).
pub fn lease(
    storage: &Path,
    label: &str,
    owner: &str,
    ttl: Duration,
) -> Result<LeaseAttempt, StorageError> {
    let dir = storage.join("locks");
    std::fs::create_dir_all(&dir).map_err(StorageError::at(&dir))?;
    let path = dir.join(format!("{label}.lock"));
    for _ in 0..2 {
        let expires = unix(SystemTime::now() + ttl);
        let record = LeaseRecord {
            owner: owner.to_owned(),
            expires,
        };
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        match created {
            Ok(mut file) => {
                let body = serde_json::to_vec(&record).unwrap_or_default();
                file.write_all(&body)
                    .and_then(|()| file.sync_all())
                    .map_err(StorageError::at(&path))?;
                return Ok(LeaseAttempt::Acquired(Lease { path }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let held = std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<LeaseRecord>(&b).ok());
                match held {
                    Some(held) if held.expires > unix(SystemTime::now()) => {
                        return Ok(LeaseAttempt::Held {
                            owner: held.owner,
                            until: UNIX_EPOCH + Duration::from_secs(held.expires),
                        });
                    }
                    // Expired, or half written by a holder that died mid-write.
                    _ => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            Err(e) => return Err(StorageError::at(&path)(e)),
        }
    }
    Ok(LeaseAttempt::Held {
        owner: "unknown".to_owned(),
        until: SystemTime::now() + Duration::from_secs(1),
    })
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
            LeaseAttempt::Held { owner, .. } => assert_eq!(owner, "one"),
            LeaseAttempt::Acquired(_) => panic!("a held lease is not acquired twice"),
        }
        drop(lease);
        assert!(matches!(
            super::lease(dir.path(), "a.test", "two", ttl).unwrap(),
            LeaseAttempt::Acquired(_)
        ));
        // An expired lease (its holder died) is taken over.
        let stale = dir.path().join("locks/b.test.lock");
        std::fs::write(&stale, r#"{"owner":"dead","expires":1}"#).unwrap();
        assert!(matches!(
            super::lease(dir.path(), "b.test", "two", ttl).unwrap(),
            LeaseAttempt::Acquired(_)
        ));
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
