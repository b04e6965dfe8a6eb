//! Hot certificate rotation: every way of replacing a file is picked up within 2 s while
//! established connections keep relaying; broken files keep the old certificate per host;
//! invalid YAML rejects the whole reload; start-time settings keep their running values; bursts
//! are debounced; reloads under load fail no handshake.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustls::ClientConfig;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use common::files::{
    K8sSecret, combined_pem, echo_roundtrip, percentile, vim_save, wait_serial, write_rename,
};
use common::{Backend, ClientOpts, Lb, Site, alert_of, connect, ecdsa, hello, host, read_reply};
use tlsedge::pki::{Issued, KeyKind};

/// How soon a rotated certificate must be served.
const ROTATION: Duration = Duration::from_secs(2);

const RELOADS: &str = "tlsedge_config_reloads_total";
const STALE: &str = "tlsedge_host_certificate_stale";

/// `reload:` settings with a short quiet period, to keep tests fast.
fn reload_settings(debounce_ms: u64) -> String {
    format!("reload: {{ debounce: {debounce_ms}ms, max_delay: 2s, recheck_every: 60s }}\n")
}

/// One `hosts:` entry whose certificate and key are the given paths (relative or absolute).
fn host_files(names: &[&str], cert: &Path, key: &Path, backend: &Backend, extra: &str) -> String {
    let names = names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "  - names: [{names}]\n    certs:\n      - {{ cert: \"{}\", key: \"{}\" }}\n    backends:\n      - {{ address: \"{}\" }}\n{extra}",
        cert.display(),
        key.display(),
        backend.addr
    )
}

fn issue(site: &Site, names: &[&str]) -> Issued {
    site.ca.issue(names, KeyKind::Ecdsa).expect("issue")
}

struct One {
    site: Site,
    lb: Lb,
    _backend: Backend,
    first: Issued,
    client: Arc<ClientConfig>,
}

/// One host `app.test` served from `app.pem` / `app.key`.
async fn one_host(reload: &str, extra: &str) -> One {
    let site = Site::new();
    let backend = Backend::start("app").await;
    let first = ecdsa(&site, "app", &["app.test"]);
    let body = format!(
        "{reload}hosts:\n{}",
        host(&["app.test"], &["app"], &[backend.addr], extra)
    );
    let lb = Lb::start(&site.config(&body)).await;
    let client = ClientOpts::default().build(&site.ca);
    One {
        site,
        lb,
        _backend: backend,
        first,
        client,
    }
}

/// Opens a connection, checks it got `serial`, runs `rotate`, then checks the next handshake
/// presents `new` within [`ROTATION`] and the connection opened before still relays.
async fn check_rotation(
    lb: &Lb,
    client: &Arc<ClientConfig>,
    old: &Issued,
    new: &Issued,
    rotate: impl FnOnce(),
) {
    let mut established = connect(lb.addr, "app.test", client).await.unwrap();
    let reply = read_reply(&mut established).await.unwrap();
    assert_eq!(reply.serial, old.serial);
    echo_roundtrip(&mut established, b"before\n").await.unwrap();
    let generation = lb.generation();
    rotate();
    let took = wait_serial(lb.addr, "app.test", client, &new.serial, ROTATION).await;
    eprintln!("rotation picked up after {took:?}");
    assert!(lb.generation() > generation);
    echo_roundtrip(&mut established, b"after the rotation\n")
        .await
        .expect("a connection opened before the rotation keeps relaying");
}

#[tokio::test]
async fn overwrite_in_place_is_picked_up() {
    let s = one_host(&reload_settings(100), "").await;
    let new = issue(&s.site, &["app.test"]);
    check_rotation(&s.lb, &s.client, &s.first, &new, || {
        s.site.write_pair("app", &new)
    })
    .await;
}

#[tokio::test]
async fn write_then_rename_is_picked_up() {
    let s = one_host(&reload_settings(100), "").await;
    let new = issue(&s.site, &["app.test"]);
    check_rotation(&s.lb, &s.client, &s.first, &new, || {
        write_rename(&s.site.path("app.key"), &new.key_pem);
        write_rename(&s.site.path("app.pem"), &new.cert_pem);
    })
    .await;
}

