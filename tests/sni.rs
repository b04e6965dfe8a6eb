//! SNI routing: exact and wildcard names, the default host, missing and unknown names (refused
//! with `unrecognized_name` and counted when there is no default), case and trailing dot.

mod common;

use common::{Backend, ClientOpts, Lb, Site, alert_of, ecdsa, hello, host};

struct Setup {
    site: Site,
    lb: Lb,
    _backends: Vec<Backend>,
}

/// Two hosts: `app.test` (exact) and `*.wild.test`; `default` makes `app.test` the default.
async fn setup(default: bool) -> Setup {
    let site = Site::new();
    let app = Backend::start("app").await;
    let wild = Backend::start("wild").await;
    ecdsa(&site, "app", &["app.test"]);
    ecdsa(&site, "wild", &["*.wild.test"]);
    let mut body = String::new();
    if default {
        body.push_str("default_host: app.test\n");
    }
    body.push_str("hosts:\n");
    body.push_str(&host(&["app.test"], &["app"], &[app.addr], ""));
    body.push_str(&host(&["*.wild.test"], &["wild"], &[wild.addr], ""));
    let lb = Lb::start(&site.config(&body)).await;
    Setup {
        site,
        lb,
        _backends: vec![app, wild],
    }
}

#[tokio::test]
async fn exact_and_wildcard_names_reach_their_hosts() {
    let s = setup(false).await;
    let client = ClientOpts::default().build(&s.site.ca);
    assert_eq!(
        hello(s.lb.addr, "app.test", &client).await.unwrap().backend,
        "app"
    );
    for name in ["a.wild.test", "shop-1.wild.test"] {
        assert_eq!(
            hello(s.lb.addr, name, &client).await.unwrap().backend,
            "wild"
        );
    }
    let m = s.lb.metrics().await;
    assert_eq!(
        m.value("tlsedge_connections_total", &[("host", "app.test")]),
        1.0
    );
    assert_eq!(
        m.value("tlsedge_connections_total", &[("host", "*.wild.test")]),
        2.0
    );
}

#[tokio::test]
async fn unknown_names_are_refused_with_unrecognized_name_and_counted() {
    let s = setup(false).await;
    let client = ClientOpts::default().build(&s.site.ca);
    // A wildcard covers exactly one label: not two, not the bare parent.
    for name in ["nope.test", "a.b.wild.test", "wild.test"] {
        let err = hello(s.lb.addr, name, &client).await.unwrap_err();
        assert_eq!(
            alert_of(&err),
            Some(rustls::AlertDescription::UnrecognisedName),
            "{name}: {err}"
        );
    }
    let no_sni = ClientOpts {
        no_sni: true,
        ..ClientOpts::default()
    }
    .build(&s.site.ca);
    let err = hello(s.lb.addr, "app.test", &no_sni).await.unwrap_err();
    assert_eq!(
        alert_of(&err),
        Some(rustls::AlertDescription::UnrecognisedName)
    );

    let m = s.lb.metrics().await;
    let failures = |reason| m.value("tlsedge_handshake_failures_total", &[("reason", reason)]);
    assert_eq!(failures("unknown_sni"), 3.0);
    assert_eq!(failures("no_sni"), 1.0);
    // The raw client names never become label values.
    assert!(!m.contains("nope.test"), "raw SNI leaked into metrics");
    // The server is still serving.
    assert_eq!(
        hello(s.lb.addr, "app.test", &client).await.unwrap().backend,
        "app"
    );
}

#[tokio::test]
async fn default_host_serves_missing_and_unknown_names() {
    let s = setup(true).await;
    let no_sni = ClientOpts {
        no_sni: true,
        ..ClientOpts::default()
    }
    .build(&s.site.ca);
    // Without SNI the client still verifies the certificate against "app.test".
    assert_eq!(
        hello(s.lb.addr, "app.test", &no_sni).await.unwrap().backend,
        "app"
    );
    // An unknown name gets the default host's certificate, which the client rejects as not
    // covering that name: the server chose the default host, not a refusal alert.
    let client = ClientOpts::default().build(&s.site.ca);
    let err = hello(s.lb.addr, "other.test", &client).await.unwrap_err();
    assert_eq!(alert_of(&err), None, "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
    let m = s.lb.metrics().await;
    assert_eq!(
        m.value(
            "tlsedge_handshake_failures_total",
            &[("reason", "unknown_sni")]
        ),
        0.0
    );
    assert_eq!(
        m.value("tlsedge_handshake_failures_total", &[("reason", "no_sni")]),
        0.0
    );
}

#[tokio::test]
async fn names_match_case_insensitively() {
    let s = setup(false).await;
    let client = ClientOpts::default().build(&s.site.ca);
    assert_eq!(
        hello(s.lb.addr, "APP.Test", &client).await.unwrap().backend,
        "app"
    );
    assert_eq!(
        hello(s.lb.addr, "X.WILD.test", &client)
            .await
            .unwrap()
            .backend,
        "wild"
    );
}

/// rustls strips a trailing dot before sending SNI, so this uses `openssl s_client`, which
/// sends the name as given.
#[tokio::test]
async fn trailing_dot_is_ignored() {
    if !common::have("openssl") {
        eprintln!("skipped: openssl not installed");
        return;
    }
    let s = setup(false).await;
    let ca = s.site.path("ca.pem");
    let addr = s.lb.addr.to_string();
    let out = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr,
            "-servername",
            "App.Test.",
            "-CAfile",
        ])
        .arg(&ca)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("CN = app.test") || stdout.contains("CN=app.test"),
        "{stdout}"
    );
    assert!(stdout.contains("Verify return code: 0"), "{stdout}");
}
