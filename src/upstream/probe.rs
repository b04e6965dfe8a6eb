//! Active health checks: every host with `health_check` has each backend probed every
//! `interval`, with a TCP connect or (`health_check.http`) an HTTP GET whose status must fall
//! in `expect`. `fall` failures in a row take a backend out of its pool, `rise`
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

use std::net::SocketAddr;

use super::addr::BackendAddr;
use super::connect::{connect_any, local_cause};
use super::state::Transition;
use crate::config::model::BackendProtocol;
use crate::config::validate::HealthCheck;
use crate::http::client::one_request;
use crate::metrics::events;
use crate::runtime::Runtime;
use crate::snapshot::{Host, Mode};

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
        for host in snapshot.health_checked.iter().map(|&i| &snapshot.hosts[i]) {
            let Some(settings) = &host.health_check else {
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

/// Probes every backend of `host` (each route's too, each backend once) at once and records
/// the results.
async fn probe_host(rt: Arc<Runtime>, host: Arc<Host>) {
    let Some(settings) = host.health_check.clone() else {
        return;
    };
    let mut probes = JoinSet::new();
    let probed = host.all_backends();
    for (index, (backend, _)) in probed.iter().enumerate() {
        let (host, settings, addr) = (Arc::clone(&host), settings.clone(), backend.addr.clone());
        let addrs = backend.state.addrs();
        probes.spawn(async move {
            let result = timeout(settings.timeout, probe(&host, &settings, &addr, &addrs))
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
            (index, result)
        });
    }
    while let Some(Ok((index, result))) = probes.join_next().await {
        let (backend, label) = probed[index];
        if let Err(e) = &result
            && let Some(cause) = local_cause(e)
        {
            // Not the backend's fault: the probe did not happen.
            events::local_error(&rt.metrics, "health_check", cause, e);
            continue;
        }
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

/// One probe of one backend: connect, and with an HTTP check send the request (over the
/// host's backend TLS, if any) and check the status.
async fn probe(
    host: &Host,
    settings: &HealthCheck,
    addr: &BackendAddr,
    addrs: &[SocketAddr],
) -> std::io::Result<()> {
    let stream = connect_any(addrs).await?;
    let Some(check) = &settings.http else {
        return Ok(());
    };
    let h2 = matches!(&host.mode, Mode::Http(http) if http.config.backend_protocol == BackendProtocol::H2);
    let authority = check.host.as_deref().unwrap_or(&host.label);
    let request = |h2: bool| {
        let uri = if h2 {
            let scheme = if host.upstream_tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{authority}{}", check.path)
        } else {
            check.path.clone()
        };
        let mut req = hyper::Request::get(uri).header("user-agent", "tlsedge-health-check");
        if !h2 {
            req = req.header(hyper::header::HOST, authority);
        }
        req.body(crate::http::body::empty())
            .map_err(std::io::Error::other)
    };
    let response = match &host.upstream_tls {
        None => one_request(stream, h2, request(h2)?).await,
        Some(tls) => {
            let secure = tls.connect(addr, stream).await?;
            let h2 = h2 || secure.get_ref().1.alpn_protocol() == Some(b"h2");
            one_request(secure, h2, request(h2)?).await
        }
    }
    .map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    if check.expect.contains(&status) {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "status {status} is outside {}-{}",
            check.expect.start(),
            check.expect.end()
        )))
    }
}
