//! The `tlsedge` command: `run`, `check` and `demo`. Thin: parse the command line, set up
//! logging, and hand over to the library. `anyhow` lives here only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tlsedge::config::{self, LoadError};
use tlsedge::server::Sockets;
use tlsedge::{Server, StartError};

#[derive(Debug, Parser)]
#[command(version, about = "TLS-terminating load balancer for many domains")]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a configuration file.
    Run {
        /// The YAML configuration.
        #[arg(long, short)]
        config: PathBuf,
        /// Take the listening sockets over from the tlsedge running on `upgrade.socket`; it
        /// stops accepting once this one serves, then drains and exits.
        #[arg(long)]
        upgrade: bool,
        /// Threads that serve connections (default: one per CPU this process may run on, as
        /// `taskset` or the cgroup's cpuset allows).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
        workers: Option<u16>,
    },
    /// Validate a configuration file (and every file it references) and print all problems.
    Check {
        /// The YAML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Manage the shared session ticket key file of a fleet.
    TicketKeys {
        #[command(subcommand)]
        action: TicketKeysAction,
    },
    /// Run a demo: generated certificates, two built-in HTTP backends.
    Demo {
        /// TLS listen address.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Admin (metrics) listen address.
        #[arg(long, default_value = "127.0.0.1:9900")]
        admin: SocketAddr,
        /// Where to write the demo CA, certificates and config.
        #[arg(long, default_value_os_t = std::env::temp_dir().join("tlsedge-demo"))]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TicketKeysAction {
    /// Prepend a fresh random key and keep the newest N (atomic write, mode 0600).
    Rotate {
        /// The key file (created if missing).
        #[arg(long)]
        file: PathBuf,
        /// How many keys to keep (the newest encrypts, all decrypt).
        #[arg(long, default_value_t = 3)]
        keep: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    // Before any thread starts: this unsets LISTEN_FDS and friends.
    let inherited = match tlsedge::sockets::Inherited::from_systemd() {
        Ok(inherited) => inherited,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let sockets = if inherited.is_empty() {
        Sockets::Bind
    } else {
        Sockets::Inherited(inherited)
    };
    match cli.command {
        Command::Check { config } => check(&config),
        Command::TicketKeys {
            action: TicketKeysAction::Rotate { file, keep },
        } => match tlsedge::tls::tickets::rotate_key_file(&file, keep) {
            Ok(kept) => {
                println!("{}: rotated, {kept} key(s)", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        Command::Run {
            config,
            upgrade,
            workers,
        } => {
            let sockets = match (upgrade, sockets) {
                (false, sockets) => sockets,
                (true, Sockets::Bind) => Sockets::Upgrade,
                (true, _) => {
                    eprintln!("error: {}", StartError::UpgradeUnderSocketActivation);
                    return ExitCode::from(1);
                }
            };
            block_on(workers, serve(config, sockets, |_| {}))
        }
        Command::Demo { listen, admin, dir } => block_on(None, async move {
            let files = match tlsedge::demo::prepare(&dir, listen, admin).await {
                Ok(files) => files,
                Err(e) => {
                    eprintln!("error: demo setup failed: {e}");
                    return ExitCode::from(1);
                }
            };
            let config = files.config.clone();
            serve(config, sockets, move |server| {
                if let Some(&tls) = server.tls_addrs().first() {
                    print!(
                        "{}",
                        tlsedge::demo::instructions(&files, tls, server.admin_addr())
                    );
                    let _ = std::io::Write::flush(&mut std::io::stdout());
                }
            })
            .await
        }),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// `tlsedge check`: exit 0 when usable (warnings allowed), 1 on any error.
fn check(path: &Path) -> ExitCode {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    match config::load(path, &provider).and_then(config::Loaded::strict) {
        Ok(loaded) => {
            for problem in &loaded.problems {
                println!("{problem}");
            }
            println!(
                "{}: ok ({} hosts, {} warnings)",
                path.display(),
                loaded.config.hosts.len(),
                loaded.problems.len()
            );
            ExitCode::SUCCESS
        }
        Err(LoadError::Invalid(problems)) => {
            for problem in &problems.0 {
                println!("{problem}");
            }
            ExitCode::from(1)
        }
        Err(e) => {
            println!("{e}");
            ExitCode::from(1)
        }
    }
}

/// Runs `task` on a multi-threaded tokio runtime with `workers` worker threads, by default one
/// per CPU the process may run on (its affinity mask, as `taskset` or a cgroup's cpuset set it).
/// Tokio's current-thread scheduler for one worker was measured too: the same instructions per
/// resumed connection under callgrind (1.12 M) and no CPU time difference beyond noise, so one
/// scheduler serves every count.
fn block_on(workers: Option<u16>, task: impl Future<Output = ExitCode>) -> ExitCode {
    let count = workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    );
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(count);
    match builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
    {
        Ok(rt) => rt.block_on(task),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Serves `config` until SIGTERM/SIGINT, or until a successor takes the sockets over. Exit 2
/// when the configuration is refused, 1 on other start-up failures. `on_start` runs once the
/// sockets are bound.
async fn serve(config: PathBuf, sockets: Sockets, on_start: impl FnOnce(&Server)) -> ExitCode {
    // Handlers first (SIGTERM's and SIGHUP's default is to kill the process): the listening
    // sockets accept into their backlog while a large configuration is still being built, so a
    // supervisor that sees the port open may signal before the server is up. A SIGHUP then
    // waits and reloads once serving; a SIGTERM makes the server drain as soon as it runs.
    let shutdown = shutdown_signal();
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let server = match Server::bind_with(&config, sockets).await {
        Ok(server) => server,
        Err(StartError::Config(e)) => {
            eprintln!("{e}");
            eprintln!("refusing to start: fix {} first", config.display());
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    on_start(&server);
    match hangup {
        Ok(hup) => drop(tokio::spawn(reload_on_sighup(hup, server.reload_trigger()))),
        Err(e) => tracing::warn!(error = %e, "cannot install the SIGHUP handler"),
    }
    server.run(shutdown).await;
    ExitCode::SUCCESS
}

/// SIGHUP runs the same reload as a file change.
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    trigger: tlsedge::reload::ReloadTrigger,
) {
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading");
        if !trigger.reload() {
            return;
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers now; the future completes on either.
fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
