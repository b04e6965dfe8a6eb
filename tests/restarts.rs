//! Restarts and upgrades that refuse no connection, measured from outside with a client loop
//! opening about 200 TLS connections a second: across restarts under socket activation (a
//! parent process holding the sockets, as systemd does), and across in-place upgrades
//! (`run --upgrade`), while `/readyz` is probed without pause. Also: a second tlsedge on the
//! same address is refused, and a failed upgrade leaves the old process serving.
//!
//! All of it runs with `net.ipv4.tcp_migrate_req` left as it is (0 by default): no connection
//! may depend on the kernel moving it between accept queues.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::process::Proc;
use common::{Backend, ClientOpts, Metrics, Site, ecdsa, hello, host, http_get};
use rustls::ClientConfig;
use tokio::task::{JoinHandle, JoinSet};

const BIN: &str = env!("CARGO_BIN_EXE_tlsedge");
const NAME: &str = "app.test";
/// One new connection every 5 ms: about 200 a second.
const EVERY: Duration = Duration::from_millis(5);
/// Upper bound on the connections one load loop opens, whatever happens.
const MAX_CONNECTIONS: usize = 6000;

/// What the clients saw.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    refused: usize,
    reset: usize,
    other: Vec<String>,
}

/// A client loop: a new connection (TCP, TLS handshake, the backend's reply) every [`EVERY`],
/// each in its own task, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Tally>,
}

impl Load {
    fn start(addr: SocketAddr, client: Arc<ClientConfig>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move {
                let mut connections = JoinSet::new();
                let mut tick = tokio::time::interval(EVERY);
                while !stop.load(Ordering::Relaxed) && connections.len() < MAX_CONNECTIONS {
                    tick.tick().await;
                    let client = Arc::clone(&client);
                    connections.spawn(async move { hello(addr, NAME, &client).await });
                }
                let mut tally = Tally::default();
                while let Some(joined) = connections.join_next().await {
                    match joined.expect("connection task") {
                        Ok(reply) if reply.backend == "b1" => tally.ok += 1,
                        Ok(reply) => tally.other.push(format!("reply {:?}", reply.backend)),
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                            tally.refused += 1;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                            tally.reset += 1;
                        }
                        Err(e) => tally.other.push(e.to_string()),
                    }
                }
                tally
            }
        });
        Self { stop, task }
    }

    async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("load loop")
    }
}

/// Probes `/readyz` every 10 ms until stopped; returns every answer, in order (`200`,
/// `503 draining`, or the connect error).
struct Probe {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<String>>,
}

impl Probe {
    fn start(admin: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) && answers.len() < MAX_CONNECTIONS {
                    match tokio::net::TcpStream::connect(admin).await {
                        Err(e) => answers.push(format!("connect: {e}")),
                        Ok(stream) => {
                            drop(stream);
                            let (status, body) = http_get(admin, "/readyz").await;
                            answers.push(match status {
                                200 => "200".to_owned(),
                                _ => format!("{status} {}", body.trim()),
                            });
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                answers
            }
        });
        Self { stop, task }
    }

    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("probe loop")
    }
}

/// A free loopback address: bound, then released for the process under test to bind.
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A site with one host in front of backend `b1`, on fixed (free) addresses: a restarted or
/// upgraded process must find the same ones.
struct Setup {
    site: Site,
    backend: Backend,
    addr: SocketAddr,
    admin: SocketAddr,
    client: Arc<ClientConfig>,
}

impl Setup {
    async fn new() -> Self {
        let site = Site::new();
        ecdsa(&site, "app", &[NAME]);
        let backend = Backend::start("b1").await;
        let client = ClientOpts::default().build(&site.ca);
        Self {
            site,
            backend,
            addr: free_addr(),
            admin: free_addr(),
            client,
        }
    }

    /// Writes the configuration with `extra` top-level YAML.
    fn config(&self, extra: &str) -> PathBuf {
        let text = format!(
            "listeners: [\"{}\"]\nadmin: {{ bind: \"{}\" }}\ntimeouts: {{ drain: 5s }}\n{extra}hosts:\n{}",
            self.addr,
            self.admin,
            host(&[NAME], &["app"], &[self.backend.addr], ""),
        );
        self.site.write("tlsedge.yaml", &text);
        self.site.path("tlsedge.yaml")
    }
}

fn tlsedge(config: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("RUST_LOG", "info")
        .args(["--log-format", "json", "run", "--config"])
        .arg(config)
        .args(extra);
    cmd
}

