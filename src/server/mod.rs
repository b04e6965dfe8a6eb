//! Start-up and shutdown: load the configuration, open the sockets (inherited from systemd or
//! a predecessor, else bound: [`crate::sockets`]), run accept loops and the admin listener, and
//! on shutdown — or when a successor takes the sockets over ([`crate::upgrade`]) — stop
//! accepting, drain, then close what is left.

mod serving;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::acme::manager::Manager;
use crate::config::ProxyInput;
use crate::config::{self, LoadError};
use crate::metrics::Metrics;
use crate::reload::{FirstLoad, ReloadTrigger, Reloader, watch};
use crate::runtime::Runtime;
use crate::snapshot::Snapshot;
use crate::sockets::{Inherited, SocketError};
use crate::tls::TlsShared;
use crate::upgrade::{Predecessor, UpgradeError};
use crate::upstream::dns::Answers;
use serving::Serving;

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
    /// A listening socket could not be opened.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The sockets could not be taken over from the running tlsedge.
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
    /// `--upgrade` without an upgrade socket to ask.
    #[error("{}: upgrade.socket: not set, so there is no running tlsedge to take over from", config.display())]
    NoUpgradeSocket {
        /// The configuration file.
        config: PathBuf,
    },
    /// `--upgrade` while systemd passed the sockets: systemd already keeps them across restarts.
    #[error(
        "--upgrade under socket activation: restart the unit instead (systemd holds the sockets)"
    )]
    UpgradeUnderSocketActivation,
}

