//! The state shared by every task of one server: the current snapshot behind one `ArcSwap`,
//! the process-wide TLS state, and the metrics registry.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::acme::challenges::Challenges;
use crate::config::Config;
use crate::conn::client_limit::ClientLimits;
use crate::metrics::Metrics;
use crate::snapshot::{Skipped, Snapshot};
use crate::tls::TlsShared;
use crate::upstream::dns::Answers;

/// Shared server state.
#[derive(Debug)]
pub struct Runtime {
    /// What connections are served from; replaced whole on reload.
    pub snapshot: ArcSwap<Snapshot>,
    /// TLS state that outlives snapshots (provider, session cache, ticketer).
    pub tls: TlsShared,
    /// This server's metrics.
    pub metrics: Arc<Metrics>,
    /// Open connections per client address, for `limits.per_client_ip`.
    pub client_limits: Arc<ClientLimits>,
    /// Pending ACME challenge answers (empty without ACME).
    pub challenges: Arc<Challenges>,
    generation: AtomicU64,
    last_success: AtomicU64,
    /// Whether the files as they are now were accepted (false after a rejected reload, until
    /// one is applied).
    files_ok: AtomicBool,
    epoch: Instant,
}

impl Runtime {
    /// Builds the first snapshot from `config`, with `answers` for its backend names (see
    /// [`Snapshot::names_to_look_up`]).
    pub fn new(
        config: Config,
        tls: TlsShared,
        metrics: Arc<Metrics>,
        answers: &Answers,
    ) -> (Self, Vec<Skipped>) {
        let (snapshot, skipped) = Snapshot::build(Arc::new(config), &tls, None, 1, answers);
        let rt = Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            tls,
            metrics,
            client_limits: Arc::default(),
            challenges: Arc::default(),
            generation: AtomicU64::new(1),
            last_success: AtomicU64::new(0),
            files_ok: AtomicBool::new(true),
            epoch: Instant::now(),
        };
        rt.mark_success();
        (rt, skipped)
    }

    /// Builds a snapshot from `config` (off the accept path) and publishes it with one store.
    /// Hosts whose files failed keep their previous certificates. Blocking: backend names new
    /// to the running snapshot are looked up first, so call it off the async worker threads
    /// (the reloader runs on a blocking thread).
    pub fn install(&self, config: Config) -> (Arc<Snapshot>, Vec<Skipped>) {
        let previous = self.snapshot.load_full();
        let answers =
            Answers::lookup_blocking(Snapshot::names_to_look_up(&config, Some(&previous)));
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let (snapshot, skipped) = Snapshot::build(
            Arc::new(config),
            &self.tls,
            Some(&previous),
            generation,
            &answers,
        );
        let snapshot = Arc::new(snapshot);
        self.snapshot.store(Arc::clone(&snapshot));
        (snapshot, skipped)
    }

    /// Monotonic milliseconds since this runtime started (the balancer's clock).
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Records that a configuration load was applied now.
    pub fn mark_success(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_success.store(now, Ordering::Relaxed);
        self.files_ok.store(true, Ordering::Relaxed);
    }

    /// Records that a reload was rejected: the files on disk are not what is served.
    pub fn mark_rejected(&self) {
        self.files_ok.store(false, Ordering::Relaxed);
    }

    /// Whether the last configuration load that did something was applied (not rejected).
    pub fn last_load_ok(&self) -> bool {
        self.files_ok.load(Ordering::Relaxed)
    }

    /// Unix time of the last applied configuration load.
    pub fn last_success(&self) -> u64 {
        self.last_success.load(Ordering::Relaxed)
    }

    /// The whole `/metrics` page: event metrics plus state gauges from the current snapshot.
    pub fn render_metrics(&self) -> String {
        let mut page = self.metrics.render();
        crate::metrics::state::render(self, &mut page);
        page
    }
}
