//! The relay and the limits around it: bytes arrive intact both ways, half-close travels both
//! ways, idle and handshake timeouts fire, and malformed handshakes are counted without harming
//! the process.

mod common;

use std::time::Duration;

use common::{Backend, ClientOpts, Lb, Site, connect, ecdsa, hello, host, read_reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(extra_config: &str) -> (Site, Lb, Backend) {
    let site = Site::new();
    let backend = Backend::start("echo").await;
    ecdsa(&site, "relay", &["relay.test"]);
    let body = format!(
        "{extra_config}hosts:\n{}",
        host(&["relay.test"], &["relay"], &[backend.addr], "")
    );
    let lb = Lb::start(&site.config(&body)).await;
    (site, lb, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transfers_arrive_intact_and_are_counted() {
    let (site, lb, _backend) = start("").await;
    let client = ClientOpts::default().build(&site.ca);
    let mut tls = connect(lb.addr, "relay.test", &client).await.unwrap();
    read_reply(&mut tls).await.unwrap();
    let data: Vec<u8> = (0..4 * 1024 * 1024_u32).map(|i| (i % 251) as u8).collect();
    let (mut rd, mut wr) = tokio::io::split(tls);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&sent).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    tokio::time::timeout(common::PATIENCE, rd.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    // The echo backend answers the half-close with a last line.
    assert_eq!(back.len(), data.len() + 4);
    assert!(back[..data.len()] == data[..], "relayed bytes differ");
    assert_eq!(&back[data.len()..], b"bye\n");
    let m = lb
        .wait_metric(
            "tlsedge_connections_closed_total",
            &[("host", "relay.test"), ("outcome", "ok")],
            1.0,
        )
        .await;
    let bytes = |d| {
        m.value(
            "tlsedge_bytes_total",
            &[("host", "relay.test"), ("direction", d)],
        )
    };
    assert_eq!(bytes("client_to_backend"), data.len() as f64);
    assert_eq!(
        bytes("backend_to_client"),
        (data.len() + 4 + "echo\n".len()) as f64
    );
}

#[tokio::test]
async fn half_close_travels_both_ways() {
    let (site, lb, backend) = start("").await;
    let client = ClientOpts::default().build(&site.ca);
    let mut tls = connect(lb.addr, "relay.test", &client).await.unwrap();
    read_reply(&mut tls).await.unwrap();
    tls.write_all(b"last words").await.unwrap();
    // Client closes its sending side (close_notify); it can still read.
    tls.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(common::PATIENCE, tls.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    // The backend saw EOF after the data, answered, and closed: the client got both, then EOF.
    assert_eq!(rest, b"last wordsbye\n");
    common::wait_for("backend connection closed", common::PATIENCE, || async {
        backend.open() == 0
    })
    .await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let (site, lb, backend) = start("timeouts: { idle: 300ms }\n").await;
    let client = ClientOpts::default().build(&site.ca);
    let mut tls = connect(lb.addr, "relay.test", &client).await.unwrap();
    read_reply(&mut tls).await.unwrap();
    // Traffic resets the timer.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        tls.write_all(b"x").await.unwrap();
        let mut one = [0_u8; 1];
        tls.read_exact(&mut one).await.unwrap();
    }
    let mut rest = Vec::new();
    let started = std::time::Instant::now();
    let _ = tokio::time::timeout(common::PATIENCE, tls.read_to_end(&mut rest))
        .await
        .expect("closed by the idle timeout");
    assert!(started.elapsed() < Duration::from_secs(3));
    lb.wait_metric(
        "tlsedge_connections_closed_total",
        &[("outcome", "idle_timeout")],
        1.0,
    )
    .await;
    common::wait_for("backend side closed", common::PATIENCE, || async {
        backend.open() == 0
    })
    .await;
}

/// A client that has finished sending, with a backend that keeps its side open and says
/// nothing, holds the pair only for `timeouts.half_closed` (not the 5 min idle timeout).
#[tokio::test]
async fn a_half_closed_connection_is_closed_at_the_half_closed_timeout() {
    let site = Site::new();
    // A backend that accepts, reads everything, and never answers nor closes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel();
    let holder = tokio::spawn(async move {
        let (mut sock, _) = silent.accept().await.unwrap();
        let mut got = Vec::new();
        sock.read_to_end(&mut got).await.unwrap();
        let _ = eof_tx.send(got);
        // Keep the socket open until the proxy closes it.
        let mut more = [0_u8; 1];
        let _ = sock.read(&mut more).await;
        sock
    });
    ecdsa(&site, "relay", &["relay.test"]);
    let body = format!(
        "timeouts: {{ half_closed: 500ms }}\nhosts:\n{}",
        host(&["relay.test"], &["relay"], &[silent_addr], "")
    );
    let lb = Lb::start(&site.config(&body)).await;
    let client = ClientOpts::default().build(&site.ca);
    let mut tls = connect(lb.addr, "relay.test", &client).await.unwrap();
    tls.write_all(b"request").await.unwrap();
    tls.shutdown().await.unwrap();
    let got = tokio::time::timeout(common::PATIENCE, eof_rx)
        .await
        .expect("the backend saw the client's EOF")
        .unwrap();
    assert_eq!(got, b"request");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(common::PATIENCE, tls.read_to_end(&mut rest))
        .await
        .expect("closed by the half-closed timeout");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");
    lb.wait_metric(
        "tlsedge_connections_closed_total",
        &[("outcome", "half_closed_timeout")],
        1.0,
    )
    .await;
    tokio::time::timeout(common::PATIENCE, holder)
        .await
        .expect("the backend side was closed too")
        .unwrap();
}

/// Expects the server to close `stream` (EOF or reset) within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) {
    let mut buf = [0_u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => panic!("connection still open after {limit:?}"),
        }
    }
}

#[tokio::test]
async fn silent_and_slow_clients_hit_the_handshake_timeout() {
    let (site, lb, _backend) = start("timeouts: { handshake: 300ms }\n").await;
    // Sends nothing at all.
    let mut silent = TcpStream::connect(lb.addr).await.unwrap();
    // Sends half a ClientHello record header, then stalls.
    let mut slow = TcpStream::connect(lb.addr).await.unwrap();
    slow.write_all(&[0x16, 0x03, 0x01, 0x01]).await.unwrap();
    closed_within(&mut silent, Duration::from_secs(3)).await;
    closed_within(&mut slow, Duration::from_secs(3)).await;
    lb.wait_metric(
        "tlsedge_handshake_failures_total",
        &[("reason", "timeout")],
        2.0,
    )
    .await;
    let client = ClientOpts::default().build(&site.ca);
    hello(lb.addr, "relay.test", &client).await.unwrap();
}

#[tokio::test]
async fn malformed_handshakes_are_refused_and_counted() {
    // Bytes that cannot be TLS are refused at once; a truncated message waits for the rest
    // until the handshake deadline.
    let (site, lb, _backend) = start("timeouts: { handshake: 1s }\n").await;
    let garbage: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: relay.test\r\n\r\n".to_vec(),
        vec![0xff; 512],
        // A ClientHello that claims more bytes than ever arrive (times out).
        vec![
            0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0xff, 0xff, 0x03, 0x03, 0, 0,
        ],
        // A valid record header with an SSLv2-style body.
        vec![0x16, 0x03, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00],
        // An oversized record length.
        vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01],
    ];
    for bytes in &garbage {
        let mut stream = TcpStream::connect(lb.addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        closed_within(&mut stream, Duration::from_secs(5)).await;
    }
    // A client that connects and closes at once.
    drop(TcpStream::connect(lb.addr).await.unwrap());
    let m = lb.metrics().await;
    let failures = m.value("tlsedge_handshake_failures_total", &[]);
    assert!(failures >= garbage.len() as f64, "{failures}");
    assert!(
        m.value(
            "tlsedge_handshake_failures_total",
            &[("reason", "protocol")]
        ) >= 3.0
    );
    // Still serving.
    let client = ClientOpts::default().build(&site.ca);
    assert_eq!(
        hello(lb.addr, "relay.test", &client).await.unwrap().backend,
        "echo"
    );
}