fn assert_migrate_req_off() {
    // When the file exists (Linux ≥ 5.14), it must be 0 for this test to prove anything.
    if let Ok(value) = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req") {
        assert_eq!(
            value.trim(),
            "0",
            "net.ipv4.tcp_migrate_req must be left at 0"
        );
    }
}

/// Asserts that no connection failed and that `/readyz` always answered: 200, except for at
/// most `draining_runs` unbroken runs of `503 draining` (a restarted process drains before the
/// next one starts; alternating answers would mean two processes share the admin socket).
fn assert_nothing_lost(what: &str, tally: &Tally, probes: &[String], draining_runs: usize) {
    let not_ready = probes.iter().filter(|a| *a != "200").count();
    let runs = probes
        .windows(2)
        .filter(|w| w[0] == "200" && w[1] != "200")
        .count();
    println!(
        "{what}: {} connections served, {} refused, {} reset, {} other errors; {} /readyz probes, {not_ready} not 200 in {runs} runs",
        tally.ok,
        tally.refused,
        tally.reset,
        tally.other.len(),
        probes.len(),
    );
    assert_eq!(
        (tally.refused, tally.reset),
        (0, 0),
        "{what}: refused or reset connections"
    );
    assert!(tally.other.is_empty(), "{what}: {:?}", tally.other);
    assert!(tally.ok >= 200, "{what}: only {} connections ran", tally.ok);
    assert!(
        probes.iter().all(|a| a == "200" || a == "503 draining"),
        "{what}: /readyz said {probes:?}"
    );
    assert!(runs <= draining_runs, "{what}: /readyz said {probes:?}");
}

