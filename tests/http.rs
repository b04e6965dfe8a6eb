//! The `http` mode end to end: real clients (curl over HTTP/1.1 and HTTP/2, hyper's HTTP/2
//! client, Python's urllib, a WebSocket client) through the real server to real HTTP backends
//! on loopback.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::web::{Got, WebBackend, curl};
use common::{Lb, PATIENCE, Site, ecdsa, host};

/// A site with one HTTP host `app.test` over `backends`; `http` is its `http:` block
/// (indented by six spaces), `extra` further host lines and `top` top-level lines.
fn http_site(
    backends: &[SocketAddr],
    http: &str,
    extra: &str,
    top: &str,
) -> (Site, std::path::PathBuf) {
    let site = Site::new();
    ecdsa(&site, "app", &["app.test", "*.app.test"]);
    let block = format!("    mode: http\n    http:\n      via: true\n{http}{extra}");
    let config = site.config(&format!(
        "{top}hosts:\n{}",
        host(&["app.test"], &["app"], backends, &block)
    ));
    (site, config)
}

/// A TLS connection to `app.test` offering only HTTP/1.1, with a client certificate if given.
async fn h1_connection(
    site: &Site,
    lb: &Lb,
    identity: Option<tlsedge::pki::Issued>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let client = common::ClientOpts {
        alpn: vec!["http/1.1"],
        identity,
        ..Default::default()
    }
    .build(&site.ca);
    common::connect(lb.addr, "app.test", &client)
        .await
        .expect("TLS handshake")
}

/// One backend `b0` behind an HTTP host (see [`http_site`]), the server started.
async fn one_backend(http: &str, extra: &str, top: &str) -> (WebBackend, Site, Lb) {
    let backend = WebBackend::start("b0").await;
    let (site, config) = http_site(&[backend.addr], http, extra, top);
    let lb = Lb::start(&config).await;
    (backend, site, lb)
}

