//! Abuse a real `tlsedge` process must survive, each bounded in count and time, on loopback,
//! asserting figures: silent, truncated and trickling clients closed at the handshake deadline
//! while a good client is served and the fd count returns to its baseline; thousands of garbage
//! connections in bounded memory, counted by reason; running out of file descriptors without
//! blaming the backends, without spinning, and recovering as soon as fds are free; a storm of
//! certificate replacements under 200 handshaking clients failing none.
//! (`max_connections` exhausted by idle TLS connections is in tests/relay.rs.)

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::{Proc, json_field};
use common::{Backend, ClientOpts, Metrics, Site, connect, ecdsa, host, http_get, read_reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_tlsedge");

/// A running `tlsedge` process and its addresses.
struct Edge {
    proc: Proc,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Edge {
    /// Runs `tlsedge run --config config`, through `sh -c "ulimit -n N; exec ..."` when
    /// `fd_limit` is given.
    fn start(config: &std::path::Path, fd_limit: Option<u32>) -> Self {
        let mut cmd = match fd_limit {
            None => Command::new(BIN),
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.args([
                    "-c",
                    &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
                    BIN,
                ]);
                sh
            }
        };
        let proc = Proc::spawn(
            cmd.env("RUST_LOG", "info")
                .args(["--log-format", "json", "run", "--config"])
                .arg(config),
        );
        let line = proc.wait_line("accepting TLS connections");
        let addr = json_field(&line, "listener.addr").parse().expect("addr");
        let line = proc.wait_line("serving /metrics");
        let admin = json_field(&line, "admin.addr").parse().expect("admin addr");
        Self { proc, addr, admin }
    }

    fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    async fn metrics(&self) -> Metrics {
        let (status, body) = http_get(self.admin, "/metrics").await;
        assert_eq!(status, 200);
        Metrics(body)
    }

    /// Open file descriptors of the process.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(Iterator::count)
            .unwrap_or(0)
    }

    /// Resident memory, KiB.
    fn rss_kib(&self) -> u64 {
        proc_status(self.pid(), "VmRSS:")
    }

    /// CPU time used so far (user + system).
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name (which is in parentheses): utime is the 12th, stime 13th.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<u64> = rest.split(' ').filter_map(|f| f.parse().ok()).collect();
        let ticks = fields[10] + fields[11];
        Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
    }
}

fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Polls `check` every 20 ms for up to `limit`; returns how long it took.
async fn within<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// The first bytes of a real TLS 1.3 ClientHello for `app.test`, cut short.
fn truncated_hello() -> Vec<u8> {
    // A record header announcing 512 bytes, then a handshake header and a few bytes: the
    // server waits for the rest.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    hello.extend_from_slice(&[0x42; 32]);
    hello
}

