//! Session ticket keys: ONE process-wide key set behind an `ArcSwap`, shared by every host and
//! every snapshot, so a ticket issued before a reload still resumes after it.
//!
//! Keys come either from memory (a new random key every `rotate_every`) or from a key file
//! shared by every instance of a fleet, so a ticket issued by one instance resumes on another.
//!
//! Key file format: one line per key, newest first: the base64 of 48 bytes (a 16-byte key name
//! followed by a 32-byte AES-256-GCM key), then, after a space, the key's creation time
//! (RFC 3339, `2026-12-02T13:45:00Z`). Blank lines and lines starting with `#` are ignored.
//! Every key decrypts. A key is *staged* until it has existed for `grace`: it decrypts but does
//! not encrypt yet, so every instance of the fleet has time to read the file before the first
//! ticket sealed with it reaches them (HAProxy's three-key window does the same with positions).
//! The newest key past its grace encrypts; a line without a time (older files) is past it.
//! `tlsedge ticket-keys rotate --file F` prepends a fresh, dated key and keeps the newest N.
//!
//! Ticket layout: `key name (16) || nonce (12) || AES-256-GCM(issued_at (8, BE) || state) || tag`.
//! The additional data is a per-host context, so a ticket only ever resumes on the host (and
//! client-auth policy) that issued it, even if a reload moves a name to another host. The
//! issue time inside the sealed part enforces the lifetime.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::server::ProducesTickets;

const NAME_LEN: usize = 16;
const SECRET_LEN: usize = 32;
/// Bytes of one key in the key file.
pub const KEY_LEN: usize = NAME_LEN + SECRET_LEN;
const TAG_LEN: usize = 16;
const TIME_LEN: usize = 8;

/// Why ticket keys could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// Reading or writing the key file failed.
    #[error("ticket key file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not base64 of exactly 48 bytes, optionally followed by an RFC 3339 time.
    #[error("ticket key file {}: line {line}: expected base64 of {KEY_LEN} bytes, then optionally its creation time (RFC 3339, e.g. 2026-12-02T13:45:00Z)", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// The file holds no key.
    #[error("ticket key file {}: no key", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The system random source failed.
    #[error("random source failed")]
    Random,
}

/// One key: its file bytes (name || secret) and the ready AEAD key.
struct Key {
    bytes: [u8; KEY_LEN],
    aead: LessSafeKey,
}

impl Clone for Key {
    fn clone(&self) -> Self {
        Self::from_bytes(&self.bytes)
    }
}

impl Key {
    fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes[NAME_LEN..])
            .expect("a 32-byte key is valid for AES-256-GCM");
        Self {
            bytes: *bytes,
            aead: LessSafeKey::new(unbound),
        }
    }

    fn name(&self) -> &[u8] {
        &self.bytes[..NAME_LEN]
    }

    fn random() -> Result<Self, TicketError> {
        let mut bytes = [0; KEY_LEN];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| TicketError::Random)?;
        Ok(Self::from_bytes(&bytes))
    }
}

/// One line of the key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileKey {
    bytes: [u8; KEY_LEN],
    /// The creation time written beside the key, if any.
    created: Option<SystemTime>,
}

/// One immutable generation of keys.
struct KeySet {
    /// Newest first.
    keys: Vec<Key>,
    /// When each key was made: from the key file, or (undated lines, in-memory keys) when this
    /// process first had it.
    created: Vec<SystemTime>,
    /// Unix second from which each key may encrypt (its creation plus the grace period).
    encrypts_from: Vec<u64>,
    /// The raw file content this set came from, to skip no-op reloads.
    source: Option<Vec<FileKey>>,
}

impl KeySet {
    fn in_memory(keys: Vec<Key>, created: Vec<SystemTime>) -> Self {
        Self {
            encrypts_from: vec![0; keys.len()],
            keys,
            created,
            source: None,
        }
    }