/// Waits (bounded) for the load loop to have run a while, so that each phase sees traffic.
async fn under_load_for(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_under_socket_activation_refuse_no_connection() {
    assert_migrate_req_off();
    let s = Setup::new().await;
    let config = s.config("");
    let activator = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/socket_activate.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&activator)
        .arg("--listen")
        .arg(format!("https={}", s.addr))
        .arg("--listen")
        .arg(format!("admin={}", s.admin))
        .args(["--", BIN, "--log-format", "json", "run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped());
    let mut parent = Proc::spawn(&mut cmd);
    let inherited = parent.wait_line("using an inherited socket");
    assert!(inherited.contains("Systemd"), "{inherited}");
    let first = parent.wait_line("activator: ready");
    let load = Load::start(s.addr, Arc::clone(&s.client));
    let probe = Probe::start(s.admin);
    let mut pids = vec![first];
    for _ in 0..2 {
        under_load_for(Duration::from_secs(1)).await;
        let stdin = parent.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"restart\n").expect("restart");
        stdin.flush().expect("flush");
        // The old process exits (after draining) and a new one says READY=1.
        parent.wait_line("activator: exited");
        pids.push(parent.wait_line("activator: ready"));
    }
    under_load_for(Duration::from_secs(1)).await;
    let tally = load.finish().await;
    let probes = probe.finish().await;
    pids.dedup();
    assert_eq!(pids.len(), 3, "three processes served: {pids:?}");
    assert_nothing_lost("socket activation, 2 restarts", &tally, &probes, 2);
    drop(parent.child.stdin.take());
    assert!(parent.wait_exit(Duration::from_secs(30)).success());
}

/// Starts `tlsedge run` and waits until it serves the admin listener.
fn start_serving(cmd: &mut Command) -> Proc {
    let proc = Proc::spawn(cmd);
    proc.wait_line("serving /metrics");
    proc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_hand_the_sockets_over_and_refuse_no_connection() {
    assert_migrate_req_off();
    let s = Setup::new().await;
    let config = s.config("upgrade: { socket: upgrade.sock }\n");
    let mut old = start_serving(&mut tlsedge(&config, &[]));
    let load = Load::start(s.addr, Arc::clone(&s.client));
    let probe = Probe::start(s.admin);
    for round in 0..2 {
        under_load_for(Duration::from_secs(1)).await;
        let new = Proc::spawn(&mut tlsedge(&config, &["--upgrade"]));
        let line = new.wait_line("upgrade: received the listening sockets");
        assert!(
            line.contains(&format!("\"predecessor.pid\":{}", old.child.id())),
            "{line}"
        );
        new.wait_line("upgrade: the previous process stopped accepting");
        new.wait_line("serving /metrics");
        old.wait_line("the new process took over the sockets");
        let status = old.wait_exit(Duration::from_secs(30));
        assert!(
            status.success(),
            "round {round}: the old process exits 0: {status}"
        );
        old = new;
    }
    under_load_for(Duration::from_secs(1)).await;
    let tally = load.finish().await;
    let probes = probe.finish().await;
    assert_nothing_lost("run --upgrade, 2 upgrades", &tally, &probes, 0);
    let (status, body) = http_get(s.admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(Metrics(body).value("tlsedge_handshakes_total", &[]) > 0.0);
    old.signal("-TERM");
    assert!(old.wait_exit(Duration::from_secs(30)).success());
    assert!(
        !s.site.path("upgrade.sock").exists(),
        "a plain shutdown removes its upgrade socket"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upgrade_leaves_the_old_process_serving() {
    let s = Setup::new().await;
    let config = s.config("upgrade: { socket: upgrade.sock }\n");
    let old = start_serving(&mut tlsedge(&config, &[]));
    old.wait_line("accepting upgrades");
    // Something that is not tlsedge on the upgrade socket gets nothing.
    let mut stranger = std::os::unix::net::UnixStream::connect(s.site.path("upgrade.sock"))
        .expect("connect to the upgrade socket");
    stranger
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .expect("write");
    old.wait_line("upgrade aborted; still serving");
    drop(stranger);
    // The successor's configuration adds a redirect listener on an address that is taken: it
    // receives the sockets, then fails before taking over.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let bad = s.site.path("bad.yaml");
    let text = std::fs::read_to_string(&config).expect("config").replace(
        "upgrade:",
        &format!(
            "http_listeners: [\"{}\"]\nupgrade:",
            taken.local_addr().expect("addr")
        ),
    );
    std::fs::write(&bad, text).expect("write");
    let mut new = Proc::spawn(&mut tlsedge(&bad, &["--upgrade"]));
    new.wait_line("Address already in use");
    assert_eq!(new.wait_exit(Duration::from_secs(10)).code(), Some(1));
    old.wait_line("upgrade aborted; still serving");
    let reply = hello(s.addr, NAME, &s.client).await.expect("still served");
    assert_eq!(reply.backend, "b1");
    let (status, body) = http_get(s.admin, "/metrics").await;
    assert_eq!(status, 200);
    let metrics = Metrics(body);
    let aborted = [("result", "aborted")];
    assert_eq!(
        metrics.value("tlsedge_upgrade_handovers_total", &aborted),
        2.0
    );
    assert_eq!(http_get(s.admin, "/readyz").await.0, 200);
    // `--upgrade` with no upgrade socket configured says what is missing.
    let plain = s.site.path("plain.yaml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &plain,
        text.replace("upgrade: { socket: upgrade.sock }\n", ""),
    )
    .unwrap();
    let out = tlsedge(&plain, &["--upgrade"]).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("upgrade.socket: not set"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_address_is_refused() {
    // The mistake from the issue: `tlsedge demo` twice. The second must not share the port.
    let dir = tempfile::tempdir().expect("dir");
    let (listen, admin) = (free_addr(), free_addr());
    let demo = |sub: &str, admin: SocketAddr| {
        let mut cmd = Command::new(BIN);
        cmd.args(["demo", "--listen", &listen.to_string()])
            .args(["--admin", &admin.to_string(), "--dir"])
            .arg(dir.path().join(sub));
        cmd
    };
    let first = Proc::spawn(&mut demo("one", admin));
    first.wait_line("Press Ctrl-C to stop.");
    let out = demo("two", free_addr()).output().expect("second demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {listen}"))
            && stderr.contains("Address already in use")
            && stderr.contains("--upgrade"),
        "{stderr}"
    );
    let started = Instant::now();
    let (status, _) = http_get(admin, "/readyz").await;
    assert_eq!(status, 200, "the first one still serves");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// The control experiment: the same load across a plain stop-then-start, with nobody holding
/// the sockets in between, does see refused connections. So the loop above can tell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_stop_and_start_refuses_connections() {
    let s = Setup::new().await;
    let config = s.config("");
    let mut old = start_serving(&mut tlsedge(&config, &[]));
    let load = Load::start(s.addr, Arc::clone(&s.client));
    under_load_for(Duration::from_millis(500)).await;
    old.signal("-TERM");
    assert!(old.wait_exit(Duration::from_secs(30)).success());
    let new = start_serving(&mut tlsedge(&config, &[]));
    under_load_for(Duration::from_millis(500)).await;
    let tally = load.finish().await;
    println!(
        "plain restart: {} served, {} refused, {} reset",
        tally.ok, tally.refused, tally.reset
    );
    assert!(tally.refused > 0, "{tally:?}");
    drop(new);
}
