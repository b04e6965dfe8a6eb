//! Automatic certificates against a real ACME CA on loopback (pebble): challenges are really
//! validated against tlsedge's listeners (TLS-ALPN-01 on the TLS listener, HTTP-01 on the
//! plain-HTTP one), the issued certificates chain to pebble's root, and renewal, CA outages,
//! restarts and instances sharing storage behave as an operator needs.
//!
//! pebble is a Debian package that `.ci/run` installs; without it these tests say so and pass.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::acme::{Pebble, PebbleOpts, Targets, client_trusting, free_tcp, stored_cert};
use common::{Backend, Lb, Site, alert_of, connect, hello, wait_for};
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;

/// Issuance takes pebble well under a second; retries after a failure wait 1–2 s here.
const ISSUANCE: Duration = Duration::from_secs(20);

macro_rules! need_pebble {
    () => {
        logs();
        if !Pebble::available() {
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
}

impl Edge {
    fn new() -> Self {
        Self {
            site: Site::new(),
            targets: Targets {
                tls: free_tcp().port(),
                http: free_tcp().port(),
            },
        }
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
        m.value(
            "tlsedge_acme_orders_total",
            &[("host", "a.test"), ("result", "unreachable")],
        ) >= 1.0
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
        assert_eq!(
            m.value(
                "tlsedge_acme_orders_total",
                &[("host", host), ("result", "issued")]
            ),
            1.0
        );
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
