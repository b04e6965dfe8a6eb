//! What the last load read of each referenced file, so a reload reads again only the files that
//! changed: with 100,000 hosts, re-reading and re-parsing every certificate and key made a
//! reload take seconds, and holding every file's bytes at once to fingerprint them cost hundreds
//! of MiB.
//!
//! A file is known by its [`Stamp`]: device, inode, size, and modification and change times in
//! nanoseconds, following symlinks as a reader does. Replacing a file (certbot's symlink swap,
//! cert-manager's rename, `cp`) changes the inode or the times; any write or `chmod` changes the
//! change time, which no user can set back. A file whose stamp is the one of the last read is
//! not read again: its content hash, and the certificate pair parsed from it, are reused.
//!
//! One load is one *pass*: each path is `stat`ed once per pass, however many hosts name it.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustls::crypto::CryptoProvider;

use crate::tls::certs::{self, CertError, LoadedCert};

/// The identity of a file's content as `stat` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    /// Permission bits (for the key permission check).
    pub mode: u32,
    /// Owning group (for the key permission check).
    pub gid: u32,
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            mode: meta.mode(),
            gid: meta.gid(),
        })
    }
}

/// Stamps, content hashes and loaded certificate pairs from earlier passes.
#[derive(Debug, Default)]
pub struct FileCache {
    /// Stamps taken in the current pass (`None`: the file could not be `stat`ed).
    stamps: HashMap<PathBuf, Option<Stamp>>,
    /// Content hash of each file as of the stamp it was read at.
    hashes: HashMap<PathBuf, (Stamp, u64)>,
    /// Certificate pairs by certificate file, then key file, as of both files' stamps (two
    /// levels, so a lookup borrows the paths instead of building an owned key).
    pairs: HashMap<PathBuf, HashMap<PathBuf, CachedPair>>,
}

#[derive(Debug)]
struct CachedPair {
    cert: Stamp,
    key: Stamp,
    loaded: LoadedCert,
}

impl FileCache {
    /// Starts a pass: files are `stat`ed again.
    pub fn begin(&mut self) {
        self.stamps.clear();
    }

    /// Forgets the files the current pass did not use (hosts removed from the configuration).
    pub fn end(&mut self) {
        let used: HashSet<&PathBuf> = self.stamps.keys().collect();
        self.hashes.retain(|path, _| used.contains(path));
        self.pairs.retain(|cert, keys| {
            keys.retain(|key, _| used.contains(key));
            used.contains(cert) && !keys.is_empty()
        });
    }

    /// The stamp of `path` in this pass.
    pub fn stamp(&mut self, path: &Path) -> Option<Stamp> {
        if let Some(stamp) = self.stamps.get(path) {
            return *stamp;
        }
        let stamp = Stamp::of(path);
        self.stamps.insert(path.to_owned(), stamp);
        stamp
    }

    /// Reads `path` whole (see [`certs::read_bounded`]) and remembers its content hash.
    pub fn read(&mut self, path: &Path) -> std::io::Result<Vec<u8>> {
        let stamp = self.stamp(path);
        let bytes = certs::read_bounded(path)?;
        if let Some(stamp) = stamp {
            let hash = certs::fingerprint(&[&bytes]);
            self.hashes.insert(path.to_owned(), (stamp, hash));
        }
        Ok(bytes)
    }

    /// A hash of `path`'s content (or of why it cannot be read), read only if its stamp changed.
    pub fn content_hash(&mut self, path: &Path) -> u64 {
        let stamp = self.stamp(path);
        if let (Some(stamp), Some((seen, hash))) = (stamp, self.hashes.get(path))
            && stamp == *seen
        {
            return *hash;
        }
        match self.read(path) {
            Ok(bytes) => certs::fingerprint(&[&bytes]),
            Err(e) => certs::fingerprint(&[format!("\0unreadable: {}", e.kind()).as_bytes()]),
        }
    }

