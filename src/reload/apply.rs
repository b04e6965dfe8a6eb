//! One reload: read everything from disk, skip if no byte changed, validate, build a new
//! snapshot and publish it with one store. Returns an explicit [`Outcome`], logged and counted
//! once here.
//!
//! Two levels of failure: a config file that does not parse or validate rejects the whole
//! reload (the old snapshot keeps serving); a host whose certificate files fail keeps its last
//! good certificate (or, if new, is not added) while every other change applies.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::model::RawHost;
use crate::config::validate::{Checked, Reuse};
use crate::config::{self, Config, FileCache, LoadError, Problem};
use crate::runtime::Runtime;

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No input file changed: nothing was done.
    Unchanged,
    /// Everything in the files is now served.
    Applied,
    /// A new snapshot is served, but some part kept its old state (see the logs).
    Partial,
    /// The configuration was refused; the old snapshot keeps serving.
    Rejected,
}

impl Outcome {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unchanged => "unchanged",
            Self::Applied => "applied",
            Self::Partial => "partial",
            Self::Rejected => "rejected",
        }
    }
}

/// Re-reads the configuration of one server.
#[derive(Debug)]
pub struct Reloader {
    rt: Arc<Runtime>,
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Content hash of the config and every file it referenced at the last attempt.
    fingerprint: Option<u64>,
    /// The files to watch, from the last configuration that parsed.
    files: Vec<PathBuf>,
    /// What was read of those files, so only changed ones are read again.
    cache: FileCache,
    /// The hosts the last load checked, so unchanged ones are not checked again.
    reuse: Reuse,
}

/// What the start-up load leaves the reloader.
#[derive(Debug)]
pub struct FirstLoad {
    /// The hash of the configuration text.
    pub text_hash: u64,
    /// The files it referenced, all read through `cache` (its pass still open: the
    /// fingerprint is of the files as loaded, not as they may be by now).
    pub files: Vec<PathBuf>,
    /// What was read of them.
    pub cache: FileCache,
    /// Its `hosts[]` entries, and which of them were clean.
    pub hosts: (Vec<RawHost>, Checked),
}

impl Reloader {
    /// A reloader for `rt`, which serves what the start-up load `first` found.
    pub fn new(rt: Arc<Runtime>, path: PathBuf, first: FirstLoad) -> Self {
        let FirstLoad {
            text_hash,
            files,
            mut cache,
            hosts: (raw, checked),
        } = first;
        let files_hash = files_fingerprint(&files, &mut cache);
        cache.end();
        let reuse = Reuse::new(files_hash, raw, &rt.snapshot.load().config.hosts, checked);
        Self {
            rt,
            path,
            state: Mutex::new(State {
                fingerprint: Some(combined(text_hash, files_hash)),
                files,
                cache,
                reuse,
            }),
        }
    }

    /// The runtime this reloader publishes to.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    /// The files the current configuration references (config file first).
    pub fn files(&self) -> Vec<PathBuf> {
        self.lock().files.clone()
    }