/// One site with `app.test` and the given top-level settings.
async fn site(top: &str) -> (Site, Backend, std::path::PathBuf) {
    let site = Site::new();
    let backend = Backend::start("app").await;
    ecdsa(&site, "app", &["app.test"]);
    let body = format!(
        "{top}hosts:\n{}",
        host(&["app.test"], &["app"], &[backend.addr], "")
    );
    let config = site.config(&body);
    (site, backend, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_are_closed_at_the_deadline_while_good_clients_are_served() {
    let (site, _backend, config) = site("timeouts: { handshake: 2s }\n").await;
    let edge = Edge::start(&config, None);
    let client = ClientOpts::default().build(&site.ca);
    let mut warm = connect(edge.addr, "app.test", &client).await.unwrap();
    read_reply(&mut warm).await.unwrap();
    drop(warm);
    within("warm-up connection closed", common::PATIENCE, || async {
        edge.metrics()
            .await
            .value("tlsedge_connections_active", &[])
            == 0.0
    })
    .await;
    let baseline = edge.fds();
    let started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..500 {
        stalled.push(TcpStream::connect(edge.addr).await.unwrap());
    }
    for _ in 0..50 {
        let mut s = TcpStream::connect(edge.addr).await.unwrap();
        s.write_all(&truncated_hello()).await.unwrap();
        stalled.push(s);
    }
    // Tricklers: one byte of a ClientHello per second, for as long as they are let.
    let trickled = truncated_hello();
    let mut tricklers = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(edge.addr).await.unwrap();
        let bytes = trickled.clone();
        tricklers.push(tokio::spawn(async move {
            let opened = Instant::now();
            let mut bytes = bytes.into_iter();
            let mut buf = [0_u8; 64];
            // Bounded: the hello is 43 bytes, so at most 43 s; the server cuts it at 2 s.
            loop {
                tokio::select! {
                    read = s.read(&mut buf) => if matches!(read, Ok(0) | Err(_)) { break },
                    () = tokio::time::sleep(Duration::from_secs(1)) => match bytes.next() {
                        Some(b) => { let _ = s.write_all(&[b]).await; }
                        None => break,
                    },
                }
            }
            opened.elapsed()
        }));
    }
    // Meanwhile a good client keeps being served.
    let mut served = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        let mut tls = connect(edge.addr, "app.test", &client).await.unwrap();
        read_reply(&mut tls).await.unwrap();
        served += 1;
    }
    // Each stalled connection is closed by the server (EOF or reset) at 2 s ± 1 s.
    let mut closed_after = Vec::new();
    for mut s in stalled {
        let mut buf = [0_u8; 64];
        let r = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(r.is_ok(), "a stalled connection was not closed");
        closed_after.push(started.elapsed());
    }
    let mut trickle_after = Vec::new();
    for t in tricklers {
        trickle_after.push(t.await.unwrap());
    }
    let last = *closed_after.iter().max().unwrap();
    let last_trickler = *trickle_after.iter().max().unwrap();
    eprintln!(
        "570 stalled: {served} good handshakes meanwhile; stalled closed by {last:?}, tricklers by {last_trickler:?}"
    );
    assert!(served >= 10, "only {served} good handshakes in 1.5 s");
    assert!(last < Duration::from_secs(4), "{last:?}");
    assert!(
        trickle_after
            .iter()
            .all(|t| *t >= Duration::from_secs(1) && *t < Duration::from_secs(3)),
        "{trickle_after:?}"
    );
    // Counted as each connection task ends, a moment after the client sees the close.
    within(
        "570 handshake timeouts counted",
        common::PATIENCE,
        || async {
            let m = edge.metrics().await;
            m.value("tlsedge_handshake_failures_total", &[("reason", "timeout")]) >= 570.0
        },
    )
    .await;
    let took = within("fds back to baseline", common::PATIENCE, || async {
        edge.fds() <= baseline
    })
    .await;
    eprintln!("fds: baseline {baseline}, back to it {took:?} after the last close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_garbage_connections_cost_no_memory_and_are_counted() {
    let (site, _backend, config) = site("timeouts: { handshake: 2s }\n").await;
    let edge = Edge::start(&config, None);
    let client = ClientOpts::default().build(&site.ca);
    // Warm up allocator pools and thread caches with real traffic first.
    for _ in 0..200 {
        let mut tls = connect(edge.addr, "app.test", &client).await.unwrap();
        read_reply(&mut tls).await.unwrap();
    }
    let before = edge.rss_kib();
    let started = Instant::now();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    const TOTAL: usize = 10_000;
    const PARALLEL: usize = 50;
    let mut done = 0;
    while done < TOTAL {
        let mut batch = Vec::new();
        for _ in 0..PARALLEL {
            // Random bytes, sometimes behind a valid record header, 1 to 600 bytes long.
            let len = (next() % 600 + 1) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if next() % 2 == 0 {
                bytes.splice(0..0, [0x16, 0x03, 0x01, (len >> 8) as u8, len as u8]);
            }
            let addr = edge.addr;
            batch.push(tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let _ = s.write_all(&bytes).await;
                let _ = s.shutdown().await;
                let mut sink = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
            }));
        }
        for b in batch {
            b.await.unwrap();
        }
        done += PARALLEL;
        assert!(started.elapsed() < Duration::from_secs(120), "too slow");
    }
    let took = started.elapsed();
    let m = within(
        "all garbage connections closed",
        common::PATIENCE,
        || async {
            edge.metrics()
                .await
                .value("tlsedge_connections_active", &[])
                == 0.0
        },
    )
    .await;
    let _ = m;
    let after = edge.rss_kib();
    let m = edge.metrics().await;
    let reasons: Vec<(String, f64)> = [
        "protocol",
        "timeout",
        "io",
        "no_sni",
        "unknown_sni",
        "incompatible",
    ]
    .iter()
    .map(|r| {
        let n = m.value("tlsedge_handshake_failures_total", &[("reason", r)]);
        ((*r).to_owned(), n)
    })
    .filter(|(_, n)| *n > 0.0)
    .collect();
    let failures = m.value("tlsedge_handshake_failures_total", &[]);
    eprintln!(
        "{TOTAL} garbage connections in {took:?}: RSS {before} -> {after} KiB ({:+} KiB); failures by reason {reasons:?}",
        after as i64 - before as i64
    );
    assert!(failures >= TOTAL as f64, "{failures} failures counted");
    assert!(
        after < before + 4 * 1024,
        "RSS grew {} KiB",
        after as i64 - before as i64
    );
    assert_eq!(m.value("tlsedge_panics_total", &[]), 0.0);
    // Still serving.
    let mut tls = connect(edge.addr, "app.test", &client).await.unwrap();
    read_reply(&mut tls).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_fds_blames_no_backend_spins_no_cpu_and_recovers_at_once() {
    let site = Site::new();
    let b1 = Backend::start("b1").await;
    let b2 = Backend::start("b2").await;
    ecdsa(&site, "app", &["app.test"]);
    let body = format!(
        "timeouts: {{ handshake: 3s, backend_cooldown: 10s }}\nhosts:\n{}",
        host(&["app.test"], &["app"], &[b1.addr, b2.addr], "")
    );
    let config = site.config(&body);
    let edge = Edge::start(&config, Some(64));
    let client = ClientOpts::default().build(&site.ca);
    // Fill the table: proxied connections (two fds each) with a bare TCP connection (one fd)
    // now and then, so that both the accept and the backend connect run out at some point.
    let mut held = Vec::new();
    let mut bare = Vec::new();
    let mut refused = 0;
    for i in 0..60 {
        if i % 3 == 0 {
            bare.push(TcpStream::connect(edge.addr).await.unwrap());
        }
        let attempt = tokio::time::timeout(Duration::from_secs(1), async {
            let mut tls = connect(edge.addr, "app.test", &client).await?;
            read_reply(&mut tls).await?;
            Ok::<_, std::io::Error>(tls)
        })
        .await;
        match attempt {
            Ok(Ok(tls)) => held.push(tls),
            _ => refused += 1,
        }
    }
    assert!(refused > 0, "64 fds were never exhausted");
    // While stuck (fds exhausted, a client waiting in the backlog), the process idles.
    let waiting = TcpStream::connect(edge.addr).await.unwrap();
    let cpu_before = edge.cpu();
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = edge.cpu() - cpu_before;
    let share = used.as_secs_f64() / wall.elapsed().as_secs_f64();
    drop(waiting);
    // Free everything; a fresh client is served within a second or so, by a backend that was
    // never marked down.
    drop(held);
    drop(bare);
    let freed = Instant::now();
    let served = loop {
        let attempt = tokio::time::timeout(Duration::from_millis(500), async {
            let mut tls = connect(edge.addr, "app.test", &client).await?;
            read_reply(&mut tls).await
        })
        .await;
        if matches!(attempt, Ok(Ok(_))) {
            break freed.elapsed();
        }
        assert!(freed.elapsed() < Duration::from_secs(5), "not served again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let m = edge.metrics().await;
    let local = m.value("tlsedge_local_errors_total", &[]);
    let accept = m.value("tlsedge_accept_errors_total", &[]);
    let downs = m
        .value("tlsedge_backend_state_changes_total", &[("state", "down")])
        .abs();
    eprintln!(
        "fd limit 64: {} held, {refused} refused; {local} local errors, {accept} accept errors; CPU while stuck {:.1} %; served again {served:?} after freeing; backends marked down {downs}",
        60 - refused,
        share * 100.0
    );
    assert_eq!(downs, 0.0, "a local error marked a backend down");
    assert!(local + accept > 0.0, "running out of fds was not counted");
    assert!(share < 0.10, "{:.1} % of a core while stuck", share * 100.0);
    assert!(served < Duration::from_millis(1500), "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_storm_under_200_handshaking_clients_fails_no_handshake() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let (site, _backend, config) =
        site("reload: { debounce: 20ms, max_delay: 200ms, recheck_every: 60s }\n").await;
    let edge = Edge::start(&config, None);
    let client = ClientOpts::default().build(&site.ca);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..200 {
        let (stop, ok, failed, client) = (stop.clone(), ok.clone(), failed.clone(), client.clone());
        let addr = edge.addr;
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match connect(addr, "app.test", &client).await {
                    Ok(mut tls) => match read_reply(&mut tls).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    },
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let started = Instant::now();
    for round in 0..50 {
        let new = site
            .ca
            .issue(&["app.test"], tlsedge::pki::KeyKind::Ecdsa)
            .unwrap();
        // The certificate, then its key, each replaced by one rename: the reload between the
        // two keeps the last good pair.
        common::files::write_rename(&site.path("app.pem"), &new.cert_pem);
        common::files::write_rename(&site.path("app.key"), &new.key_pem);
        common::files::wait_serial(
            edge.addr,
            "app.test",
            &client,
            &new.serial,
            Duration::from_secs(5),
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "round {round}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let took = started.elapsed();
    let m = edge.metrics().await;
    let applied = m.value("tlsedge_config_reloads_total", &[("result", "applied")]);
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "50 certificate replacements in {took:?} under 200 clients: {ok} handshakes, {failed} failed, {applied} reloads applied"
    );
    assert_eq!(failed, 0);
    assert!(ok > 200, "{ok} handshakes");
    assert!(applied >= 50.0, "{applied}");
}