struct K8s {
    site: Site,
    lb: Lb,
    _backend: Backend,
    secret: K8sSecret,
    first: Issued,
    client: Arc<ClientConfig>,
}

/// One host `app.test` served from a Kubernetes Secret volume in `secret/`.
async fn k8s_host(reload: &str, extra: &str) -> K8s {
    let site = Site::new();
    let backend = Backend::start("app").await;
    let first = issue(&site, &["app.test"]);
    let secret = K8sSecret::new(&site.path("secret"), &first);
    let body = format!(
        "{reload}hosts:\n{}",
        host_files(
            &["app.test"],
            Path::new("secret/tls.crt"),
            Path::new("secret/tls.key"),
            &backend,
            extra
        )
    );
    let lb = Lb::start(&site.config(&body)).await;
    let client = ClientOpts::default().build(&site.ca);
    K8s {
        site,
        lb,
        _backend: backend,
        secret,
        first,
        client,
    }
}

#[tokio::test]
async fn kubernetes_secret_symlink_swap_is_picked_up() {
    let mut k = k8s_host(&reload_settings(100), "").await;
    let new = issue(&k.site, &["app.test"]);
    let secret = &mut k.secret;
    check_rotation(&k.lb, &k.client, &k.first, &new, || secret.swap(&new)).await;
    // The old timestamped directory is gone; only the new one and the links remain.
    let entries = std::fs::read_dir(&k.secret.dir).unwrap().count();
    assert_eq!(
        entries, 4,
        "..data, tls.crt, tls.key and one timestamped dir"
    );
}

#[tokio::test]
async fn ten_kubernetes_swaps_in_a_row_are_each_picked_up() {
    let mut k = k8s_host(&reload_settings(100), "").await;
    let mut previous = k.first.serial.clone();
    for round in 0..10 {
        let new = issue(&k.site, &["app.test"]);
        assert_ne!(new.serial, previous);
        k.secret.swap(&new);
        let took = wait_serial(k.lb.addr, "app.test", &k.client, &new.serial, ROTATION).await;
        eprintln!("swap {round}: picked up after {took:?}");
        previous = new.serial;
    }
}

#[tokio::test]
async fn five_vim_saves_are_each_picked_up() {
    let site = Site::new();
    let backend = Backend::start("app").await;
    let first = issue(&site, &["app.test"]);
    // Certificate and key in one file, so saving that one file is a complete rotation.
    site.write("app.pem", &combined_pem(&first));
    common::set_mode(&site.path("app.pem"), 0o600);
    let body = format!(
        "{}hosts:\n{}",
        reload_settings(100),
        host_files(
            &["app.test"],
            Path::new("app.pem"),
            Path::new("app.pem"),
            &backend,
            ""
        )
    );
    let lb = Lb::start(&site.config(&body)).await;
    let client = ClientOpts::default().build(&site.ca);
    assert_eq!(
        hello(lb.addr, "app.test", &client).await.unwrap().serial,
        first.serial
    );
    let applied = lb.metrics().await.value(RELOADS, &[("result", "applied")]);
    let generation = lb.generation();
    for save in 1..=5 {
        let new = issue(&site, &["app.test"]);
        vim_save(&site.path("app.pem"), &combined_pem(&new));
        let took = wait_serial(lb.addr, "app.test", &client, &new.serial, ROTATION).await;
        eprintln!("vim save {save}: picked up after {took:?}");
        assert!(
            !site.path("app.pem~").exists() && !site.path("4913").exists(),
            "vim leftovers"
        );
    }
    assert_eq!(lb.generation(), generation + 5, "one reload per save");
    let m = lb.metrics().await;
    assert_eq!(m.value(RELOADS, &[("result", "applied")]), applied + 5.0);
    assert_eq!(m.value(RELOADS, &[("result", "partial")]), 0.0);
}

const GARBAGE_PEM: &str =
    "-----BEGIN CERTIFICATE-----\nthis is not base64 at all!\n-----END CERTIFICATE-----\n";

