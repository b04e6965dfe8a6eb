//! Backend DNS names. A snapshot build does no lookups itself: its caller looks up the names
//! that are new to it ([`Answers::lookup`] from async code, [`Answers::lookup_blocking`] on a
//! blocking thread) and passes the [`Answers`] in, so the build stays pure and a new backend is
//! usable from its first connection.
//!
//! From then on, every `reload.dns_refresh`, each `name:port` backend of the current snapshot
//! is looked up again (through the system resolver, off the async threads) and its addresses
//! are replaced in the backend's live state. A failed lookup keeps the last good addresses: a
//! DNS hiccup must not take a healthy backend out.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use super::addr::BackendAddr;
use crate::metrics::events;
use crate::runtime::Runtime;

/// A backend DNS name and port.
pub type Name = (String, u16);

/// What looking up some backend names returned, one answer per distinct name.
#[derive(Debug, Default)]
pub struct Answers(HashMap<Name, io::Result<Vec<SocketAddr>>>);

impl Answers {
    /// No answers (a build then finds every new name unresolved).
    pub fn none() -> Self {
        Self::default()
    }

    /// Looks up each of `names` once with the system resolver, on a blocking thread, so the
    /// async workers never wait for DNS.
    pub async fn lookup(names: Vec<Name>) -> Self {
        if names.is_empty() {
            return Self::none();
        }
        let asked = names.clone();
        match tokio::task::spawn_blocking(move || Self::lookup_blocking(names)).await {
            Ok(answers) => answers,
            // The lookup task panicked or the runtime is shutting down: every name failed.
            Err(e) => {
                let mut answers = Self::none();
                for name in asked {
                    answers.insert(name, Err(io::Error::other(e.to_string())));
                }
                answers
            }
        }
    }

    /// Looks up each of `names` once with the system resolver, blocking the calling thread.
    pub fn lookup_blocking(names: impl IntoIterator<Item = Name>) -> Self {
        let mut answers = Self::none();
        for name in names {
            if let Entry::Vacant(slot) = answers.0.entry(name) {
                let (host, port) = slot.key();
                let answer = lookup(host, *port);
                slot.insert(answer);
            }
        }
        answers
    }

    /// Records the answer for `name` (replacing an earlier one).
    pub fn insert(&mut self, name: Name, answer: io::Result<Vec<SocketAddr>>) {
        self.0.insert(name, answer);
    }

    /// The answer for `host:port`, if it was looked up.
    pub fn get(&self, host: &str, port: u16) -> Option<&io::Result<Vec<SocketAddr>>> {
        self.0.get(&(host.to_owned(), port))
    }
}

/// Resolves `host:port` with the system resolver (blocking). Addresses are sorted so that an
/// unchanged answer in another order is not a change.
pub fn lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    addrs.sort_unstable();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no addresses"));
    }
    Ok(addrs)
}

/// Re-resolves every backend name every `every`, until the task is aborted.
pub(crate) async fn run(rt: Arc<Runtime>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.reset(); // the snapshot build has just resolved everything
    loop {
        tick.tick().await;
        let snapshot = rt.snapshot.load_full();
        // One lookup per distinct name, however many hosts share it.
        let names = snapshot
            .hosts
            .iter()
            .flat_map(|host| host.all_backends())
            .filter_map(|(backend, _)| match &backend.addr {
                BackendAddr::Name { host, port } => Some((host.clone(), *port)),
                BackendAddr::Ip(_) => None,
            })
            .collect();
        let answers = Answers::lookup(names).await;
        for host in &snapshot.hosts {
            for (backend, label) in host.all_backends() {
                let BackendAddr::Name { host: name, port } = &backend.addr else {
                    continue;
                };
                let Some(answer) = answers.get(name, *port) else {
                    continue;
                };
                match answer {
                    Ok(addrs) => {
                        if backend.state.set_addrs(addrs.clone()) {
                            tracing::info!(tls.host = &*host.label, backend.addr = &**label, resolved = ?addrs, "backend name resolved to new addresses");
                        }
                    }
                    Err(e) => events::resolve_failed(&rt.metrics, &host.label, label, e),
                }
            }
        }
    }
}