    /// The index of the key that encrypts at `now` (Unix seconds): the newest past its grace,
    /// or, when every key is still staged, the oldest (the one instances most likely share).
    fn encrypting(&self, now: u64) -> usize {
        self.encrypts_from
            .iter()
            .position(|&from| from <= now)
            .unwrap_or(self.keys.len().saturating_sub(1))
    }
}

/// Why a presented ticket did not resume (the client then gets a full handshake).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Too short or otherwise not one of our tickets.
    Malformed,
    /// Its key is not loaded (rotated out, or from another fleet).
    UnknownKey,
    /// It does not decrypt for this host: issued for another host or client-auth policy, or
    /// tampered with.
    Invalid,
    /// Older than the ticket lifetime.
    Expired,
}

impl Rejection {
    /// Every reason, in metric order.
    pub const ALL: [Self; 4] = [
        Self::Malformed,
        Self::UnknownKey,
        Self::Invalid,
        Self::Expired,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::Invalid => "invalid",
            Self::Expired => "expired",
        }
    }
}

/// The process-wide ticket key set.
pub struct TicketKeys {
    set: ArcSwap<KeySet>,
    lifetime: Duration,
    /// In memory: how often a key is made. From a file: how often the fleet rotates the file
    /// (published for alerts on a stuck rotation).
    rotate_every: Duration,
    /// How long a key from the file only decrypts before it encrypts.
    grace: Duration,
    rejected: [std::sync::atomic::AtomicU64; 4],
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKeys")
            .field("keys", &self.loaded())
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl TicketKeys {
    /// How often [`rotate_if_due`](Self::rotate_if_due) must be called for a rotation to be at
    /// most a tenth of the period late (between 100 ms and 1 min).
    pub fn check_every(&self) -> Duration {
        (self.rotate_every / 10).clamp(Duration::from_millis(100), Duration::from_secs(60))
    }

    /// In-memory keys: one random key now, a new one every `rotate_every`; tickets valid for
    /// `lifetime`.
    pub fn in_memory(rotate_every: Duration, lifetime: Duration) -> Result<Self, TicketError> {
        let key = Key::random()?;
        Ok(Self {
            set: ArcSwap::from_pointee(KeySet::in_memory(vec![key], vec![SystemTime::now()])),
            lifetime,
            rotate_every,
            grace: Duration::ZERO,
            rejected: Default::default(),
        })
    }

    /// Keys from a shared key file, which the fleet rotates every `timing.rotate_every`; a new
    /// key encrypts once it is `timing.grace` old.
    pub fn from_file(path: &Path, timing: FileTiming) -> Result<Self, TicketError> {
        let keys = Self {
            set: ArcSwap::from_pointee(KeySet {
                keys: Vec::new(),
                created: Vec::new(),
                encrypts_from: Vec::new(),
                source: Some(Vec::new()),
            }),
            lifetime: timing.lifetime,
            rotate_every: timing.rotate_every,
            grace: timing.grace,
            rejected: Default::default(),
        };
        keys.load_file(path)?;
        Ok(keys)
    }

    /// (Re)reads the key file. A malformed file changes nothing and returns the error. Returns
    /// whether the key set changed.
    pub fn load_file(&self, path: &Path) -> Result<bool, TicketError> {
        let raw = read_key_file(path)?;
        let current = self.set.load();
        if current.source.as_ref() == Some(&raw) {
            return Ok(false);
        }
        let now = SystemTime::now();
        let mut created = Vec::with_capacity(raw.len());
        let mut encrypts_from = Vec::with_capacity(raw.len());
        for line in &raw {
            let first_seen = || {
                current
                    .keys
                    .iter()
                    .position(|k| k.name() == &line.bytes[..NAME_LEN])
                    .map_or(now, |i| current.created[i])
            };
            match line.created {
                Some(at) => {
                    created.push(at);
                    encrypts_from.push(unix_secs(at + self.grace));
                }
                // An undated key (a file from before dates) encrypts at once, as it always did.
                None => {
                    created.push(first_seen());
                    encrypts_from.push(0);
                }
            }
        }
        let keys = raw
            .iter()
            .map(|line| Key::from_bytes(&line.bytes))
            .collect();
        self.set.store(Arc::new(KeySet {
            keys,
            created,
            encrypts_from,
            source: Some(raw),
        }));
        Ok(true)
    }

    /// Switches to in-memory keys (when a reload removes the key file setting).
    pub fn use_memory(&self) -> Result<(), TicketError> {
        if self.set.load().source.is_none() {
            return Ok(());
        }
        let key = Key::random()?;
        self.set.store(Arc::new(KeySet::in_memory(
            vec![key],
            vec![SystemTime::now()],
        )));
        Ok(())
    }

    /// In-memory mode: adds a new encryption key when the current one is older than
    /// `rotate_every`, and drops keys no ticket can still need. Returns whether it rotated.
    /// Call it every [`check_every`](Self::check_every).
    pub fn rotate_if_due(&self, now: SystemTime) -> Result<bool, TicketError> {
        let current = self.set.load();
        if current.source.is_some() {
            return Ok(false);
        }
        let age = current
            .created
            .first()
            .and_then(|t| now.duration_since(*t).ok())
            .unwrap_or_default();
        if age < self.rotate_every {
            return Ok(false);
        }
        let key = Key::random()?;
        // A key stops encrypting when replaced; its last ticket expires `lifetime` later.
        let keep_for = self.lifetime;
        let mut keys = vec![key];
        let mut created = vec![now];
        for (i, old) in current.keys.iter().enumerate() {
            let retired = if i == 0 { now } else { current.created[i - 1] };
            if now.duration_since(retired).unwrap_or_default() < keep_for {
                keys.push(old.clone());
                created.push(current.created[i]);
            }
        }
        self.set.store(Arc::new(KeySet::in_memory(keys, created)));
        Ok(true)
    }

    /// Number of keys loaded.
    pub fn loaded(&self) -> usize {
        self.set.load().keys.len()
    }

    /// Tickets that did not resume, by reason, since start.
    pub fn rejected(&self, reason: Rejection) -> u64 {
        self.rejected[reason as usize].load(std::sync::atomic::Ordering::Relaxed)
    }

    fn reject<T>(&self, reason: Rejection) -> Option<T> {
        self.rejected[reason as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        None
    }

    /// The age of the newest key, from its creation time in the key file (the same on every
    /// instance reading it) or, in memory, since it was made. Older than the rotation period
    /// means the rotation has stopped.
    pub fn newest_key_age(&self, now: SystemTime) -> Duration {
        self.set
            .load()
            .created
            .first()
            .and_then(|t| now.duration_since(*t).ok())
            .unwrap_or_default()
    }

    /// Keys newer than the one that encrypts at `now`: staged, they only decrypt so far.
    pub fn staged(&self, now: SystemTime) -> usize {
        self.set.load().encrypting(unix_secs(now))
    }

    /// The expected rotation period (see [`FileTiming::rotate_every`]).
    pub fn rotate_every(&self) -> Duration {
        self.rotate_every
    }

    /// A ticketer for one host: tickets it issues only decrypt with the same `context`.
    pub fn for_host(self: &Arc<Self>, context: u64) -> Arc<dyn ProducesTickets> {
        Arc::new(HostTicketer {
            keys: Arc::clone(self),
            context: context.to_be_bytes(),
        })
    }
}

#[derive(Debug)]
struct HostTicketer {
    keys: Arc<TicketKeys>,
    context: [u8; 8],
}

impl ProducesTickets for HostTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.keys.lifetime.as_secs() as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let set = self.keys.set.load();
        let now = unix_now();
        let key = set.keys.get(set.encrypting(now))?;
        let mut nonce = [0; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(NAME_LEN + NONCE_LEN + TIME_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(key.name());
        out.extend_from_slice(&nonce);
        let mut sealed = Vec::with_capacity(TIME_LEN + plain.len() + TAG_LEN);
        sealed.extend_from_slice(&now.to_be_bytes());
        sealed.extend_from_slice(plain);
        key.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.context),
                &mut sealed,
            )
            .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let keys = &self.keys;
        if cipher.len() < NAME_LEN + NONCE_LEN + TIME_LEN + TAG_LEN {
            return keys.reject(Rejection::Malformed);
        }
        let (name, rest) = cipher.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let set = keys.set.load();
        let Some(key) = set.keys.iter().find(|k| k.name() == name) else {
            return keys.reject(Rejection::UnknownKey);
        };
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let Ok(plain) = key
            .aead
            .open_in_place(nonce, Aad::from(self.context), &mut buf)
        else {
            return keys.reject(Rejection::Invalid);
        };
        let (issued, state) = plain.split_at(TIME_LEN);
        let issued = u64::from_be_bytes(issued.try_into().ok()?);
        let age = unix_now().saturating_sub(issued);
        if age > keys.lifetime.as_secs() {
            return keys.reject(Rejection::Expired);
        }
        Some(state.to_vec())
    }
}