#[tokio::test]
async fn broken_files_keep_the_old_certificate_while_other_hosts_rotate() {
    let site = Site::new();
    let a_backend = Backend::start("a").await;
    let b_backend = Backend::start("b").await;
    let a_first = ecdsa(&site, "a", &["a.test"]);
    ecdsa(&site, "b", &["b.test"]);
    let body = format!(
        "{}hosts:\n{}{}",
        reload_settings(100),
        host(&["a.test"], &["a"], &[a_backend.addr], ""),
        host(&["b.test"], &["b"], &[b_backend.addr], "")
    );
    let lb = Lb::start(&site.config(&body)).await;
    let client = ClientOpts::default().build(&site.ca);

    let partial = |m: &common::Metrics| m.value(RELOADS, &[("result", "partial")]);
    type Break = Box<dyn Fn(&Site)>;
    let breaks: [(&str, Break); 3] = [
        (
            "garbage PEM",
            Box::new(|site: &Site| site.write("a.pem", GARBAGE_PEM)),
        ),
        (
            "mismatched key",
            Box::new(|site: &Site| {
                let cert = issue(site, &["a.test"]);
                let other = issue(site, &["a.test"]);
                site.write("a.pem", &cert.cert_pem);
                site.write("a.key", &other.key_pem);
            }),
        ),
        (
            "missing file",
            Box::new(|site: &Site| {
                let pair = issue(site, &["a.test"]);
                site.write("a.key", &pair.key_pem);
                std::fs::remove_file(site.path("a.pem")).unwrap();
            }),
        ),
    ];
    for (what, break_a) in &breaks {
        let before = partial(&lb.metrics().await);
        // Both in the same quiet period: one reload sees both.
        break_a(&site);
        let b_new = ecdsa(&site, "b", &["b.test"]);
        wait_serial(lb.addr, "b.test", &client, &b_new.serial, ROTATION).await;
        common::wait_for(
            &format!("{what}: partial reload counted"),
            ROTATION,
            || async { partial(&lb.metrics().await) > before },
        )
        .await;
        let a = hello(lb.addr, "a.test", &client).await.unwrap();
        assert_eq!(
            a.serial, a_first.serial,
            "{what}: a.test keeps its old cert"
        );
        assert_eq!(a.backend, "a");
        let m = lb.metrics().await;
        assert_eq!(m.value(STALE, &[("host", "a.test")]), 1.0, "{what}");
        assert_eq!(m.value(STALE, &[("host", "b.test")]), 0.0, "{what}");
    }
    // A later good write is picked up and the host is no longer stale.
    let a_new = ecdsa(&site, "a", &["a.test"]);
    wait_serial(lb.addr, "a.test", &client, &a_new.serial, ROTATION).await;
    lb.wait_metric(STALE, &[("host", "a.test")], 0.0).await;
}

#[tokio::test]
async fn invalid_yaml_rejects_the_whole_reload() {
    let s = one_host(&reload_settings(100), "").await;
    let good_yaml = std::fs::read_to_string(s.site.path("tlsedge.yaml")).unwrap();
    let m = s.lb.metrics().await;
    let rejected = m.value(RELOADS, &[("result", "rejected")]);
    let applied = m.value(RELOADS, &[("result", "applied")]);
    let generation = s.lb.generation();
    // A new certificate together with a config that does not parse: nothing applies.
    let new = issue(&s.site, &["app.test"]);
    s.site.write_pair("app", &new);
    s.site.write(
        "tlsedge.yaml",
        &format!("{good_yaml}  - names: [\"broken\"\n"),
    );
    s.lb.wait_metric(RELOADS, &[("result", "rejected")], rejected + 1.0)
        .await;
    assert_eq!(s.lb.generation(), generation, "no new snapshot");
    let reply = hello(s.lb.addr, "app.test", &s.client).await.unwrap();
    assert_eq!(
        reply.serial, s.first.serial,
        "old configuration keeps serving"
    );
    assert_eq!(reply.backend, "app");
    // Nothing changes on disk: the retries 1 s and 2 s later must not count new rejections.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let m = s.lb.metrics().await;
    assert_eq!(
        m.value(RELOADS, &[("result", "rejected")]),
        rejected + 1.0,
        "one bad write, one rejected reload"
    );
    assert_eq!(m.value(RELOADS, &[("result", "applied")]), applied);
    assert_eq!(s.lb.generation(), generation);
    // The rechecks said `unchanged`; the gauge still says the files are not served.
    assert_eq!(m.value("tlsedge_config_last_reload_successful", &[]), 0.0);
    // Fixing the file applies everything, the new certificate included.
    s.site.write("tlsedge.yaml", &good_yaml);
    wait_serial(s.lb.addr, "app.test", &s.client, &new.serial, ROTATION).await;
    assert_eq!(s.lb.generation(), generation + 1);
    s.lb.wait_metric(RELOADS, &[("result", "applied")], applied + 1.0)
        .await;
    let m = s.lb.metrics().await;
    assert_eq!(m.value("tlsedge_config_last_reload_successful", &[]), 1.0);
}

