//! Backend behaviour: a refusing backend is skipped and shown down, a host with no usable backend
//! closes clients cleanly and counts them, PROXY v2 headers carry the client and the SNI, and
//! re-encryption verifies backends and keeps resuming their sessions across reloads.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use common::{
    Backend, ClientOpts, Lb, PATIENCE, Site, backends, connect, connect_from, ecdsa, hello, host,
    read_reply, refused_addr, wait_for,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[tokio::test]
async fn refusing_backend_is_skipped_and_marked_down() {
    let site = Site::new();
    let pool = backends(2).await;
    let dead = refused_addr().await;
    ecdsa(&site, "svc", &["svc.test"]);
    let body = format!(
        "hosts:\n{}",
        host(
            &["svc.test"],
            &["svc"],
            &[dead, pool[0].addr, pool[1].addr],
            ""
        )
    );
    let lb = Lb::start(&site.config(&body)).await;
    let client = ClientOpts::default().build(&site.ca);
    for _ in 0..30 {
        let reply = hello(lb.addr, "svc.test", &client).await.unwrap();
        assert_ne!(reply.backend, "", "every client reaches a live backend");
    }
    assert_eq!(pool[0].accepted() + pool[1].accepted(), 30);
    assert!(pool[0].accepted() >= 10 && pool[1].accepted() >= 10);
    let m = lb.metrics().await;
    let dead = dead.to_string();
    let labels = [("host", "svc.test"), ("backend", dead.as_str())];
    // Passive health: one failure, then the backend is skipped for its cooldown.
    assert_eq!(
        m.value("tlsedge_backend_connect_errors_total", &labels),
        1.0
    );
    assert_eq!(m.value("tlsedge_backend_up", &labels), 0.0);
    let live = pool[0].addr.to_string();
    assert_eq!(
        m.value("tlsedge_backend_up", &[("backend", live.as_str())]),
        1.0
    );
}

#[tokio::test]
async fn no_backend_closes_the_client_cleanly_and_is_counted() {
    let site = Site::new();
    let live = Backend::start("live").await;
    let dead = [refused_addr().await, refused_addr().await];
    ecdsa(&site, "down", &["down.test"]);
    ecdsa(&site, "up", &["up.test"]);
    let body = format!(
        "hosts:\n{}{}",
        host(&["down.test"], &["down"], &dead, ""),
        host(&["up.test"], &["up"], &[live.addr], "")
    );
    let lb = Lb::start(&site.config(&body)).await;
    let client = ClientOpts::default().build(&site.ca);
    for _ in 0..3 {
        let mut tls = connect(lb.addr, "down.test", &client).await.unwrap();
        // A clean TLS close (close_notify then EOF), not a reset.
        let mut rest = Vec::new();
        let n = tls.read_to_end(&mut rest).await.expect("clean close");
        assert_eq!(n, 0);
    }
    lb.wait_metric(
        "tlsedge_connections_closed_total",
        &[("host", "down.test"), ("outcome", "no_backend")],
        3.0,
    )
    .await;
    assert_eq!(
        hello(lb.addr, "up.test", &client).await.unwrap().backend,
        "live"
    );
}

/// Parses a PROXY v2 header: (source, destination, TLVs by type) for TCP over IPv4.
fn parse_proxy_v2(bytes: &[u8]) -> (SocketAddr, SocketAddr, HashMap<u8, Vec<u8>>) {
    const SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    assert!(bytes.len() >= 16, "short header: {bytes:?}");
    assert_eq!(&bytes[..12], SIGNATURE);
    assert_eq!(bytes[12], 0x21, "version 2, command PROXY");
    assert_eq!(bytes[13], 0x11, "TCP over IPv4");
    let len = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    let body = &bytes[16..16 + len];
    let ip = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let source = SocketAddr::new(ip(&body[0..4]), port(&body[8..10]));
    let dest = SocketAddr::new(ip(&body[4..8]), port(&body[10..12]));
    (source, dest, parse_tlvs(&body[12..]))
}

fn parse_tlvs(mut bytes: &[u8]) -> HashMap<u8, Vec<u8>> {
    let mut tlvs = HashMap::new();
    while bytes.len() >= 3 {
        let (kind, n) = (
            bytes[0],
            usize::from(u16::from_be_bytes([bytes[1], bytes[2]])),
        );
        tlvs.insert(kind, bytes[3..3 + n].to_vec());
        bytes = &bytes[3 + n..];
    }
    tlvs
}

