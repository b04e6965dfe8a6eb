//! The ACME client's task: keeps every `certs: acme` host's certificates (one per configured key
//! type) issued and renewed.
//!
//! It follows the served snapshot: a host added by a reload is picked up, a removed one
//! forgotten. Each certificate has one "next look" time. At a look, a valid stored certificate
//! that is not yet due is rescheduled (by the CA's ARI window if it offers one, else two thirds
//! of its lifetime); otherwise the instance takes the host's lease in storage, checks storage
//! again (another instance may just have renewed), orders, writes the file and asks for a
//! reload. A failure keeps whatever is served and backs off.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use instant_acme::{Account, CertificateIdentifier};
use rustls_pki_types::CertificateDer;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{self, RetryAfter};
use super::order::{self, Wanted};
use super::storage::{self, LeaseAttempt};
use super::{AcmeError, schedule};
use crate::config::model::AcmeKeyType;
use crate::config::validate::acme::AcmeConfig;
use crate::metrics::acme as events;
use crate::reload::ReloadTrigger;
use crate::runtime::Runtime;

/// The longest sleep between looks at the snapshot (to notice hosts added by a reload).
const TICK: Duration = Duration::from_secs(1);
/// A lease outlives any order: validation and issuance are bounded well below it.
const LEASE: Duration = Duration::from_secs(600);
/// An order as a whole is abandoned after this.
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);
/// Instances waiting for a lease look again within this after it ends, not all at once.
const LEASE_SPREAD: Duration = Duration::from_secs(2);
/// ARI is asked again at most this often, and at least this often while a certificate is valid.
const ARI_RECHECK: (Duration, Duration) = (Duration::from_secs(600), Duration::from_secs(6 * 3600));

/// One certificate: a host and a key type.
type Key = (Arc<str>, AcmeKeyType);

#[derive(Debug)]
struct Tracked {
    names: Vec<String>,
    /// When to look at it next.
    due: SystemTime,
    /// When it is planned to be renewed (the gauge).
    renewal: SystemTime,
    /// Failed orders in a row.
    failures: u32,
    /// No new attempt before this, after a failure.
    backoff_until: Option<SystemTime>,
}

/// A stored certificate that can be served.
#[derive(Debug)]
struct Stored {
    not_before: i64,
    not_after: i64,
    serial: String,
    leaf: CertificateDer<'static>,
}

/// What storage holds for one certificate.
#[derive(Debug)]
enum Look {
    /// Serveable and covering every name.
    Valid(Stored),
    /// Missing, unusable, expired, or not covering the names: order now.
    Needed(&'static str),
}

/// The ACME client of one server.
pub struct Manager {
    rt: Arc<Runtime>,
    settings: AcmeConfig,
    trigger: ReloadTrigger,
    /// Written into leases: which instance holds one.
    owner: String,
    account: Option<Account>,
    retry_after: RetryAfter,
    /// Whether the CA offers ARI, once known.
    ari: Option<bool>,
    tracked: BTreeMap<Key, Tracked>,
    /// Hosts waiting for their first certificate, as last logged.
    pending: BTreeSet<Arc<str>>,
    generation: u64,
}

impl Manager {
    /// A manager for `rt`'s `certs: acme` hosts, asking `trigger` for reloads.
    pub fn new(rt: Arc<Runtime>, settings: AcmeConfig, trigger: ReloadTrigger) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let shared = settings.storage.join("challenges");
        rt.challenges.share(shared, Arc::clone(&rt.tls.provider));
        Self {
            rt,
            settings,
            trigger,
            owner: format!("{}/{}", host.trim(), std::process::id()),
            account: None,
            retry_after: RetryAfter::default(),
            ari: None,
            tracked: BTreeMap::new(),
            pending: BTreeSet::new(),
            generation: 0,
        }
    }

