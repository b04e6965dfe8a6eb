//! Fixtures shared by the fuzz targets: a [`tlsedge::runtime::Runtime`] serving two hosts,
//! built once per process, and the drivers that run one connection over `tokio::io::duplex`
//! on a fresh current-thread runtime with paused time (so every timeout elapses at once and a
//! run never waits on the wall clock).
//!
//! Everything here goes through tlsedge's public API; nothing in `src/` exists for the fuzzer.
//! Certificates are issued at start by [`tlsedge::pki::Ca`] and written to a private temporary
//! directory only for the config load, then removed: no key is ever committed.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::task::TaskTracker;

use tlsedge::config::ProxyInput;
use tlsedge::conn::{ConnInfo, Endpoints, ListenerInfo, ListenerKind, Shutdown};
use tlsedge::http::HttpHost;
use tlsedge::metrics::Metrics;
use tlsedge::pki::{Ca, KeyKind};
use tlsedge::runtime::Runtime;
use tlsedge::snapshot::{Host, Mode};
use tlsedge::tls::TlsShared;

/// The TCP peer of every fuzzed connection (inside the PROXY listener's trusted range).
pub const PEER: &str = "10.0.0.5:40000";
/// Our end of every fuzzed connection.
pub const LOCAL: &str = "10.0.0.1:443";
/// The `tcp`-mode host, also the default host (clients without SNI land here).
pub const TCP_HOST: &str = "relay.test";
/// The `http`-mode host.
pub const HTTP_HOST: &str = "web.test";
/// How long one connection may run in virtual time before it is cut (every configured timeout
/// is shorter, so a connection that reaches this is stuck: reported as a panic).
const VIRTUAL_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// Duplex buffer size: larger than any fuzz input, so the writer never waits on the server.
const DUPLEX: usize = 256 * 1024;

/// A runtime with two hosts — `relay.test` (`mode: tcp`, default host) and `web.test`
/// (`mode: http`, one `/api/` route) — whose backends are a closed loopback port.
pub struct PipelineFixture {
    rt: Arc<Runtime>,
    ca: Ca,
    plain: Arc<ListenerInfo>,
    proxied: Arc<ListenerInfo>,
}

impl PipelineFixture {
    /// Issues the certificates, loads the config and builds the first snapshot.
    ///
    /// # Panics
    /// When the fixed configuration fails to load: a broken fixture, not a finding.
    pub fn new() -> Self {
        let ca = Ca::new("tlsedge fuzz CA").expect("CA");
        let dir = private_dir();
        let web_wildcard = format!("*.{HTTP_HOST}");
        for (name, names) in [
            (TCP_HOST, vec![TCP_HOST]),
            (HTTP_HOST, vec![HTTP_HOST, &web_wildcard]),
        ] {
            let issued = ca.issue(&names, KeyKind::Ecdsa).expect("issue");
            std::fs::write(dir.join(format!("{name}.pem")), &issued.cert_pem).expect("write");
            write_key(&dir.join(format!("{name}.key")), &issued.key_pem);
        }
        let text = format!(
            "listeners: [\"127.0.0.1:0\"]\n\
             timeouts: {{ handshake: 10s, backend_connect: 1s, idle: 60s }}\n\
             default_host: {TCP_HOST}\n\
             hosts:\n\
             \x20 - names: [{TCP_HOST}]\n\
             \x20   certs: [{{ cert: {TCP_HOST}.pem, key: {TCP_HOST}.key }}]\n\
             \x20   backends: [{{ address: \"127.0.0.1:1\" }}]\n\
             \x20   alpn: [x-fuzz, http/1.1]\n\
             \x20 - names: [{HTTP_HOST}, \"*.web.test\"]\n\
             \x20   certs: [{{ cert: {HTTP_HOST}.pem, key: {HTTP_HOST}.key }}]\n\
             \x20   backends: [{{ address: \"127.0.0.1:1\" }}]\n\
             \x20   mode: http\n\
             \x20   http:\n\
             \x20     routes: [{{ path: /api/, backends: [{{ address: \"127.0.0.1:1\" }}] }}]\n\
             \x20     limits: {{ header_timeout: 5s, idle_timeout: 30s, response_timeout: 5s }}\n"
        );
        let path = dir.join("tlsedge.yaml");
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let loaded = tlsedge::config::load::from_str(&text, &path, &provider)
            .and_then(tlsedge::config::Loaded::strict)
            .expect("fixture config loads");
        // The keys are in memory now; the files are not needed any more.
        let _ = std::fs::remove_dir_all(&dir);
        let config = loaded.config;
        let tls = TlsShared::new(&config.start.sessions, None).expect("ticket keys");
        let (rt, skipped) = Runtime::new(
            config,
            tls,
            Arc::new(Metrics::new()),
            &tlsedge::upstream::dns::Answers::none(),
        );
        assert!(skipped.is_empty(), "fixture hosts skipped: {skipped:?}");
        let listener = |proxy_protocol| {
            Arc::new(ListenerInfo {
                addr: addr(LOCAL),
                proxy_protocol,
                kind: ListenerKind::Tls,
            })
        };
        let trusted = ProxyInput {
            trusted: vec!["10.0.0.0/8".parse().expect("net")],
            timeout: Duration::from_secs(3),
        };
        Self {
            rt: Arc::new(rt),
            ca,
            plain: listener(None),
            proxied: listener(Some(trusted)),
        }
    }