/// One handshake of a client loop.
struct Sample {
    /// When the handshake finished (or failed).
    at: Instant,
    /// TCP connect plus TLS handshake.
    latency: Duration,
    /// The serial presented, or the error.
    result: Result<String, String>,
}

/// `tasks` client loops of new TLS connections (full handshakes) to `name` until stopped.
struct ClientLoop {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Sample>>>,
}

impl ClientLoop {
    fn start(lb: &Lb, name: &str, client: &Arc<ClientConfig>, tasks: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..tasks)
            .map(|_| {
                let (stop, client, name, addr) = (
                    Arc::clone(&stop),
                    Arc::clone(client),
                    name.to_owned(),
                    lb.addr,
                );
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    // Bounded in count as well as by the stop flag.
                    while !stop.load(Ordering::SeqCst) && samples.len() < 20_000 {
                        let started = Instant::now();
                        let result = match connect(addr, &name, &client).await {
                            Ok(mut tls) => {
                                let latency = started.elapsed();
                                let reply = read_reply(&mut tls).await;
                                drop(tls);
                                (latency, reply.map(|r| r.serial).map_err(|e| e.to_string()))
                            }
                            Err(e) => (started.elapsed(), Err(e.to_string())),
                        };
                        samples.push(Sample {
                            at: Instant::now(),
                            latency: result.0,
                            result: result.1,
                        });
                    }
                    samples
                })
            })
            .collect();
        Self { stop, tasks }
    }

    async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.expect("client loop"));
        }
        all.sort_by_key(|s| s.at);
        all
    }
}

fn failures(samples: &[Sample]) -> Vec<&String> {
    samples
        .iter()
        .filter_map(|s| s.result.as_ref().err())
        .collect()
}

