//! The shared test harness: a throwaway PKI and config directory ([`Site`]), loopback backends
//! that name themselves ([`Backend`]), the real server on `127.0.0.1:0` ([`Lb`]), a rustls
//! client with the knobs tests need ([`ClientOpts`]), and a `/metrics` scraper.
//!
//! Every test binary uses a different part of this module.
// `pub` here means "for the test files", which the lint cannot see.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use tlsedge::Server;
use tlsedge::pki::{Ca, Issued, KeyKind};
use tlsedge::reload::ReloadTrigger;
use tlsedge::runtime::Runtime;

/// Generous upper bound for anything a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A temporary directory holding a CA, certificates and a `tlsedge.yaml`.
pub struct Site {
    /// The directory (removed on drop).
    pub dir: tempfile::TempDir,
    /// The CA that signs every certificate of this site.
    pub ca: Ca,
}

impl Site {
    /// An empty site with a fresh CA (its certificate written as `ca.pem`).
    pub fn new() -> Self {
        let site = Self {
            dir: tempfile::tempdir().expect("temp dir"),
            ca: Ca::new("tlsedge test CA").expect("CA"),
        };
        site.write("ca.pem", &site.ca.cert_pem());
        site
    }

    /// `rel` inside the site directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `contents` to `rel` in place (truncate + write), creating parent directories.
    pub fn write(&self, rel: &str, contents: &str) {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create dir");
        }
        std::fs::write(&path, contents).expect("write file");
    }

    /// Issues a certificate for `names` and writes `{stem}.pem` and `{stem}.key` (mode 0600).
    pub fn cert(&self, stem: &str, names: &[&str], kind: KeyKind) -> Issued {
        let issued = self.ca.issue(names, kind).expect("issue certificate");
        self.write_pair(stem, &issued);
        issued
    }

    /// Writes an already issued pair as `{stem}.pem` / `{stem}.key`.
    pub fn write_pair(&self, stem: &str, issued: &Issued) {
        self.write(&format!("{stem}.pem"), &issued.cert_pem);
        let key = format!("{stem}.key");
        self.write(&key, &issued.key_pem);
        set_mode(&self.path(&key), 0o600);
    }

    /// Writes `tlsedge.yaml`: loopback listener and admin on port 0, then `body`.
    pub fn config(&self, body: &str) -> PathBuf {
        self.config_listeners("[\"127.0.0.1:0\"]", body)
    }

    /// Like [`config`](Self::config) with the given YAML `listeners` value.
    pub fn config_listeners(&self, listeners: &str, body: &str) -> PathBuf {
        let text = format!("listeners: {listeners}\nadmin:\n  bind: \"127.0.0.1:0\"\n{body}");
        self.write("tlsedge.yaml", &text);
        self.path("tlsedge.yaml")
    }
}

