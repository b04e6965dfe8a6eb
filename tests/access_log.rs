//! The access log: every connection ends with one `connection closed` line inside its span,
//! whatever stage it ended in, with the fields the README lists. One test in this binary, since
//! it installs the process-wide log subscriber.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Backend, ClientOpts, Lb, PATIENCE, Site, ecdsa, host, read_reply};
use tokio::io::AsyncWriteExt;

/// Log output captured in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The `connection closed` lines that contain `needle`.
    fn closed_lines(&self, needle: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned();
        text.lines()
            .filter(|l| l.contains("connection closed") && l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    async fn wait_line(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(line) = self.closed_lines(needle).pop() {
                return line;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no close line with {needle}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

fn assert_has(line: &str, parts: &[&str]) {
    for part in parts {
        assert!(line.contains(part), "{part:?} missing in {line}");
    }
}

#[tokio::test]
async fn every_exit_path_has_one_close_line_with_its_fields() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let site = Site::new();
    let backend = Backend::start("b").await;
    ecdsa(&site, "app", &["app.test"]);
    ecdsa(&site, "down", &["down.test"]);
    let dead = common::refused_addr().await;
    let body = format!(
        "hosts:\n{}{}",
        host(&["app.test"], &["app"], &[backend.addr], "    alpn: [h2]\n"),
        host(&["down.test"], &["down"], &[dead], "")
    );
    let lb = Lb::start(&site.config(&body)).await;
    let h2 = ClientOpts {
        alpn: vec!["h2"],
        ..ClientOpts::default()
    }
    .build(&site.ca);
    let plain = ClientOpts::default().build(&site.ca);

    // A relayed connection.
    let mut tls = common::connect(lb.addr, "app.test", &h2).await.unwrap();
    let client_addr = tls.get_ref().0.local_addr().unwrap();
    read_reply(&mut tls).await.unwrap();
    tls.write_all(b"ping").await.unwrap();
    tls.shutdown().await.unwrap();
    drop(tls);
    let line = logs.wait_line("outcome=\"ok\"").await;
    assert_has(
        &line,
        &[
            &format!("client.addr={client_addr}"),
            "tls.sni=\"app.test\"",
            "tls.host=\"app.test\"",
            &format!("backend.addr=\"{}\"", backend.addr),
            "tls.version=\"TLSv1.3\"",
            "tls.cipher=\"TLS13_",
            "tls.resumed=false",
            "tls.alpn=\"h2\"",
            "handshake_ms=",
            "duration_ms=",
            "bytes.client_to_backend=4",
        ],
    );

    // An unknown name: refused at the route stage.
    let err = common::connect(lb.addr, "nobody.test", &plain).await;
    assert!(err.is_err());
    let line = logs.wait_line("reason=\"unknown_sni\"").await;
    assert_has(
        &line,
        &["outcome=\"handshake_failed\"", "tls.sni=\"nobody.test\""],
    );

    // No backend: the handshake completes, the mode fails.
    let _ = common::hello(lb.addr, "down.test", &plain).await;
    let line = logs.wait_line("outcome=\"no_backend\"").await;
    assert_has(
        &line,
        &["tls.host=\"down.test\"", "error=no backend available"],
    );
    assert_eq!(
        logs.closed_lines("tls.host=\"down.test\"").len(),
        1,
        "one line per connection"
    );
}
