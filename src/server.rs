//! Start-up and shutdown: load the configuration, bind the sockets, run accept loops and the
//! admin listener, and on shutdown stop accepting, drain, then close what is left.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acme::manager::Manager;
use crate::config::ProxyInput;
use crate::config::{self, LoadError};
use crate::conn::listener::{Lifecycle, accept_loop};
use crate::conn::{ListenerInfo, ListenerKind};
use crate::metrics::Metrics;
use crate::reload::{ReloadTrigger, Reloader, watch};
use crate::runtime::Runtime;
use crate::snapshot::Snapshot;
use crate::tls::TlsShared;
use crate::upstream::dns::Answers;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] LoadError),
    /// The ticket keys could not be loaded.
    #[error(transparent)]
    Tickets(#[from] crate::tls::tickets::TicketError),
    /// The ACME storage directory could not be prepared.
    #[error("acme.storage: {0}")]
    Storage(#[source] crate::acme::storage::StorageError),
    /// A socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A server with its configuration loaded and its sockets bound, ready to [`run`](Self::run).
#[derive(Debug)]
pub struct Server {
    runtime: Arc<Runtime>,
    /// Bound sockets, each with its connections' settings.
    listeners: Vec<(TcpListener, Option<ProxyInput>)>,
    /// Bound plain-HTTP redirect sockets.
    http_listeners: Vec<TcpListener>,
    admin: Option<TcpListener>,
    config_path: PathBuf,
    reloader: Arc<Reloader>,
    trigger: ReloadTrigger,
    signals: watch::Signals,
}

impl Server {
    /// Loads and validates `config_path` strictly (any error refuses to start), builds the first
    /// snapshot and binds every listener. Port 0 binds an ephemeral port (see
    /// [`tls_addrs`](Self::tls_addrs)).
    pub async fn bind(config_path: impl AsRef<Path>) -> Result<Self, StartError> {
        crate::metrics::panics::install();
        let config_path = config_path.as_ref().to_owned();
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let loaded = config::load(&config_path, &provider)?.strict()?;
        for problem in &loaded.problems {
            tracing::warn!(%problem, "configuration warning");
        }
        let files = loaded.referenced_files();
        let config = loaded.config;
        if let Some(acme) = &config.start.acme {
            // Before the watcher starts: it watches these directories for the first files.
            let labels: Vec<&str> = config
                .hosts
                .iter()
                .filter(|h| h.acme)
                .map(|h| h.label.as_str())
                .collect();
            crate::acme::storage::prepare(&acme.storage, &labels).map_err(StartError::Storage)?;
        }
        // Watch before fingerprinting: a change after this point is either in the fingerprint
        // or queued as an event for `run`.
        let (trigger, signals) = watch::channel(config.start.reload.watch, &files);
        let tls = TlsShared::new(&config.start.sessions, config.ticket_key_file.as_deref())?;
        let mut listeners = Vec::with_capacity(config.start.listeners.len());
        for listener in &config.start.listeners {
            let socket = bind(listener.addr).await?;
            listeners.push((socket, listener.proxy_protocol.clone()));
        }
        let mut http_listeners = Vec::with_capacity(config.start.http_listeners.len());
        for addr in &config.start.http_listeners {
            http_listeners.push(bind(*addr).await?);
        }
        let admin = match config.start.admin {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let metrics = Arc::new(Metrics::new());
        // Backend names are looked up on a blocking thread, not on this async worker.
        let answers = Answers::lookup(Snapshot::names_to_look_up(&config, None)).await;
        let (runtime, _skipped) = Runtime::new(config, tls, Arc::clone(&metrics), &answers);
        let runtime = Arc::new(runtime);
        // Fingerprint the files now, as loaded (not when `run` starts: a change in between
        // would look already applied).
        let reloader = Arc::new(Reloader::new(
            Arc::clone(&runtime),
            config_path.clone(),
            files,
        ));
        metrics.config_reload("applied");
        Ok(Self {
            runtime,
            listeners,
            http_listeners,
            admin,
            config_path,
            reloader,
            trigger,
            signals,
        })
    }

    /// The bound TLS listener addresses, in configuration order.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect()
    }

    /// The bound plain-HTTP (redirect) listener addresses, in configuration order.
    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.http_listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The bound admin address, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The shared runtime state (snapshot, metrics).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// A handle that makes the server reload its configuration now (what SIGHUP does).
    pub fn reload_trigger(&self) -> ReloadTrigger {
        self.trigger.clone()
    }

    /// The configuration file this server was started from.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Serves until `shutdown` completes, then stops accepting, lets open connections finish
    /// for up to the configured drain time, and closes the rest.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let rt = self.runtime;
        let snapshot = rt.snapshot.load_full();
        let limit = Arc::new(Semaphore::new(snapshot.config.start.max_connections));
        let life = Lifecycle {
            stop_accepting: CancellationToken::new(),
            abort: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        let admin_stop = CancellationToken::new();
        // Redirects point at the first TLS listener's port (443 is left out of the URL).
        let https_port = self
            .listeners
            .first()
            .and_then(|(l, _)| l.local_addr().ok())
            .map_or(443, |a| a.port());
        for listener in self.http_listeners {
            let Ok(addr) = listener.local_addr() else {
                continue;
            };
            tracing::info!(listener.addr = %addr, "redirecting plain HTTP to https");
            let info = Arc::new(ListenerInfo {
                addr,
                proxy_protocol: None,
                kind: ListenerKind::Redirect { https_port },
            });
            let (rt, limit) = (Arc::clone(&rt), Arc::clone(&limit));
            tokio::spawn(accept_loop(listener, info, rt, limit, life.clone()));
        }
        for (listener, proxy_protocol) in self.listeners {
            let Ok(addr) = listener.local_addr() else {
                continue;
            };
            tracing::info!(listener.addr = %addr, "accepting TLS connections");
            let info = Arc::new(ListenerInfo {
                addr,
                proxy_protocol,
                kind: ListenerKind::Tls,
            });
            tokio::spawn(accept_loop(
                listener,
                info,
                Arc::clone(&rt),
                Arc::clone(&limit),
                life.clone(),
            ));
        }
        if let Some(admin) = self.admin {
            if let Ok(addr) = admin.local_addr() {
                tracing::info!(admin.addr = %addr, "serving /metrics /healthz /readyz");
            }
            let draining = life.stop_accepting.clone();
            tokio::spawn(crate::admin::serve(
                admin,
                Arc::clone(&rt),
                draining,
                admin_stop.clone(),
            ));
        }
        let upkeep = tokio::spawn(upkeep(Arc::clone(&rt)));
        let health = tokio::spawn(crate::upstream::probe::run(Arc::clone(&rt)));
        let sweep = tokio::spawn(crate::http::client::sweep_idle(Arc::clone(&rt)));
        let dns_refresh = tokio::spawn(crate::upstream::dns::run(
            Arc::clone(&rt),
            snapshot.config.start.reload.dns_refresh,
        ));
        let acme_stop = CancellationToken::new();
        let acme = snapshot.config.start.acme.clone().and_then(|settings| {
            let manager = Manager::new(Arc::clone(&rt), settings, self.trigger.clone());
            match manager.spawn(acme_stop.clone()) {
                Ok(thread) => Some(thread),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the ACME client");
                    None
                }
            }
        });
        let watcher = tokio::spawn(watch::run(
            self.reloader,
            snapshot.config.start.reload,
            self.signals,
            admin_stop.clone(),
        ));
        shutdown.await;
        acme_stop.cancel();
        drain(&life, rt.snapshot.load().timeouts.drain).await;
        if let Some(acme) = acme {
            let _ = tokio::task::spawn_blocking(move || acme.join()).await;
        }
        upkeep.abort();
        health.abort();
        sweep.abort();
        dns_refresh.abort();
        admin_stop.cancel();
        let _ = watcher.await;
    }
}

/// Pending-connection queue per listener (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: u32 = 4096;

/// Binds a listener with `SO_REUSEPORT`, so a new tlsedge (an upgrade, a config needing a
/// restart) can bind the same address while the old one drains: no connection is refused in
/// between.
async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    };
    socket
        .and_then(|s| {
            s.set_reuseaddr(true)?;
            s.set_reuseport(true)?;
            s.bind(addr)?;
            s.listen(BACKLOG)
        })
        .map_err(|source| StartError::Bind { addr, source })
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

/// Histogram housekeeping every few seconds, and an hourly look at certificate expiry (also
/// right at start), so a certificate that expires while serving is logged, not only graphed.
async fn upkeep(rt: Arc<Runtime>) {
    const EXPIRY_CHECK_EVERY: u32 = 720; // ticks of 5 s: one hour
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    for n in 0_u32.. {
        tick.tick().await;
        rt.metrics.upkeep();
        if n % EXPIRY_CHECK_EVERY == 0 {
            check_expiry(&rt);
        }
    }
}

fn check_expiry(rt: &Runtime) {
    const WARN_DAYS: i64 = 14;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for host in &rt.snapshot.load().hosts {
        for cert in &host.certs {
            let days = (cert.not_after - now).div_euclid(86_400);
            if cert.not_after <= now {
                tracing::error!(tls.host = &*host.label, cert = %cert.cert_path.display(), "certificate has expired");
            } else if days < WARN_DAYS {
                tracing::warn!(tls.host = &*host.label, cert = %cert.cert_path.display(), days, "certificate expires soon");
            }
        }
    }
}