    /// The runtime, for targets that drive a later stage directly.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    /// The CA that issued the hosts' certificates (for in-process clients).
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// Runs one connection through `tlsedge::conn::serve` to its end: `bytes` are written, the
    /// write half is shut, and whatever the server sends is read and dropped. Input that starts
    /// like a PROXY header (v1 `PROXY`, or the v2 signature) arrives on a listener that requires
    /// one from the trusted peer; anything else on a plain TLS listener.
    pub fn feed(&self, bytes: &[u8]) {
        let listener = if starts_like_proxy(bytes) {
            &self.proxied
        } else {
            &self.plain
        };
        let info = ConnInfo {
            peer: addr(PEER),
            local: addr(LOCAL),
            listener: Arc::clone(listener),
        };
        let rt = Arc::clone(&self.rt);
        run_paused(async move {
            let (client, server) = tokio::io::duplex(DUPLEX);
            let serve = tlsedge::conn::serve(rt, server, info, Shutdown::default());
            tokio::join!(serve, talk(client, bytes));
        });
    }

    /// The `http`-mode host and its HTTP side, from the current snapshot.
    pub fn http_host(&self) -> (Arc<Host>, Arc<HttpHost>) {
        let snapshot = self.rt.snapshot.load_full();
        let host = snapshot
            .host_for(Some(HTTP_HOST))
            .cloned()
            .expect("http host in the snapshot");
        let Mode::Http(http) = &host.mode else {
            panic!("{HTTP_HOST} is not in http mode");
        };
        let http = Arc::clone(http);
        (host, http)
    }

    /// Serves `bytes` as one decrypted HTTP/1.1 client connection of the `http`-mode host:
    /// the same hyper builder settings and service function as `tlsedge::http::serve`, over a
    /// plaintext duplex (that function takes a `TlsStream`, so it cannot be called without a
    /// handshake). Its connection watcher (idle and header clocks, drain) is not reproduced:
    /// the virtual-time limit ends a stuck connection instead.
    pub fn feed_http1(&self, bytes: &[u8]) {
        let (host, http) = self.http_host();
        let rt = Arc::clone(&self.rt);
        run_paused(async move {
            let ends = Endpoints {
                client: addr(PEER),
                server: addr(LOCAL),
            };
            let ctx = Arc::new(tlsedge::http::ConnCtx {
                snapshot: rt.snapshot.load_full(),
                rt,
                host,
                http: Arc::clone(&http),
                ends,
                handshake: tlsedge::metrics::host::Handshake {
                    suite: rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
                    version: "TLSv1.3",
                    resumed: false,
                    group: Some(rustls::NamedGroup::X25519),
                },
                client_subject: None,
                client: tlsedge::http::headers::Client::new(ends.client.ip(), ends.server.port()),
                trusted: false,
                activity: Arc::new(tlsedge::http::activity::Activity::new()),
                bytes_in: AtomicU64::new(0),
                bytes_out: AtomicU64::new(0),
                upgrades: TaskTracker::new(),
                shutdown: Shutdown::default(),
            });
            let (client, server) = tokio::io::duplex(DUPLEX);
            let watched =
                tlsedge::http::activity::HeadWatch::new(server, Arc::clone(&ctx.activity));
            let io = hyper_util::rt::TokioIo::new(watched);
            let svc = {
                let ctx = Arc::clone(&ctx);
                hyper::service::service_fn(move |req| {
                    tlsedge::http::service::handle(Arc::clone(&ctx), req)
                })
            };
            let limits = &http.config.limits;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(None)
                .max_headers(limits.max_headers)
                .max_header_size(limits.max_header_bytes)
                .max_buf_size(limits.max_header_bytes.max(8192) + 8192);
            let conn = builder.serve_connection(io, svc).with_upgrades();
            let server = async {
                // A peer's protocol error ends the connection; it is not a finding.
                let _ = conn.await;
                ctx.upgrades.close();
                ctx.upgrades.wait().await;
            };
            tokio::join!(server, talk(client, bytes));
        });
    }
}

impl Default for PipelineFixture {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `bytes` begin like a PROXY v1 line or a v2 header.
fn starts_like_proxy(bytes: &[u8]) -> bool {
    const V2: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    bytes.starts_with(b"PROXY") || bytes.starts_with(V2)
}

/// The client side: write everything, shut the write half, read to the end.
async fn talk(mut client: DuplexStream, bytes: &[u8]) {
    // The server may close first (a refusal); a failed write is then expected.
    if client.write_all(bytes).await.is_ok() {
        let _ = client.shutdown().await;
    }
    let mut sink = [0u8; 16 * 1024];
    while let Ok(n) = client.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

/// Runs `work` on a fresh current-thread runtime with paused time; panics if it is still
/// running after [`VIRTUAL_LIMIT`] of virtual time (a connection that never ends).
pub fn run_paused(work: impl Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        if tokio::time::timeout(VIRTUAL_LIMIT, work).await.is_err() {
            panic!("connection still open after {VIRTUAL_LIMIT:?} of virtual time");
        }
    });
}

/// A fresh directory only this process uses.
fn private_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tlsedge-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Writes a private key readable by the owner only (validation warns otherwise).
fn write_key(path: &std::path::Path, pem: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("key file");
    file.write_all(pem.as_bytes()).expect("write key");
}

/// A socket address constant, parsed.
pub fn addr(text: &str) -> SocketAddr {
    text.parse().expect("addr")
}
