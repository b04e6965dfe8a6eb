//! The pipeline over `tokio::io::duplex`, with paused time: the handshake deadline covers the
//! PROXY header and the whole handshake, the drain deadline cuts a connection with a close line
//! and gives its gauge back, a full handshake reaches the mode, and an ACME TLS-ALPN-01
//! validation gets its challenge certificate and nothing else. No wall-clock waits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;

use super::{ConnInfo, ListenerInfo, Shutdown, serve};
use crate::config::ProxyInput;
use crate::metrics::Metrics;
use crate::pki::{Ca, KeyKind};
use crate::runtime::Runtime;
use crate::tls::TlsShared;

struct Fixture {
    rt: Arc<Runtime>,
    ca: Ca,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// A runtime serving `app.test` (backend: a closed loopback port) with `top` prepended.
    fn new(top: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("pipeline test CA").unwrap();
        let issued = ca.issue(&["app.test"], KeyKind::Ecdsa).unwrap();
        std::fs::write(dir.path().join("app.pem"), &issued.cert_pem).unwrap();
        std::fs::write(dir.path().join("app.key"), &issued.key_pem).unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let backend = closed.local_addr().unwrap();
        drop(closed);
        let text = format!(
            "listeners: [\"127.0.0.1:0\"]\n{top}hosts:\n  - names: [app.test]\n    certs: [{{ cert: app.pem, key: app.key }}]\n    backends: [{{ address: \"{backend}\" }}]\n"
        );
        let path = dir.path().join("tlsedge.yaml");
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let loaded = crate::config::load::from_str(&text, &path, &provider)
            .and_then(crate::config::Loaded::strict)
            .unwrap();
        let config = loaded.config;
        let tls = TlsShared::new(&config.start.sessions, None).unwrap();
        let (rt, skipped) = Runtime::new(
            config,
            tls,
            Arc::new(Metrics::new()),
            &crate::upstream::dns::Answers::none(),
        );
        assert!(skipped.is_empty());
        Self {
            rt: Arc::new(rt),
            ca,
            _dir: dir,
        }
    }