    /// Runs one reload. Blocking (file I/O, key parsing, `ServerConfig` building): call it off
    /// the async runtime's worker threads.
    pub fn reload(&self) -> Outcome {
        // One reload at a time; a reload takes milliseconds, so a std Mutex is right here.
        let mut state = self.lock();
        let outcome = self.reload_locked(&mut state);
        // Counted even when nothing changed: an operator (and a test) can see that a check
        // ran, and when.
        self.rt.metrics.config_reload(outcome.as_str());
        match outcome {
            Outcome::Applied | Outcome::Partial => self.rt.mark_success(),
            Outcome::Rejected => self.rt.mark_rejected(),
            Outcome::Unchanged => {}
        }
        outcome
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn reload_locked(&self, state: &mut State) -> Outcome {
        let started = Instant::now();
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(source) => {
                let e = LoadError::Read {
                    path: self.path.clone(),
                    source,
                };
                return self.rejected(state, None, &e);
            }
        };
        let text_hash = config::load::text_hash(&text);
        let raw = match config::load::parse(&text, &self.path) {
            Ok(raw) => raw,
            Err(e) => {
                // The same unparsable text was already rejected: a retry or a stray event must
                // not count (and log) it again.
                if state.fingerprint == Some(text_hash) {
                    return Outcome::Unchanged;
                }
                return self.rejected(state, Some(text_hash), &e);
            }
        };
        let parsed = Instant::now();
        let files = config::validate::referenced_files(&raw, &self.path);
        state.cache.begin();
        let files_hash = files_fingerprint(&files, &mut state.cache);
        let fingerprint = combined(text_hash, files_hash);
        if state.fingerprint == Some(fingerprint) {
            state.cache.end();
            return Outcome::Unchanged;
        }
        state.fingerprint = Some(fingerprint);
        state.files = files;
        let provider = &self.rt.tls.provider;
        let reuse = state.reuse.for_files(files_hash);
        let loaded =
            config::load::finish(raw, &text, &self.path, provider, &mut state.cache, reuse);
        state.cache.end();
        let mut loaded = match loaded {
            Ok(loaded) => loaded,
            Err(e) => return self.rejected(state, Some(fingerprint), &e),
        };
        let raw_hosts = std::mem::take(&mut loaded.raw.hosts);
        state.reuse = Reuse::new(files_hash, raw_hosts, &loaded.config.hosts, loaded.checked);
        let mut partial = false;
        for problem in &loaded.problems {
            partial |= log_problem(problem);
        }
        let mut config = loaded.config;
        partial |= self.keep_start_time_settings(&mut config);
        partial |= self.reload_ticket_keys(&config);
        let validated = Instant::now();
        let (snapshot, skipped) = self.rt.install(config);
        let built = Instant::now();
        for skip in &skipped {
            tracing::error!(tls.host = %skip.host, reason = %skip.reason, "host not served");
        }
        partial |= !skipped.is_empty();
        let outcome = if partial {
            Outcome::Partial
        } else {
            Outcome::Applied
        };
        tracing::info!(
            generation = snapshot.generation,
            hosts = snapshot.hosts.len(),
            hosts_built = snapshot.built,
            result = outcome.as_str(),
            parse_ms = ms(parsed - started),
            files_ms = ms(validated - parsed),
            build_ms = ms(built - validated),
            "configuration reloaded"
        );
        outcome
    }

    fn rejected(&self, state: &mut State, fingerprint: Option<u64>, e: &LoadError) -> Outcome {
        state.fingerprint = fingerprint;
        match e {
            LoadError::Invalid(problems) => {
                for problem in &problems.0 {
                    log_problem(problem);
                }
            }
            other => tracing::error!(error = %other, "configuration unreadable"),
        }
        tracing::error!(path = %self.path.display(), result = "rejected", "reload rejected, still serving the previous configuration");
        Outcome::Rejected
    }

    /// Settings bound when the process started (sockets, the connection semaphore, the session
    /// cache, the reload timing) cannot change on reload: keep the running values and name each
    /// one that differs. Returns whether any did.
    fn keep_start_time_settings(&self, config: &mut Config) -> bool {
        let running = self.rt.snapshot.load_full();
        let running = &running.config.start;
        if config.start == *running {
            return false;
        }
        for setting in config.start.changed(running) {
            tracing::warn!(
                setting,
                "changing this setting needs a restart; keeping the running value"
            );
        }
        config.start.clone_from(running);
        true
    }

    /// Re-reads the ticket key file; a malformed one keeps the old keys.
    fn reload_ticket_keys(&self, config: &Config) -> bool {
        let tickets = &self.rt.tls.tickets;
        let result = match &config.ticket_key_file {
            Some(path) => tickets.load_file(path).map(|changed| {
                if changed {
                    tracing::info!(path = %path.display(), keys = tickets.loaded(), "ticket keys reloaded");
                }
            }),
            None => tickets.use_memory(),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "ticket keys not reloaded, keeping the previous keys");
        }
        result.is_err()
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Logs one problem; returns whether it is an error.
fn log_problem(problem: &Problem) -> bool {
    if problem.is_error() {
        tracing::error!(%problem, "configuration problem");
    } else {
        tracing::warn!(%problem, "configuration warning");
    }
    problem.is_error()
}

/// A hash over every referenced file's path, content, permission bits and group (a missing file
/// hashes differently from any content), following symlinks as a reader would: what the hosts'
/// checks read. `files[0]` is the configuration file itself, which is not included: its text is
/// hashed on its own (it may be larger than a certificate file may be).
fn files_fingerprint(files: &[PathBuf], cache: &mut FileCache) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    for file in files.iter().skip(1) {
        file.hash(&mut hasher);
        cache.content_hash(file).hash(&mut hasher);
        cache.stamp(file).map(|s| (s.mode, s.gid)).hash(&mut hasher);
    }
    hasher.finish()
}

/// The reload's change check: the configuration text's hash and the files' fingerprint.
fn combined(text_hash: u64, files_hash: u64) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    (text_hash, files_hash).hash(&mut hasher);
    hasher.finish()
}
