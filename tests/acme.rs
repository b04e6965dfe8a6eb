//! Automatic certificates against a real ACME CA on loopback (pebble): challenges are really
//! validated against tlsedge's listeners (TLS-ALPN-01 on the TLS listener, HTTP-01 on the
//! plain-HTTP one), the issued certificates chain to pebble's root, and renewal, CA outages,
//! restarts and instances sharing storage behave as an operator needs.
//!
//! pebble is a Debian package that `.ci/run` installs; without it these tests say so and pass.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::acme::{Pebble, PebbleOpts, Targets, client_trusting, stored_cert};
use common::{Backend, Lb, Site, alert_of, connect, hello, wait_for};
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpSocket;
use tokio_util::sync::CancellationToken;

/// Issuance takes pebble well under a second; retries after a failure wait 1–2 s here.
const ISSUANCE: Duration = Duration::from_secs(20);

macro_rules! need_pebble {
    () => {
        logs();
        if !Pebble::available() {
            // CI installs it (.ci/run): there a missing pebble is a failure, not a skip.
            assert!(std::env::var_os("CI").is_none(), "pebble is not installed");
            eprintln!("pebble is not installed (apt-get install pebble): skipping");
            return;
        }
    };
}

/// Server logs in the test output when `TEST_LOG` is set (e.g. `TEST_LOG=tlsedge=debug`).
fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TEST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// tlsedge's side of one test: a site directory, its listener ports and its config text.
struct Edge {
    site: Site,
    targets: Targets,
    /// Keep the ports reserved from the moment pebble is told them: bound with
    /// `SO_REUSEPORT` (as tlsedge binds) but never listening, so no other socket of a test
    /// running beside this one can take them, and tlsedge can still bind them.
    _reserved: Arc<[TcpSocket; 2]>,
}

impl Edge {
    fn new() -> Self {
        let (tls, http) = (reserve(), reserve());
        let targets = Targets {
            tls: tls.local_addr().unwrap().port(),
            http: http.local_addr().unwrap().port(),
        };
        Self {
            site: Site::new(),
            targets,
            _reserved: Arc::new([tls, http]),
        }
    }

    /// Forwards each connection to this edge's ports to the next of `edges`, in turn: a load
    /// balancer in front of a fleet, so the CA's validations reach either instance.
    fn balance_to(&self, edges: &[&Self]) -> Vec<tokio::task::JoinHandle<()>> {
        let pick = |f: fn(&Targets) -> u16| {
            edges
                .iter()
                .map(|e| SocketAddr::from(([127, 0, 0, 1], f(&e.targets))))
                .collect::<Vec<_>>()
        };
        vec![
            tokio::spawn(round_robin(self.targets.tls, pick(|t| t.tls))),
            tokio::spawn(round_robin(self.targets.http, pick(|t| t.http))),
        ]
    }

    /// Writes a config with `acme_extra` lines in the `acme:` section and one tcp host per name
    /// (all relaying to `backend`).
    fn config(
        &self,
        pebble: &Pebble,
        acme_extra: &str,
        names: &[&str],
        backend: &Backend,
    ) -> PathBuf {
        self.config_at(pebble, acme_extra, names, backend, &self.site.path("acme"))
    }

    fn config_at(
        &self,
        pebble: &Pebble,
        acme_extra: &str,
        names: &[&str],
        backend: &Backend,
        storage: &Path,
    ) -> PathBuf {
        let mut body = format!(
            "http_listeners: [\"127.0.0.1:{http}\"]\nacme:\n  directory: {dir}\n  ca: {ca}\n  storage: {storage}\n  contact: [\"mailto:ops@example.com\"]\n  retry: {{ first: 1s, max: 2s }}\n{acme_extra}hosts:\n",
            http = self.targets.http,
            dir = pebble.directory,
            ca = pebble.tls_ca_file().display(),
            storage = storage.display(),
        );
        for name in names {
            body.push_str(&format!(
                "  - names: [\"{name}\"]\n    certs: acme\n    backends: [{{ address: \"{}\" }}]\n",
                backend.addr
            ));
        }
        let listeners = format!("[\"127.0.0.1:{}\"]", self.targets.tls);
        self.site.config_listeners(&listeners, &body)
    }
}