    /// The certificate chain in `cert` with its key in `key` (see [`certs::load_pair`]), loaded
    /// again only if either file's stamp changed since the last successful load.
    pub fn load_pair(
        &mut self,
        cert: &Path,
        key: &Path,
        provider: &CryptoProvider,
    ) -> Result<LoadedCert, CertError> {
        let stamps = (self.stamp(cert), self.stamp(key));
        if let (Some(c), Some(k)) = stamps
            && let Some(cached) = self.pairs.get(cert).and_then(|keys| keys.get(key))
            && cached.cert == c
            && cached.key == k
        {
            return Ok(cached.loaded.clone());
        }
        let read = |cache: &mut Self, path: &Path| {
            cache.read(path).map_err(|source| CertError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let cert_pem = read(self, cert)?;
        let key_pem = read(self, key)?;
        let loaded = certs::parse_pair(cert, &cert_pem, key, &key_pem, provider)?;
        if let (Some(c), Some(k)) = stamps {
            let cached = CachedPair {
                cert: c,
                key: k,
                loaded: loaded.clone(),
            };
            let keys = self.pairs.entry(cert.to_owned()).or_default();
            keys.insert(key.to_owned(), cached);
        }
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Ca, KeyKind};

    fn provider() -> CryptoProvider {
        rustls::crypto::aws_lc_rs::default_provider()
    }

    /// Writes a certificate for `name` and its key into `dir` as `{file}.crt` and `{file}.key`.
    fn write_leaf(ca: &Ca, dir: &Path, file: &str, name: &str) -> (PathBuf, PathBuf) {
        let issued = ca.issue(&[name], KeyKind::Ecdsa).unwrap();
        let (cert, key) = (
            dir.join(format!("{file}.crt")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&cert, issued.cert_pem).unwrap();
        std::fs::write(&key, issued.key_pem).unwrap();
        (cert, key)
    }

    #[test]
    fn an_unchanged_pair_is_not_read_again_and_a_replaced_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("cache test CA").unwrap();
        let (cert, key) = write_leaf(&ca, dir.path(), "a", "a.test");
        let mut cache = FileCache::default();
        cache.begin();
        let first = cache.load_pair(&cert, &key, &provider()).unwrap();
        cache.end();

        // Same stamps: the pair loaded before, not a new parse.
        cache.begin();
        let again = cache.load_pair(&cert, &key, &provider()).unwrap();
        assert!(std::sync::Arc::ptr_eq(&first.key, &again.key));
        cache.end();

        // Replaced by another certificate, as certbot does: read and parsed again.
        let (other, other_key) = write_leaf(&ca, dir.path(), "b", "b.test");
        std::fs::rename(&other, &cert).unwrap();
        std::fs::rename(&other_key, &key).unwrap();
        cache.begin();
        let replaced = cache.load_pair(&cert, &key, &provider()).unwrap();
        assert_eq!(*replaced.names, ["b.test"]);
        assert!(!std::sync::Arc::ptr_eq(&first.key, &replaced.key));
    }

    #[test]
    fn a_rewrite_in_place_changes_the_content_hash() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "one").unwrap();
        let mut cache = FileCache::default();
        cache.begin();
        let one = cache.content_hash(&file);
        cache.begin();
        assert_eq!(cache.content_hash(&file), one, "nothing changed");
        // Same size, written in place: the change time moves, so the file is read again.
        std::fs::write(&file, "two").unwrap();
        cache.begin();
        assert_ne!(cache.content_hash(&file), one);
        std::fs::remove_file(&file).unwrap();
        cache.begin();
        let gone = cache.content_hash(&file);
        assert_ne!(gone, one);
        // Back with its first content: read again, same hash as then.
        std::fs::write(&file, "one").unwrap();
        cache.begin();
        assert_eq!(cache.content_hash(&file), one);
    }

    #[test]
    fn files_no_longer_used_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("cache test CA").unwrap();
        let (cert, key) = write_leaf(&ca, dir.path(), "a", "a.test");
        let mut cache = FileCache::default();
        cache.begin();
        cache.load_pair(&cert, &key, &provider()).unwrap();
        cache.end();
        assert_eq!(cache.pairs.len(), 1);
        cache.begin();
        cache.end();
        assert!(cache.pairs.is_empty() && cache.hashes.is_empty());
    }
}