    /// Runs the client on a thread of its own until `stop`: its file operations (storage may
    /// be NFS) and RSA key generation then never hold up a worker that serves connections.
    pub fn spawn(self, stop: CancellationToken) -> std::io::Result<std::thread::JoinHandle<()>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("tlsedge-acme".to_owned())
            .spawn(move || runtime.block_on(self.run(stop)))
    }

    /// Runs until `stop`. An order in progress is abandoned at `stop` (its challenge answers and
    /// lease are withdrawn).
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            self.sync();
            let now = SystemTime::now();
            let next = self
                .tracked
                .iter()
                .min_by_key(|(_, t)| t.due)
                .map(|(k, t)| (k.clone(), t.due));
            let wait = match next {
                Some((key, due)) if due <= now => {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = self.look_at(&key) => continue,
                    }
                }
                Some((_, due)) => due.duration_since(now).unwrap_or_default().min(TICK),
                None => TICK,
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Follows the served snapshot's `certs: acme` hosts, re-reading storage when it changed.
    fn sync(&mut self) {
        let snapshot = self.rt.snapshot.load_full();
        if snapshot.generation == self.generation {
            return;
        }
        self.generation = snapshot.generation;
        let mut wanted: BTreeMap<Key, Vec<String>> = BTreeMap::new();
        for host in snapshot.config.hosts.iter().filter(|h| h.acme) {
            let names: Vec<String> = host.names.iter().map(ToString::to_string).collect();
            for kind in &self.settings.key_types {
                wanted.insert((Arc::from(host.label.as_str()), *kind), names.clone());
            }
        }
        self.tracked.retain(|key, _| wanted.contains_key(key));
        // Once per host while it waits for its first certificate, not per connection refused.
        self.pending
            .retain(|label| snapshot.pending.contains(label));
        for label in &snapshot.pending {
            if self.pending.insert(Arc::clone(label)) {
                events::pending(label);
            }
        }
        let labels: Vec<&str> = wanted.keys().map(|(label, _)| &**label).collect();
        if let Err(e) = storage::prepare(&self.settings.storage, &labels) {
            tracing::warn!(error = %e, "cannot create the ACME storage directories");
        }
        let now = SystemTime::now();
        for (key, names) in wanted {
            let look = self.look(&key, &names);
            let planned = self.planned(&look, now);
            let tracked = self.tracked.entry(key.clone());
            let tracked = tracked.or_insert_with(|| Tracked {
                names: names.clone(),
                due: planned,
                renewal: planned,
                failures: 0,
                backoff_until: None,
            });
            tracked.names = names;
            tracked.renewal = planned;
            tracked.due = tracked.backoff_until.map_or(planned, |b| b.max(planned));
        }
        self.publish();
    }

    /// Reads storage for `key`'s certificate.
    fn look(&self, key: &Key, names: &[String]) -> Look {
        let file = storage::cert_file(&self.settings.storage, &key.0, key.1);
        if !file.exists() {
            return Look::Needed("no certificate yet");
        }
        self.look_file(&file, &key.0, names)
    }

    /// Whether `file` holds a serveable key and chain covering `names`.
    fn look_file(&self, file: &Path, host: &str, names: &[String]) -> Look {
        let loaded = match crate::tls::certs::load_pair(file, file, &self.rt.tls.provider) {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(
                    tls.host = host,
                    file = %file.display(),
                    error = %e,
                    "stored ACME certificate is unusable; ordering a new one"
                );
                return Look::Needed("unusable");
            }
        };
        let Some(leaf) = loaded.key.cert.first().cloned() else {
            return Look::Needed("unusable");
        };
        let not_before = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_or(loaded.not_after, |(_, c)| {
                c.validity().not_before.timestamp()
            });
        let now = storage::unix(SystemTime::now()) as i64;
        if loaded.not_after <= now {
            return Look::Needed("expired");
        }
        if !names.iter().all(|n| loaded.names.contains(n)) {
            return Look::Needed("names changed");
        }
        Look::Valid(Stored {
            not_before,
            not_after: loaded.not_after,
            serial: loaded.serial.to_string(),
            leaf,
        })
    }

    /// When a certificate in the state `look` should be renewed, by lifetime alone.
    fn planned(&self, look: &Look, now: SystemTime) -> SystemTime {
        match look {
            Look::Needed(_) => now,
            Look::Valid(stored) => {
                let at = schedule::renew_at(
                    stored.not_before,
                    stored.not_after,
                    self.settings.renew_before,
                    random(),
                );
                from_unix(at)
            }
        }
    }

    /// The look at one due certificate: reschedule it, or renew it under the host's lease.
    async fn look_at(&mut self, key: &Key) {
        let Some(names) = self.tracked.get(key).map(|t| t.names.clone()) else {
            return;
        };
        let now = SystemTime::now();
        let look = self.look(key, &names);
        if let Some((due, renewal)) = self.not_due(&look, now).await {
            return self.reschedule(key, due, renewal);
        }
        let lease = match storage::lease(&self.settings.storage, &key.0, &self.owner, LEASE) {
            Ok(LeaseAttempt::Acquired(lease)) => lease,
            Ok(LeaseAttempt::Held { owner, until }) => {
                tracing::debug!(
                    tls.host = &*key.0,
                    lease.owner = owner,
                    "another instance holds the lease"
                );
                // Its holder's order (or its wait after a failure) ends by then. A certificate
                // it obtains arrives sooner, through the watcher: a reload reads storage again.
                let next = until.max(now) + LEASE_SPREAD.mul_f64(random());
                return self.reschedule(key, next, next);
            }
            Err(e) => {
                self.failed(key, &look, &e.into());
                return;
            }
        };
        // Another instance may have renewed between the look and the lease.
        let looked = serial(&look);
        let look = self.look(key, &names);
        if let Look::Valid(stored) = &look
            && looked.as_deref() != Some(stored.serial.as_str())
        {
            drop(lease);
            self.trigger.reload();
            let planned = self.planned(&look, now);
            return self.reschedule(key, planned, planned);
        }
        let started = Instant::now();
        match self.renew(key, &names, &look).await {
            Ok(issued) => {
                drop(lease);
                events::issued(
                    &self.rt.metrics,
                    &key.0,
                    key.1,
                    &issued.serial,
                    started.elapsed(),
                );
                self.trigger.reload();
                if let Some(t) = self.tracked.get_mut(key) {
                    t.failures = 0;
                    t.backoff_until = None;
                }
                let planned = self.planned(&Look::Valid(issued), SystemTime::now());
                self.reschedule(key, planned, planned);
            }
            Err(e) => {
                if e.unknown_account() {
                    tracing::warn!(
                        "the CA does not know the stored ACME account; registering a new one"
                    );
                    self.account = None;
                    client::forget_account(&self.settings);
                }
                // The lease is kept until the next attempt: the whole fleet waits, not just
                // this instance.
                let next = self.failed(key, &look, &e);
                lease.hold_until(next);
            }
        }
    }

    /// When a certificate that is not due yet is to be looked at again, and when it is to be
    /// renewed: by the CA's ARI window if it offers one, else by its lifetime.
    async fn not_due(&mut self, look: &Look, now: SystemTime) -> Option<(SystemTime, SystemTime)> {
        let Look::Valid(stored) = look else {
            return None;
        };
        let planned = self.planned(look, now);
        let ari = if planned <= now || self.account.is_some() {
            self.ari_window(stored).await
        } else {
            None
        };
        match ari {
            Some((at, _)) if at <= now => None,
            Some((at, recheck)) => Some((at.min(now + recheck), at)),
            None if planned > now => Some((planned, planned)),
            None => None,
        }
    }

    /// Orders `key`'s certificate and stores it, checked first: a certificate that cannot be
    /// served never takes the place of one that can.
    async fn renew(
        &mut self,
        key: &Key,
        names: &[String],
        look: &Look,
    ) -> Result<Stored, AcmeError> {
        let replaces = match look {
            Look::Valid(stored) if self.ari == Some(true) => {
                CertificateIdentifier::try_from(&stored.leaf)
                    .ok()
                    .map(|id| id.into_owned())
            }
            _ => None,
        };
        let wanted = Wanted {
            names,
            kind: key.1,
            replaces,
        };
        let pem = match tokio::time::timeout(ORDER_TIMEOUT, self.order(wanted)).await {
            Ok(pem) => pem?,
            Err(_) => return Err(AcmeError::Timeout(ORDER_TIMEOUT)),
        };
        let file = storage::cert_file(&self.settings.storage, &key.0, key.1);
        let staged = file.with_extension("pem.new");
        storage::write_private(&staged, pem.as_bytes())?;
        match self.look_file(&staged, &key.0, names) {
            Look::Valid(stored) => {
                storage::replace(&staged, &file)?;
                Ok(stored)
            }
            Look::Needed(why) => {
                let _ = std::fs::remove_file(&staged);
                let problem = format!("the issued certificate is unusable ({why})");
                Err(AcmeError::Certificate(problem))
            }
        }
    }

    async fn order(&mut self, wanted: Wanted<'_>) -> Result<String, AcmeError> {
        let account = self.account().await?;
        let challenges = &self.rt.challenges;
        order::obtain(
            &account,
            &self.settings,
            challenges,
            &self.rt.tls.provider,
            wanted,
        )
        .await
    }

    async fn account(&mut self) -> Result<Account, AcmeError> {
        if let Some(account) = &self.account {
            return Ok(account.clone());
        }
        let provider = &self.rt.tls.provider;
        let account = client::account(&self.settings, provider, &self.retry_after).await?;
        self.account = Some(account.clone());
        Ok(account)
    }

    /// The CA's suggested renewal time for `stored` and when to ask again, if it offers ARI.
    async fn ari_window(&mut self, stored: &Stored) -> Option<(SystemTime, Duration)> {
        if self.ari == Some(false) {
            return None;
        }
        let account = match self.account().await {
            Ok(account) => account,
            Err(e) => {
                tracing::debug!(error = %e, "cannot ask the CA for its renewal window");
                return None;
            }
        };
        let id = CertificateIdentifier::try_from(&stored.leaf).ok()?;
        match account.renewal_info(&id).await {
            Ok((info, retry)) => {
                self.ari = Some(true);
                let window = info.suggested_window;
                let at = schedule::in_window(
                    window.start.unix_timestamp(),
                    window.end.unix_timestamp(),
                    random(),
                );
                Some((from_unix(at), retry.clamp(ARI_RECHECK.0, ARI_RECHECK.1)))
            }
            Err(instant_acme::Error::Unsupported(_)) => {
                self.ari = Some(false);
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "the CA's renewal window is not available");
                None
            }
        }
    }

    fn reschedule(&mut self, key: &Key, due: SystemTime, renewal: SystemTime) {
        if let Some(t) = self.tracked.get_mut(key) {
            t.due = due;
            t.renewal = renewal;
        }
        self.publish();
    }

    /// Counts and logs a failure; returns when to try again.
    fn failed(&mut self, key: &Key, look: &Look, error: &AcmeError) -> SystemTime {
        let lifetime = match look {
            Look::Valid(stored) => Some(Duration::from_secs(
                (stored.not_after - stored.not_before).max(1) as u64,
            )),
            Look::Needed(_) => None,
        };
        let Some(t) = self.tracked.get_mut(key) else {
            return SystemTime::now();
        };
        t.failures = t.failures.saturating_add(1);
        let wait = schedule::backoff(
            t.failures,
            self.settings.retry_first,
            self.settings.retry_max,
            lifetime,
            self.retry_after.take(),
        );
        let next = SystemTime::now() + wait;
        t.backoff_until = Some(next);
        t.due = next;
        t.renewal = next;
        events::failed(&self.rt.metrics, &key.0, key.1, error, t.failures, wait);
        self.publish();
        next
    }

    /// Sets each host's next-renewal gauge: its earliest certificate.
    fn publish(&self) {
        let mut hosts: BTreeMap<&str, SystemTime> = BTreeMap::new();
        for ((label, _), t) in &self.tracked {
            let at = hosts.entry(label).or_insert(t.renewal);
            *at = (*at).min(t.renewal);
        }
        for (host, at) in hosts {
            events::next_renewal(&self.rt.metrics, host, at);
        }
    }
}

/// Uniform in `[0, 1)`, for jitter.
fn random() -> f64 {
    (storage::random_u64() >> 11) as f64 / (1_u64 << 53) as f64
}

/// The serial of a stored certificate, if there is a usable one.
fn serial(look: &Look) -> Option<String> {
    match look {
        Look::Valid(stored) => Some(stored.serial.clone()),
        Look::Needed(_) => None,
    }
}

fn from_unix(secs: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}