/// Sets a file's permission bits.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// One `hosts:` entry in YAML: `names`, one cert pair per stem, and `backends`; `extra` lines
/// (already indented by four spaces) are appended, e.g. `"    balance: p2c\n"`.
pub fn host(names: &[&str], stems: &[&str], backends: &[SocketAddr], extra: &str) -> String {
    let mut yaml = format!("  - names: [{}]\n    certs:\n", quoted(names));
    for stem in stems {
        yaml.push_str(&format!(
            "      - {{ cert: {stem}.pem, key: {stem}.key }}\n"
        ));
    }
    yaml.push_str("    backends:\n");
    for addr in backends {
        yaml.push_str(&format!("      - {{ address: \"{addr}\" }}\n"));
    }
    yaml.push_str(extra);
    yaml
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A running tlsedge server.
pub struct Lb {
    /// The (first) TLS listener.
    pub addr: SocketAddr,
    /// Every TLS listener, in configuration order.
    pub addrs: Vec<SocketAddr>,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The plain-HTTP redirect listeners.
    pub http: Vec<SocketAddr>,
    /// Shared state, for reading the current snapshot.
    pub runtime: Arc<Runtime>,
    /// Reloads the configuration now, like SIGHUP.
    pub trigger: ReloadTrigger,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Lb {
    /// Binds and starts a server from `config`; panics with the error if it cannot start.
    pub async fn start(config: &Path) -> Self {
        let server = match Server::bind(config).await {
            Ok(server) => server,
            Err(e) => panic!("server did not start: {e}"),
        };
        let addrs = server.tls_addrs();
        let addr = addrs[0];
        let admin = server.admin_addr().expect("admin listener");
        let http = server.http_addrs();
        let runtime = Arc::clone(server.runtime());
        let trigger = server.reload_trigger();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            addrs,
            admin,
            http,
            runtime,
            trigger,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Starts graceful shutdown and waits until the server has drained.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("server stops in time")
                .expect("server task");
        }
    }

    /// Scrapes `/metrics` over HTTP.
    pub async fn metrics(&self) -> Metrics {
        let (status, body) = http_get(self.admin, "/metrics").await;
        assert_eq!(status, 200, "GET /metrics");
        Metrics(body)
    }

    /// Waits until the sum of `name{labels}` equals `want` (counters updated at connection
    /// close lag the client by a moment); returns the final scrape.
    pub async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], want: f64) -> Metrics {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let m = self.metrics().await;
            let got = m.value(name, labels);
            if got == want {
                return m;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}{labels:?} is {got}, want {want}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The current snapshot generation.
    pub fn generation(&self) -> u64 {
        self.runtime.snapshot.load().generation
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A plain HTTP/1.1 GET on loopback; returns the status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect admin");
    let request = format!("GET {path} HTTP/1.1\r\nHost: tlsedge\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw))
        .await
        .expect("admin answers in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A scraped Prometheus text page.
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

impl Metrics {
    /// The sum of every sample of `name` whose labels include all of `labels` (0 if none).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels).iter().sum()
    }

    /// Every sample of `name` whose labels include all of `labels`.
    pub fn samples(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, rest) = match series.split_once('{') {
                    Some((m, rest)) => (m, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                if metric != name {
                    return None;
                }
                let have: Vec<&str> = rest.split(',').collect();
                wanted
                    .iter()
                    .all(|w| have.contains(&w.as_str()))
                    .then(|| value.parse().ok())?
            })
            .collect()
    }

    /// Whether any line mentions `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.0.contains(needle)
    }
}

/// A loopback TCP backend: on every connection it writes `{name}\n`, then echoes what it
/// reads. It counts connections and keeps the first bytes each connection sent.
pub struct Backend {
    /// Its address.
    pub addr: SocketAddr,
    /// Its name, the first line every client receives.
    pub name: String,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    first_bytes: Arc<Mutex<Vec<Vec<u8>>>>,
    task: JoinHandle<()>,
}

impl Backend {
    /// Starts a backend called `name` on an ephemeral loopback port.
    pub async fn start(name: &str) -> Self {
        Self::start_at(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a backend called `name` on `addr` (e.g. the address of one that was dropped).
    pub async fn start_at(name: &str, addr: SocketAddr) -> Self {
        Self::serve(name, addr, None).await
    }

    /// Starts a backend called `name` that speaks TLS with `config` (for `backend_tls`).
    pub async fn start_tls(name: &str, config: Arc<rustls::ServerConfig>) -> Self {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        Self::serve(name, SocketAddr::from(([127, 0, 0, 1], 0)), Some(acceptor)).await
    }

    async fn serve(name: &str, addr: SocketAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let first_bytes = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (name, accepted, open, first) = (
                name.to_owned(),
                Arc::clone(&accepted),
                Arc::clone(&open),
                Arc::clone(&first_bytes),
            );
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    open.fetch_add(1, Ordering::SeqCst);
                    let (name, open, first) = (name.clone(), Arc::clone(&open), Arc::clone(&first));
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let _ = match tls {
                            None => echo(stream, &name, &first).await,
                            Some(tls) => match tls.accept(stream).await {
                                Ok(stream) => echo(stream, &name, &first).await,
                                Err(e) => Err(e),
                            },
                        };
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            }
        });
        Self {
            addr,
            name: name.to_owned(),
            accepted,
            open,
            first_bytes,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// The first read of every connection so far, in order.
    pub fn first_bytes(&self) -> Vec<Vec<u8>> {
        self.first_bytes.lock().expect("lock").clone()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    name: &str,
    first: &Mutex<Vec<Vec<u8>>>,
) -> std::io::Result<()> {
    stream.write_all(format!("{name}\n").as_bytes()).await?;
    let mut buf = vec![0_u8; 64 * 1024];
    let mut seen_first = false;
    loop {
        let n = stream.read(&mut buf).await?;
        if !seen_first {
            first.lock().expect("lock").push(buf[..n].to_vec());
            seen_first = true;
        }
        if n == 0 {
            // Half-close from the proxy: answer with a last line, then close our side.
            stream.write_all(b"bye\n").await?;
            return stream.shutdown().await;
        }
        stream.write_all(&buf[..n]).await?;
    }
}

/// A loopback port that refuses connections (bound, then closed).
pub async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// How a test client behaves.
#[derive(Clone, Default)]
pub struct ClientOpts {
    /// ALPN protocols to offer.
    pub alpn: Vec<&'static str>,
    /// Offer only TLS 1.2.
    pub tls12_only: bool,
    /// Offer only TLS 1.3.
    pub tls13_only: bool,
    /// Offer only RSA signature schemes (so an ECDSA certificate is unacceptable).
    pub rsa_only: bool,
    /// Present this client certificate.
    pub identity: Option<Issued>,
    /// Keep sessions (tickets / session IDs) in memory and resume with them.
    pub resume: bool,
    /// Do not send SNI.
    pub no_sni: bool,
    /// Record every stapled OCSP response the server sends here.
    pub ocsp_log: Option<Arc<Mutex<Vec<Vec<u8>>>>>,
    /// Offer only these cipher suites, in this order (default: the provider's).
    pub suites: Option<Vec<rustls::SupportedCipherSuite>>,
    /// Offer only these key exchange groups, in this order (default: the provider's).
    pub groups: Option<Vec<&'static dyn rustls::crypto::SupportedKxGroup>>,
}

impl ClientOpts {
    /// A rustls client config trusting `ca`.
    pub fn build(&self, ca: &Ca) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca.cert_der()))
            .expect("CA root");
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12_only {
            &[&rustls::version::TLS12]
        } else if self.tls13_only {
            &[&rustls::version::TLS13]
        } else {
            rustls::ALL_VERSIONS
        };
        let verifier = WebPkiServerVerifier::builder(Arc::new(roots))
            .build()
            .expect("verifier");
        let verifier = Arc::new(TestVerifier {
            inner: verifier,
            rsa_only: self.rsa_only,
            ocsp_log: self.ocsp_log.clone(),
        });
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        if let Some(suites) = &self.suites {
            provider.cipher_suites.clone_from(suites);
        }
        if let Some(groups) = &self.groups {
            provider.kx_groups.clone_from(groups);
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .expect("client versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.identity {
            Some(id) => {
                let chain = vec![CertificateDer::from(id.cert_der.clone())];
                let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).expect("key");
                builder.with_client_auth_cert(chain, key).expect("identity")
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config.resumption = if self.resume {
            Resumption::in_memory_sessions(64)
        } else {
            Resumption::disabled()
        };
        config.enable_sni = !self.no_sni;
        Arc::new(config)
    }
}

/// The WebPKI verifier, optionally advertising only RSA signature schemes and recording the
/// stapled OCSP responses.
#[derive(Debug)]
struct TestVerifier {
    inner: Arc<WebPkiServerVerifier>,
    rsa_only: bool,
    ocsp_log: Option<Arc<Mutex<Vec<Vec<u8>>>>>,
}

impl ServerCertVerifier for TestVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(log) = &self.ocsp_log {
            log.lock().expect("lock").push(ocsp.to_vec());
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        if !self.rsa_only {
            return self.inner.supported_verify_schemes();
        }
        vec![
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PSS_SHA384,
            SignatureScheme::RSA_PKCS1_SHA256,
            SignatureScheme::RSA_PKCS1_SHA384,
        ]
    }
}

/// Connects to `addr` and completes a TLS handshake for `name`.
pub async fn connect(
    addr: SocketAddr,
    name: &str,
    config: &Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    connect_from(None, addr, name, config).await
}

/// Like [`connect`], from a chosen local address (any 127.0.0.0/8 address works on Linux).
pub async fn connect_from(
    local: Option<SocketAddr>,
    addr: SocketAddr,
    name: &str,
    config: &Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    connect_with_header(local, addr, b"", name, config).await
}

/// Like [`connect_from`], writing `header` (e.g. a PROXY protocol header) before the
/// ClientHello.
pub async fn connect_with_header(
    local: Option<SocketAddr>,
    addr: SocketAddr,
    header: &[u8],
    name: &str,
    config: &Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut tcp = match local {
        Some(local) => {
            let socket = TcpSocket::new_v4()?;
            socket.bind(local)?;
            socket.connect(addr).await?
        }
        None => TcpStream::connect(addr).await?,
    };
    if !header.is_empty() {
        tcp.write_all(header).await?;
    }
    let name = ServerName::try_from(name.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let connector = TlsConnector::from(Arc::clone(config));
    tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)?
}

/// What one proxied exchange showed.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The backend that answered (its first line).
    pub backend: String,
    /// The serial of the certificate the server presented (hex).
    pub serial: String,
    /// Whether the session was resumed.
    pub resumed: bool,
    /// The negotiated ALPN protocol.
    pub alpn: Option<String>,
    /// The negotiated version.
    pub version: Option<rustls::ProtocolVersion>,
    /// The negotiated cipher suite.
    pub suite: Option<rustls::CipherSuite>,
    /// The negotiated key exchange group.
    pub group: Option<rustls::NamedGroup>,
}