/// Runs a Python script that prints `ok` when all its assertions held.
async fn python_says_ok(script: &str) {
    let out = tokio::process::Command::new("python3")
        .args(["-c", script])
        .output()
        .await
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn get(site: &Site, lb: &Lb, path: &str, args: &[&str]) -> Got {
    curl(&site.path("ca.pem"), "app.test", lb.addr.port(), path, args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_reach_the_backend_with_forwarding_headers() {
    let (_backend, site, lb) = one_backend("", "", "").await;
    for (flag, version) in [("--http1.1", "HTTP/1.1"), ("--http2", "HTTP/2")] {
        let got = get(
            &site,
            &lb,
            "/hello?x=1",
            &[flag, "-H", "X-Forwarded-For: 6.6.6.6"],
        )
        .await;
        assert_eq!(got.status, 200, "{flag}: {got:?}");
        assert!(got.body.contains("backend=b0"), "{flag}: {}", got.body);
        assert!(got.body.contains("path=/hello?x=1"), "{flag}: {}", got.body);
        let port = lb.addr.port();
        assert_eq!(
            got.echoed("host"),
            Some(&*format!("app.test:{port}")),
            "{flag}"
        );
        assert_eq!(
            got.echoed("x-forwarded-for"),
            Some("127.0.0.1"),
            "{flag}: spoof removed"
        );
        assert_eq!(got.echoed("x-forwarded-proto"), Some("https"), "{flag}");
        let via = if version == "HTTP/2" {
            "2 tlsedge"
        } else {
            "1.1 tlsedge"
        };
        assert_eq!(
            got.echoed("via"),
            Some(via),
            "{flag}: the protocol it was received in"
        );
        assert_eq!(
            got.header("via"),
            Some("1.1 tlsedge"),
            "{flag}: from an HTTP/1.1 backend"
        );
        let id = got
            .header("x-request-id")
            .expect("request id on the response");
        assert_eq!(
            got.echoed("x-request-id"),
            Some(id),
            "{flag}: same id both ways"
        );
        let m = lb.metrics().await;
        let labels = [
            ("host", "app.test"),
            ("route", "default"),
            ("method", "GET"),
            ("code", "200"),
        ];
        assert!(
            m.value("tlsedge_http_requests_total", &labels) >= 1.0,
            "{version}"
        );
    }
    let m = lb.metrics().await;
    let labels = [
        ("host", "app.test"),
        ("route", "default"),
        ("method", "GET"),
        ("code", "200"),
    ];
    assert_eq!(m.value("tlsedge_http_requests_total", &labels), 2.0);
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_connections_are_reused_across_client_connections() {
    let (backend, site, lb) = one_backend("", "", "").await;
    for i in 0..10 {
        let flag = if i % 2 == 0 { "--http1.1" } else { "--http2" };
        let got = get(&site, &lb, "/", &[flag]).await;
        assert_eq!(got.status, 200);
    }
    assert_eq!(backend.requests(), 10);
    // Ten client connections, one after another: one pooled backend connection serves all.
    assert_eq!(backend.accepted(), 1, "backend connections");
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_backend_connections_are_closed_after_backend_idle() {
    let (backend, site, lb) = one_backend("      backend_idle: 200ms\n", "", "").await;
    assert_eq!(get(&site, &lb, "/", &[]).await.status, 200);
    common::wait_for("idle backend connection closed", PATIENCE, || async {
        backend.open() == 0
    })
    .await;
    assert_eq!(get(&site, &lb, "/", &[]).await.status, 200);
    assert_eq!(
        backend.accepted(),
        2,
        "a new connection after the idle one closed"
    );
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_kept_from_trusted_clients_only() {
    let backend = WebBackend::start("b0").await;
    let http = "      forwarded:\n        headers: both\n        trusted: [\"127.0.0.0/8\"]\n";
    let (site, config) = http_site(&[backend.addr], http, "", "");
    let lb = Lb::start(&config).await;
    let got = get(
        &site,
        &lb,
        "/",
        &[
            "-H",
            "X-Forwarded-For: 203.0.113.9",
            "-H",
            "Forwarded: for=203.0.113.9",
        ],
    )
    .await;
    assert_eq!(
        got.echoed("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    let port = lb.addr.port();
    let forwarded = format!("for=203.0.113.9, for=127.0.0.1;proto=https;host=app.test:{port}");
    assert_eq!(got.echoed("forwarded"), Some(&*forwarded));
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_pick_the_longest_prefix() {
    let (web, api, v2) = (
        WebBackend::start("web").await,
        WebBackend::start("api").await,
        WebBackend::start("v2").await,
    );
    let http = format!(
        "      routes:\n        - {{ path: /api/, backends: [{{ address: \"{}\" }}] }}\n        - {{ path: /api/v2/, backends: [{{ address: \"{}\" }}] }}\n",
        api.addr, v2.addr
    );
    let (site, config) = http_site(&[web.addr], &http, "", "");
    let lb = Lb::start(&config).await;
    for (path, want) in [
        ("/", "web"),
        ("/apiary", "web"),
        ("/api/x", "api"),
        ("/api/v2/y", "v2"),
    ] {
        let got = get(&site, &lb, path, &[]).await;
        assert!(
            got.body.contains(&format!("backend={want}\n")),
            "{path}: {}",
            got.body
        );
    }
    let m = lb.metrics().await;
    let labels = [("host", "app.test"), ("route", "/api/v2/")];
    assert_eq!(m.value("tlsedge_http_requests_total", &labels), 1.0);
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_413_431_502_503_504() {
    let slow = WebBackend::start("slow").await;
    let http = "      limits:\n        max_body_bytes: 1000\n        response_timeout: 300ms\n        max_header_bytes: 4096\n";
    let (site, config) = http_site(&[slow.addr], http, "", "");
    let lb = Lb::start(&config).await;
    let big = "x".repeat(2000);
    let got = get(&site, &lb, "/upload", &["--data-binary", &big]).await;
    assert_eq!(got.status, 413, "{got:?}");
    let long = format!("X-Long: {}", "y".repeat(8000));
    let got = get(&site, &lb, "/", &["--http1.1", "-H", &long]).await;
    assert_eq!(got.status, 431, "{got:?}");
    let got = get(&site, &lb, "/slow/2000", &[]).await;
    assert_eq!(got.status, 504, "{got:?}");
    assert!(got.body.contains("504"));
    lb.stop().await;

    let dead = common::refused_addr().await;
    let (site, config) = http_site(&[dead], "", "", "");
    let lb = Lb::start(&config).await;
    let got = get(&site, &lb, "/", &[]).await;
    assert_eq!(got.status, 502, "connect refused: {got:?}");
    let got = get(&site, &lb, "/", &[]).await;
    assert_eq!(got.status, 503, "backend cooling down: {got:?}");
    let m = lb.metrics().await;
    assert_eq!(
        m.value("tlsedge_http_requests_total", &[("code", "503")]),
        1.0
    );
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_the_connection_does_not_serve_gets_421() {
    let (a, b) = (WebBackend::start("a").await, WebBackend::start("b").await);
    let site = Site::new();
    // One certificate covers both names, as when a browser coalesces connections.
    ecdsa(&site, "both", &["a.test", "alias.test", "b.test"]);
    let block = "    mode: http\n";
    let hosts = format!(
        "hosts:\n{}{}",
        host(&["a.test", "alias.test"], &["both"], &[a.addr], block),
        host(&["b.test"], &["both"], &[b.addr], block)
    );
    let lb = Lb::start(&site.config(&hosts)).await;
    let ca = site.path("ca.pem");
    let port = lb.addr.port();
    let port_s = port.to_string();
    let a_url = format!("https://a.test:{port}/");
    // curl reuses the HTTP/2 connection to a.test for a second URL whose Host is b.test.
    let resolve = format!("a.test:{port}:127.0.0.1");
    let mut cmd = tokio::process::Command::new("curl");
    for (i, host) in [
        None,
        Some("b.test".to_owned()),
        Some(format!("alias.test:{port_s}")),
    ]
    .iter()
    .enumerate()
    {
        if i > 0 {
            cmd.arg("--next");
        }
        cmd.args(["-sS", "--http2", "--cacert"])
            .arg(&ca)
            .args(["--resolve", &resolve]);
        if let Some(host) = host {
            cmd.args(["-H", &format!("Host: {host}")]);
        }
        cmd.args([
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{num_connects}\n",
            &a_url,
        ]);
    }
    let out = cmd.output().await.expect("curl");
    let lines = String::from_utf8_lossy(&out.stdout).to_string();
    // One connection (num_connects 1, then 0, 0), three answers.
    assert_eq!(lines, "200 1\n421 0\n200 0\n");
    assert_eq!(
        b.requests(),
        0,
        "no backend is asked for a misdirected request"
    );
    let m = lb.metrics().await;
    assert_eq!(
        m.value("tlsedge_http_misdirected_total", &[("host", "a.test")]),
        1.0
    );
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_stream_both_ways_intact() {
    let (_backend, site, lb) = one_backend("", "", "").await;
    const LEN: u64 = 64 << 20;
    let data: Vec<u8> = (0..LEN).map(|i| (i * 7 % 256) as u8).collect();
    let file = site.path("upload.bin");
    std::fs::write(&file, &data).expect("write upload");
    let want_sum = common::web::upload_sum(&data);
    for flag in ["--http1.1", "--http2"] {
        let upload = format!("@{}", file.display());
        let got = get(&site, &lb, "/upload", &[flag, "--data-binary", &upload]).await;
        assert_eq!(
            got.body.trim(),
            format!("bytes={LEN} sum={want_sum}"),
            "{flag} upload"
        );
        let out = site.path("download.bin");
        let status = tokio::process::Command::new("curl")
            .args(["-sS", flag, "-o"])
            .arg(&out)
            .arg("--cacert")
            .arg(site.path("ca.pem"))
            .args([
                "--resolve",
                &format!("app.test:{}:127.0.0.1", lb.addr.port()),
            ])
            .arg(format!("https://app.test:{}/bytes/{LEN}", lb.addr.port()))
            .status()
            .await
            .expect("curl");
        assert!(status.success(), "{flag} download");
        let downloaded = std::fs::read(&out).expect("download");
        assert_eq!(downloaded.len() as u64, LEN, "{flag} download length");
        assert!(
            downloaded
                .iter()
                .enumerate()
                .all(|(i, b)| *b == common::web::pattern(i as u64)),
            "{flag} download bytes"
        );
    }
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_listener_sends_known_names_to_https() {
    let backend = WebBackend::start("b0").await;
    let (_site, config) = http_site(
        &[backend.addr],
        "",
        "",
        "http_listeners: [\"127.0.0.1:0\"]\n",
    );
    let lb = Lb::start(&config).await;
    let http = lb.http[0];
    let out = |host: &'static str| async move {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "-i", "-H", &format!("Host: {host}")])
            .arg(format!("http://{http}/a/b?c=d"))
            .output()
            .await
            .expect("curl");
        common::web::parse_response(&String::from_utf8_lossy(&out.stdout)).expect("response")
    };
    let got = out("App.Test:80").await;
    assert_eq!(got.status, 308);
    let location = format!("https://app.test:{}/a/b?c=d", lb.addr.port());
    assert_eq!(got.header("location"), Some(&*location));
    assert_eq!(out("other.test").await.status, 404);
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_health_check_takes_a_failing_backend_out() {
    let good = WebBackend::start("good").await;
    let bad = WebBackend::start_failing("bad", 500).await;
    let extra = "    health_check: { http: { path: /healthz, expect: \"200-399\" }, interval: 100ms, timeout: 1s, fall: 1, rise: 1 }\n";
    let (site, config) = http_site(&[good.addr, bad.addr], "", extra, "");
    let lb = Lb::start(&config).await;
    let bad_label = bad.addr.to_string();
    lb.wait_metric("tlsedge_backend_up", &[("backend", &bad_label)], 0.0)
        .await;
    for _ in 0..6 {
        let got = get(&site, &lb, "/", &[]).await;
        assert!(got.body.contains("backend=good"), "{}", got.body);
    }
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_an_in_flight_request_finish() {
    let (_backend, site, lb) = one_backend("", "", "").await;
    let ca = site.path("ca.pem");
    let port = lb.addr.port();
    let request =
        tokio::spawn(async move { curl(&ca, "app.test", port, "/slow/700", &["--http2"]).await });
    common::wait_for("request in flight", PATIENCE, || async {
        lb.metrics()
            .await
            .value("tlsedge_http_requests_active", &[])
            == 1.0
    })
    .await;
    lb.stop().await;
    let got = request.await.expect("request task");
    assert_eq!(got.status, 200, "{got:?}");
    assert!(got.body.contains("slept=700"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_closed_at_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = WebBackend::start("b0").await;
    let http = "      limits:\n        header_timeout: 1s\n";
    let (site, config) = http_site(&[backend.addr], http, "", "");
    let lb = Lb::start(&config).await;
    let mut slow = h1_connection(&site, &lb, None).await;
    let started = tokio::time::Instant::now();
    let request = b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut closed_after = None;
    for byte in request {
        if slow.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        // A well-behaved client meanwhile is served.
        if started.elapsed() < Duration::from_millis(300) {
            assert_eq!(get(&site, &lb, "/", &[]).await.status, 200);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut buf = [0u8; 64];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf)).await
        {
            closed_after = Some(started.elapsed());
            let _ = n;
            break;
        }
    }
    let closed_after = closed_after.expect("the slow client was closed");
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed after {closed_after:?}"
    );
    assert!(
        closed_after < Duration::from_secs(3),
        "closed after {closed_after:?}"
    );
    let m = lb.metrics().await;
    assert_eq!(
        m.value(
            "tlsedge_http_protocol_errors_total",
            &[("reason", "header_timeout")]
        ),
        1.0
    );
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_urllib_and_websocket_clients() {
    let (_backend, site, lb) = one_backend("", "", "").await;
    let port = lb.addr.port();
    let ca = site.path("ca.pem");
    // urllib resolves the name itself: the connection goes to 127.0.0.1 with SNI and Host app.test.
    let script = format!(
        r#"
import ssl, socket, urllib.request, http.client
ctx = ssl.create_default_context(cafile={ca:?})
orig = socket.getaddrinfo
socket.getaddrinfo = lambda host, *a, **k: orig("127.0.0.1" if host == "app.test" else host, *a, **k)
body = urllib.request.urlopen("https://app.test:{port}/py", context=ctx, timeout=10).read().decode()
assert "backend=b0" in body and "path=/py" in body, body
conn = http.client.HTTPSConnection("app.test", {port}, context=ctx, timeout=10)
for i in range(3):
    conn.request("POST", "/upload", body=b"z" * 1000)
    assert conn.getresponse().read().decode().startswith("bytes=1000"), i
print("ok")
"#
    );
    python_says_ok(&script).await;
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_relays_both_ways() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    // A Python `websockets` echo server as the backend; it prints its port.
    let server = r#"
import asyncio, websockets
async def echo(ws):
    async for message in ws:
        await ws.send("echo:" + message)
async def main():
    async with websockets.serve(echo, "127.0.0.1", 0) as srv:
        print(srv.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()
asyncio.run(main())
"#;
    let mut backend = tokio::process::Command::new("python3")
        .args(["-c", server])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 websockets server (pip install websockets)");
    let mut line = String::new();
    let stdout = backend.stdout.take().expect("stdout");
    tokio::time::timeout(PATIENCE, BufReader::new(stdout).read_line(&mut line))
        .await
        .expect("backend prints its port")
        .expect("read port");
    let port: u16 = line.trim().parse().expect("port");
    let (site, config) = http_site(&[SocketAddr::from(([127, 0, 0, 1], port))], "", "", "");
    let lb = Lb::start(&config).await;
    let client = format!(
        r#"
import asyncio, ssl, websockets
async def main():
    ctx = ssl.create_default_context(cafile={ca:?})
    async with websockets.connect("wss://app.test:{port}/chat", ssl=ctx, host="127.0.0.1", port={port}) as ws:
        for text in ["one", "two", "x" * 100000]:
            await ws.send(text)
            assert await ws.recv() == "echo:" + text
    print("ok")
asyncio.run(main())
"#,
        ca = site.path("ca.pem"),
        port = lb.addr.port()
    );
    python_says_ok(&client).await;
    let m = lb.metrics().await;
    assert_eq!(
        m.value("tlsedge_http_requests_total", &[("code", "101")]),
        1.0
    );
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_backends_by_prior_knowledge_and_by_alpn_over_tls() {
    let h2 = WebBackend::start_h2("h2").await;
    let (site, config) = http_site(&[h2.addr], "      backend_protocol: h2\n", "", "");
    let lb = Lb::start(&config).await;
    for flag in ["--http1.1", "--http2"] {
        let got = get(&site, &lb, "/x", &[flag]).await;
        assert_eq!(got.status, 200, "{flag}: {got:?}");
        assert!(
            got.body.contains("version=HTTP/2.0"),
            "{flag}: {}",
            got.body
        );
        let port = lb.addr.port();
        let authority = format!("authority=app.test:{port}");
        assert!(got.body.contains(&authority), "{flag}: {}", got.body);
    }
    assert_eq!(h2.accepted(), 1, "one shared HTTP/2 backend connection");
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_negotiates_http2_by_alpn_and_headers_are_set() {
    let internal = Site::new();
    let issued = internal
        .ca
        .issue(&["app.internal"], tlsedge::pki::KeyKind::Ecdsa)
        .expect("backend cert");
    let backend = WebBackend::start_tls("secure", &issued).await;
    let http = "      hsts: 365d\n      client_cert_header: x-client-cert-subject\n";
    let extra = "    backend_tls: { ca: internal-ca.pem, server_name: app.internal }\n";
    let (site, config) = http_site(&[backend.addr], http, extra, "");
    site.write("internal-ca.pem", &internal.ca.cert_pem());
    let lb = Lb::start(&config).await;
    let got = get(
        &site,
        &lb,
        "/",
        &["--http1.1", "-H", "X-Client-Cert-Subject: CN=forged"],
    )
    .await;
    assert_eq!(got.status, 200, "{got:?}");
    assert!(got.body.contains("backend=secure"), "{}", got.body);
    assert!(
        got.body.contains("version=HTTP/2.0"),
        "auto picks h2 by ALPN: {}",
        got.body
    );
    assert_eq!(
        got.echoed("x-client-cert-subject"),
        None,
        "a client's own header is removed"
    );
    assert_eq!(
        got.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_outlives_the_header_timeout_and_ends_at_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = WebBackend::start("b0").await;
    let http = "      limits:\n        header_timeout: 300ms\n        idle_timeout: 1s\n";
    let (site, config) = http_site(&[backend.addr], http, "", "");
    let lb = Lb::start(&config).await;
    let mut tls = h1_connection(&site, &lb, None).await;
    let request = b"GET /slow/0 HTTP/1.1\r\nHost: app.test\r\n\r\n";
    for round in 0..2 {
        tls.write_all(request).await.expect("send");
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("slept=0") {
            let mut buf = [0u8; 4096];
            let n = tls.read(&mut buf).await.expect("read");
            assert!(n > 0, "round {round}: closed early");
            got.extend_from_slice(&buf[..n]);
        }
        // Idle for twice the header timeout: an idle keep-alive connection is not a slow head.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let idle_since = tokio::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(PATIENCE, tls.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(n, Ok(0) | Err(_)), "closed, not answered: {n:?}");
    assert!(idle_since.elapsed() < Duration::from_secs(2));
    let m = lb.metrics().await;
    assert_eq!(m.value("tlsedge_http_protocol_errors_total", &[]), 0.0);
    lb.wait_metric(
        "tlsedge_connections_closed_total",
        &[("outcome", "idle_timeout")],
        1.0,
    )
    .await;
    lb.stop().await;
}

/// `VmHWM` (peak resident memory) of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_streams_64_mib_in_bounded_memory_and_logs_json_request_lines() {
    use common::process::{Proc, json_field};
    let backend = WebBackend::start("b0").await;
    let (site, config) = http_site(&[backend.addr], "", "", "");
    let proc = Proc::spawn(
        std::process::Command::new(env!("CARGO_BIN_EXE_tlsedge"))
            .env("RUST_LOG", "info")
            .args(["--log-format", "json", "run", "--config"])
            .arg(&config),
    );
    let line = proc.wait_line("accepting TLS connections");
    let addr: SocketAddr = json_field(&line, "listener.addr").parse().expect("addr");
    let before = peak_rss_kib(proc.child.id());
    const LEN: u64 = 64 << 20;
    let file = site.path("upload.bin");
    std::fs::write(&file, vec![7u8; LEN as usize]).expect("write upload");
    let upload = format!("@{}", file.display());
    let ca = site.path("ca.pem");
    let got = curl(
        &ca,
        "app.test",
        addr.port(),
        "/upload",
        &["--http2", "--data-binary", &upload],
    )
    .await;
    assert!(
        got.body.starts_with(&format!("bytes={LEN} ")),
        "{}",
        got.body
    );
    let status = tokio::process::Command::new("curl")
        .args(["-sS", "--http1.1", "-o", "/dev/null", "--cacert"])
        .arg(&ca)
        .args(["--resolve", &format!("app.test:{}:127.0.0.1", addr.port())])
        .arg(format!("https://app.test:{}/bytes/{LEN}", addr.port()))
        .status()
        .await
        .expect("curl");
    assert!(status.success());
    let line = proc.wait_line("\"http.path\":\"/bytes/");
    assert_eq!(json_field(&line, "message"), "request");
    assert_eq!(json_field(&line, "http.method"), "GET");
    assert_eq!(json_field(&line, "http.version"), "HTTP/1.1");
    assert!(
        line.contains(&format!("\"bytes.backend_to_client\":{LEN}")),
        "{line}"
    );
    assert!(line.contains("\"http.status\":200"), "{line}");
    assert!(line.contains("\"tls.host\":\"app.test\""), "{line}");
    assert!(!json_field(&line, "request.id").is_empty());
    let grew = peak_rss_kib(proc.child.id()).saturating_sub(before);
    eprintln!("peak RSS before {before} KiB, grew {grew} KiB over 2 × 64 MiB");
    // Streaming keeps a few buffers per direction; 64 MiB held anywhere would show.
    assert!(
        grew < 16 * 1024,
        "peak RSS grew {grew} KiB while streaming 2 × 64 MiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verified_client_certificate_subject_reaches_the_backend() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = WebBackend::start("b0").await;
    let http = "      client_cert_header: x-client-cert-subject\n";
    let extra = "    client_auth: { ca: ca.pem, mode: required }\n";
    let (site, config) = http_site(&[backend.addr], http, extra, "");
    let lb = Lb::start(&config).await;
    let identity = common::client_identity(&site.ca);
    let mut tls = h1_connection(&site, &lb, Some(identity)).await;
    let request = "GET / HTTP/1.1\r\nHost: app.test\r\nX-Client-Cert-Subject: CN=forged\r\nConnection: close\r\n\r\n";
    tls.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut raw))
        .await
        .expect("answer");
    let got = common::web::parse_response(&String::from_utf8_lossy(&raw)).expect("response");
    let subject = got.echoed("x-client-cert-subject").expect("subject header");
    assert!(subject.contains("client.test"), "{subject}");
    assert!(!subject.contains("forged"), "{subject}");
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_closes_idle_keep_alive_connections_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_backend, site, lb) = one_backend("", "", "").await;
    let mut tls = h1_connection(&site, &lb, None).await;
    tls.write_all(b"GET /slow/0 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .expect("send");
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("slept=0") {
        let mut buf = [0u8; 4096];
        let n = tls.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    // The drain limit is 30 s; `stop` waits at most PATIENCE (10 s): it returns only because
    // the idle keep-alive connection was closed when draining began.
    let started = tokio::time::Instant::now();
    lb.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(PATIENCE, tls.read(&mut buf))
        .await
        .expect("closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
}

/// A backend that answers one request per connection as if keep-alive, then closes it: the
/// pooled connection is found closed at the next checkout and the request goes to a new one,
/// without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_an_idle_connection_costs_no_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                let _ = stream.write_all(answer).await;
                // Closed while idle, without `Connection: close`.
            });
        }
    });
    let (site, config) = http_site(&[addr], "", "", "");
    let lb = Lb::start(&config).await;
    for _ in 0..3 {
        let got = get(&site, &lb, "/", &["--http1.1"]).await;
        assert_eq!(got.status, 200);
        // Time for the backend's close to arrive, so the next request meets a closed pooled
        // connection rather than racing it.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        3,
        "one backend connection each"
    );
    lb.stop().await;
    task.abort();
}
