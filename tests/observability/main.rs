//! Dashboards and alerts against the real programs: `deploy/prometheus/alerts.yml` passes
//! `promtool check rules` and its unit tests, tlsedge's `/metrics` page passes
//! `promtool check metrics`, a real Prometheus scraping a real tlsedge counts known handshakes,
//! evaluates every rule healthy and sees a dead backend as exactly one pending alert, every
//! query of `deploy/grafana/tlsedge.json` runs on that Prometheus, and every metric name the
//! rules and the dashboard use exists (so a renamed metric fails here, not in production).
//!
//! promtool and prometheus come from the Debian package `prometheus`. Without them a test
//! prints why it skips; with `CI` set it fails instead.

#[path = "../common/mod.rs"]
mod common;

mod dashboard;
mod metrics;
mod prometheus;
mod rules;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::future::Future;
use std::io::{Read, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use common::web::WebBackend;
use common::{Backend, ClientOpts, Lb, Metrics, PATIENCE, Site, ecdsa, hello, host};

/// Completed handshakes each test makes.
const HANDSHAKES: usize = 7;
/// How long Prometheus may take to start, scrape and evaluate (it scrapes every second).
const PROM_PATIENCE: Duration = Duration::from_secs(30);
/// How long one promtool run may take.
const TOOL_PATIENCE: Duration = Duration::from_secs(60);
/// Grafana's variables and what a query is checked with in their place.
const VARIABLES: &[(&str, &str)] = &[
    ("$__rate_interval", "1m"),
    ("$__interval", "15s"),
    ("$__range", "1h"),
    ("$instance", ".*"),
    ("$host", ".*"),
];

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Whether `program` is installed. Outside CI a missing one skips the test (with a line
/// saying so); in CI it fails it.
fn tool(program: &str) -> bool {
    if common::have(program) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{program} is not installed (Debian package `prometheus`) and CI is set"
    );
    eprintln!("skipping: {program} is not installed (apt-get install prometheus)");
    false
}

/// Runs `program args` in the repository, feeding it `stdin`, killed after [`TOOL_PATIENCE`].
fn run(program: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(repo(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    let input = child.stdin.take().expect("stdin");
    let text = stdin.to_owned();
    let writer = std::thread::spawn(move || {
        let mut input = input;
        let _ = input.write_all(text.as_bytes());
    });
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = pipe.read_to_end(&mut out);
            out
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + TOOL_PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{program} {args:?} still running after {TOOL_PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Runs promtool and asserts it succeeded, showing what it said if not.
fn promtool(args: &[&str], stdin: &str) -> String {
    let out = run("promtool", args, stdin);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {args:?}: {}\n{text}",
        out.status
    );
    text
}

fn yaml(rel: &str) -> serde_norway::Value {
    serde_norway::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The alerting rules of alerts.yml.
fn alert_rules() -> Vec<serde_norway::Value> {
    let rules = yaml("deploy/prometheus/alerts.yml");
    let groups = rules["groups"].as_sequence().expect("groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter().cloned())
        .filter(|r| r.get("alert").is_some())
        .collect()
}

fn alert_names() -> BTreeSet<String> {
    alert_rules()
        .iter()
        .map(|r| r["alert"].as_str().expect("alert name").to_owned())
        .collect()
}

/// A tlsedge with a tcp-mode host, `shop.test`, served by a live backend and a dead one that
/// its health checks keep marked down, and an http-mode host, `app.test`.
struct Edge {
    site: Site,
    lb: Lb,
    /// The dead backend's address, its `backend` label.
    dead: String,
    _live: Backend,
    _web: WebBackend,
    /// Bound, never listening: connects to it are refused and nobody else can take the port.
    _dead: TcpSocket,
}

impl Edge {
    async fn start() -> Self {
        let site = Site::new();
        let live = Backend::start("live").await;
        let web = WebBackend::start("web").await;
        let dead_socket = TcpSocket::new_v4().expect("socket");
        dead_socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind");
        let dead = dead_socket.local_addr().expect("addr");
        ecdsa(&site, "shop", &["shop.test"]);
        ecdsa(&site, "app", &["app.test"]);
        let health = "    health_check: { interval: 100ms, timeout: 200ms, fall: 1, rise: 1 }\n";
        let body = format!(
            "hosts:\n{}{}",
            host(&["shop.test"], &["shop"], &[live.addr, dead], health),
            host(&["app.test"], &["app"], &[web.addr], "    mode: http\n")
        );
        let lb = Lb::start(&site.config(&body)).await;
        Self {
            site,
            lb,
            dead: dead.to_string(),
            _live: live,
            _web: web,
            _dead: dead_socket,
        }
    }

    /// [`HANDSHAKES`] completed handshakes (one of them for an HTTP request) and one refused
    /// (unknown name); returns the scrape that shows them all.
    async fn traffic(&self) -> Metrics {
        let client = ClientOpts::default().build(&self.site.ca);
        for _ in 1..HANDSHAKES {
            let reply = hello(self.lb.addr, "shop.test", &client).await.unwrap();
            assert_eq!(reply.backend, "live");
        }
        self.http_request().await;
        assert!(hello(self.lb.addr, "nobody.test", &client).await.is_err());
        self.lb
            .wait_metric("tlsedge_handshakes_total", &[], HANDSHAKES as f64)
            .await;
        self.lb
            .wait_metric("tlsedge_http_requests_total", &[("code", "200")], 1.0)
            .await;
        self.lb
            .wait_metric(
                "tlsedge_handshake_failures_total",
                &[("reason", "unknown_sni")],
                1.0,
            )
            .await
    }

    /// One HTTP/1.1 GET to `app.test`, answered 200 by its backend.
    async fn http_request(&self) {
        let client = ClientOpts {
            alpn: vec!["http/1.1"],
            ..ClientOpts::default()
        }
        .build(&self.site.ca);
        let mut tls = common::connect(self.lb.addr, "app.test", &client)
            .await
            .expect("TLS handshake");
        let request = "GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
        tls.write_all(request.as_bytes()).await.expect("send");
        let mut answer = Vec::new();
        // A close without close_notify is an error here, after the whole answer.
        let _ = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

/// Every `tlsedge_*` word in `text`.
fn metric_words(text: &str) -> BTreeSet<String> {
    let mut words = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("tlsedge_") {
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + word.len()..];
        words.insert(word);
    }
    words
}

/// The metric names on a scraped page: every sample's and every `# TYPE` line's.
fn page_names(page: &Metrics) -> BTreeSet<String> {
    page.0
        .lines()
        .filter_map(|line| match line.strip_prefix("# TYPE ") {
            Some(typed) => typed.split_whitespace().next(),
            None if line.starts_with('#') => None,
            None => line.split(['{', ' ']).next(),
        })
        .map(str::to_owned)
        .collect()
}