/// Connects, reads the backend's name line, and closes.
pub async fn hello(
    addr: SocketAddr,
    name: &str,
    config: &Arc<ClientConfig>,
) -> std::io::Result<Reply> {
    let mut tls = connect(addr, name, config).await?;
    let reply = read_reply(&mut tls).await?;
    let _ = tls.shutdown().await;
    Ok(reply)
}

/// Reads the backend's name line from an established connection and describes the session.
pub async fn read_reply(tls: &mut TlsStream<TcpStream>) -> std::io::Result<Reply> {
    // Byte by byte: whatever follows the line (echoed data) stays in the stream for the caller.
    let mut line = Vec::new();
    let read_line = async {
        let mut byte = [0_u8; 1];
        while tls.read(&mut byte).await? == 1 {
            if byte[0] == b'\n' {
                return Ok(());
            }
            line.push(byte[0]);
        }
        Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof))
    };
    tokio::time::timeout(PATIENCE, read_line)
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)??;
    let line = String::from_utf8_lossy(&line);
    let conn = tls.get_ref().1;
    Ok(Reply {
        backend: line.trim_end().to_owned(),
        serial: peer_serial(conn),
        resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        version: conn.protocol_version(),
        suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
        group: conn.negotiated_key_exchange_group().map(|g| g.name()),
    })
}

