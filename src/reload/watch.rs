//! The file watcher: turns file events, SIGHUP requests, retry timers and a periodic re-check
//! into reloads. It only decides *when*; [`super::apply`] decides *what*.
//!
//! It watches the parent directories of the config file and of every file the config names,
//! never the files themselves: editors replace a file by rename, and Kubernetes updates a
//! mounted Secret by swapping a `..data` symlink, so the changed path never gets an event of its
//! own. An event counts as "maybe changed" when it names a path a referenced file resolves
//! through: the file itself, any of its directories, and every link of its symlink chain (such as
//! `..data` and its timestamped target, or certbot's `archive/` file). Events on other files in
//! those directories (a log file beside the config, an editor's swap file) are ignored, so they
//! never delay a reload. The reload's content hash tells a real change from noise. Events are
//! debounced on the trailing edge (a quiet period), capped so a stream of writes cannot postpone
//! the reload forever.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::apply::{Outcome, Reloader};
use crate::config::validate::Reload;

/// After a failed or partial reload, check again this soon: a key often lands just after its
/// certificate.
const RETRIES: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(2)];

/// How many symlinks one path may pass through before its chain is cut (as the kernel's
/// `ELOOP` limit).
const MAX_LINKS: usize = 40;

/// Something asked for a reload.
#[derive(Debug, Clone)]
enum Signal {
    /// A file event on these paths (none: a watcher error, something may have been missed).
    Event(Vec<PathBuf>),
    /// SIGHUP or an API call: reload now.
    Now,
}

/// Asks the watcher task for an immediate reload (what SIGHUP does).
#[derive(Debug, Clone)]
pub struct ReloadTrigger(mpsc::UnboundedSender<Signal>);

impl ReloadTrigger {
    /// Requests a reload; returns false if the server has stopped.
    pub fn reload(&self) -> bool {
        self.0.send(Signal::Now).is_ok()
    }
}

/// The receiving end, handed to [`run`].
#[derive(Debug)]
pub struct Signals {
    rx: mpsc::UnboundedReceiver<Signal>,
    dirs: WatchedDirs,
}

/// A trigger and the signal queue it feeds. With `watch`, the directories of `files` are
/// watched from now on: call it right after loading them, so that a change made before [`run`]
/// starts is queued, not lost.
pub fn channel(watch: bool, files: &[PathBuf]) -> (ReloadTrigger, Signals) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut dirs = WatchedDirs::new(watch, tx.clone());
    dirs.sync(files);
    (ReloadTrigger(tx), Signals { rx, dirs })
}

/// Runs until `stop`: reloads on debounced file events (if `settings.watch`), on triggers, after
/// failures, and every `settings.recheck_every`.
pub async fn run(
    reloader: Arc<Reloader>,
    settings: Reload,
    signals: Signals,
    stop: CancellationToken,
) {
    let Signals { mut rx, mut dirs } = signals;
    let mut burst: Option<(Instant, Instant)> = None; // (first event, reload at)
    let mut retries: Vec<Instant> = Vec::new();
    let mut recheck = tokio::time::interval(settings.recheck_every);
    recheck.reset();
    let mut tickets = tokio::time::interval(reloader.runtime().tls.tickets.check_every());
    loop {
        let due = burst
            .map(|(_, at)| at)
            .into_iter()
            .chain(retries.iter().copied())
            .min();
        let run_now = tokio::select! {
            () = stop.cancelled() => return,
            signal = rx.recv() => match signal {
                None => return,
                Some(Signal::Now) => true,
                Some(Signal::Event(paths)) if !dirs.concerns(&paths) => false,
                Some(Signal::Event(_)) => {
                    let now = Instant::now();
                    let first = burst.map_or(now, |(first, _)| first);
                    let at = (now + settings.debounce).min(first + settings.max_delay);
                    burst = Some((first, at));
                    false
                }
            },
            () = sleep_until(due.unwrap_or_else(far_future)), if due.is_some() => true,
            _ = recheck.tick() => true,
            _ = tickets.tick() => {
                rotate_tickets(&reloader);
                false
            }
        };
        if !run_now {
            continue;
        }
        let now = Instant::now();
        burst = None;
        retries.retain(|t| *t > now);
        let worker = Arc::clone(&reloader);
        let outcome = tokio::task::spawn_blocking(move || worker.reload())
            .await
            .unwrap_or(Outcome::Rejected);
        if matches!(outcome, Outcome::Partial | Outcome::Rejected) && retries.is_empty() {
            retries.extend(RETRIES.iter().map(|d| now + *d));
        }
        dirs.sync(&reloader.files());
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

fn rotate_tickets(reloader: &Reloader) {
    let tickets = &reloader.runtime().tls.tickets;
    match tickets.rotate_if_due(std::time::SystemTime::now()) {
        Ok(true) => tracing::info!(keys = tickets.loaded(), "ticket key rotated"),
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "ticket key rotation failed"),
    }
}

/// The set of watched directories, each remembered with its inode so a directory deleted and
/// recreated is watched again, and the paths whose events matter.
#[derive(Debug)]
struct WatchedDirs {
    watcher: Option<RecommendedWatcher>,
    watched: HashMap<PathBuf, (u64, u64)>,
    relevant: HashSet<PathBuf>,
}

impl WatchedDirs {
    fn new(enabled: bool, tx: mpsc::UnboundedSender<Signal>) -> Self {
        let watcher = enabled.then(|| {
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                match &event {
                    // Overflow or a backend error: something may have been missed.
                    Err(e) => {
                        tracing::warn!(error = %e, "file watcher error; reloading to be safe")
                    }
                    // Opening or reading a file changes nothing, and every reload opens every
                    // watched file: counting those would make each reload schedule the next.
                    Ok(event) if is_read_only(&event.kind) => return,
                    Ok(_) => {}
                }
                let paths = event.map(|e| e.paths).unwrap_or_default();
                let _ = tx.send(Signal::Event(paths));
            })
        });
        let watcher = match watcher {
            Some(Ok(w)) => Some(w),
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot start the file watcher; relying on the periodic re-check");
                None
            }
            None => None,
        };
        Self {
            watcher,
            watched: HashMap::new(),
            relevant: HashSet::new(),
        }
    }

    /// Whether an event on `paths` may change what the referenced files read as. An event
    /// without paths (a watcher error) always may.
    fn concerns(&self, paths: &[PathBuf]) -> bool {
        paths.is_empty() || paths.iter().any(|p| self.relevant.contains(p))
    }

    /// Watches the directories holding `files` (or, for a missing directory, its nearest
    /// existing ancestor), re-watches recreated ones, and drops the rest.
    fn sync(&mut self, files: &[PathBuf]) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        self.relevant = files.iter().flat_map(|f| resolution_chain(f)).collect();
        let mut wanted: HashMap<PathBuf, (u64, u64)> = HashMap::new();
        for file in files {
            if let Some(dir) = existing_dir(file) {
                let id = std::fs::metadata(&dir).map_or((0, 0), |m| (m.dev(), m.ino()));
                wanted.insert(dir, id);
            }
        }
        self.watched.retain(|dir, id| {
            let keep = wanted.get(dir) == Some(id);
            if !keep {
                let _ = watcher.unwatch(dir);
            }
            keep
        });
        for (dir, id) in wanted {
            if self.watched.contains_key(&dir) {
                continue;
            }
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!(dir = %dir.display(), "watching");
                    self.watched.insert(dir, id);
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory")
                }
            }
        }
    }
}

