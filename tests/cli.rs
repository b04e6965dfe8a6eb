//! The `tlsedge` binary as operators run it: `check` and `run` on a broken config, graceful
//! SIGTERM with a connection open, and the demo reached with curl and `openssl s_client`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::process::{Proc, json_field};
use common::{Backend, ClientOpts, Site, connect, ecdsa, host, read_reply};
use tlsedge::pki::KeyKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_tlsedge");

/// A config with one problem of each kind, in three hosts.
fn broken_site() -> (Site, std::path::PathBuf) {
    let site = Site::new();
    ecdsa(&site, "good", &["good.test"]);
    ecdsa(&site, "narrow", &["narrow.test"]);
    let other = site.ca.issue(&["keys.test"], KeyKind::Ecdsa).unwrap();
    ecdsa(&site, "keys", &["keys.test"]);
    site.write("keys.key", &other.key_pem); // a key from another certificate
    let body = format!(
        "hosts:\n{}{}{}{}",
        host(
            &["good.test"],
            &["good"],
            &["127.0.0.1:9".parse().unwrap()],
            ""
        ),
        host(
            &["narrow.test", "wide.test"],
            &["narrow"],
            &["127.0.0.1:9".parse().unwrap()],
            ""
        ),
        host(
            &["keys.test"],
            &["keys", "missing"],
            &["127.0.0.1:9".parse().unwrap()],
            ""
        ),
        host(
            &["good.test"],
            &["good"],
            &["127.0.0.1:9".parse().unwrap()],
            ""
        ),
    )
    .replacen("127.0.0.1:9", "not-an-address", 1);
    let path = site.config(&body);
    (site, path)
}

/// Runs `tlsedge COMMAND --config PATH` to completion.
fn tlsedge(command: &str, path: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .args([command, "--config"])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn check_lists_every_problem_with_file_host_and_field() {
    let (_site, path) = broken_site();
    let out = tlsedge("check", &path);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let file = path.display().to_string();
    let expect = [
        ("hosts[0] (good.test)", "backends[0]", "not-an-address"),
        (
            "hosts[1] (narrow.test)",
            "certs[0]",
            "does not cover host name wide.test",
        ),
        (
            "hosts[2] (keys.test)",
            "certs[0]",
            "does not match certificate",
        ),
        ("hosts[2] (keys.test)", "certs[1]", "missing.pem"),
        ("hosts[3] (good.test)", "names", "good.test"),
    ];
    for (host, field, what) in expect {
        assert!(
            text.lines().any(|l| l.contains(&file)
                && l.contains(host)
                && l.contains(field)
                && l.contains(what)),
            "no line with {host} / {field} / {what} in:\n{text}"
        );
    }
    assert_eq!(
        text.lines().filter(|l| l.contains("error")).count(),
        5,
        "{text}"
    );
}

#[test]
fn check_reports_a_mistyped_key() {
    let site = Site::new();
    let path = site.config("hosts: []\ntimeouts: { handshak: 5s }\n");
    let out = tlsedge("check", &path);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("handshak"), "{text}");
}

#[test]
fn check_reports_out_of_range_numbers_and_durations_without_panicking() {
    let site = Site::new();
    ecdsa(&site, "app", &["app.test"]);
    let body = format!(
        "timeouts: {{ handshake: 100000000000y }}\nlimits: {{ max_connections: 100000000000 }}\n\
         reload: {{ debounce: 100000000000y }}\nhosts:\n{}",
        host(
            &["app.test"],
            &["app"],
            &["127.0.0.1:9".parse().unwrap()],
            "    health_check: { interval: 100000000000y }\n"
        )
    );
    let path = site.config(&body);
    let out = tlsedge("check", &path);
    assert_eq!(out.status.code(), Some(1));
    let (text, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!err.contains("panicked"), "{err}");
    let file = path.display().to_string();
    for field in [
        "timeouts.handshake",
        "limits.max_connections",
        "reload.debounce",
        "hosts[0] (app.test): health_check.interval",
    ] {
        assert!(
            text.lines().any(|l| l.contains(&file)
                && l.contains(field)
                && l.contains("is more than the maximum")),
            "no line for {field} in:\n{text}"
        );
    }
}

