//! Active health checks: every host with `health_check` has each backend probed with a TCP
//! connect every `interval`. `fall` failures in a row take a backend out of its pool, `rise`
//! passes put it back — before any client has to hit a dead backend, and without waiting for a
//! client to find a revived one.
//!
//! The checker reads the current snapshot on every tick, so hosts added or removed by a reload
//! are followed; a backend's state lives in its `BackendState`, which reloads carry over.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

use super::connect::connect_any;
use super::state::Transition;
use crate::metrics::events;
use crate::runtime::Runtime;
use crate::snapshot::Host;

/// How often the checker looks for due hosts; the finest useful interval.
const TICK: Duration = Duration::from_millis(100);

/// Runs the health checker until the task is aborted.
pub(crate) async fn run(rt: Arc<Runtime>) {
    let mut next_due: HashMap<Arc<str>, Instant> = HashMap::new();
    let mut rounds = JoinSet::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        while rounds.try_join_next().is_some() {}
        let snapshot = rt.snapshot.load_full();
        let now = Instant::now();
        // Rebuilt every tick: hosts a reload removed drop out.
        let mut still_due = HashMap::with_capacity(next_due.len());
        for host in &snapshot.hosts {
            let Some(settings) = host.health_check else {
                continue;
            };
            let mut due = next_due.remove(&host.label).unwrap_or(now);
            if due <= now {
                due = now + settings.interval;
                rounds.spawn(probe_host(Arc::clone(&rt), Arc::clone(host)));
            }
            still_due.insert(Arc::clone(&host.label), due);
        }
        next_due = still_due;
    }
}

/// Probes every backend of `host` at once and records the results.
async fn probe_host(rt: Arc<Runtime>, host: Arc<Host>) {
    let Some(settings) = host.health_check else {
        return;
    };
    let mut probes = JoinSet::new();
    for (index, backend) in host.pool.backends().iter().enumerate() {
        let addrs = backend.state.addrs();
        probes.spawn(async move {
            let result = timeout(settings.timeout, connect_any(&addrs))
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
            (index, result.map(drop))
        });
    }
    while let Some(Ok((index, result))) = probes.join_next().await {
        let backend = &host.pool.backends()[index];
        let label = &*host.backend_labels[index];
        let transition = backend
            .state
            .probed(result.is_ok(), settings.fall, settings.rise);
        if let Err(e) = &result {
            events::health_check_failed(&rt.metrics, &host.label, label, e);
        }
        if transition != Transition::None {
            let up = transition == Transition::Up;
            events::backend_changed(&rt.metrics, &host.label, label, up);
        }
    }
}
