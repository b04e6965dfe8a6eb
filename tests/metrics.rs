//! The admin listener, scraped over HTTP after known traffic: handshake counters and histogram
//! with the right labels, connection and byte counters, certificate expiry, health endpoints.

mod common;

use common::{Backend, ClientOpts, Lb, Site, host, http_get, read_reply};
use tlsedge::pki::KeyKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn scrape_shows_known_traffic_with_bounded_labels() {
    let site = Site::new();
    let backend = Backend::start("b").await;
    site.cert("shop", &["shop.test", "*.shop.test"], KeyKind::Ecdsa);
    let body = format!(
        "hosts:\n{}",
        host(
            &["shop.test", "*.shop.test"],
            &["shop"],
            &[backend.addr],
            ""
        )
    );
    let lb = Lb::start(&site.config(&body)).await;
    let tls13 = ClientOpts::default().build(&site.ca);
    let tls12 = ClientOpts {
        tls12_only: true,
        ..ClientOpts::default()
    }
    .build(&site.ca);
    // Three TLS 1.3 and two TLS 1.2 connections, one through the wildcard name, each sending
    // 5 bytes and reading them back.
    for (config, name) in [
        (&tls13, "shop.test"),
        (&tls13, "shop.test"),
        (&tls13, "x.shop.test"),
        (&tls12, "shop.test"),
        (&tls12, "shop.test"),
    ] {
        let mut tls = common::connect(lb.addr, name, config).await.unwrap();
        read_reply(&mut tls).await.unwrap();
        tls.write_all(b"hello").await.unwrap();
        let mut echo = [0_u8; 5];
        tls.read_exact(&mut echo).await.unwrap();
        tls.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"bye\n");
    }
    let unknown = common::hello(lb.addr, "evil-injected-name.test", &tls13).await;
    assert!(unknown.is_err());

    let labels = [("host", "shop.test"), ("outcome", "ok")];
    let m = lb
        .wait_metric("tlsedge_connections_closed_total", &labels, 5.0)
        .await;
    let handshakes = |version, cipher| {
        m.value(
            "tlsedge_handshakes_total",
            &[
                ("host", "shop.test"),
                ("version", version),
                ("cipher", cipher),
                ("resumed", "false"),
            ],
        )
    };
    assert_eq!(
        handshakes("TLSv1.3", "TLS13_AES_128_GCM_SHA256"),
        3.0,
        "{}",
        m.0
    );
    assert_eq!(
        handshakes("TLSv1.2", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
        2.0,
        "{}",
        m.0
    );
    // The histogram: every handshake counted once, with host and resumed labels.
    let hist = [("host", "shop.test"), ("resumed", "false")];
    assert_eq!(
        m.value("tlsedge_handshake_duration_seconds_count", &hist),
        5.0
    );
    // One series per version: each +Inf bucket holds all of its version's handshakes.
    for (version, n) in [("TLSv1.3", 3.0), ("TLSv1.2", 2.0)] {
        let labels = [hist[0], hist[1], ("version", version)];
        let buckets = m.samples("tlsedge_handshake_duration_seconds_bucket", &labels);
        assert!(buckets.len() >= 10, "{}", m.0);
        assert_eq!(buckets.last().copied(), Some(n), "+Inf bucket holds all");
    }
    assert!(m.value("tlsedge_handshake_duration_seconds_sum", &hist) > 0.0);

    assert_eq!(
        m.value("tlsedge_connections_total", &[("host", "shop.test")]),
        5.0
    );
    assert_eq!(m.value("tlsedge_connections_active", &[]), 0.0);
    let bytes = |d| {
        m.value(
            "tlsedge_bytes_total",
            &[("host", "shop.test"), ("direction", d)],
        )
    };
    assert_eq!(bytes("client_to_backend"), 25.0);
    // Per connection: the backend's name line, the echo, and its answer to the half-close.
    assert_eq!(
        bytes("backend_to_client"),
        5.0 * ("b\n".len() + 5 + "bye\n".len()) as f64
    );
    assert_eq!(
        m.value(
            "tlsedge_handshake_failures_total",
            &[("reason", "unknown_sni")]
        ),
        1.0
    );
    assert!(!m.contains("evil-injected-name"), "raw SNI in labels");
    assert!(
        !m.contains("x.shop.test"),
        "the host label is the configured name"
    );
    // State gauges rendered at scrape time.
    let expiry = m.value(
        "tlsedge_certificate_expiry_timestamp_seconds",
        &[("host", "shop.test")],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(expiry > now + 80.0 * 86_400.0, "expiry {expiry}");
    assert_eq!(
        m.value("tlsedge_config_reloads_total", &[("result", "applied")]),
        1.0
    );
    assert_eq!(m.value("tlsedge_config_generation", &[]), 1.0);
    assert!(m.contains("# HELP tlsedge_handshakes_total"));
    assert!(m.contains("# TYPE tlsedge_handshake_duration_seconds histogram"));
}

#[tokio::test]
async fn health_endpoints_and_unknown_paths() {
    let site = Site::new();
    let backend = Backend::start("b").await;
    site.cert("h", &["h.test"], KeyKind::Ecdsa);
    let body = format!("hosts:\n{}", host(&["h.test"], &["h"], &[backend.addr], ""));
    let lb = Lb::start(&site.config(&body)).await;
    assert_eq!(http_get(lb.admin, "/healthz").await.0, 200);
    assert_eq!(http_get(lb.admin, "/readyz").await.0, 200);
    assert_eq!(http_get(lb.admin, "/nope").await.0, 404);
    let admin = lb.admin;
    lb.stop().await;
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "admin listener closed after shutdown"
    );
}

#[tokio::test]
async fn expiry_series_are_unique_when_certificate_files_share_a_name() {
    // certbot keeps an ECDSA and an RSA lineage, each with its own `fullchain.pem`.
    let site = Site::new();
    let backend = Backend::start("b").await;
    site.cert("ecdsa/fullchain", &["dual.test"], KeyKind::Ecdsa);
    site.cert("rsa/fullchain", &["dual.test"], KeyKind::Rsa);
    let body = format!(
        "hosts:\n{}",
        host(
            &["dual.test"],
            &["ecdsa/fullchain", "rsa/fullchain"],
            &[backend.addr],
            ""
        )
    );
    let lb = Lb::start(&site.config(&body)).await;
    let m = lb.metrics().await;
    let name = "tlsedge_certificate_expiry_timestamp_seconds";
    for cert in ["0:ecdsa", "1:rsa"] {
        let labels = [("host", "dual.test"), ("cert", cert)];
        assert_eq!(m.samples(name, &labels).len(), 1, "{cert} in {}", m.0);
    }
    assert_eq!(m.samples(name, &[("host", "dual.test")]).len(), 2);
}