#[test]
fn run_refuses_a_broken_config_with_exit_2() {
    let (_site, path) = broken_site();
    let out = tlsedge("run", &path);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("does not match certificate"), "{text}");
    assert!(text.contains("refusing to start"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_connections_finish_then_exits_0() {
    sigterm_drains(&[]).await;
}

/// An explicit worker count: the same life cycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_serves_and_drains_the_same_way() {
    sigterm_drains(&["--workers", "1"]).await;
}

#[test]
fn zero_workers_is_refused() {
    let out = Command::new(BIN)
        .args(["run", "--workers", "0", "--config", "/nonexistent.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--workers"), "{stderr}");
}

/// Starts `tlsedge run` with `args`, holds a connection open through SIGTERM and checks that
/// it keeps working while the listener closes, then that the process exits 0.
async fn sigterm_drains(args: &[&str]) {
    let site = Site::new();
    let backend = Backend::start("b").await;
    ecdsa(&site, "app", &["app.test"]);
    let body = format!(
        "timeouts: {{ drain: 20s }}\nhosts:\n{}",
        host(&["app.test"], &["app"], &[backend.addr], "")
    );
    let config = site.config(&body);
    let mut proc = Proc::spawn(
        Command::new(BIN)
            .args(["--log-format", "json", "run"])
            .args(args)
            .arg("--config")
            .arg(&config),
    );
    let line = proc.wait_line("accepting TLS connections");
    let addr: std::net::SocketAddr = json_field(&line, "listener.addr").parse().unwrap();
    let client = ClientOpts::default().build(&site.ca);
    let mut tls = connect(addr, "app.test", &client).await.unwrap();
    read_reply(&mut tls).await.unwrap();

    proc.signal("-TERM");
    proc.wait_line("draining");
    // New connections are no longer accepted…
    common::wait_for("listener closed", common::PATIENCE, || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    // …while the open one keeps working until the client is done.
    tokio::time::sleep(Duration::from_millis(300)).await;
    tls.write_all(b"still here").await.unwrap();
    let mut echo = [0_u8; 10];
    tls.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"still here");
    assert!(
        proc.child.try_wait().unwrap().is_none(),
        "exited while draining"
    );
    tls.shutdown().await.unwrap();
    // One log line per connection at close, with stable field names. (The "listener closed"
    // probe above may itself have been accepted just before the listener closed: its refusal
    // line comes first then, so wait for the proxied connection's own line.)
    let closed = proc.wait_line("\"outcome\":\"ok\"");
    for (field, value) in [
        ("tls.host", "app.test"),
        ("tls.version", "TLSv1.3"),
        ("outcome", "ok"),
        ("backend.addr", &backend.addr.to_string()),
    ] {
        assert_eq!(json_field(&closed, field), value, "{closed}");
    }
    assert!(
        closed.contains("\"bytes.client_to_backend\":10"),
        "{closed}"
    );
    let status = tokio::task::spawn_blocking(move || proc.wait_exit(common::PATIENCE))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_works_with_curl_and_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let proc = Proc::spawn(
        Command::new(BIN)
            .args([
                "demo",
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--dir",
            ])
            .arg(dir.path()),
    );
    let app = proc.wait_line("curl --cacert").trim().to_owned();
    let wildcard = proc.wait_line("curl --cacert").trim().to_owned();
    let openssl = proc.wait_line("openssl s_client").trim().to_owned();
    // Not just "/metrics": the log line "serving /metrics /healthz /readyz" (stderr) can arrive
    // between the printed instructions (stdout), and would be run as the command.
    let metrics = proc.wait_line("curl http://").trim().to_owned();
    if common::have("curl") {
        for line in [&app, &wildcard] {
            let out = shell(line);
            assert!(out.contains("hello from demo backend"), "{line}: {out}");
        }
        let out = shell(&metrics);
        assert!(
            out.contains("tlsedge_handshakes_total{host=\"app.tlsedge.test\""),
            "{out}"
        );
    } else {
        eprintln!("skipped curl: not installed");
    }
    if common::have("openssl") {
        let out = shell(&format!("{openssl} 2>&1"));
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
        assert!(
            out.contains("CN = app.tlsedge.test") || out.contains("CN=app.tlsedge.test"),
            "{out}"
        );
    } else {
        eprintln!("skipped openssl: not installed");
    }
}

/// Runs a command line exactly as printed for the user.
fn shell(line: &str) -> String {
    let out = Command::new("sh").args(["-c", line]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_backs_off_and_recovers() {
    let site = Site::new();
    let backend = Backend::start("b").await;
    ecdsa(&site, "app", &["app.test"]);
    let body = format!(
        "hosts:\n{}",
        host(&["app.test"], &["app"], &[backend.addr], "")
    );
    let config = site.config(&body);
    // A tiny descriptor limit for the server process only.
    let proc = Proc::spawn(
        Command::new("sh")
            .args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\"", BIN])
            .args(["--log-format", "json", "run", "--config"])
            .arg(&config),
    );
    let line = proc.wait_line("accepting TLS connections");
    let addr: std::net::SocketAddr = json_field(&line, "listener.addr").parse().unwrap();
    let line = proc.wait_line("serving /metrics");
    let admin: std::net::SocketAddr = json_field(&line, "admin.addr").parse().unwrap();
    // Plain TCP clients that never send a ClientHello each hold one descriptor until the
    // handshake timeout; past the limit, accept() fails with EMFILE.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    proc.wait_line("accept failed, backing off");
    drop(idle);
    // The process is still alive, recovers, serves again, and counted the failures.
    let client = ClientOpts::default().build(&site.ca);
    common::wait_for("serving again", common::PATIENCE, || async {
        common::hello(addr, "app.test", &client).await.is_ok()
    })
    .await;
    let (status, text) = common::http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    let errors = common::Metrics(text).value("tlsedge_accept_errors_total", &[]);
    assert!(errors >= 1.0, "accept errors {errors}");
}

/// A key readable by others is a warning; one readable by tlsedge's own group is the deliberate
/// setup of certbot's deploy hook and of Kubernetes Secret volumes, and is not; one readable by
/// a group tlsedge is not in is again.
#[test]
fn check_warns_about_keys_others_can_read() {
    use std::os::unix::fs::MetadataExt;
    let site = Site::new();
    ecdsa(&site, "app", &["app.test"]);
    let config = site.config(&format!(
        "hosts:\n{}",
        host(
            &["app.test"],
            &["app"],
            &["127.0.0.1:9".parse().unwrap()],
            ""
        )
    ));
    let key = site.path("app.key");
    let warned = || {
        let out = tlsedge("check", &config);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).contains("app.key is readable by others")
    };
    common::set_mode(&key, 0o600);
    assert!(!warned(), "0600");
    common::set_mode(&key, 0o640);
    let own = std::fs::metadata(&key).unwrap().gid();
    assert!(!warned(), "0640 with tlsedge's own group {own}");
    common::set_mode(&key, 0o604);
    assert!(warned(), "0604");
    // A group this process is not in: only root can give the file to it.
    let foreign = 65_534;
    if own != foreign && std::os::unix::fs::chown(&key, None, Some(foreign)).is_ok() {
        common::set_mode(&key, 0o640);
        assert!(warned(), "0640 with group {foreign}");
    } else {
        println!("skipped the foreign-group case: cannot chgrp (not root)");
    }
}

