//! PROXY protocol input and the per-client-address limit, over real sockets: raw v1 and v2
//! headers written by the test, HAProxy with `send-proxy-v2` in front, several loopback source
//! addresses (127.0.0.x) for the limit.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    Backend, ClientOpts, Lb, PATIENCE, Site, connect_from, connect_with_header, ecdsa, host,
    read_reply,
};
use ppp::v2;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A listener behind a "load balancer" at 127.0.0.1, and a host that sends PROXY v2 to its
/// backend and only allows 192.0.2.0/24 and 2001:db8::/32.
async fn behind_balancer(site: &Site, backend: &Backend, extra_top: &str) -> Lb {
    ecdsa(site, "app", &["app.test"]);
    let listeners =
        "[{ bind: \"127.0.0.1:0\", proxy_protocol: { trusted: [\"127.0.0.1\"], timeout: 300ms } }]";
    let body = format!(
        "{extra_top}hosts:\n{}",
        host(
            &["app.test"],
            &["app"],
            &[backend.addr],
            "    proxy_protocol: v2\n    allow: [\"192.0.2.0/24\", \"2001:db8::/32\"]\n"
        )
    );
    Lb::start(&site.config_listeners(listeners, &body)).await
}

fn v2_header(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (client, server),
    )
    .write_tlv(v2::Type::NoOp, b"padding from the balancer")
    .unwrap()
    .build()
    .unwrap()
}

/// The source and destination of the PROXY v2 header a backend received first.
async fn header_seen_by(backend: &Backend, index: usize) -> (SocketAddr, SocketAddr) {
    common::wait_for("backend read", PATIENCE, || async {
        backend.first_bytes().len() > index
    })
    .await;
    let first = backend.first_bytes().remove(index);
    let header = v2::Header::try_from(first.as_slice()).expect("PROXY v2 from tlsedge");
    match header.addresses {
        v2::Addresses::IPv4(a) => (
            (a.source_address, a.source_port).into(),
            (a.destination_address, a.destination_port).into(),
        ),
        v2::Addresses::IPv6(a) => (
            (a.source_address, a.source_port).into(),
            (a.destination_address, a.destination_port).into(),
        ),
        other => panic!("unexpected addresses {other:?}"),
    }
}

#[tokio::test]
async fn v1_and_v2_headers_set_the_client_address_everywhere() {
    let site = Site::new();
    let backend = Backend::start("app").await;
    let lb = behind_balancer(&site, &backend, "").await;
    let client = ClientOpts::default().build(&site.ca);

    // v1: the allow list sees 192.0.2.7 (the socket's 127.0.0.1 is not allowed), and the
    // backend's PROXY v2 header names the client and the address it connected to.
    let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n";
    let mut tls = connect_with_header(None, lb.addr, v1, "app.test", &client)
        .await
        .expect("v1 client allowed by its header address");
    assert_eq!(read_reply(&mut tls).await.unwrap().backend, "app");
    tls.write_all(b"x").await.unwrap();
    let (source, dest) = header_seen_by(&backend, 0).await;
    assert_eq!(source, "192.0.2.7:40000".parse().unwrap());
    assert_eq!(dest, "198.51.100.1:443".parse().unwrap());

    // v2 with an IPv4-mapped IPv6 client: normalised to IPv4.
    let header = v2_header(
        "[::ffff:192.0.2.9]:40001".parse().unwrap(),
        "[::ffff:198.51.100.1]:443".parse().unwrap(),
    );
    let mut tls = connect_with_header(None, lb.addr, &header, "app.test", &client)
        .await
        .expect("v2 client");
    assert_eq!(read_reply(&mut tls).await.unwrap().backend, "app");
    tls.write_all(b"x").await.unwrap();
    let (source, _) = header_seen_by(&backend, 1).await;
    assert_eq!(source, "192.0.2.9:40001".parse().unwrap());

    // A header naming a client outside the allow list gets access_denied.
    let denied = b"PROXY TCP4 203.0.113.5 198.51.100.1 40000 443\r\n";
    let err = connect_with_header(None, lb.addr, denied, "app.test", &client)
        .await
        .expect_err("203.0.113.5 is not allowed");
    assert_eq!(
        common::alert_of(&err),
        Some(rustls::AlertDescription::AccessDenied)
    );
    lb.wait_metric(
        "tlsedge_handshake_failures_total",
        &[("reason", "denied")],
        1.0,
    )
    .await;
}

/// Connects from `local`, writes `bytes`, and returns how the server ended the connection:
/// `true` when it closed (EOF or reset) without sending anything.
async fn closed_without_reply(local: Option<SocketAddr>, lb: SocketAddr, bytes: &[u8]) -> bool {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(local) = local {
        socket.bind(local).unwrap();
    }
    let mut tcp: TcpStream = socket.connect(lb).await.unwrap();
    let _ = tcp.write_all(bytes).await;
    let mut buf = [0_u8; 64];
    match tokio::time::timeout(PATIENCE, tcp.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => panic!("the server kept the connection open"),
    }
}

