//! A real Prometheus scraping tlsedge: it counts the handshakes and evaluates every rule.

use super::*;

/// A Prometheus server on loopback scraping one target every second, with alerts.yml loaded;
/// killed on drop.
pub(crate) struct Prometheus {
    addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    async fn start(target: SocketAddr) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - \"{}\"\n\
             scrape_configs:\n  - job_name: tlsedge\n    static_configs:\n      - targets: [\"{target}\"]\n",
            repo("deploy/prometheus/alerts.yml").display()
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
        let addr = free_port();
        let mut prom = Self {
            addr,
            child: spawn_prometheus(dir.path(), addr),
            dir,
        };
        // The port was free a moment ago; another process may have taken it since.
        for _ in 0..3 {
            match prom.ready().await {
                Ok(()) => return prom,
                Err(log) if log.contains("address already in use") => {
                    prom.addr = free_port();
                    prom.child = spawn_prometheus(prom.dir.path(), prom.addr);
                }
                Err(log) => panic!("prometheus did not start:\n{log}"),
            }
        }
        panic!("prometheus found no free port:\n{}", prom.log());
    }

    /// Waits for `/-/ready`; the log if the process exited or took too long.
    async fn ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + PROM_PATIENCE;
        while Instant::now() < deadline {
            if self.child.try_wait().expect("wait").is_some() {
                return Err(self.log());
            }
            if let Ok((200, _)) = get(self.addr, "/-/ready").await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("not ready after {PROM_PATIENCE:?}\n{}", self.log()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `data` of a successful API answer, or what went wrong.
    pub(crate) async fn api(&self, path: &str) -> Result<Value, String> {
        let (status, body) = get(self.addr, path).await.map_err(|e| e.to_string())?;
        let answer: Value =
            serde_json::from_str(&body).map_err(|e| format!("HTTP {status}, {e}: {body}"))?;
        if answer["status"] != "success" {
            return Err(format!("HTTP {status}: {body}"));
        }
        Ok(answer["data"].clone())
    }

    /// The result of an instant query.
    pub(crate) async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self
            .api(&format!("/api/v1/query?query={}", encode(promql)))
            .await?;
        match data["result"].as_array() {
            Some(result) => Ok(result.clone()),
            None => Err(format!("not a vector: {data}")),
        }
    }

    /// The value of a query that returns one sample.
    async fn value(&self, promql: &str) -> Result<f64, String> {
        let result = self.query(promql).await?;
        let [sample] = result.as_slice() else {
            return Err(format!("{promql}: {result:?}"));
        };
        let text = sample["value"][1].as_str().unwrap_or_default();
        text.parse().map_err(|e| format!("{promql}: {text:?}: {e}"))
    }
}

fn spawn_prometheus(dir: &Path, addr: SocketAddr) -> Child {
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
    Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("start prometheus")
}

/// A loopback port that was free a moment ago.
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A GET over HTTP/1.0, so that Prometheus (Go) answers without chunked encoding and closes.
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)??;
    let text = String::from_utf8_lossy(&raw);
    let bad = || std::io::Error::from(std::io::ErrorKind::InvalidData);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_owned()))
}

/// Percent-encodes a query parameter.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Polls `check` until it returns `Ok`, for at most [`PROM_PATIENCE`]; panics with its last
/// error.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + PROM_PATIENCE;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(e) if Instant::now() > deadline => {
                panic!("{what}: not after {PROM_PATIENCE:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

impl Prometheus {
    /// Polls the single value of `promql` until `good` holds for it; returns it.
    pub(crate) async fn wait_value(&self, promql: &str, good: impl Fn(f64) -> bool + Copy) -> f64 {
        eventually(promql, || async move {
            let value = self.value(promql).await?;
            if good(value) {
                Ok(value)
            } else {
                Err(format!("is {value}"))
            }
        })
        .await
    }

    /// Every rule loaded, once each has been evaluated without an error.
    async fn healthy_rules(&self) -> Result<BTreeSet<String>, String> {
        let data = self.api("/api/v1/rules").await?;
        let rules: Vec<&Value> = (data["groups"].as_array().into_iter().flatten())
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        let unhealthy: Vec<_> = rules.iter().filter(|r| r["health"] != "ok").collect();
        if !unhealthy.is_empty() {
            return Err(format!("not healthy (yet): {unhealthy:?}"));
        }
        Ok(rules
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect())
    }

    /// The pending and firing alerts as `name host backend state`.
    async fn active_alerts(&self) -> Result<Vec<String>, String> {
        let data = self.api("/api/v1/alerts").await?;
        let alerts = data["alerts"].as_array().into_iter().flatten();
        Ok(alerts
            .map(|a| {
                let label = |k: &str| a["labels"][k].as_str().unwrap_or("-").to_owned();
                let state = a["state"].as_str().unwrap_or("-");
                let (name, host, backend) = (label("alertname"), label("host"), label("backend"));
                format!("{name} {host} {backend} {state}")
            })
            .collect())
    }
}

/// A tlsedge and a Prometheus that has scraped it at least once; `None` (skip) without
/// prometheus.
pub(crate) async fn scraped_edge() -> Option<(Edge, Prometheus)> {
    if !tool("prometheus") {
        return None;
    }
    let edge = Edge::start().await;
    let prom = Prometheus::start(edge.lb.admin).await;
    prom.wait_value("up{job=\"tlsedge\"}", |up| up == 1.0).await;
    Some((edge, prom))
}

#[tokio::test]
async fn prometheus_counts_the_handshakes_and_evaluates_every_rule() {
    let Some((edge, prom)) = scraped_edge().await else {
        return;
    };
    edge.traffic().await;
    let want = HANDSHAKES as f64;
    let total = prom
        .wait_value("sum(tlsedge_handshakes_total)", |n| n == want)
        .await;
    assert_eq!(total, want);

    let prom = &prom;
    let expected = &alert_names();
    eventually(
        "every rule of alerts.yml evaluated healthy",
        || async move {
            match prom.healthy_rules().await? {
                names if &names == expected => Ok(()),
                names => Err(format!("rules {names:?}")),
            }
        },
    )
    .await;

    // On live data: the dead backend, and only it, is a pending alert (its `for` is 2m), with
    // tlsedge's own labels.
    let want = &vec![format!(
        "TlsedgeBackendDown shop.test {} pending",
        edge.dead
    )];
    eventually("only TlsedgeBackendDown is pending", || async move {
        match prom.active_alerts().await? {
            active if &active == want => Ok(()),
            active => Err(format!("active alerts {active:?}")),
        }
    })
    .await;
}
