//! Per-host TLS settings: certificate choice by the client's signature schemes, ALPN, minimum
//! TLS version, client authentication, and OCSP stapling.

mod common;

use std::sync::{Arc, Mutex};

use common::{Backend, ClientOpts, Lb, Site, alert_of, ecdsa, hello, host};
use tlsedge::pki::KeyKind;

#[tokio::test]
async fn ecdsa_for_clients_that_accept_it_rsa_for_the_others() {
    let site = Site::new();
    let backend = Backend::start("b").await;
    let ec = site.cert("ec", &["dual.test"], KeyKind::Ecdsa);
    let rsa = site.cert("rsa", &["dual.test"], KeyKind::Rsa);
    // RSA listed first: the choice must follow the client, not the file order.
    let body = format!(
        "hosts:\n{}",
        host(&["dual.test"], &["rsa", "ec"], &[backend.addr], "")
    );
    let lb = Lb::start(&site.config(&body)).await;
    for tls12 in [false, true] {
        let modern = ClientOpts {
            tls12_only: tls12,
            ..ClientOpts::default()
        };
        let rsa_only = ClientOpts {
            rsa_only: true,
            ..modern.clone()
        };
        let got = hello(lb.addr, "dual.test", &modern.build(&site.ca))
            .await
            .unwrap();
        assert_eq!(got.serial, ec.serial, "ECDSA-capable client, tls12={tls12}");
        let got = hello(lb.addr, "dual.test", &rsa_only.build(&site.ca))
            .await
            .unwrap();
        assert_eq!(got.serial, rsa.serial, "RSA-only client, tls12={tls12}");
    }
}

#[tokio::test]
async fn alpn_is_negotiated_per_host() {
    let site = Site::new();
    let backend = Backend::start("b").await;
    ecdsa(&site, "web", &["web.test"]);
    ecdsa(&site, "raw", &["raw.test"]);
    let body = format!(
        "hosts:\n{}{}",
        host(
            &["web.test"],
            &["web"],
            &[backend.addr],
            "    alpn: [h2, http/1.1]\n"
        ),
        host(&["raw.test"], &["raw"], &[backend.addr], "")
    );
    let lb = Lb::start(&site.config(&body)).await;
    let offer = |alpn: Vec<&'static str>| {
        ClientOpts {
            alpn,
            ..ClientOpts::default()
        }
        .build(&site.ca)
    };
    let got = hello(lb.addr, "web.test", &offer(vec!["http/1.1"]))
        .await
        .unwrap();
    assert_eq!(got.alpn.as_deref(), Some("http/1.1"));
    let got = hello(lb.addr, "web.test", &offer(vec!["h2", "http/1.1"]))
        .await
        .unwrap();
    assert_eq!(got.alpn.as_deref(), Some("h2"));
    let got = hello(lb.addr, "raw.test", &offer(vec!["h2"]))
        .await
        .unwrap();
    assert_eq!(got.alpn, None, "a host without ALPN ignores the offer");
    // No protocol in common: refused with no_application_protocol and counted.
    let err = hello(lb.addr, "web.test", &offer(vec!["imap"]))
        .await
        .unwrap_err();
    assert_eq!(
        alert_of(&err),
        Some(rustls::AlertDescription::NoApplicationProtocol),
        "{err}"
    );
    lb.wait_metric(
        "tlsedge_handshake_failures_total",
        &[("reason", "incompatible")],
        1.0,
    )
    .await;
}

#[tokio::test]
async fn min_tls_is_enforced_per_host() {
    let site = Site::new();
    let backend = Backend::start("b").await;
    ecdsa(&site, "old", &["old.test"]);
    ecdsa(&site, "new", &["new.test"]);
    let body = format!(
        "hosts:\n{}{}",
        host(
            &["old.test"],
            &["old"],
            &[backend.addr],
            "    min_tls: \"1.2\"\n"
        ),
        host(
            &["new.test"],
            &["new"],
            &[backend.addr],
            "    min_tls: \"1.3\"\n"
        )
    );
    let lb = Lb::start(&site.config(&body)).await;
    let tls12 = ClientOpts {
        tls12_only: true,
        ..ClientOpts::default()
    }
    .build(&site.ca);
    let any = ClientOpts::default().build(&site.ca);
    let got = hello(lb.addr, "old.test", &tls12).await.unwrap();
    assert_eq!(got.version, Some(rustls::ProtocolVersion::TLSv1_2));
    let got = hello(lb.addr, "new.test", &any).await.unwrap();
    assert_eq!(got.version, Some(rustls::ProtocolVersion::TLSv1_3));
    let err = hello(lb.addr, "new.test", &tls12).await.unwrap_err();
    assert_eq!(
        alert_of(&err),
        Some(rustls::AlertDescription::ProtocolVersion),
        "{err}"
    );
    let m = lb
        .wait_metric(
            "tlsedge_handshake_failures_total",
            &[("reason", "incompatible")],
            1.0,
        )
        .await;
    let version = |v| m.value("tlsedge_handshakes_total", &[("version", v)]);
    assert_eq!((version("TLSv1.2"), version("TLSv1.3")), (1.0, 1.0));
}