#[tokio::test]
async fn proxy_protocol_v2_header_carries_client_and_sni() {
    let site = Site::new();
    let backend = Backend::start("pp").await;
    ecdsa(&site, "pp", &["pp.test"]);
    let body = format!(
        "hosts:\n{}",
        host(
            &["pp.test"],
            &["pp"],
            &[backend.addr],
            "    proxy_protocol: v2\n    alpn: [h2]\n    client_auth: { ca: ca.pem, mode: optional }\n"
        )
    );
    let lb = Lb::start(&site.config(&body)).await;
    let client = ClientOpts {
        alpn: vec!["h2"],
        identity: Some(common::client_identity(&site.ca)),
        ..ClientOpts::default()
    }
    .build(&site.ca);
    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 7)), 0);
    let mut tls = connect_from(Some(local), lb.addr, "pp.test", &client)
        .await
        .unwrap();
    let client_addr = tls.get_ref().0.local_addr().unwrap();
    let reply = read_reply(&mut tls).await.unwrap();
    assert_eq!(reply.backend, "pp");
    tls.write_all(b"payload").await.unwrap();
    wait_for("backend read", PATIENCE, || async {
        !backend.first_bytes().is_empty()
    })
    .await;
    let first = backend.first_bytes().remove(0);
    let (source, dest, tlvs) = parse_proxy_v2(&first);
    assert_eq!(source, client_addr);
    assert_eq!(dest, lb.addr);
    assert_eq!(tlvs[&0x02], b"pp.test", "authority = SNI");
    assert_eq!(
        tlvs.get(&0x01).map(Vec::as_slice),
        Some(&b"h2"[..]),
        "ALPN in {tlvs:?}"
    );
    // SSL TLV: over TLS with a verified client certificate, then version and client CN.
    let ssl = &tlvs[&0x20];
    assert_eq!(ssl[0], 0x01 | 0x02);
    assert_eq!(&ssl[1..5], &[0, 0, 0, 0]);
    let sub = parse_tlvs(&ssl[5..]);
    assert_eq!(sub[&0x21], b"TLSv1.3");
    assert_eq!(sub[&0x22], b"client.test");
    // The echo backend returns all it read: the header exactly once, then the payload untouched.
    let header_len = 16 + usize::from(u16::from_be_bytes([first[14], first[15]]));
    let mut echoed = vec![0_u8; header_len + 7];
    tls.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed[..header_len], &first[..header_len]);
    assert_eq!(&echoed[header_len..], b"payload");
}

#[tokio::test]
async fn health_checks_take_dead_backends_out_and_bring_them_back() {
    let site = Site::new();
    let pool = backends(2).await;
    ecdsa(&site, "hc", &["hc.test"]);
    let body = format!(
        "hosts:\n{}",
        host(
            &["hc.test"],
            &["hc"],
            &[pool[0].addr, pool[1].addr],
            "    health_check: { interval: 100ms, timeout: 200ms, fall: 2, rise: 2 }\n"
        )
    );
    let lb = Lb::start(&site.config(&body)).await;
    let [first, second]: [Backend; 2] = pool.try_into().ok().unwrap();
    let dead = first.addr;
    let dead_label = dead.to_string();
    let up =
        |m: &common::Metrics| m.value("tlsedge_backend_up", &[("backend", dead_label.as_str())]);
    drop(first);
    // No client traffic at all: the probes alone mark it down.
    wait_for("probes mark the backend down", PATIENCE, || async {
        up(&lb.metrics().await) == 0.0
    })
    .await;
    let client = ClientOpts::default().build(&site.ca);
    for _ in 0..10 {
        assert_eq!(
            hello(lb.addr, "hc.test", &client).await.unwrap().backend,
            "b1"
        );
    }
    let m = lb.metrics().await;
    let labels = [("backend", dead_label.as_str())];
    assert!(m.value("tlsedge_health_check_failures_total", &labels) >= 2.0);
    assert_eq!(
        m.value("tlsedge_backend_connect_errors_total", &labels),
        0.0,
        "no client was sent to the dead backend"
    );
    // It comes back on the same address: probes put it back without a client failing first.
    let revived = Backend::start_at("b0-again", dead).await;
    wait_for("probes mark the backend up", PATIENCE, || async {
        up(&lb.metrics().await) == 1.0
    })
    .await;
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..4 {
        names.insert(hello(lb.addr, "hc.test", &client).await.unwrap().backend);
    }
    assert!(names.contains("b0-again"), "{names:?}");
    let m = lb.metrics().await;
    let changes = |state| {
        let labels = [("backend", dead_label.as_str()), ("state", state)];
        m.value("tlsedge_backend_state_changes_total", &labels)
    };
    assert_eq!(
        (changes("down"), changes("up")),
        (1.0, 1.0),
        "one fall, one rise"
    );
    drop((second, revived));
}