#[tokio::test]
async fn untrusted_peers_and_missing_bad_or_late_headers_are_refused_and_counted() {
    let site = Site::new();
    let backend = Backend::start("app").await;
    let lb = behind_balancer(&site, &backend, "").await;
    let untrusted = Some("127.0.0.2:0".parse().unwrap());
    assert!(closed_without_reply(untrusted, lb.addr, b"PROXY UNKNOWN\r\n").await);
    // From the trusted balancer, a ClientHello without a header is not a header.
    assert!(closed_without_reply(None, lb.addr, b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4").await);
    assert!(closed_without_reply(None, lb.addr, b"PROXY TCP9 1.2.3.4\r\n").await);
    // Half a header, then silence: cut at the listener's 300 ms header timeout.
    assert!(closed_without_reply(None, lb.addr, b"PROXY TCP4 192.0.2.7").await);
    let m = lb
        .wait_metric(
            "tlsedge_proxy_protocol_errors_total",
            &[("reason", "malformed")],
            2.0,
        )
        .await;
    let value = |reason| m.value("tlsedge_proxy_protocol_errors_total", &[("reason", reason)]);
    assert_eq!(value("untrusted"), 1.0);
    assert_eq!(value("timeout"), 1.0);
    assert_eq!(
        backend.accepted(),
        0,
        "no refused connection reached a backend"
    );
    assert_eq!(m.value("tlsedge_connections_active", &[]), 0.0);
}

#[tokio::test]
async fn per_client_ip_limit_refuses_the_next_connection_from_one_address_only() {
    let site = Site::new();
    let backend = Backend::start("app").await;
    ecdsa(&site, "app", &["app.test"]);
    let body = format!(
        "limits:\n  per_client_ip: 2\nhosts:\n{}",
        host(&["app.test"], &["app"], &[backend.addr], "")
    );
    let lb = Lb::start(&site.config(&body)).await;
    let client = ClientOpts::default().build(&site.ca);
    let from = |last: u8| Some(SocketAddr::from(([127, 0, 0, last], 0)));
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut tls = connect_from(from(3), lb.addr, "app.test", &client)
            .await
            .unwrap();
        read_reply(&mut tls).await.unwrap();
        open.push(tls);
    }
    assert!(
        connect_from(from(3), lb.addr, "app.test", &client)
            .await
            .is_err(),
        "the third connection from 127.0.0.3 is refused"
    );
    let mut other = connect_from(from(4), lb.addr, "app.test", &client)
        .await
        .expect("127.0.0.4 is unaffected");
    read_reply(&mut other).await.unwrap();
    lb.wait_metric(
        "tlsedge_handshake_failures_total",
        &[("reason", "client_limit")],
        1.0,
    )
    .await;
    // Closing one gives its slot back (the server sees the close a moment later).
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(mut tls) = connect_from(from(3), lb.addr, "app.test", &client).await
            && read_reply(&mut tls).await.is_ok()
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn per_client_ip_counts_the_proxy_header_address() {
    let site = Site::new();
    let backend = Backend::start("app").await;
    let lb = behind_balancer(&site, &backend, "limits:\n  per_client_ip: 1\n").await;
    let client = ClientOpts::default().build(&site.ca);
    let header = |ip: &str| format!("PROXY TCP4 {ip} 198.51.100.1 40000 443\r\n").into_bytes();
    // Every connection comes from the one balancer socket address; the limit is per client.
    let mut first = connect_with_header(None, lb.addr, &header("192.0.2.1"), "app.test", &client)
        .await
        .unwrap();
    read_reply(&mut first).await.unwrap();
    let mut second = connect_with_header(None, lb.addr, &header("192.0.2.2"), "app.test", &client)
        .await
        .expect("another client behind the same balancer");
    read_reply(&mut second).await.unwrap();
    assert!(
        connect_with_header(None, lb.addr, &header("192.0.2.1"), "app.test", &client)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn haproxy_send_proxy_v2_in_front() {
    if !common::have("haproxy") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install haproxy (.ci/run)"
        );
        eprintln!("haproxy not installed: skipped");
        return;
    }
    let site = Site::new();
    let backend = Backend::start("app").await;
    ecdsa(&site, "app", &["app.test"]);
    let listeners = "[{ bind: \"127.0.0.1:0\", proxy_protocol: { trusted: [\"127.0.0.0/8\"] } }]";
    let body = format!(
        "hosts:\n{}",
        host(
            &["app.test"],
            &["app"],
            &[backend.addr],
            "    proxy_protocol: v2\n"
        )
    );
    let lb = Lb::start(&site.config_listeners(listeners, &body)).await;
    let front = common::refused_addr().await;
    let cfg = format!(
        "global\n  log stderr local0 err\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 10s\n  timeout server 10s\n\
         frontend f\n  bind {front}\n  default_backend b\nbackend b\n  server tlsedge {} send-proxy-v2\n",
        lb.addr
    );
    site.write("haproxy.cfg", &cfg);
    let mut haproxy = tokio::process::Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(site.path("haproxy.cfg"))
        .kill_on_drop(true)
        .spawn()
        .expect("start haproxy");
    let client = ClientOpts::default().build(&site.ca);
    let local: SocketAddr = "127.0.0.9:0".parse().unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut tls = loop {
        match connect_from(Some(local), front, "app.test", &client).await {
            Ok(tls) => break tls,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "haproxy: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let client_addr = tls.get_ref().0.local_addr().unwrap();
    assert_eq!(read_reply(&mut tls).await.unwrap().backend, "app");
    tls.write_all(b"x").await.unwrap();
    let (source, dest) = header_seen_by(&backend, 0).await;
    assert_eq!(source, client_addr, "the client behind haproxy");
    assert_eq!(dest, front, "the address the client connected to");
    let _ = haproxy.kill().await;
}
