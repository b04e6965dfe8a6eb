//! Backend DNS names: every `reload.dns_refresh`, each `name:port` backend of the current
//! snapshot is resolved again (through the system resolver, off the async threads) and its
//! addresses are replaced in the backend's live state. A failed lookup keeps the last good
//! addresses: a DNS hiccup must not take a healthy backend out.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use super::addr::BackendAddr;
use crate::runtime::Runtime;

/// Resolves `host:port` with the system resolver (blocking). Addresses are sorted so that an
/// unchanged answer in another order is not a change.
pub(crate) fn lookup(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    addrs.sort_unstable();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no addresses",
        ));
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
        let mut answers: HashMap<(String, u16), std::io::Result<Vec<SocketAddr>>> = HashMap::new();
        for host in &snapshot.hosts {
            for (backend, label) in host.pool.backends().iter().zip(&host.backend_labels) {
                let BackendAddr::Name { host: name, port } = &backend.addr else {
                    continue;
                };
                let key = (name.clone(), *port);
                if !answers.contains_key(&key) {
                    let (n, p) = key.clone();
                    let answer = tokio::task::spawn_blocking(move || lookup(&n, p))
                        .await
                        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                    answers.insert(key.clone(), answer);
                }
                match &answers[&key] {
                    Ok(addrs) => {
                        if backend.state.set_addrs(addrs.clone()) {
                            tracing::info!(tls.host = &*host.label, backend.addr = &**label, resolved = ?addrs, "backend name resolved to new addresses");
                        }
                    }
                    Err(e) => rt.metrics.resolve_failed(&host.label, label, e),
                }
            }
        }
    }
}