/// Where [`Server::bind_with`] gets its sockets.
#[derive(Debug)]
pub enum Sockets {
    /// Bind every listener here.
    Bind,
    /// Use these (systemd's), binding only the addresses they do not cover.
    Inherited(Inherited),
    /// Take them over from the tlsedge listening on `upgrade.socket` (`run --upgrade`).
    Upgrade,
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
    /// The tlsedge being replaced, until it has stopped accepting.
    predecessor: Option<Predecessor>,
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
        Self::bind_with(config_path, Sockets::Bind).await
    }

    /// [`bind`](Self::bind), with the listening sockets from `sockets`.
    pub async fn bind_with(
        config_path: impl AsRef<Path>,
        sockets: Sockets,
    ) -> Result<Self, StartError> {
        crate::metrics::panics::install();
        let config_path = config_path.as_ref().to_owned();
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let mut cache = config::FileCache::default();
        cache.begin();
        let mut loaded = config::load_with(&config_path, &provider, &mut cache)?.strict()?;
        for problem in &loaded.problems {
            tracing::warn!(%problem, "configuration warning");
        }
        let files = loaded.referenced_files();
        let text_hash = loaded.text_hash;
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
        let (mut inherited, predecessor) = match sockets {
            Sockets::Bind => (Inherited::none(), None),
            Sockets::Inherited(inherited) => (inherited, None),
            Sockets::Upgrade => {
                let path = config.start.upgrade_socket.as_deref().ok_or_else(|| {
                    StartError::NoUpgradeSocket {
                        config: config_path.clone(),
                    }
                })?;
                let (predecessor, sockets) = Predecessor::connect(path).await?;
                tracing::info!(
                    predecessor.pid = predecessor.pid(),
                    sockets = sockets.len(),
                    "upgrade: received the listening sockets"
                );
                let inherited =
                    Inherited::from_predecessor(sockets).map_err(|source| UpgradeError::Io {
                        path: path.to_owned(),
                        source,
                    })?;
                (inherited, Some(predecessor))
            }
        };
        let mut listeners = Vec::with_capacity(config.start.listeners.len());
        for listener in &config.start.listeners {
            let socket = inherited.open(listener.addr)?;
            listeners.push((socket, listener.proxy_protocol.clone()));
        }
        let mut http_listeners = Vec::with_capacity(config.start.http_listeners.len());
        for addr in &config.start.http_listeners {
            http_listeners.push(inherited.open(*addr)?);
        }
        let admin = match config.start.admin {
            Some(addr) => Some(inherited.open(addr)?),
            None => None,
        };
        inherited.finish()?;
        let metrics = Arc::new(Metrics::new());
        // Backend names are looked up on a blocking thread, not on this async worker.
        let answers = Answers::lookup(Snapshot::names_to_look_up(&config, None)).await;
        let (runtime, _skipped) = Runtime::new(config, tls, Arc::clone(&metrics), &answers);
        let runtime = Arc::new(runtime);
        // Fingerprint the files now, as loaded (not when `run` starts: a change in between
        // would look already applied).
        let first = FirstLoad {
            text_hash,
            files,
            cache,
            hosts: (std::mem::take(&mut loaded.raw.hosts), loaded.checked),
        };
        let reloader = Arc::new(Reloader::new(
            Arc::clone(&runtime),
            config_path.clone(),
            first,
        ));
        metrics.config_reload("applied");
        Ok(Self {
            runtime,
            listeners,
            http_listeners,
            admin,
            predecessor,
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
    /// for up to the configured drain time, and closes the rest. A successor that takes the
    /// sockets over (`upgrade.socket`) ends serving the same way, except that the admin
    /// listener stops at once: it is the successor's from then on.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let rt = self.runtime;
        let snapshot = rt.snapshot.load_full();
        let mut serving = Serving::new(&rt, &snapshot);
        serving.accept(self.listeners, self.http_listeners);
        let successor = self.predecessor.is_some();
        if let Some(predecessor) = self.predecessor {
            // The admin listener and the upgrade socket are served only once the predecessor
            // no longer serves them.
            match predecessor.take_over().await {
                Ok(()) => tracing::info!("upgrade: the previous process stopped accepting"),
                Err(e) => {
                    tracing::error!(error = %e, "upgrade: the previous process did not confirm it stopped accepting; serving anyway")
                }
            }
        }
        if let Some(admin) = self.admin {
            serving.serve_admin(admin);
        }
        let mut handovers = serving.open_upgrades(successor).await;
        let background = Background::spawn(&rt, &snapshot, &self.trigger);
        let watcher = tokio::spawn(watch::run(
            self.reloader,
            snapshot.config.start.reload,
            self.signals,
            serving.admin_stop.clone(),
        ));
        notify_systemd(sd_notify::NotifyState::Ready);
        let handover = tokio::select! {
            () = shutdown => None,
            Some(done) = handovers.recv() => Some(done),
        };
        notify_systemd(sd_notify::NotifyState::Stopping);
        background.acme_stop.cancel();
        serving
            .stop(handover, rt.snapshot.load().timeouts.drain)
            .await;
        background.stop().await;
        let _ = watcher.await;
    }
}

/// Tells systemd (`Type=notify`) how the service is doing; a no-op without `NOTIFY_SOCKET`.
fn notify_systemd(state: sd_notify::NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(false, &[state]) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// The tasks beside the accept loops: upkeep, health probes, the idle-connection sweep, DNS
/// refresh and the ACME client.
struct Background {
    tasks: Vec<JoinHandle<()>>,
    acme: Option<std::thread::JoinHandle<()>>,
    acme_stop: CancellationToken,
}

impl Background {
    fn spawn(rt: &Arc<Runtime>, snapshot: &Snapshot, trigger: &ReloadTrigger) -> Self {
        let tasks = vec![
            tokio::spawn(upkeep(Arc::clone(rt))),
            tokio::spawn(crate::upstream::probe::run(Arc::clone(rt))),
            tokio::spawn(crate::http::client::sweep_idle(Arc::clone(rt))),
            tokio::spawn(crate::upstream::dns::run(
                Arc::clone(rt),
                snapshot.config.start.reload.dns_refresh,
            )),
        ];
        let acme_stop = CancellationToken::new();
        let acme = snapshot.config.start.acme.clone().and_then(|settings| {
            let manager = Manager::new(Arc::clone(rt), settings, trigger.clone());
            match manager.spawn(acme_stop.clone()) {
                Ok(thread) => Some(thread),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the ACME client");
                    None
                }
            }
        });
        Self {
            tasks,
            acme,
            acme_stop,
        }
    }

    /// Waits for the ACME client (cancelled before) and stops the rest.
    async fn stop(self) {
        if let Some(acme) = self.acme {
            let _ = tokio::task::spawn_blocking(move || acme.join()).await;
        }
        for task in self.tasks {
            task.abort();
        }
    }
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