#[tokio::test]
async fn client_auth_required_and_optional() {
    let site = Site::new();
    let backend = Backend::start("b").await;
    ecdsa(&site, "strict", &["strict.test"]);
    ecdsa(&site, "lax", &["lax.test"]);
    let body = format!(
        "hosts:\n{}{}",
        host(
            &["strict.test"],
            &["strict"],
            &[backend.addr],
            "    client_auth: { ca: ca.pem, mode: required }\n"
        ),
        host(
            &["lax.test"],
            &["lax"],
            &[backend.addr],
            "    client_auth: { ca: ca.pem, mode: optional }\n"
        )
    );
    let lb = Lb::start(&site.config(&body)).await;
    let identity = common::client_identity(&site.ca);
    let with_cert = ClientOpts {
        identity: Some(identity),
        ..ClientOpts::default()
    }
    .build(&site.ca);
    let without = ClientOpts::default().build(&site.ca);

    assert_eq!(
        hello(lb.addr, "strict.test", &with_cert)
            .await
            .unwrap()
            .backend,
        "b"
    );
    assert_eq!(
        hello(lb.addr, "lax.test", &with_cert)
            .await
            .unwrap()
            .backend,
        "b"
    );
    assert_eq!(
        hello(lb.addr, "lax.test", &without).await.unwrap().backend,
        "b"
    );
    // In TLS 1.3 the client finishes first; the refusal arrives as an alert on its first read.
    let err = hello(lb.addr, "strict.test", &without).await.unwrap_err();
    assert_eq!(
        alert_of(&err),
        Some(rustls::AlertDescription::CertificateRequired),
        "{err}"
    );
    // A certificate from another CA is refused too.
    let stranger = Site::new();
    let foreign = common::client_identity(&stranger.ca);
    let foreign = ClientOpts {
        identity: Some(foreign),
        ..ClientOpts::default()
    }
    .build(&site.ca);
    assert!(hello(lb.addr, "strict.test", &foreign).await.is_err());
    lb.wait_metric(
        "tlsedge_handshake_failures_total",
        &[("reason", "client_auth")],
        2.0,
    )
    .await;
    assert_eq!(
        backend.accepted(),
        3,
        "refused clients never reach a backend"
    );
}

#[tokio::test]
async fn ocsp_response_is_stapled_and_follows_the_file() {
    let site = Site::new();
    let backend = Backend::start("b").await;
    ecdsa(&site, "ocsp", &["ocsp.test"]);
    // The proxy staples the bytes as given; a real response comes from `openssl ocsp`.
    site.write("ocsp.der", "first response");
    let body = format!(
        "reload: {{ debounce: 50ms }}\nhosts:\n{}",
        host(&["ocsp.test"], &[], &[backend.addr], "")
    )
    .replace(
        "    certs:\n",
        "    certs:\n      - { cert: ocsp.pem, key: ocsp.key, ocsp: ocsp.der }\n",
    );
    let lb = Lb::start(&site.config(&body)).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let config = ClientOpts {
        ocsp_log: Some(Arc::clone(&seen)),
        ..ClientOpts::default()
    }
    .build(&site.ca);
    hello(lb.addr, "ocsp.test", &config).await.unwrap();
    assert_eq!(seen.lock().unwrap().last().unwrap(), b"first response");

    site.write("ocsp.der", "second response");
    common::wait_for("the new OCSP response is stapled", common::PATIENCE, || {
        let (config, seen, addr) = (Arc::clone(&config), Arc::clone(&seen), lb.addr);
        async move {
            hello(addr, "ocsp.test", &config).await.unwrap();
            seen.lock().unwrap().last().unwrap() == b"second response"
        }
    })
    .await;
}