/// Listens on the reserved loopback `port` and relays each connection to the next of `to`.
async fn round_robin(port: u16, to: Vec<SocketAddr>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.set_reuseport(true).unwrap();
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .unwrap();
    let listener = socket.listen(64).unwrap();
    for next in to.iter().cycle() {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        let next = *next;
        tokio::spawn(async move {
            if let Ok(mut server) = tokio::net::TcpStream::connect(next).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
    }
}

/// A loopback port held by a bound, non-listening `SO_REUSEPORT` socket.
fn reserve() -> TcpSocket {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.set_reuseport(true).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket
}

/// Waits until a handshake for `name`, verified against `roots`, succeeds; returns the serial.
async fn served(lb: &Lb, name: &str, roots: &Arc<ClientConfig>) -> String {
    let deadline = tokio::time::Instant::now() + ISSUANCE;
    loop {
        match hello(lb.addr, name, roots).await {
            Ok(reply) => return reply.serial,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "no certificate for {name} in time: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `openssl s_client` to `addr` for `name`, verifying against `ca`; its output.
fn s_client(addr: SocketAddr, name: &str, ca: &Path, extra: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            name,
        ])
        .args(["-verify_return_error", "-CAfile"])
        .arg(ca)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tlsedge_acme_orders_total{host, result}` in a scrape.
fn orders(m: &common::Metrics, host: &str, result: &str) -> f64 {
    m.value(
        "tlsedge_acme_orders_total",
        &[("host", host), ("result", result)],
    )
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_issues_for_two_hosts_refusing_them_until_then() {
    need_pebble!();
    let edge = Edge::new();
    let backend = Backend::start("app").await;
    // The CA is not up yet when tlsedge starts: both hosts are pending, and the first order
    // fails as unreachable.
    let mut pebble = Pebble::start(edge.targets, PebbleOpts::default());
    pebble.stop();
    let config = edge.config(&pebble, "", &["a.test", "b.test"], &backend);
    let lb = Lb::start(&config).await;
    let any = client_trusting(&[CertificateDer::from(edge.site.ca.cert_der())]);
    let refused = connect(lb.addr, "a.test", &any)
        .await
        .expect_err("no certificate yet");
    assert_eq!(
        alert_of(&refused),
        Some(rustls::AlertDescription::HandshakeFailure)
    );
    lb.wait_metric(
        "tlsedge_handshake_failures_total",
        &[("reason", "cert_pending")],
        1.0,
    )
    .await;
    wait_for("an unreachable CA counted", ISSUANCE, || async {
        let m = lb.metrics().await;
        orders(&m, "a.test", "unreachable") >= 1.0
            && m.value(
                "tlsedge_acme_last_error_timestamp_seconds",
                &[("host", "a.test")],
            ) > 0.0
    })
    .await;

    pebble.restart();
    let roots = client_trusting(&[pebble.root().await]);
    let a = served(&lb, "a.test", &roots).await;
    let b = served(&lb, "b.test", &roots).await;
    assert_ne!(a, b, "one certificate per host");
    let reply = hello(lb.addr, "b.test", &roots).await.unwrap();
    assert_eq!(reply.backend, "app", "the host relays as configured");

    let m = lb.metrics().await;
    for host in ["a.test", "b.test"] {
        assert_eq!(orders(&m, host, "issued"), 1.0);
        let next = m.value(
            "tlsedge_acme_next_renewal_timestamp_seconds",
            &[("host", host)],
        );
        let now = tlsedge::acme::storage::unix(std::time::SystemTime::now()) as f64;
        assert!(next > now + 86_400.0, "{host} renews in years, at {next}");
        let expiry = m.value(
            "tlsedge_certificate_expiry_timestamp_seconds",
            &[("host", host)],
        );
        assert!(
            expiry > now,
            "the expiry gauge covers ACME certificates too"
        );
    }
    assert!(
        m.value(
            "tlsedge_acme_challenges_answered_total",
            &[("challenge", "tls-alpn-01")]
        ) >= 2.0
    );
    let storage = edge.site.path("acme");
    assert_eq!(mode(&stored_cert(&storage, "a.test")), 0o600);
    let account = std::fs::read_dir(storage.join("accounts"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(mode(&account.path()), 0o600);

    // An outside client verifies the chain against pebble's root too.
    if common::have("openssl") {
        let root_pem = edge.site.path("pebble-root.pem");
        std::fs::write(&root_pem, pebble.root_pem().await).unwrap();
        let out = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &lb.addr.to_string(),
                "-servername",
                "a.test",
            ])
            .args(["-verify_return_error", "-CAfile"])
            .arg(&root_pem)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    }
    lb.stop().await;
}

/// The serial of the certificate `lb` serves for host `label` (from its snapshot, since two
/// instances on one port share the connections).
fn snapshot_serial(lb: &Lb, label: &str) -> Option<String> {
    let snapshot = lb.runtime.snapshot.load();
    let host = snapshot.hosts.iter().find(|h| &*h.label == label)?;
    host.certs.first().map(|c| c.serial.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_01_is_answered_on_the_plain_http_listener() {
    need_pebble!();
    let edge = Edge::new();
    let backend = Backend::start("web").await;
    let pebble = Pebble::start(edge.targets, PebbleOpts::default());
    let extra = "  challenge: http-01\n  key_types: [ecdsa_p256, rsa2048]\n";
    let config = edge.config(&pebble, extra, &["web.test"], &backend);
    let lb = Lb::start(&config).await;
    let roots = client_trusting(&[pebble.root().await]);
    served(&lb, "web.test", &roots).await;
    // Dual certificates: one order per key type, both served.
    wait_for("the RSA certificate too", ISSUANCE, || async {
        let snapshot = lb.runtime.snapshot.load();
        snapshot.hosts.iter().any(|h| h.certs.len() == 2)
    })
    .await;
    if common::have("openssl") {
        let root_pem = edge.site.path("pebble-root.pem");
        std::fs::write(&root_pem, pebble.root_pem().await).unwrap();
        for (sigalgs, key) in [("RSA-PSS+SHA256", "2048 bit"), ("ECDSA+SHA256", "256 bit")] {
            let text = s_client(lb.addr, "web.test", &root_pem, &["-sigalgs", sigalgs]);
            assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
            assert!(
                text.contains(&format!("Server public key is {key}")),
                "{sigalgs}: {text}"
            );
        }
    }
    let m = lb.metrics().await;
    let answered = |challenge| {
        m.value(
            "tlsedge_acme_challenges_answered_total",
            &[("challenge", challenge)],
        )
    };
    assert!(answered("http-01") >= 1.0);
    assert_eq!(answered("tls-alpn-01"), 0.0);
    // Nothing is answered for a token that is not pending.
    let (status, _) = common::http_get(lb.http[0], "/.well-known/acme-challenge/nope").await;
    assert_eq!(status, 404);
    lb.stop().await;
}

/// What a load of handshakes saw.
#[derive(Debug, Default)]
struct Seen {
    serials: BTreeSet<String>,
    handshakes: usize,
    failures: usize,
}

/// Three clients making handshakes for `name` until `stop`, each verified against `roots`,
/// recording into `seen`. Bounded: at most 20,000 handshakes per client.
async fn load(
    addr: SocketAddr,
    name: &'static str,
    roots: Arc<ClientConfig>,
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
) {
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (roots, seen, stop) = (Arc::clone(&roots), Arc::clone(&seen), stop.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..20_000 {
                let reply = tokio::select! {
                    () = stop.cancelled() => break,
                    reply = hello(addr, name, &roots) => reply,
                };
                let mut seen = seen.lock().unwrap();
                seen.handshakes += 1;
                match reply {
                    Ok(reply) => drop(seen.serials.insert(reply.serial)),
                    Err(e) => {
                        seen.failures += 1;
                        eprintln!("handshake failed: {e}");
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_switches_the_serial_with_no_failed_handshake() {
    need_pebble!();
    let edge = Edge::new();
    let backend = Backend::start("app").await;
    // 30-second certificates renewed with 25 s left, which tlsedge moves to a third of the
    // lifetime: a renewal every ~10 s.
    let opts = PebbleOpts {
        validity_secs: Some(30),
        ..PebbleOpts::default()
    };
    let pebble = Pebble::start(edge.targets, opts);
    let config = edge.config(&pebble, "  renew_before: 25s\n", &["r.test"], &backend);
    let lb = Lb::start(&config).await;
    let roots = client_trusting(&[pebble.root().await]);
    let first = served(&lb, "r.test", &roots).await;
    let (seen, stop) = (
        Arc::new(Mutex::new(Seen::default())),
        CancellationToken::new(),
    );
    let running = tokio::spawn(load(
        lb.addr,
        "r.test",
        roots,
        Arc::clone(&seen),
        stop.clone(),
    ));
    wait_for(
        "the load to see the renewed certificate",
        ISSUANCE,
        || async {
            let seen = seen.lock().unwrap();
            seen.serials.len() >= 2 || seen.failures > 0
        },
    )
    .await;
    stop.cancel();
    running.await.unwrap();
    let Seen {
        serials,
        handshakes,
        failures,
    } = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!("{handshakes} handshakes across the renewal, serials {serials:?}");
    assert_eq!(failures, 0, "no handshake failed across the renewal");
    assert!(serials.contains(&first), "{first} first: {serials:?}");
    let m = lb.metrics().await;
    assert!(orders(&m, "r.test", "issued") >= 2.0);
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_outage_keeps_the_certificate_serving_and_recovers() {
    need_pebble!();
    let edge = Edge::new();
    let backend = Backend::start("app").await;
    let opts = PebbleOpts {
        validity_secs: Some(30),
        ..PebbleOpts::default()
    };
    let mut pebble = Pebble::start(edge.targets, opts);
    let config = edge.config(&pebble, "  renew_before: 25s\n", &["o.test"], &backend);
    let lb = Lb::start(&config).await;
    let old_root = pebble.root().await;
    let old = client_trusting(std::slice::from_ref(&old_root));
    let first = served(&lb, "o.test", &old).await;

    // The CA goes away before the renewal is due (~5 s after issuance).
    pebble.stop();
    wait_for("failed renewals counted", ISSUANCE, || async {
        let m = lb.metrics().await;
        orders(&m, "o.test", "unreachable") >= 2.0
            && m.value(
                "tlsedge_acme_last_error_timestamp_seconds",
                &[("host", "o.test")],
            ) > 0.0
    })
    .await;
    let still = hello(lb.addr, "o.test", &old).await;
    assert_eq!(
        still.expect("the valid certificate keeps serving").serial,
        first
    );

    // A fresh CA (new root, no accounts): tlsedge registers again and renews.
    pebble.restart();
    let both = client_trusting(&[old_root, pebble.root().await]);
    wait_for("a certificate from the new CA", ISSUANCE, || async {
        hello(lb.addr, "o.test", &both)
            .await
            .is_ok_and(|r| r.serial != first)
    })
    .await;
    let m = lb.metrics().await;
    assert!(orders(&m, "o.test", "issued") >= 2.0);
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_serves_from_storage_without_ordering() {
    need_pebble!();
    let edge = Edge::new();
    let backend = Backend::start("app").await;
    let pebble = Pebble::start(edge.targets, PebbleOpts::default());
    let config = edge.config(&pebble, "", &["s.test"], &backend);
    let roots = client_trusting(&[pebble.root().await]);
    let lb = Lb::start(&config).await;
    let issued = served(&lb, "s.test", &roots).await;
    lb.stop().await;
    let orders = pebble.orders();
    assert_eq!(orders, 1);

    let lb = Lb::start(&config).await;
    // Served from the first handshake: no pending phase.
    let reply = hello(lb.addr, "s.test", &roots)
        .await
        .expect("served at once");
    assert_eq!(reply.serial, issued);
    // The ACME task has looked at storage once it publishes the renewal time.
    wait_for("the renewal scheduled", common::PATIENCE, || async {
        let m = lb.metrics().await;
        m.value(
            "tlsedge_acme_next_renewal_timestamp_seconds",
            &[("host", "s.test")],
        ) > 0.0
    })
    .await;
    assert_eq!(pebble.orders(), orders, "no new order");
    let m = lb.metrics().await;
    assert_eq!(
        m.value("tlsedge_acme_orders_total", &[("host", "s.test")]),
        0.0
    );
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_storage_order_once() {
    need_pebble!();
    // Two instances behind one address (a load balancer alternating between them): the CA's
    // validation reaches either of them, whichever holds the order.
    let (front, one, two) = (Edge::new(), Edge::new(), Edge::new());
    let balancer = front.balance_to(&[&one, &two]);
    let backend = Backend::start("app").await;
    let pebble = Pebble::start(front.targets, PebbleOpts::default());
    let shared = tempfile::tempdir().unwrap();
    let names = ["f1.test", "f2.test"];
    let config_one = one.config_at(&pebble, "", &names, &backend, shared.path());
    let config_two = two.config_at(&pebble, "", &names, &backend, shared.path());
    let (a, b) = tokio::join!(Lb::start(&config_one), Lb::start(&config_two));
    for name in names {
        wait_for("both instances serving", ISSUANCE, || async {
            snapshot_serial(&a, name).is_some()
                && snapshot_serial(&a, name) == snapshot_serial(&b, name)
        })
        .await;
    }
    assert_eq!(
        pebble.orders(),
        names.len(),
        "one order per host for the whole fleet"
    );
    a.stop().await;
    b.stop().await;
    balancer.iter().for_each(tokio::task::JoinHandle::abort);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_names_and_corrupt_storage_stop_nothing_else() {
    need_pebble!();
    let edge = Edge::new();
    let backend = Backend::start("app").await;
    let opts = PebbleOpts {
        blocked: vec!["blocked.test".to_owned()],
        ..PebbleOpts::default()
    };
    let pebble = Pebble::start(edge.targets, opts);
    let storage = edge.site.path("acme");
    let corrupt = stored_cert(&storage, "ok.test");
    std::fs::create_dir_all(corrupt.parent().unwrap()).unwrap();
    std::fs::write(&corrupt, "not a certificate").unwrap();
    let config = edge.config(&pebble, "", &["ok.test", "blocked.test"], &backend);
    // The corrupt file is a warning: the server starts, and the host is ordered anew.
    let lb = Lb::start(&config).await;
    let roots = client_trusting(&[pebble.root().await]);
    served(&lb, "ok.test", &roots).await;
    wait_for("the CA's refusal counted", ISSUANCE, || async {
        let m = lb.metrics().await;
        orders(&m, "blocked.test", "ca_error") >= 1.0
    })
    .await;
    let refused = connect(lb.addr, "blocked.test", &roots)
        .await
        .expect_err("never issued");
    assert_eq!(
        alert_of(&refused),
        Some(rustls::AlertDescription::HandshakeFailure)
    );
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_account_binding_registers_where_the_ca_requires_it() {
    need_pebble!();
    let edge = Edge::new();
    let backend = Backend::start("app").await;
    let mac = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let opts = PebbleOpts {
        eab: Some(("kid-1".to_owned(), mac.to_owned())),
        ..PebbleOpts::default()
    };
    let pebble = Pebble::start(edge.targets, opts);
    // Without the binding the CA refuses the account: counted, with the CA's reason.
    let config = edge.config(&pebble, "", &["e.test"], &backend);
    let lb = Lb::start(&config).await;
    wait_for("the refused registration counted", ISSUANCE, || async {
        let m = lb.metrics().await;
        orders(&m, "e.test", "ca_error") >= 1.0
    })
    .await;
    lb.stop().await;

    edge.site.write("eab.key", &format!("{mac}\n"));
    let eab = "  eab: { kid: kid-1, hmac_key_file: eab.key }\n";
    let config = edge.config(&pebble, eab, &["e.test"], &backend);
    let lb = Lb::start(&config).await;
    let roots = client_trusting(&[pebble.root().await]);
    served(&lb, "e.test", &roots).await;
    lb.stop().await;
}