#[tokio::test]
async fn backends_can_be_dns_names() {
    let site = Site::new();
    let backend = Backend::start("named").await;
    ecdsa(&site, "dns", &["dns.test"]);
    let named = format!("localhost:{}", backend.addr.port());
    let body = format!(
        "reload: {{ dns_refresh: 100ms }}\nhosts:\n  - names: [dns.test]\n    certs:\n      - {{ cert: dns.pem, key: dns.key }}\n    backends:\n      - {{ address: \"{named}\" }}\n"
    );
    let lb = Lb::start(&site.config(&body)).await;
    let client = ClientOpts::default().build(&site.ca);
    for _ in 0..3 {
        assert_eq!(
            hello(lb.addr, "dns.test", &client).await.unwrap().backend,
            "named"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let m = lb.metrics().await;
    assert_eq!(
        m.value("tlsedge_backend_up", &[("backend", named.as_str())]),
        1.0
    );
    assert_eq!(m.value("tlsedge_backend_resolve_errors_total", &[]), 0.0);
}

/// A TLS server configuration presenting `issued`.
fn server_config(issued: &tlsedge::pki::Issued) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let chain = vec![CertificateDer::from(issued.cert_der.clone())];
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

/// A TLS backend presenting `issued` for its name.
async fn tls_backend(name: &str, issued: &tlsedge::pki::Issued) -> Backend {
    Backend::start_tls(name, server_config(issued)).await
}

#[tokio::test]
async fn backend_tls_verifies_and_re_encrypts() {
    let site = Site::new();
    // The backends' own CA, unrelated to the one clients trust.
    let internal = Site::new();
    site.write("internal-ca.pem", &internal.ca.cert_pem());
    let good = tls_backend(
        "secure",
        &internal
            .ca
            .issue(&["app.internal"], tlsedge::pki::KeyKind::Ecdsa)
            .unwrap(),
    )
    .await;
    let wrong_name = tls_backend(
        "wrong",
        &internal
            .ca
            .issue(&["other.internal"], tlsedge::pki::KeyKind::Ecdsa)
            .unwrap(),
    )
    .await;
    ecdsa(&site, "re", &["re.test", "bad.test"]);
    let tls = "    backend_tls: { ca: internal-ca.pem, server_name: app.internal }\n";
    let body = format!(
        "hosts:\n{}{}",
        host(&["re.test"], &["re"], &[good.addr], tls),
        host(&["bad.test"], &["re"], &[wrong_name.addr], tls)
    );
    let lb = Lb::start(&site.config(&body)).await;
    let client = ClientOpts::default().build(&site.ca);
    let mut stream = connect(lb.addr, "re.test", &client).await.unwrap();
    assert_eq!(read_reply(&mut stream).await.unwrap().backend, "secure");
    stream.write_all(b"through two TLS sessions").await.unwrap();
    let mut echo = [0_u8; 24];
    stream.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"through two TLS sessions");
    stream.shutdown().await.unwrap();
    drop(stream);

    // A backend whose certificate does not match: the client is closed, nothing leaks.
    let mut stream = connect(lb.addr, "bad.test", &client).await.unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
    assert!(rest.is_empty());
    let backend = wrong_name.addr.to_string();
    let m = lb
        .wait_metric(
            "tlsedge_backend_tls_errors_total",
            &[("backend", backend.as_str())],
            1.0,
        )
        .await;
    assert_eq!(
        m.value(
            "tlsedge_connections_closed_total",
            &[("host", "bad.test"), ("outcome", "backend_tls_error")]
        ),
        1.0
    );
}

/// A TLS backend that answers `{name}\n` like the harness's and records, for every handshake,
/// whether it resumed a session (rustls' default server keeps a session cache).
struct ResumptionBackend {
    addr: SocketAddr,
    resumed: Arc<Mutex<Vec<bool>>>,
    task: JoinHandle<()>,
}

impl ResumptionBackend {
    async fn start(name: &str, issued: &tlsedge::pki::Issued) -> Self {
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(issued));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let resumed = Arc::new(Mutex::new(Vec::new()));
        let line = format!("{name}\n");
        let record = Arc::clone(&resumed);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, record, line) =
                    (acceptor.clone(), Arc::clone(&record), line.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let kind = tls.get_ref().1.handshake_kind();
                    record
                        .lock()
                        .unwrap()
                        .push(kind == Some(rustls::HandshakeKind::Resumed));
                    let _ = tls.write_all(line.as_bytes()).await;
                    let mut rest = Vec::new();
                    let _ = tls.read_to_end(&mut rest).await;
                });
            }
        });
        Self {
            addr,
            resumed,
            task,
        }
    }

    /// Whether each handshake so far resumed, in order.
    fn resumed(&self) -> Vec<bool> {
        self.resumed.lock().unwrap().clone()
    }

    /// Waits for the `n`th handshake and returns whether it resumed.
    async fn handshake(&self, n: usize) -> bool {
        wait_for(&format!("backend handshake {n}"), PATIENCE, || async {
            self.resumed().len() >= n
        })
        .await;
        self.resumed()[n - 1]
    }
}

