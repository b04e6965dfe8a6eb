//! A real ACME CA on loopback for the ACME tests: Debian's `pebble`, with
//! `pebble-challtestsrv` as its DNS server answering 127.0.0.1 for every name, so the
//! challenges are really validated against tlsedge's listeners.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::PATIENCE;
use tlsedge::pki::{Ca, KeyKind};

/// Where a pebble points its validations.
#[derive(Debug, Clone, Copy)]
pub struct Targets {
    /// tlsedge's TLS listener port (TLS-ALPN-01).
    pub tls: u16,
    /// tlsedge's plain-HTTP listener port (HTTP-01).
    pub http: u16,
}

/// How a pebble is set up.
#[derive(Debug, Clone, Default)]
pub struct PebbleOpts {
    /// Lifetime of issued certificates, in seconds (pebble's default: about five years).
    pub validity_secs: Option<u64>,
    /// Names pebble refuses to issue for.
    pub blocked: Vec<String>,
    /// Require external account binding with this key id and base64url MAC key.
    pub eab: Option<(String, String)>,
}

/// pebble and its DNS server, killed on drop.
pub struct Pebble {
    dir: tempfile::TempDir,
    /// The directory URL.
    pub directory: String,
    /// The management interface (the roots).
    pub management: SocketAddr,
    listen: SocketAddr,
    dns: SocketAddr,
    dns_management: SocketAddr,
    targets: Targets,
    opts: PebbleOpts,
    tls_ca: Ca,
    lines: Arc<Mutex<Vec<String>>>,
    children: Vec<Child>,
}

impl Pebble {
    /// Whether the pebble package is installed (`.ci/run` installs it).
    pub fn available() -> bool {
        Command::new("pebble")
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    /// Starts pebble validating against `targets`, and waits until it serves its directory.
    pub fn start(targets: Targets, opts: PebbleOpts) -> Self {
        let dir = tempfile::tempdir().expect("pebble dir");
        let tls_ca = Ca::new("pebble listener CA").expect("CA");
        let issued = tls_ca
            .issue(&["localhost", "127.0.0.1"], KeyKind::Ecdsa)
            .expect("pebble certificate");
        std::fs::write(dir.path().join("cert.pem"), &issued.cert_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), &issued.key_pem).unwrap();
        std::fs::write(dir.path().join("tls-ca.pem"), tls_ca.cert_pem()).unwrap();
        let listen = free_tcp();
        let mut pebble = Self {
            directory: format!("https://{listen}/dir"),
            management: free_tcp(),
            listen,
            dns: free_udp(),
            dns_management: free_tcp(),
            dir,
            targets,
            opts,
            tls_ca,
            lines: Arc::default(),
            children: Vec::new(),
        };
        pebble.run();
        pebble
    }

    /// The PEM file of the CA of pebble's own HTTPS listener (tlsedge's `acme.ca`).
    pub fn tls_ca_file(&self) -> PathBuf {
        self.dir.path().join("tls-ca.pem")
    }

    /// Stops pebble (it forgets every account, order and its CA).
    pub fn stop(&mut self) {
        for mut child in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh pebble on the same addresses (new root, no accounts).
    pub fn restart(&mut self) {
        self.stop();
        self.lines.lock().unwrap().clear();
        self.run();
    }

    /// How many orders pebble has received since it started.
    pub fn orders(&self) -> usize {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.contains("POST /order-plz"))
            .count()
    }

    fn run(&mut self) {
        let config = serde_json::json!({ "pebble": {
            "listenAddress": self.listen.to_string(),
            "managementListenAddress": self.management.to_string(),
            "certificate": self.dir.path().join("cert.pem"),
            "privateKey": self.dir.path().join("key.pem"),
            "httpPort": self.targets.http,
            "tlsPort": self.targets.tls,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": self.opts.eab.is_some(),
            "externalAccountMACKeys": self.opts.eab.iter().cloned().collect::<std::collections::HashMap<_, _>>(),
            "domainBlocklist": self.opts.blocked,
            "certificateValidityPeriod": self.opts.validity_secs.unwrap_or(0),
        }});
        let config_file = self.dir.path().join("pebble.json");
        std::fs::write(&config_file, config.to_string()).unwrap();
        let mut dns = Command::new("pebble-challtestsrv");
        dns.args(["-dns01", &self.dns.to_string()])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &self.dns_management.to_string()])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]);
        self.spawn(&mut dns, "Starting management server");
        let mut pebble = Command::new("pebble");
        pebble
            .arg("-config")
            .arg(&config_file)
            .args(["-dnsserver", &self.dns.to_string()])
            // Validate at once, accept every good nonce, and validate every order anew.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0");
        self.spawn(&mut pebble, "ACME directory available");
    }

    fn spawn(&mut self, cmd: &mut Command, ready: &str) {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pebble");
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (tx, lines) = (tx.clone(), Arc::clone(&self.lines));
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line.clone());
                    lines.lock().unwrap().push(line);
                }
            });
        }
        self.children.push(child);
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(ready) => return,
                Ok(_) => {}
                Err(_) => panic!("pebble did not start: {:?}", self.lines.lock().unwrap()),
            }
        }
    }

    /// pebble's current root certificate (PEM), from its management interface.
    pub async fn root_pem(&self) -> String {
        self.management_get("/roots/0").await
    }

    /// pebble's current root certificate.
    pub async fn root(&self) -> CertificateDer<'static> {
        let pem = self.root_pem().await;
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("pebble root PEM")
    }

    /// GETs `path` from pebble's management interface, retrying until it answers 200: pebble
    /// logs its addresses just before it listens on them, and a CI machine under load has
    /// been seen to close the first connection after a fresh start with no response.
    async fn management_get(&self, path: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let attempt = tokio::time::timeout(PATIENCE / 4, self.management_try(path)).await;
            let failure = match attempt {
                Ok(Ok(body)) => return body,
                Ok(Err(e)) => e,
                Err(_) => "no complete response in time".to_owned(),
            };
            if tokio::time::Instant::now() > deadline {
                panic!("pebble management GET {path}: {failure}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// One GET on a fresh connection: the body of a 200 response, or what went wrong.
    async fn management_try(&self, path: &str) -> Result<String, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.tls_ca.cert_der()))
            .unwrap();
        let config = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(self.management)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut response = Vec::new();
        // Go closes without close_notify at times; what arrived before that still counts.
        let read = tls.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response);
        let complete = |head: &str, body: &str| {
            let length = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            });
            match length {
                Some(length) => body.len() == length,
                None => read.is_ok(),
            }
        };
        match text.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") && complete(head, body) => {
                Ok(body.to_owned())
            }
            _ => Err(format!("response {text:?} (read: {read:?})")),
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A rustls client trusting exactly `roots`. It never resumes: a resumed session shows the
/// certificate of its first handshake, and these tests look at the one served now.
pub fn client_trusting(roots: &[CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).expect("root");
    }
    let mut config = ClientConfig::builder()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// A loopback TCP port free right now (for a server that must know the other's port first).
pub fn free_tcp() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

fn free_udp() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("addr")
}

/// The ACME storage file of `host`'s ECDSA certificate.
pub fn stored_cert(storage: &Path, host: &str) -> PathBuf {
    storage.join("certs").join(host).join("ecdsa_p256.pem")
}