/// How a key file's keys are timed.
#[derive(Debug, Clone, Copy)]
pub struct FileTiming {
    /// Ticket lifetime.
    pub lifetime: Duration,
    /// How often the fleet's rotation job replaces the file.
    pub rotate_every: Duration,
    /// How long a new key only decrypts.
    pub grace: Duration,
}

fn unix_now() -> u64 {
    unix_secs(SystemTime::now())
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Parses a key file's text.
fn parse_keys(text: &str, path: &Path) -> Result<Vec<FileKey>, TicketError> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || TicketError::BadKey {
            path: path.to_owned(),
            line: i + 1,
        };
        let mut fields = line.split_whitespace();
        let key = fields.next().unwrap_or_default();
        let created = match fields.next() {
            Some(at) => Some(humantime::parse_rfc3339(at).map_err(|_| bad())?),
            None => None,
        };
        if fields.next().is_some() {
            return Err(bad());
        }
        let bytes = BASE64.decode(key).map_err(|_| bad())?;
        let bytes = <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| bad())?;
        keys.push(FileKey { bytes, created });
    }
    if keys.is_empty() {
        return Err(TicketError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(keys)
}

fn read_key_file(path: &Path) -> Result<Vec<FileKey>, TicketError> {
    let text = std::fs::read_to_string(path).map_err(|source| TicketError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_keys(&text, path)
}

/// Prepends a fresh random key, dated now, to the key file at `path` (created if missing), keeps
/// the newest `keep`, and replaces the file atomically (temporary file + rename, mode 0600).
pub fn rotate_key_file(path: &Path, keep: usize) -> Result<usize, TicketError> {
    rotate_key_file_at(path, keep, SystemTime::now())
}

/// [`rotate_key_file`] with the new key dated `now`.
pub fn rotate_key_file_at(path: &Path, keep: usize, now: SystemTime) -> Result<usize, TicketError> {
    let io = |source| TicketError::Io {
        path: path.to_owned(),
        source,
    };
    let mut keys = match read_key_file(path) {
        Ok(keys) => keys,
        Err(TicketError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let fresh = FileKey {
        bytes: Key::random()?.bytes,
        created: Some(now),
    };
    keys.insert(0, fresh);
    keys.truncate(keep.max(1));
    let mut text = String::from(
        "# tlsedge ticket keys, newest first: base64 of name(16) || AES-256 key(32), creation time\n",
    );
    for key in &keys {
        text.push_str(&BASE64.encode(key.bytes));
        if let Some(at) = key.created {
            text.push(' ');
            text.push_str(&humantime::format_rfc3339_seconds(at).to_string());
        }
        text.push('\n');
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(keys.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(grace_secs: u64) -> FileTiming {
        FileTiming {
            lifetime: Duration::from_secs(3600),
            rotate_every: Duration::from_secs(1800),
            grace: Duration::from_secs(grace_secs),
        }
    }

    fn keys() -> Arc<TicketKeys> {
        Arc::new(
            TicketKeys::in_memory(Duration::from_secs(3600), Duration::from_secs(7200)).unwrap(),
        )
    }

    #[test]
    fn tickets_round_trip_only_within_their_context() {
        let keys = keys();
        let a = keys.for_host(1);
        let b = keys.for_host(2);
        let ticket = a.encrypt(b"session state").unwrap();
        assert_eq!(a.decrypt(&ticket).as_deref(), Some(&b"session state"[..]));
        assert_eq!(b.decrypt(&ticket), None, "another host must not resume it");
        let mut tampered = ticket.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(a.decrypt(&tampered), None);
        assert_eq!(a.decrypt(&ticket[..20]), None);
        let mut foreign = ticket;
        foreign[0] ^= 0xff; // a key name we never had
        assert_eq!(a.decrypt(&foreign), None);
        assert_eq!(
            keys.rejected(Rejection::Invalid),
            2,
            "other host + tampered"
        );
        assert_eq!(keys.rejected(Rejection::Malformed), 1);
        assert_eq!(keys.rejected(Rejection::UnknownKey), 1);
        assert_eq!(keys.rejected(Rejection::Expired), 0);
    }

    #[test]
    fn rotation_keeps_old_keys_until_their_tickets_expire() {
        let keys = keys();
        let t = keys.for_host(7);
        let old = t.encrypt(b"old").unwrap();
        let now = SystemTime::now();
        assert!(!keys.rotate_if_due(now).unwrap());
        assert!(keys.rotate_if_due(now + Duration::from_secs(3601)).unwrap());
        assert_eq!(keys.loaded(), 2);
        assert_eq!(t.decrypt(&old).as_deref(), Some(&b"old"[..]));
        let new = t.encrypt(b"new").unwrap();
        assert_ne!(
            old[..NAME_LEN],
            new[..NAME_LEN],
            "new tickets use the new key"
        );
        // Long after the old key stopped encrypting, it is dropped.
        assert!(
            keys.rotate_if_due(now + Duration::from_secs(3 * 3600 + 10))
                .unwrap()
        );
        assert!(
            keys.rotate_if_due(now + Duration::from_secs(5 * 3600 + 20))
                .unwrap()
        );
        assert_eq!(t.decrypt(&old), None);
    }

    #[test]
    fn key_file_rotation_and_fleet_sharing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tickets.keys");
        assert_eq!(rotate_key_file(&path, 3).unwrap(), 1);
        let a = Arc::new(TicketKeys::from_file(&path, timing(0)).unwrap());
        let b = Arc::new(TicketKeys::from_file(&path, timing(0)).unwrap());
        let ticket = a.for_host(1).encrypt(b"x").unwrap();
        assert!(
            b.for_host(1).decrypt(&ticket).is_some(),
            "same file, same keys"
        );
        for expected in [2, 3, 3] {
            assert_eq!(rotate_key_file(&path, 3).unwrap(), expected);
        }
        assert!(b.load_file(&path).unwrap());
        assert!(!b.load_file(&path).unwrap(), "unchanged file is a no-op");
        assert!(
            b.for_host(1).decrypt(&ticket).is_none(),
            "old key dropped after 3 rotations"
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn malformed_key_file_keeps_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tickets.keys");
        rotate_key_file(&path, 2).unwrap();
        let keys = Arc::new(TicketKeys::from_file(&path, timing(0)).unwrap());
        let ticket = keys.for_host(1).encrypt(b"x").unwrap();
        std::fs::write(&path, "# comment\nnot base64!\n").unwrap();
        assert!(matches!(
            keys.load_file(&path),
            Err(TicketError::BadKey { line: 2, .. })
        ));
        std::fs::write(&path, "").unwrap();
        assert!(matches!(
            keys.load_file(&path),
            Err(TicketError::Empty { .. })
        ));
        assert!(keys.for_host(1).decrypt(&ticket).is_some());
    }

    #[test]
    fn a_new_key_only_decrypts_until_its_grace_has_passed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tickets.keys");
        let now = SystemTime::now();
        rotate_key_file_at(&path, 3, now - Duration::from_secs(3600)).unwrap();
        // Instance `a` reads the file right after the rotation, `b` before it.
        let b = Arc::new(TicketKeys::from_file(&path, timing(300)).unwrap());
        rotate_key_file_at(&path, 3, now).unwrap();
        let a = Arc::new(TicketKeys::from_file(&path, timing(300)).unwrap());
        assert_eq!((a.loaded(), a.staged(now)), (2, 1));
        let ticket = a.for_host(1).encrypt(b"x").unwrap();
        assert!(
            b.for_host(1).decrypt(&ticket).is_some(),
            "a staged key must not encrypt: b has not read it yet"
        );
        assert_eq!(b.rejected(Rejection::UnknownKey), 0);
        // Past the grace, the new key is the one that encrypts.
        assert_eq!(a.staged(now + Duration::from_secs(300)), 0);
        // Both instances show the age written in the file, whenever they read it.
        let later = now + Duration::from_secs(60);
        assert!(b.load_file(&path).unwrap());
        assert_eq!(a.newest_key_age(later), b.newest_key_age(later));
        assert!(a.newest_key_age(later) <= Duration::from_secs(61));
    }

    #[test]
    fn every_key_staged_encrypts_with_the_oldest_and_undated_keys_encrypt_at_once() {
        let set = KeySet {
            keys: (0..3).map(|_| Key::random().unwrap()).collect(),
            created: vec![UNIX_EPOCH; 3],
            encrypts_from: vec![300, 200, 100],
            source: None,
        };
        assert_eq!(set.encrypting(50), 2, "all staged: the oldest");
        assert_eq!(set.encrypting(150), 2);
        assert_eq!(set.encrypting(250), 1);
        assert_eq!(set.encrypting(300), 0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tickets.keys");
        let undated = BASE64.encode([7_u8; KEY_LEN]);
        std::fs::write(&path, format!("{undated}\n")).unwrap();
        let keys = TicketKeys::from_file(&path, timing(300)).unwrap();
        assert_eq!(keys.staged(SystemTime::now()), 0);
        // `rotate` keeps an undated line undated, and dates its new key.
        rotate_key_file(&path, 3).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].split(' ').count(), 2, "{text}");
        assert_eq!(lines[1], undated);
        for bad in [
            format!("{undated} yesterday"),
            format!("{undated} 2026-12-02T13:45:00Z extra"),
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(matches!(
                keys.load_file(&path),
                Err(TicketError::BadKey { line: 1, .. })
            ));
        }
    }

    proptest::proptest! {
        // Deterministic: a fixed seed, and no failure files written.
        #![proptest_config(proptest::test_runner::Config {
            cases: 512,
            failure_persistence: None,
            rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
            rng_seed: proptest::test_runner::RngSeed::Fixed(20261202),
            ..proptest::test_runner::Config::default()
        })]
        /// A key file is operator input: whatever it holds, parsing returns keys or an error.
        #[test]
        fn any_key_file_text_parses_or_is_refused(text in "(?s).{0,400}", key in "[A-Za-z0-9+/=]{60,68}", date in "\\PC{0,40}") {
            let path = Path::new("tickets.keys");
            let _ = parse_keys(&text, path);
            let _ = parse_keys(&format!("{key} {date}\n{text}"), path);
        }
    }
}