impl Drop for ResumptionBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Asks for a reload and waits until a new snapshot is published.
async fn reload(lb: &Lb) {
    let generation = lb.generation();
    assert!(lb.trigger.reload(), "server running");
    wait_for("a new snapshot", PATIENCE, || async {
        lb.generation() > generation
    })
    .await;
}

/// `re.test` re-encrypting to a TLS backend whose certificate an internal CA signed (its file:
/// `internal-ca.pem`); reloads only by trigger.
async fn re_encrypting() -> (Site, Site, ResumptionBackend, Lb) {
    let site = Site::new();
    let internal = Site::new();
    site.write("internal-ca.pem", &internal.ca.cert_pem());
    let issued = internal
        .ca
        .issue(&["app.internal"], tlsedge::pki::KeyKind::Ecdsa)
        .unwrap();
    let backend = ResumptionBackend::start("secure", &issued).await;
    ecdsa(&site, "re", &["re.test"]);
    let tls = "    backend_tls: { ca: internal-ca.pem, server_name: app.internal }\n";
    let body = format!(
        "reload: {{ watch: false }}\nhosts:\n{}",
        host(&["re.test"], &["re"], &[backend.addr], tls)
    );
    let lb = Lb::start(&site.config(&body)).await;
    (site, internal, backend, lb)
}

#[tokio::test]
async fn backend_tls_sessions_resume_across_reloads_until_the_ca_changes() {
    let (site, internal, backend, lb) = re_encrypting().await;
    let config = site.path("tlsedge.yaml");
    let client = ClientOpts::default().build(&site.ca);
    assert_eq!(
        hello(lb.addr, "re.test", &client).await.unwrap().backend,
        "secure"
    );
    assert!(
        !backend.handshake(1).await,
        "the first handshake is a full one"
    );

    // A reload that leaves the host's backend TLS settings alone keeps its session cache.
    std::fs::write(
        &config,
        format!("{}# touched\n", std::fs::read_to_string(&config).unwrap()),
    )
    .unwrap();
    reload(&lb).await;
    assert_eq!(
        hello(lb.addr, "re.test", &client).await.unwrap().backend,
        "secure"
    );
    assert!(backend.handshake(2).await, "resumed after the reload");

    // Another CA file (here a bundle that still trusts the backend): no session established
    // under the old trust may resume, so the next handshake verifies the certificate again.
    let other = tlsedge::pki::Ca::new("another CA").unwrap();
    let bundle = format!("{}\n{}", internal.ca.cert_pem(), other.cert_pem());
    common::files::write_rename(&site.path("internal-ca.pem"), &bundle);
    reload(&lb).await;
    assert_eq!(
        hello(lb.addr, "re.test", &client).await.unwrap().backend,
        "secure"
    );
    assert!(
        !backend.handshake(3).await,
        "a full handshake under the new CA"
    );
    assert_eq!(backend.resumed(), [false, true, false]);
}

#[tokio::test]
async fn a_host_whose_backend_ca_breaks_keeps_re_encrypting() {
    let (site, _internal, backend, lb) = re_encrypting().await;
    let client = ClientOpts::default().build(&site.ca);
    assert_eq!(
        hello(lb.addr, "re.test", &client).await.unwrap().backend,
        "secure"
    );

    // The CA file breaks: the host keeps serving from its earlier state, which includes
    // re-encrypting with the CA it had, never relaying in plaintext.
    common::files::write_rename(&site.path("internal-ca.pem"), "not a certificate\n");
    reload(&lb).await;
    assert!(
        lb.runtime.snapshot.load().hosts[0].stale,
        "served from the earlier state"
    );
    assert_eq!(
        hello(lb.addr, "re.test", &client).await.unwrap().backend,
        "secure"
    );
    assert_eq!(
        backend.resumed(),
        [false, true],
        "the same client, sessions and all"
    );
}