#[tokio::test]
async fn certificate_then_key_is_one_reload_and_fails_no_handshake() {
    let s = one_host(&reload_settings(500), "").await;
    let generation = s.lb.generation();
    let load = ClientLoop::start(&s.lb, "app.test", &s.client, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let new = issue(&s.site, &["app.test"]);
    s.site.write("app.pem", &new.cert_pem);
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.site.write("app.key", &new.key_pem);
    wait_serial(s.lb.addr, "app.test", &s.client, &new.serial, ROTATION).await;
    // Keep the loop running a little after the switch.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let samples = load.finish().await;
    assert!(
        samples.len() > 5,
        "client loop ran ({} handshakes)",
        samples.len()
    );
    assert_eq!(
        failures(&samples),
        Vec::<&String>::new(),
        "failed handshakes"
    );
    for sample in &samples {
        let serial = sample.result.as_deref().unwrap();
        assert!(
            serial == s.first.serial || serial == new.serial,
            "only the old or the new certificate is ever served, got {serial}"
        );
    }
    assert_eq!(
        s.lb.generation(),
        generation + 1,
        "exactly one new generation"
    );
    let m = s.lb.metrics().await;
    assert_eq!(m.value(RELOADS, &[("result", "partial")]), 0.0);
    assert_eq!(m.value(STALE, &[("host", "app.test")]), 0.0);
}

#[tokio::test]
async fn a_burst_of_writes_is_one_or_two_reloads_after_it_ends() {
    let s = one_host(
        "reload: { debounce: 500ms, max_delay: 2s, recheck_every: 60s }\n",
        "",
    )
    .await;
    let generation = s.lb.generation();
    let pairs: Vec<Issued> = (0..50).map(|_| issue(&s.site, &["app.test"])).collect();
    let started = Instant::now();
    // 100 writes (50 pairs, certificate then key) within about 200 ms.
    for pair in &pairs {
        s.site.write("app.pem", &pair.cert_pem);
        s.site.write("app.key", &pair.key_pem);
        assert_eq!(
            s.lb.generation(),
            generation,
            "reloaded during the burst ({:?} in)",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let burst = started.elapsed();
    assert_eq!(s.lb.generation(), generation, "reloaded during the burst");
    let last = pairs.last().unwrap();
    let took = wait_serial(
        s.lb.addr,
        "app.test",
        &s.client,
        &last.serial,
        Duration::from_secs(3),
    )
    .await;
    eprintln!("burst of 100 writes took {burst:?}; last pair served {took:?} after it");
    // Anything still queued lands within one more quiet period.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let reloads = s.lb.generation() - generation;
    assert!(
        (1..=2).contains(&reloads),
        "{reloads} reloads for one burst"
    );
    assert_eq!(
        s.lb.metrics()
            .await
            .value(RELOADS, &[("result", "partial")]),
        0.0,
        "no reload saw a half-written pair"
    );
}

#[tokio::test]
async fn hosts_are_added_and_removed_by_editing_the_config() {
    let site = Site::new();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    for name in ["a", "b", "c"] {
        ecdsa(&site, name, &[&format!("{name}.test")]);
    }
    let config = |hosts: &[(&str, &Backend)]| {
        let mut body = format!("{}hosts:\n", reload_settings(100));
        for (name, backend) in hosts {
            body.push_str(&host(
                &[&format!("{name}.test")],
                &[name],
                &[backend.addr],
                "",
            ));
        }
        body
    };
    let lb = Lb::start(&site.config(&config(&[("a", &a), ("b", &b)]))).await;
    let client = ClientOpts::default().build(&site.ca);
    assert_eq!(
        hello(lb.addr, "b.test", &client).await.unwrap().backend,
        "b"
    );
    let err = hello(lb.addr, "c.test", &client).await.unwrap_err();
    assert_eq!(
        alert_of(&err),
        Some(rustls::AlertDescription::UnrecognisedName)
    );

    site.config(&config(&[("a", &a), ("c", &c)]));
    common::wait_for("c.test served", ROTATION, || async {
        hello(lb.addr, "c.test", &client).await.is_ok()
    })
    .await;
    assert_eq!(
        hello(lb.addr, "c.test", &client).await.unwrap().backend,
        "c"
    );
    assert_eq!(
        hello(lb.addr, "a.test", &client).await.unwrap().backend,
        "a"
    );
    let err = hello(lb.addr, "b.test", &client).await.unwrap_err();
    assert_eq!(
        alert_of(&err),
        Some(rustls::AlertDescription::UnrecognisedName),
        "{err}"
    );
    let m = lb.metrics().await;
    // The removed host's state gauges are gone (event counters keep their history).
    assert!(m.samples(STALE, &[("host", "b.test")]).is_empty());
    assert_eq!(m.samples(STALE, &[("host", "c.test")]), vec![0.0]);
}

/// A configuration of 100,000 hosts is about 30 MiB, more than a certificate file may be: its
/// change check hashed "too large to read" instead of its text, so no edit ever applied.
#[tokio::test]
async fn an_edit_to_a_config_larger_than_a_certificate_file_may_be_applies() {
    let site = Site::new();
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    ecdsa(&site, "a", &["a.test"]);
    // Comments stand in for the hosts: the size is what matters here.
    let padding = format!("# {}\n", "x".repeat(1 << 20)).repeat(17);
    let config = |backend: &Backend| {
        format!(
            "{}hosts:\n{}{padding}",
            reload_settings(100),
            host(&["a.test"], &["a"], &[backend.addr], "")
        )
    };
    let lb = Lb::start(&site.config(&config(&a))).await;
    let client = ClientOpts::default().build(&site.ca);
    assert_eq!(
        hello(lb.addr, "a.test", &client).await.unwrap().backend,
        "a"
    );
    let generation = lb.generation();
    site.config(&config(&b));
    common::wait_for("the edit applied", ROTATION, || async {
        lb.generation() > generation
    })
    .await;
    assert_eq!(
        hello(lb.addr, "a.test", &client).await.unwrap().backend,
        "b"
    );
}

#[tokio::test]
async fn start_time_settings_are_kept_while_the_rest_of_the_edit_applies() {
    let site = Site::new();
    let a = Backend::start("a").await;
    let c = Backend::start("c").await;
    for name in ["a", "c"] {
        ecdsa(&site, name, &[&format!("{name}.test")]);
    }
    let a_host = host(&["a.test"], &["a"], &[a.addr], "");
    let lb = Lb::start(&site.config(&format!("{}hosts:\n{a_host}", reload_settings(100)))).await;
    let client = ClientOpts::default().build(&site.ca);
    let running = lb.runtime.snapshot.load().config.start.clone();
    let m = lb.metrics().await;
    let partial = m.value(RELOADS, &[("result", "partial")]);
    let applied = m.value(RELOADS, &[("result", "applied")]);
    // One edit: two start-time settings (reload.debounce, limits.max_connections) and a new host.
    site.config(&format!(
        "{}limits: {{ max_connections: 5 }}\nhosts:\n{a_host}{}",
        reload_settings(300),
        host(&["c.test"], &["c"], &[c.addr], "")
    ));
    common::wait_for("c.test served", ROTATION, || async {
        hello(lb.addr, "c.test", &client).await.is_ok()
    })
    .await;
    assert_eq!(
        hello(lb.addr, "c.test", &client).await.unwrap().backend,
        "c"
    );
    let m = lb
        .wait_metric(RELOADS, &[("result", "partial")], partial + 1.0)
        .await;
    assert_eq!(m.value(RELOADS, &[("result", "applied")]), applied);
    let served = lb.runtime.snapshot.load();
    assert_eq!(
        served.config.start, running,
        "the running start-time settings stay"
    );
    assert_eq!(
        served.config.start.reload.debounce,
        Duration::from_millis(100)
    );
    assert_eq!(served.config.start.max_connections, 10_000);
    assert_eq!(served.config.hosts.len(), 2);
}

#[tokio::test]
async fn rotation_under_load_fails_no_handshake() {
    let mut k = k8s_host(&reload_settings(100), "    resumption: false\n").await;
    // Baseline: the same loop without rotation.
    let load = ClientLoop::start(&k.lb, "app.test", &k.client, 2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let baseline = load.finish().await;
    assert_eq!(failures(&baseline), Vec::<&String>::new());

    let load = ClientLoop::start(&k.lb, "app.test", &k.client, 2);
    let started = Instant::now();
    let mut rotations = Vec::new();
    for i in 0..10_u32 {
        // Ten rotations spread over 3 s.
        tokio::time::sleep_until(started + Duration::from_millis(150 + 300 * u64::from(i))).await;
        let new = issue(&k.site, &["app.test"]);
        k.secret.swap(&new);
        rotations.push((Instant::now(), new.serial));
    }
    tokio::time::sleep_until(started + Duration::from_secs(3)).await;
    let during = load.finish().await;
    let failed = failures(&during);
    assert_eq!(
        failed,
        Vec::<&String>::new(),
        "failed handshakes during rotation"
    );
    let last = &rotations.last().unwrap().1;
    wait_serial(k.lb.addr, "app.test", &k.client, last, ROTATION).await;

    let mut delays = Vec::new();
    for (written, serial) in &rotations {
        if let Some(first) = during
            .iter()
            .find(|s| s.at > *written && s.result.as_deref() == Ok(serial.as_str()))
        {
            delays.push(first.at - *written);
        }
    }
    let p99 = |samples: &[Sample]| {
        let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        percentile(&mut latencies, 99.0)
    };
    let p50 = |samples: &[Sample]| {
        let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        percentile(&mut latencies, 50.0)
    };
    let seen = delays.len();
    eprintln!(
        "FIGURES reload under load: baseline {} handshakes, p50 {:?}, p99 {:?}; \
         with 10 rotations in 3 s: {} handshakes, {} failed, p50 {:?}, p99 {:?}; \
         rotations seen by the loop {seen}/10, rotation delay (write -> first new-serial handshake) \
         min {:?} median {:?} max {:?}",
        baseline.len(),
        p50(&baseline),
        p99(&baseline),
        during.len(),
        failed.len(),
        p50(&during),
        p99(&during),
        delays.iter().min().copied().unwrap_or_default(),
        percentile(&mut delays.clone(), 50.0),
        delays.iter().max().copied().unwrap_or_default(),
    );
    assert!(during.len() > 20, "the client loop ran");
}

#[tokio::test]
async fn without_watching_only_a_trigger_reloads() {
    let s = one_host(
        "reload: { watch: false, debounce: 100ms, max_delay: 2s, recheck_every: 60s }\n",
        "",
    )
    .await;
    let generation = s.lb.generation();
    let new = issue(&s.site, &["app.test"]);
    s.site.write_pair("app", &new);
    // Several debounce periods: a watcher would have reloaded by now.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        hello(s.lb.addr, "app.test", &s.client)
            .await
            .unwrap()
            .serial,
        s.first.serial
    );
    assert_eq!(s.lb.generation(), generation);
    assert!(s.lb.trigger.reload());
    wait_serial(s.lb.addr, "app.test", &s.client, &new.serial, ROTATION).await;
    assert_eq!(s.lb.generation(), generation + 1);
}

#[tokio::test]
async fn a_broken_client_ca_keeps_mutual_tls_on() {
    let one = one_host(
        &reload_settings(50),
        "    client_auth: { ca: ca.pem, mode: required }\n",
    )
    .await;
    let with_cert = ClientOpts {
        identity: Some(common::client_identity(&one.site.ca)),
        ..ClientOpts::default()
    }
    .build(&one.site.ca);
    hello(one.lb.addr, "app.test", &with_cert).await.unwrap();
    assert!(hello(one.lb.addr, "app.test", &one.client).await.is_err());

    // The CA file breaks: the host keeps its whole TLS side, client verification included.
    one.site.write("ca.pem", "not a certificate\n");
    common::wait_for("reload noticed the broken CA", common::PATIENCE, || async {
        one.lb.metrics().await.value(STALE, &[("host", "app.test")]) == 1.0
    })
    .await;
    let refused = hello(one.lb.addr, "app.test", &one.client).await;
    assert!(
        refused.is_err(),
        "a client without a certificate is still refused"
    );
    hello(one.lb.addr, "app.test", &with_cert)
        .await
        .expect("a verified client still gets through");
}

/// A file written continuously beside the config (`tlsedge run > tlsedge.log` in the config's
/// directory) is not one tlsedge reads: its events must not hold rotations back until
/// `max_delay`. With a 5 s `max_delay`, each swap must still be served within [`ROTATION`].
#[tokio::test]
async fn a_log_file_written_beside_the_config_does_not_delay_rotations() {
    let reload = "reload: { debounce: 200ms, max_delay: 5s, recheck_every: 60s }\n";
    let mut k = k8s_host(reload, "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let log = k.site.path("tlsedge.log");
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            use std::io::Write as _;
            let mut file = std::fs::File::create(&log).unwrap();
            // Bounded: at most 60 s of lines, one every 20 ms.
            for n in 0..3000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                writeln!(file, "log line {n}").unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut took_all = Vec::new();
    for _ in 0..5 {
        let new = issue(&k.site, &["app.test"]);
        k.secret.swap(&new);
        took_all.push(wait_serial(k.lb.addr, "app.test", &k.client, &new.serial, ROTATION).await);
    }
    // The config file itself, rewritten in place beside the log, is still noticed.
    let generation = k.lb.generation();
    let config = std::fs::read_to_string(k.site.path("tlsedge.yaml")).unwrap();
    std::fs::write(k.site.path("tlsedge.yaml"), format!("{config}\n# edited\n")).unwrap();
    let started = Instant::now();
    while k.lb.generation() == generation {
        assert!(started.elapsed() < ROTATION, "config edit not reloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    took_all.push(started.elapsed());
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    eprintln!("picked up after {took_all:?} with a log written beside the config");
}