#[tokio::test]
async fn allow_lists_restrict_a_host_to_client_networks() {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    let site = Site::new();
    let backend = Backend::start("b").await;
    ecdsa(&site, "admin", &["admin.test"]);
    ecdsa(&site, "public", &["public.test"]);
    let body = format!(
        "hosts:\n{}{}",
        host(
            &["admin.test"],
            &["admin"],
            &[backend.addr],
            "    allow: [\"127.0.1.0/24\", \"::1\"]\n"
        ),
        host(&["public.test"], &["public"], &[backend.addr], "")
    );
    let lb = Lb::start(&site.config(&body)).await;
    let client = ClientOpts::default().build(&site.ca);
    let from = |last| {
        Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 1, last)),
            0,
        ))
    };
    let mut inside = common::connect_from(from(5), lb.addr, "admin.test", &client)
        .await
        .unwrap();
    assert_eq!(common::read_reply(&mut inside).await.unwrap().backend, "b");
    let err = hello(lb.addr, "admin.test", &client).await.unwrap_err();
    assert_eq!(
        alert_of(&err),
        Some(rustls::AlertDescription::AccessDenied),
        "{err}"
    );
    assert_eq!(
        hello(lb.addr, "public.test", &client)
            .await
            .unwrap()
            .backend,
        "b"
    );
    let m = lb.metrics().await;
    assert_eq!(
        m.value("tlsedge_handshake_failures_total", &[("reason", "denied")]),
        1.0
    );
    assert_eq!(
        backend.accepted(),
        2,
        "a denied client never reaches a backend"
    );
}

/// A client offering these suites and groups (the provider's others left out).
fn offering(
    site: &Site,
    suites: Option<Vec<rustls::SupportedCipherSuite>>,
    groups: Option<Vec<&'static dyn rustls::crypto::SupportedKxGroup>>,
    tls12_only: bool,
) -> Arc<rustls::ClientConfig> {
    ClientOpts {
        suites,
        groups,
        tls12_only,
        ..ClientOpts::default()
    }
    .build(&site.ca)
}