/// The listening sockets accept into their backlog while a large configuration is still being
/// built; a SIGHUP (or SIGTERM) sent as soon as the port answers must not kill the process by
/// default action. The SIGHUP waits and reloads once the server runs.
#[test]
fn a_sighup_during_start_up_reloads_instead_of_killing() {
    let site = Site::new();
    ecdsa(&site, "wild", &["*.many.test"]);
    let backend: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    // Enough hosts that building the first snapshot takes a while (~0.3 s here) after the
    // sockets are bound.
    let mut hosts = String::new();
    for i in 0..5000 {
        hosts.push_str(&host(
            &[&format!("h{i}.many.test")],
            &["wild"],
            &[backend],
            "",
        ));
    }
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap();
    drop(admin);
    let text = format!(
        "listeners: [\"127.0.0.1:0\"]\nadmin: {{ bind: \"{admin_addr}\" }}\nreload: {{ watch: false }}\nhosts:\n{hosts}"
    );
    site.write("tlsedge.yaml", &text);
    let mut proc = Proc::spawn(
        Command::new(BIN)
            .env("RUST_LOG", "info")
            .args(["--log-format", "json", "run", "--config"])
            .arg(site.path("tlsedge.yaml")),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(admin_addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "admin port never opened"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    proc.signal("-HUP");
    proc.wait_line("SIGHUP: reloading");
    assert!(
        proc.child.try_wait().unwrap().is_none(),
        "tlsedge died from a SIGHUP sent during start-up"
    );
    proc.signal("-TERM");
    assert!(proc.wait_exit(Duration::from_secs(10)).success());
}