/// The serial (lowercase hex) of the leaf certificate the server presented.
pub fn peer_serial(conn: &rustls::ClientConnection) -> String {
    let Some(leaf) = conn.peer_certificates().and_then(|c| c.first()) else {
        return String::new();
    };
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).expect("peer certificate");
    cert.tbs_certificate
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The TLS alert a failed handshake received, if that is how it failed.
pub fn alert_of(error: &std::io::Error) -> Option<rustls::AlertDescription> {
    match error.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(*alert),
        _ => None,
    }
}

/// Polls `check` every 20 ms until it holds; panics naming `what` after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `program` can be run (outside clients are optional outside CI).
pub fn have(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// Starts `n` backends named `b0`, `b1`, ...
pub async fn backends(n: usize) -> Vec<Backend> {
    let mut all = Vec::with_capacity(n);
    for i in 0..n {
        all.push(Backend::start(&format!("b{i}")).await);
    }
    all
}

/// The addresses of `backends`.
pub fn addrs(backends: &[Backend]) -> Vec<SocketAddr> {
    backends.iter().map(|b| b.addr).collect()
}

/// Issues an ECDSA certificate for `names` at `stem` in `site` (the common case).
pub fn ecdsa(site: &Site, stem: &str, names: &[&str]) -> Issued {
    site.cert(stem, names, KeyKind::Ecdsa)
}
pub mod acme;
pub mod files;
pub mod process;
pub mod web;

/// A client certificate for `client.test` issued by `ca`, for mutual TLS.
pub fn client_identity(ca: &Ca) -> Issued {
    ca.issue_with(&tlsedge::pki::IssueOptions {
        names: &["client.test"],
        key: KeyKind::Ecdsa,
        validity: None,
        client: true,
    })
    .expect("client certificate")
}