#[tokio::test]
async fn the_default_policy_prefers_post_quantum_key_exchange_and_aes_128() {
    use rustls::crypto::aws_lc_rs::{cipher_suite as cs, kx_group as kx};
    let site = Site::new();
    let backend = Backend::start("b").await;
    ecdsa(&site, "a", &["a.test"]);
    let lb = Lb::start(&site.config(&format!(
        "hosts:\n{}",
        host(&["a.test"], &["a"], &[backend.addr], "")
    )))
    .await;
    // A client that prefers the hybrid (as Chrome, Firefox and OpenSSL 3.5 do) gets it.
    let pq_first = offering(
        &site,
        None,
        Some(vec![kx::X25519MLKEM768, kx::X25519]),
        false,
    );
    let got = hello(lb.addr, "a.test", &pq_first).await.unwrap();
    assert_eq!(got.group, Some(rustls::NamedGroup::X25519MLKEM768));
    // The suite follows the server's order, not the client's.
    let aes256_first = vec![cs::TLS13_AES_256_GCM_SHA384, cs::TLS13_AES_128_GCM_SHA256];
    let got = hello(
        lb.addr,
        "a.test",
        &offering(&site, Some(aes256_first), None, false),
    )
    .await
    .unwrap();
    assert_eq!(
        got.suite,
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
    let tls12 = vec![
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ];
    let got = hello(lb.addr, "a.test", &offering(&site, Some(tls12), None, true))
        .await
        .unwrap();
    assert_eq!(
        got.suite,
        Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
    );
    let m = lb
        .wait_metric(
            "tlsedge_handshake_key_exchanges_total",
            &[("host", "a.test"), ("group", "X25519MLKEM768")],
            1.0,
        )
        .await;
    assert_eq!(
        m.value(
            "tlsedge_handshake_key_exchanges_total",
            &[("host", "a.test"), ("group", "X25519")]
        ),
        2.0
    );
}

#[tokio::test]
async fn profiles_and_explicit_lists_are_enforced_per_host() {
    use rustls::crypto::aws_lc_rs::{cipher_suite as cs, kx_group as kx};
    let site = Site::new();
    let backend = Backend::start("b").await;
    for stem in ["modern", "chacha", "p384"] {
        ecdsa(&site, stem, &[&format!("{stem}.test")]);
    }
    let body = format!(
        "hosts:\n{}{}{}",
        host(
            &["modern.test"],
            &["modern"],
            &[backend.addr],
            "    tls_profile: modern\n"
        ),
        host(
            &["chacha.test"],
            &["chacha"],
            &[backend.addr],
            "    cipher_suites: [TLS_CHACHA20_POLY1305_SHA256, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256]\n"
        ),
        host(
            &["p384.test"],
            &["p384"],
            &[backend.addr],
            "    kx_groups: [secp384r1]\n"
        ),
    );
    let lb = Lb::start(&site.config(&body)).await;
    let any = ClientOpts::default().build(&site.ca);
    let got = hello(lb.addr, "modern.test", &any).await.unwrap();
    assert_eq!(got.version, Some(rustls::ProtocolVersion::TLSv1_3));
    let err = hello(lb.addr, "modern.test", &offering(&site, None, None, true))
        .await
        .unwrap_err();
    assert_eq!(
        alert_of(&err),
        Some(rustls::AlertDescription::ProtocolVersion),
        "{err}"
    );
    let got = hello(lb.addr, "chacha.test", &any).await.unwrap();
    assert_eq!(
        got.suite,
        Some(rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256)
    );
    let aes_only = vec![cs::TLS13_AES_128_GCM_SHA256, cs::TLS13_AES_256_GCM_SHA384];
    let err = hello(
        lb.addr,
        "chacha.test",
        &offering(&site, Some(aes_only), None, false),
    )
    .await
    .unwrap_err();
    assert_eq!(
        alert_of(&err),
        Some(rustls::AlertDescription::HandshakeFailure),
        "{err}"
    );
    // The client's first key share (X25519) is not allowed: a hello retry asks for P-384.
    let got = hello(lb.addr, "p384.test", &any).await.unwrap();
    assert_eq!(got.group, Some(rustls::NamedGroup::secp384r1));
    let x25519 = offering(&site, None, Some(vec![kx::X25519]), false);
    let err = hello(lb.addr, "p384.test", &x25519).await.unwrap_err();
    assert_eq!(
        alert_of(&err),
        Some(rustls::AlertDescription::HandshakeFailure),
        "{err}"
    );
    lb.wait_metric(
        "tlsedge_handshake_failures_total",
        &[("reason", "incompatible")],
        3.0,
    )
    .await;
}

/// What scanners probe with: a hello no certificate of the host can answer (no common suite,
/// or no signature scheme its key can make) is refused with `handshake_failure` and counted as
/// `incompatible`, never `access_denied`.
#[tokio::test]
async fn hellos_no_certificate_fits_get_handshake_failure() {
    let site = Site::new();
    let backend = Backend::start("b").await;
    ecdsa(&site, "ec", &["ec.test"]);
    let lb = Lb::start(&site.config(&format!(
        "hosts:\n{}",
        host(&["ec.test"], &["ec"], &[backend.addr], "")
    )))
    .await;
    for tls12_only in [false, true] {
        let rsa_only = ClientOpts {
            rsa_only: true,
            tls12_only,
            ..ClientOpts::default()
        }
        .build(&site.ca);
        let err = hello(lb.addr, "ec.test", &rsa_only).await.unwrap_err();
        assert_eq!(
            alert_of(&err),
            Some(rustls::AlertDescription::HandshakeFailure),
            "tls12_only={tls12_only}: {err}"
        );
    }
    // OpenSSL with a suite tlsedge does not have (CBC): alert 40, handshake failure.
    let out = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &lb.addr.to_string(),
            "-servername",
            "ec.test",
        ])
        .args(["-tls1_2", "-cipher", "AES128-SHA"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("alert handshake failure") || stderr.contains("alert number 40"),
        "{stderr}"
    );
    let m = lb
        .wait_metric(
            "tlsedge_handshake_failures_total",
            &[("reason", "incompatible")],
            3.0,
        )
        .await;
    assert_eq!(
        m.value(
            "tlsedge_handshake_failures_total",
            &[("reason", "protocol")]
        ),
        0.0
    );
}