#[tokio::test]
async fn max_connections_holds_excess_clients_in_the_backlog() {
    let (site, lb, _backend) = start("limits: { max_connections: 2 }\n").await;
    let client = ClientOpts::default().build(&site.ca);
    let mut first = connect(lb.addr, "relay.test", &client).await.unwrap();
    read_reply(&mut first).await.unwrap();
    let mut second = connect(lb.addr, "relay.test", &client).await.unwrap();
    read_reply(&mut second).await.unwrap();
    // The third waits: not refused, not served.
    let third = tokio::spawn({
        let (addr, client) = (lb.addr, client.clone());
        async move { hello(addr, "relay.test", &client).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served over the limit"
    );
    assert_eq!(
        lb.metrics().await.value("tlsedge_connections_active", &[]),
        2.0
    );
    first.shutdown().await.unwrap();
    drop(first);
    let reply = tokio::time::timeout(common::PATIENCE, third)
        .await
        .expect("served once a slot frees")
        .unwrap()
        .unwrap();
    assert_eq!(reply.backend, "echo");
    second.write_all(b"ok").await.unwrap();
}

/// No `SO_REUSEPORT`: a second instance on the same address is refused (an upgrade hands the
/// sockets over instead: tests/restarts.rs), and the first keeps serving alone.
#[tokio::test]
async fn a_second_instance_on_the_same_port_is_refused() {
    let (site, old, _backend) = start("").await;
    let yaml = std::fs::read_to_string(site.path("tlsedge.yaml")).unwrap();
    let port = old.addr.port();
    site.write(
        "tlsedge.yaml",
        &yaml.replace("127.0.0.1:0\"]", &format!("127.0.0.1:{port}\"]")),
    );
    let error = tlsedge::Server::bind(site.path("tlsedge.yaml"))
        .await
        .expect_err("the address is taken");
    let tlsedge::StartError::Socket(tlsedge::sockets::SocketError::Bind { addr, source }) = &error
    else {
        panic!("not a bind error: {error}");
    };
    assert_eq!(
        (*addr, source.kind()),
        (old.addr, std::io::ErrorKind::AddrInUse)
    );
    let client = ClientOpts::default().build(&site.ca);
    for _ in 0..20 {
        let reply = hello(old.addr, "relay.test", &client).await.unwrap();
        assert_eq!(reply.backend, "echo");
    }
    let m = old.metrics().await;
    assert_eq!(m.value("tlsedge_handshakes_total", &[]), 20.0);
}

#[tokio::test]
async fn connections_open_at_the_drain_deadline_are_closed_and_counted() {
    let (site, lb, backend) = start("timeouts: { drain: 200ms }\n").await;
    let client = ClientOpts::default().build(&site.ca);
    let mut relayed = connect(lb.addr, "relay.test", &client).await.unwrap();
    read_reply(&mut relayed).await.unwrap();
    relayed.write_all(b"abc").await.unwrap();
    let mut echoed = [0_u8; 3];
    relayed.read_exact(&mut echoed).await.unwrap();
    // And one that never sends its ClientHello.
    let _silent = TcpStream::connect(lb.addr).await.unwrap();
    let runtime = std::sync::Arc::clone(&lb.runtime);
    common::wait_for("both open", common::PATIENCE, || async {
        runtime
            .render_metrics()
            .contains("tlsedge_connections_active 2")
    })
    .await;
    lb.stop().await;
    let page = runtime.render_metrics();
    let m = common::Metrics(page);
    assert_eq!(m.value("tlsedge_connections_active", &[]), 0.0);
    assert_eq!(
        m.value(
            "tlsedge_connections_closed_total",
            &[("outcome", "drain_timeout")]
        ),
        1.0
    );
    assert_eq!(
        m.value("tlsedge_bytes_total", &[("direction", "client_to_backend")]),
        3.0,
        "the cut relay still reports its bytes"
    );
    assert_eq!(
        m.value(
            "tlsedge_handshake_failures_total",
            &[("reason", "shutdown")]
        ),
        1.0
    );
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(common::PATIENCE, relayed.read_to_end(&mut rest))
        .await
        .expect("the client sees the connection end");
    common::wait_for("backend side closed", common::PATIENCE, || async {
        backend.open() == 0
    })
    .await;
}