    fn metric(&self, series: &str) -> f64 {
        let page = self.rt.render_metrics();
        page.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Serves one connection from `peer` on a listener with `proxy` input, in a task.
    fn serve(
        &self,
        proxy: Option<ProxyInput>,
        shutdown: &Shutdown,
    ) -> (DuplexStream, tokio::task::JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let info = ConnInfo {
            peer: "10.0.0.5:40000".parse().unwrap(),
            local: "10.0.0.1:443".parse().unwrap(),
            listener: Arc::new(ListenerInfo {
                addr: "10.0.0.1:443".parse().unwrap(),
                proxy_protocol: proxy,
                kind: super::ListenerKind::Tls,
            }),
        };
        let task = tokio::spawn(serve(Arc::clone(&self.rt), server, info, shutdown.clone()));
        (client, task)
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(self.ca.cert_der())).unwrap();
        Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

fn trusting_the_peer(timeout: Duration) -> Option<ProxyInput> {
    Some(ProxyInput {
        trusted: vec!["10.0.0.0/8".parse().unwrap()],
        timeout,
    })
}

#[tokio::test(start_paused = true)]
async fn a_silent_or_stalled_client_is_cut_at_the_one_handshake_deadline() {
    let fx = Fixture::new("timeouts:\n  handshake: 10s\n");
    let started = Instant::now();
    let (_silent, task) = fx.serve(None, &Shutdown::default());
    task.await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(10));

    // Half a TLS record header, then nothing: the same deadline, not a per-read timeout.
    let started = Instant::now();
    let (mut stalled, task) = fx.serve(None, &Shutdown::default());
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(9)).await;
    stalled.write_all(&[0x00]).await.unwrap();
    task.await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    let failures = "tlsedge_handshake_failures_total{reason=\"timeout\"}";
    assert_eq!(fx.metric(failures), 2.0);
    assert_eq!(fx.metric("tlsedge_connections_active"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn the_proxy_header_shares_the_handshake_deadline() {
    let fx = Fixture::new("timeouts:\n  handshake: 10s\n");
    // The listener's 3 s header timeout ends a header that never completes.
    let started = Instant::now();
    let (mut client, task) = fx.serve(
        trusting_the_peer(Duration::from_secs(3)),
        &Shutdown::default(),
    );
    client.write_all(b"PROXY TCP4 192.0.2.7").await.unwrap();
    task.await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    let errors = "tlsedge_proxy_protocol_errors_total{reason=\"timeout\"}";
    assert_eq!(fx.metric(errors), 1.0);

    // A header that took 2 s leaves 8 s of the 10 s deadline for the ClientHello.
    let started = Instant::now();
    let (mut client, task) = fx.serve(
        trusting_the_peer(Duration::from_secs(5)),
        &Shutdown::default(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    client
        .write_all(b"PROXY TCP4 192.0.2.7 192.0.2.1 40000 443\r\n")
        .await
        .unwrap();
    task.await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    let failures = "tlsedge_handshake_failures_total{reason=\"timeout\"}";
    assert_eq!(fx.metric(failures), 1.0);
}

#[tokio::test(start_paused = true)]
async fn a_handshake_reaches_the_mode_and_a_missing_backend_closes_cleanly() {
    let fx = Fixture::new("");
    let (client, task) = fx.serve(
        trusting_the_peer(Duration::from_secs(3)),
        &Shutdown::default(),
    );
    let mut client = Box::new(client);
    client
        .write_all(b"PROXY TCP4 192.0.2.7 192.0.2.1 40000 443\r\n")
        .await
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(fx.client_config());
    let name = ServerName::try_from("app.test").unwrap();
    let mut tls = connector.connect(name, client).await.expect("handshake");
    let mut rest = Vec::new();
    // The backend port is closed: the server ends the session with close_notify.
    tls.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    task.await.unwrap();
    let closed = "tlsedge_connections_closed_total{host=\"app.test\",outcome=\"no_backend\"}";
    assert_eq!(fx.metric(closed), 1.0);
    let handshakes = "tlsedge_handshakes_total{host=\"app.test\",version=\"TLSv1.3\",cipher=\"TLS13_AES_128_GCM_SHA256\",resumed=\"false\"}";
    assert_eq!(fx.metric(handshakes), 1.0);
    assert_eq!(fx.metric("tlsedge_connections_active"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn the_drain_deadline_cuts_a_connection_and_gives_its_gauge_back() {
    let fx = Fixture::new("timeouts:\n  handshake: 60s\n");
    let shutdown = Shutdown::default();
    let (_client, task) = fx.serve(None, &shutdown);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fx.metric("tlsedge_connections_active"), 1.0);
    shutdown.drain.cancel();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!task.is_finished(), "draining lets the connection go on");
    shutdown.abort.cancel();
    task.await.unwrap();
    assert_eq!(fx.metric("tlsedge_connections_active"), 0.0);
    let cut = "tlsedge_handshake_failures_total{reason=\"shutdown\"}";
    assert_eq!(fx.metric(cut), 1.0);
}

#[tokio::test(start_paused = true)]
async fn the_client_limit_counts_the_proxy_header_address() {
    let fx = Fixture::new("limits:\n  per_client_ip: 1\n");
    let header = |ip: &str| format!("PROXY TCP4 {ip} 192.0.2.1 40000 443\r\n");
    let proxy = || trusting_the_peer(Duration::from_secs(3));
    let (mut first, held) = fx.serve(proxy(), &Shutdown::default());
    first
        .write_all(header("192.0.2.7").as_bytes())
        .await
        .unwrap();
    let (mut second, refused) = fx.serve(proxy(), &Shutdown::default());
    second
        .write_all(header("192.0.2.7").as_bytes())
        .await
        .unwrap();
    refused.await.unwrap();
    let ip: SocketAddr = "192.0.2.7:0".parse().unwrap();
    assert_eq!(fx.rt.client_limits.open(ip.ip()), 1);
    let limited = "tlsedge_handshake_failures_total{reason=\"client_limit\"}";
    assert_eq!(fx.metric(limited), 1.0);
    drop(first);
    held.await.unwrap();
    assert_eq!(fx.rt.client_limits.open(ip.ip()), 0);
}

/// An edge proxy holds many idle connections, and each is one task whose future is sized for
/// its largest stage: the TLS stages must stay boxed (the ClientHello alone is 1.4 KiB) and the
/// pipeline must not be stored twice (it was, at 5,360 bytes, before this test).
#[tokio::test]
async fn a_connection_task_stays_small() {
    let fx = Fixture::new("");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let info = ConnInfo {
        peer: "10.0.0.5:40000".parse().unwrap(),
        local: "10.0.0.1:443".parse().unwrap(),
        listener: Arc::new(ListenerInfo {
            addr: "10.0.0.1:443".parse().unwrap(),
            proxy_protocol: None,
            kind: super::ListenerKind::Tls,
        }),
    };
    let task = serve(Arc::clone(&fx.rt), tcp, info, Shutdown::default());
    let size = size_of_val(&task);
    eprintln!("serve<TcpStream> future: {size} bytes");
    // 1,424 bytes when written; the bound catches a stage left unboxed or a doubled future.
    assert!(size <= 2048, "the connection task grew to {size} bytes");
}

/// A verifier that accepts any server certificate: what an ACME CA's validator does with the
/// self-signed challenge certificate before it checks the extension itself.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        // By the raw key: webpki refuses to parse a certificate with a critical extension it
        // does not know, which is exactly what the challenge certificate has.
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
        let spki = rustls::pki_types::SubjectPublicKeyInfoDer::from(parsed.public_key().raw);
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS-ALPN-01 validator: offers `acme-tls/1` only.
fn validator(fx: &Fixture) -> tokio_rustls::TlsConnector {
    let provider = Arc::clone(&fx.rt.tls.provider);
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn an_acme_validation_gets_the_challenge_certificate_and_nothing_else() {
    let fx = Fixture::new("");
    let name = || ServerName::try_from("app.test").unwrap();
    // Nothing pending: refused, and counted.
    let (client, task) = fx.serve(None, &Shutdown::default());
    let refused = validator(&fx).connect(name(), client).await;
    assert!(refused.is_err(), "no challenge is pending");
    task.await.unwrap();
    let none = "tlsedge_handshake_failures_total{reason=\"acme_no_challenge\"}";
    assert_eq!(fx.metric(none), 1.0);

    // Pending: the self-signed certificate with the critical acmeIdentifier extension holding
    // the SHA-256 of the key authorisation (RFC 8737), over acme-tls/1.
    let provider = Arc::clone(&fx.rt.tls.provider);
    let answer = fx
        .rt
        .challenges
        .add_tls_alpn(&provider, "app.test", "tok.thumb");
    let _answer = answer.unwrap();
    let (client, task) = fx.serve(None, &Shutdown::default());
    let mut tls = validator(&fx)
        .connect(name(), client)
        .await
        .expect("answered");
    let conn = tls.get_ref().1;
    assert_eq!(conn.alpn_protocol(), Some(&b"acme-tls/1"[..]));
    let leaf = conn.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
        .expect("acmeIdentifier");
    assert!(ext.critical);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"tok.thumb");
    assert_eq!(&ext.value[..2], [0x04, 32], "an OCTET STRING of 32 bytes");
    assert_eq!(&ext.value[2..], digest.as_ref());
    // Then the server closes: nothing but the certificate is ever served on it.
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    task.await.unwrap();
    let answered = "tlsedge_acme_challenges_answered_total{challenge=\"tls-alpn-01\"}";
    assert_eq!(fx.metric(answered), 1.0);

    // An ordinary client of the same name meanwhile gets the host's own certificate.
    let (client, task) = fx.serve(None, &Shutdown::default());
    let connector = tokio_rustls::TlsConnector::from(fx.client_config());
    let tls = connector
        .connect(name(), client)
        .await
        .expect("ordinary handshake");
    drop(tls);
    task.await.unwrap();
}