/// Whether an event only reports a file being opened, read or closed after reading (inotify
/// reports opens since notify 8): such events cannot change content.
fn is_read_only(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    matches!(kind, notify::EventKind::Access(access)
        if *access != AccessKind::Close(AccessMode::Write))
}

/// The file's directory if it exists, else its nearest existing ancestor.
fn existing_dir(file: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(file).ok()?;
    absolute
        .ancestors()
        .skip(1)
        .find(|dir| dir.is_dir())
        .map(Path::to_path_buf)
}

/// Every path that resolving `file` goes through: the path as written and each of its
/// ancestors, then, component by component, each symlink met and where it points (relative
/// targets taken from the link's directory), up to [`MAX_LINKS`] links. Missing components are
/// included, so creating a referenced file's missing directory is noticed.
fn resolution_chain(file: &Path) -> Vec<PathBuf> {
    let Ok(written) = std::path::absolute(file) else {
        return Vec::new();
    };
    let mut chain: Vec<PathBuf> = written.ancestors().map(Path::to_path_buf).collect();
    // `pending` holds the components still to walk, last one first.
    let mut pending: Vec<std::ffi::OsString> = written
        .components()
        .rev()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut at = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        let next = at.join(&part);
        match std::fs::read_link(&next) {
            Ok(target) if links < MAX_LINKS => {
                links += 1;
                chain.push(next);
                // Walk the target next: absolute from the root, relative from the link's dir.
                if target.is_absolute() {
                    at = PathBuf::new();
                }
                pending.extend(target.components().rev().map(|c| c.as_os_str().to_owned()));
            }
            _ => {
                at = normalized(&next);
                chain.push(at.clone());
            }
        }
    }
    chain
}

/// `path` with `.` and `..` components folded lexically (as the kernel resolves a symlink's
/// relative target once the link itself is resolved).
fn normalized(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::resolution_chain;

    #[test]
    fn the_chain_follows_kubernetes_and_certbot_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        // Kubernetes: tls.crt -> ..data/tls.crt, ..data -> ..2026_12_02_01
        std::fs::create_dir(root.join("..2026_12_02_01")).unwrap();
        std::fs::write(root.join("..2026_12_02_01/tls.crt"), "x").unwrap();
        symlink("..2026_12_02_01", root.join("..data")).unwrap();
        symlink("..data/tls.crt", root.join("tls.crt")).unwrap();
        let chain = resolution_chain(&root.join("tls.crt"));
        for want in [
            "tls.crt",
            "..data",
            "..2026_12_02_01",
            "..2026_12_02_01/tls.crt",
        ] {
            assert!(chain.contains(&root.join(want)), "{want} in {chain:?}");
        }
        assert!(chain.contains(&root), "the directory itself");
        assert!(!chain.contains(&root.join("tlsedge.log")));
        // certbot: live/a/fullchain.pem -> ../../archive/a/fullchain1.pem
        std::fs::create_dir_all(root.join("live/a")).unwrap();
        std::fs::create_dir_all(root.join("archive/a")).unwrap();
        std::fs::write(root.join("archive/a/fullchain1.pem"), "x").unwrap();
        symlink(
            "../../archive/a/fullchain1.pem",
            root.join("live/a/fullchain.pem"),
        )
        .unwrap();
        let chain = resolution_chain(&root.join("live/a/fullchain.pem"));
        assert!(chain.contains(&root.join("live/a/fullchain.pem")));
        assert!(
            chain.contains(&root.join("archive/a/fullchain1.pem")),
            "{chain:?}"
        );
        // A missing directory of a referenced file is in the chain.
        let chain = resolution_chain(&root.join("new/b.pem"));
        assert!(chain.contains(&root.join("new")));
        // A symlink loop ends.
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        assert!(!resolution_chain(&root.join("loop1")).is_empty());
    }
}
