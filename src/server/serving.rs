//! What a running server serves and how it stops: one accept loop per listener, the admin
//! listener, the upgrade socket, and the end — a drain on shutdown, or on a hand-over, stopping
//! every accept loop (admin included) before confirming to the successor, then the drain.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ProxyInput;
use crate::conn::listener::{Lifecycle, accept_loop};
use crate::conn::{ListenerInfo, ListenerKind};
use crate::runtime::Runtime;
use crate::snapshot::Snapshot;
use crate::upgrade::{self, Handed, Handover};

/// How long the old process waits for its confirmation to reach the successor.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// The serving side of a running server.
pub(super) struct Serving {
    rt: Arc<Runtime>,
    limit: Arc<Semaphore>,
    life: Lifecycle,
    /// Stops the admin listener (and the reload watcher).
    pub(super) admin_stop: CancellationToken,
    /// Turns `/readyz` to 503: on shutdown, not on a hand-over, after which the successor
    /// answers.
    draining: CancellationToken,
    upgrade_socket: Option<PathBuf>,
    /// Duplicates of the sockets, for a successor. Kept only with upgrades on: a duplicate
    /// keeps its socket listening after the accept loop ended, and a plain shutdown must close
    /// them (so clients are refused, not left waiting in a queue nobody serves).
    handed: Option<Vec<Handed>>,
    accepting: Vec<JoinHandle<()>>,
    upgrades: Option<JoinHandle<()>>,
    upgrade_stop: CancellationToken,
}

impl Serving {
    pub(super) fn new(rt: &Arc<Runtime>, snapshot: &Snapshot) -> Self {
        let upgrade_socket = snapshot.config.start.upgrade_socket.clone();
        Self {
            rt: Arc::clone(rt),
            limit: Arc::new(Semaphore::new(snapshot.config.start.max_connections)),
            life: Lifecycle {
                stop_accepting: CancellationToken::new(),
                abort: CancellationToken::new(),
                tasks: TaskTracker::new(),
            },
            admin_stop: CancellationToken::new(),
            draining: CancellationToken::new(),
            handed: upgrade_socket.as_ref().map(|_| Vec::new()),
            upgrade_socket,
            accepting: Vec::new(),
            upgrades: None,
            upgrade_stop: CancellationToken::new(),
        }
    }

    /// Starts accepting on the TLS and plain-HTTP (redirect) listeners.
    pub(super) fn accept(
        &mut self,
        tls: Vec<(TcpListener, Option<ProxyInput>)>,
        redirects: Vec<TcpListener>,
    ) {
        // Redirects point at the first TLS listener's port (443 is left out of the URL).
        let https_port = tls
            .first()
            .and_then(|(l, _)| l.local_addr().ok())
            .map_or(443, |a| a.port());
        let redirects = redirects
            .into_iter()
            .map(|l| (l, None, ListenerKind::Redirect { https_port }));
        let tls = tls
            .into_iter()
            .map(|(l, proxy)| (l, proxy, ListenerKind::Tls));
        for (listener, proxy_protocol, kind) in redirects.chain(tls) {
            self.accept_one(listener, proxy_protocol, kind);
        }
    }

    fn accept_one(
        &mut self,
        listener: TcpListener,
        proxy_protocol: Option<ProxyInput>,
        kind: ListenerKind,
    ) {
        let Ok(addr) = listener.local_addr() else {
            return;
        };
        let role = match kind {
            ListenerKind::Tls => {
                tracing::info!(listener.addr = %addr, "accepting TLS connections");
                "tls"
            }
            ListenerKind::Redirect { .. } => {
                tracing::info!(listener.addr = %addr, "redirecting plain HTTP to https");
                "redirect"
            }
        };
        self.keep_for_successor(&listener, role);
        let info = Arc::new(ListenerInfo {
            addr,
            proxy_protocol,
            kind,
        });
        let (rt, limit) = (Arc::clone(&self.rt), Arc::clone(&self.limit));
        let task = accept_loop(listener, info, rt, limit, self.life.clone());
        self.accepting.push(tokio::spawn(task));
    }

    /// Starts serving `/metrics`, `/healthz` and `/readyz`.
    pub(super) fn serve_admin(&mut self, admin: TcpListener) {
        if let Ok(addr) = admin.local_addr() {
            tracing::info!(admin.addr = %addr, "serving /metrics /healthz /readyz");
        }
        self.keep_for_successor(&admin, "admin");
        let task = crate::admin::serve(
            admin,
            Arc::clone(&self.rt),
            self.draining.clone(),
            self.admin_stop.clone(),
        );
        self.accepting.push(tokio::spawn(task));
    }

    fn keep_for_successor(&mut self, listener: &TcpListener, role: &'static str) {
        let Some(handed) = &mut self.handed else {
            return;
        };
        match listener.as_fd().try_clone_to_owned() {
            Ok(fd) => handed.push(Handed { role, fd }),
            Err(e) => tracing::warn!(error = %e, role, "cannot keep a socket for upgrades"),
        }
    }

    /// Opens the upgrade socket, if configured (`successor`: replacing the one the predecessor
    /// left). Returns where successors' requests to take over arrive.
    pub(super) async fn open_upgrades(&mut self, successor: bool) -> mpsc::Receiver<Handover> {
        let (handover_tx, handovers) = mpsc::channel(1);
        let (Some(path), Some(handed)) = (&self.upgrade_socket, self.handed.take()) else {
            return handovers;
        };
        match upgrade::listen(path, successor).await {
            Ok(listener) => {
                tracing::info!(upgrade.socket = %path.display(), "accepting upgrades");
                self.upgrades = Some(tokio::spawn(upgrade::serve(
                    listener,
                    path.clone(),
                    handed,
                    handover_tx,
                    Arc::clone(&self.rt.metrics),
                    self.upgrade_stop.clone(),
                )));
            }
            Err(e) => {
                tracing::error!(error = %e, "upgrades are off: cannot open the upgrade socket");
            }
        }
        handovers
    }

    /// Stops serving: for a `handover`, stops every accept loop and confirms; otherwise turns
    /// `/readyz` to 503 and closes the upgrade socket. Then drains for up to `drain`.
    pub(super) async fn stop(self, handover: Option<Handover>, drain_for: Duration) {
        if let Some(done) = handover {
            // The successor accepts from now on: stop every accept loop, admin included, and
            // only then confirm, so the two never serve the admin socket together.
            self.life.stop_accepting.cancel();
            self.admin_stop.cancel();
            for task in self.accepting {
                let _ = task.await;
            }
            let _ = done.send(());
        } else {
            self.draining.cancel();
            self.upgrade_stop.cancel();
            if let Some(path) = &self.upgrade_socket {
                let _ = std::fs::remove_file(path);
            }
        }
        // The upgrade task ends once it has confirmed to the successor (which waits for that),
        // or at once on `upgrade_stop`.
        if let Some(upgrades) = self.upgrades {
            let _ = tokio::time::timeout(CONFIRM_TIMEOUT, upgrades).await;
        }
        drain(&self.life, drain_for).await;
        self.admin_stop.cancel();
    }
}

async fn drain(life: &Lifecycle, limit: Duration) {
    life.stop_accepting.cancel();
    life.tasks.close();
    let open = life.tasks.len();
    tracing::info!(connections = open, drain_secs = limit.as_secs(), "draining");
    if tokio::time::timeout(limit, life.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = life.tasks.len(),
            "drain deadline passed, closing remaining connections"
        );
        life.abort.cancel();
        life.tasks.wait().await;
    }
    tracing::info!("shutdown complete");
}
