//! Session resumption: TLS 1.3 tickets, TLS 1.2 session IDs and tickets, across reloads,
//! never across hosts or client-auth policies, across a fleet sharing a ticket key file, and
//! with Python's `ssl` as an outside client.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12Resumption};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, NamedGroup};

use common::{Backend, ClientOpts, Lb, Metrics, Site, ecdsa, hello, host};
use tlsedge::tls::tickets::{rotate_key_file, rotate_key_file_at};

const HANDSHAKES: &str = "tlsedge_handshakes_total";

/// A reload that reacts quickly.
const RELOAD: &str = "reload: { debounce: 100ms, max_delay: 2s, recheck_every: 60s }\n";

/// A client session store that answers lookups for `alias` with what it stored for `target`,
/// to present one host's session to another, and counts the sessions it handed out.
#[derive(Debug)]
struct AliasStore {
    inner: ClientSessionMemoryCache,
    alias: Option<(ServerName<'static>, ServerName<'static>)>,
    offered: AtomicUsize,
}

impl AliasStore {
    fn new(alias: Option<(&str, &str)>) -> Arc<Self> {
        let name = |n: &str| ServerName::try_from(n.to_owned()).expect("server name");
        Arc::new(Self {
            inner: ClientSessionMemoryCache::new(64),
            alias: alias.map(|(from, to)| (name(from), name(to))),
            offered: AtomicUsize::new(0),
        })
    }

    fn map<'a>(&'a self, name: &'a ServerName<'static>) -> &'a ServerName<'static> {
        match &self.alias {
            Some((from, to)) if from == name => to,
            _ => name,
        }
    }

    /// Sessions handed to the client for resumption so far.
    fn offered(&self) -> usize {
        self.offered.load(Ordering::SeqCst)
    }

    fn count<T>(&self, found: Option<T>) -> Option<T> {
        if found.is_some() {
            self.offered.fetch_add(1, Ordering::SeqCst);
        }
        found
    }
}

impl ClientSessionStore for AliasStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.inner.set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner.kx_hint(server_name)
    }

    fn set_tls12_session(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(server_name, value);
    }

    fn tls12_session(
        &self,
        server_name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        let name = server_name.to_owned();
        self.count(self.inner.tls12_session(self.map(&name)))
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.inner.remove_tls12_session(self.map(server_name));
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.inner.insert_tls13_ticket(server_name, value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.count(self.inner.take_tls13_ticket(self.map(server_name)))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// TLS 1.3 tickets.
    Tls13,
    /// TLS 1.2, session IDs only (the client offers no ticket extension).
    Tls12SessionId,
    /// TLS 1.2 tickets.
    Tls12Ticket,
}

const MODES: [Mode; 3] = [Mode::Tls13, Mode::Tls12SessionId, Mode::Tls12Ticket];

/// A resuming client for `mode`, keeping sessions in `store`.
fn client(site: &Site, opts: ClientOpts, mode: Mode, store: &Arc<AliasStore>) -> Arc<ClientConfig> {
    let opts = ClientOpts {
        tls12_only: mode != Mode::Tls13,
        tls13_only: mode == Mode::Tls13,
        ..opts
    };
    let mut config = ClientConfig::clone(&opts.build(&site.ca));
    let store: Arc<dyn ClientSessionStore> = store.clone();
    config.resumption = Resumption::store(store).tls12_resumption(match mode {
        Mode::Tls12SessionId => Tls12Resumption::SessionIdOnly,
        _ => Tls12Resumption::SessionIdOrTickets,
    });
    Arc::new(config)
}

fn resumed(m: &Metrics, host: &str, version: &str) -> f64 {
    m.value(
        HANDSHAKES,
        &[("host", host), ("version", version), ("resumed", "true")],
    )
}

struct Setup {
    site: Site,
    lb: Lb,
    _backends: Vec<Backend>,
}

/// `app.test` and `other.test`, resumption on, in-memory ticket keys.
async fn two_hosts() -> Setup {
    let site = Site::new();
    let app = Backend::start("app").await;
    let other = Backend::start("other").await;
    ecdsa(&site, "app", &["app.test"]);
    ecdsa(&site, "other", &["other.test"]);
    let body = format!(
        "{RELOAD}hosts:\n{}{}",
        host(&["app.test"], &["app"], &[app.addr], ""),
        host(&["other.test"], &["other"], &[other.addr], "")
    );
    let lb = Lb::start(&site.config(&body)).await;
    Setup {
        site,
        lb,
        _backends: vec![app, other],
    }
}

#[tokio::test]
async fn tls13_second_connection_resumes() {
    let s = two_hosts().await;
    let client = ClientOpts {
        resume: true,
        tls13_only: true,
        ..ClientOpts::default()
    }
    .build(&s.site.ca);
    let first = hello(s.lb.addr, "app.test", &client).await.unwrap();
    assert!(!first.resumed);
    assert_eq!(first.version, Some(rustls::ProtocolVersion::TLSv1_3));
    let second = hello(s.lb.addr, "app.test", &client).await.unwrap();
    assert!(second.resumed, "second connection resumes");
    assert_eq!(second.backend, "app");
    let m =
        s.lb.wait_metric(HANDSHAKES, &[("resumed", "true")], 1.0)
            .await;
    assert_eq!(resumed(&m, "app.test", "TLSv1.3"), 1.0);
    assert_eq!(m.value(HANDSHAKES, &[("resumed", "false")]), 1.0);
}

#[tokio::test]
async fn tls12_session_ids_and_tickets_resume() {
    let s = two_hosts().await;
    for mode in [Mode::Tls12SessionId, Mode::Tls12Ticket] {
        let store = AliasStore::new(None);
        let client = client(&s.site, ClientOpts::default(), mode, &store);
        let first = hello(s.lb.addr, "app.test", &client).await.unwrap();
        assert!(!first.resumed, "{mode:?}");
        assert_eq!(first.version, Some(rustls::ProtocolVersion::TLSv1_2));
        let second = hello(s.lb.addr, "app.test", &client).await.unwrap();
        assert!(second.resumed, "{mode:?}: second connection resumes");
        assert!(store.offered() >= 1, "{mode:?}");
    }
    let m =
        s.lb.wait_metric(HANDSHAKES, &[("resumed", "true")], 2.0)
            .await;
    assert_eq!(resumed(&m, "app.test", "TLSv1.2"), 2.0);
}

/// Two servers sharing one ticket key file: tickets are stateless (they resume on the other
/// server), session IDs live in one process's cache (they do not).
#[tokio::test]
async fn tls12_tickets_resume_across_a_fleet_and_session_ids_do_not() {
    let f = fleet().await;
    for (mode, resumes_on_b) in [(Mode::Tls12Ticket, true), (Mode::Tls12SessionId, false)] {
        let store = AliasStore::new(None);
        let client = client(&f.site, ClientOpts::default(), mode, &store);
        assert!(!hello(f.a.addr, "app.test", &client).await.unwrap().resumed);
        let on_b = hello(f.b.addr, "app.test", &client).await.unwrap();
        assert_eq!(on_b.resumed, resumes_on_b, "{mode:?} on the other server");
        assert_eq!(store.offered(), 1, "{mode:?}: a session was offered");
    }
}

#[tokio::test]
async fn sessions_issued_before_a_reload_resume_after_it() {
    let s = two_hosts().await;
    let plain = ClientOpts::default().build(&s.site.ca);
    let stores: Vec<_> = MODES.iter().map(|_| AliasStore::new(None)).collect();
    let clients: Vec<_> = MODES
        .iter()
        .zip(&stores)
        .map(|(mode, store)| client(&s.site, ClientOpts::default(), *mode, store))
        .collect();
    for (mode, client) in MODES.iter().zip(&clients) {
        assert!(
            !hello(s.lb.addr, "app.test", client).await.unwrap().resumed,
            "{mode:?}"
        );
    }
    // A new generation: another host's certificate rotates.
    let generation = s.lb.generation();
    let new = ecdsa(&s.site, "other", &["other.test"]);
    common::files::wait_serial(
        s.lb.addr,
        "other.test",
        &plain,
        &new.serial,
        Duration::from_secs(2),
    )
    .await;
    assert!(s.lb.generation() > generation);
    for ((mode, client), store) in MODES.iter().zip(&clients).zip(&stores) {
        let reply = hello(s.lb.addr, "app.test", client).await.unwrap();
        assert!(reply.resumed, "{mode:?}: resumes after the reload");
        assert_eq!(store.offered(), 1, "{mode:?}");
    }
}

#[tokio::test]
async fn a_session_from_one_host_is_refused_by_another() {
    let s = two_hosts().await;
    for mode in MODES {
        let store = AliasStore::new(Some(("other.test", "app.test")));
        let client = client(&s.site, ClientOpts::default(), mode, &store);
        assert!(!hello(s.lb.addr, "app.test", &client).await.unwrap().resumed);
        // Control: the store does resume app.test's own session.
        assert!(
            hello(s.lb.addr, "app.test", &client).await.unwrap().resumed,
            "{mode:?}"
        );
        let offered = store.offered();
        let reply = hello(s.lb.addr, "other.test", &client)
            .await
            .expect("a full handshake, not an error");
        assert_eq!(
            store.offered(),
            offered + 1,
            "{mode:?}: app.test's session was offered"
        );
        assert!(!reply.resumed, "{mode:?}: other.test must not resume it");
        assert_eq!(reply.backend, "other");
    }
    let m = s.lb.metrics().await;
    assert_eq!(
        m.value(HANDSHAKES, &[("host", "other.test"), ("resumed", "true")]),
        0.0
    );
    // The refused tickets are counted by reason (session IDs are simply not found).
    let rejected = m.value("tlsedge_ticket_rejections_total", &[("reason", "invalid")]);
    assert!(rejected >= 1.0, "{rejected}");
}

#[tokio::test]
async fn client_auth_hosts_never_resume_sessions_from_hosts_without_it() {
    let site = Site::new();
    let app = Backend::start("app").await;
    let mtls = Backend::start("mtls").await;
    ecdsa(&site, "app", &["app.test"]);
    ecdsa(&site, "mtls", &["mtls.test"]);
    let auth = "    client_auth: { ca: ca.pem, mode: required }\n";
    let body = |app_auth: &str| {
        format!(
            "{RELOAD}hosts:\n{}{}",
            host(&["app.test"], &["app"], &[app.addr], app_auth),
            host(&["mtls.test"], &["mtls"], &[mtls.addr], auth)
        )
    };
    let lb = Lb::start(&site.config(&body(""))).await;
    let identity = common::client_identity(&site.ca);
    let with_cert = ClientOpts {
        identity: Some(identity),
        ..ClientOpts::default()
    };

    // The client-auth host works with a client certificate, and resumes its own sessions
    // (tickets; it keeps no session IDs).
    for mode in MODES {
        let store = AliasStore::new(None);
        let client = client(&site, with_cert.clone(), mode, &store);
        let first = hello(lb.addr, "mtls.test", &client).await.unwrap();
        assert_eq!(first.backend, "mtls");
        assert!(!first.resumed);
        let second = hello(lb.addr, "mtls.test", &client).await.unwrap();
        assert_eq!(
            second.resumed,
            mode != Mode::Tls12SessionId,
            "{mode:?} on the client-auth host"
        );
    }
    // Without a certificate it is refused.
    let no_cert = ClientOpts::default().build(&site.ca);
    assert!(hello(lb.addr, "mtls.test", &no_cert).await.is_err());

    // A session from the host without client auth, presented to the client-auth host.
    for mode in MODES {
        let store = AliasStore::new(Some(("mtls.test", "app.test")));
        let client = client(&site, with_cert.clone(), mode, &store);
        assert!(!hello(lb.addr, "app.test", &client).await.unwrap().resumed);
        let reply = hello(lb.addr, "mtls.test", &client)
            .await
            .expect("a full handshake with the client certificate");
        assert_eq!(
            store.offered(),
            1,
            "{mode:?}: app.test's session was offered"
        );
        assert!(!reply.resumed, "{mode:?}: must not resume");
        assert_eq!(reply.backend, "mtls");
    }

    // The same name gains client auth by a reload: its earlier sessions do not resume.
    let stores: Vec<_> = MODES.iter().map(|_| AliasStore::new(None)).collect();
    let clients: Vec<_> = MODES
        .iter()
        .zip(&stores)
        .map(|(mode, store)| client(&site, with_cert.clone(), *mode, store))
        .collect();
    for client in &clients {
        assert!(!hello(lb.addr, "app.test", client).await.unwrap().resumed);
    }
    let generation = lb.generation();
    site.config(&body(auth));
    common::wait_for(
        "client auth added to app.test",
        Duration::from_secs(2),
        || async { lb.generation() > generation },
    )
    .await;
    let err = hello(lb.addr, "app.test", &no_cert).await.unwrap_err();
    eprintln!("app.test without a client certificate after the reload: {err}");
    for ((mode, client), store) in MODES.iter().zip(&clients).zip(&stores) {
        let reply = hello(lb.addr, "app.test", client)
            .await
            .expect("a full handshake with the client certificate");
        assert!(
            store.offered() >= 1,
            "{mode:?}: the old session was offered"
        );
        assert!(
            !reply.resumed,
            "{mode:?}: a session from before client auth must not resume"
        );
    }
    let m = lb.metrics().await;
    assert_eq!(
        m.value(
            HANDSHAKES,
            &[
                ("host", "mtls.test"),
                ("version", "TLSv1.2"),
                ("resumed", "true")
            ]
        ),
        1.0,
        "only the client-auth host's own TLS 1.2 ticket resumed there"
    );
}

struct Fleet {
    site: Site,
    a: Lb,
    b: Lb,
    _backend: Backend,
}

/// Two servers started from the same config, sharing `keys.txt`.
async fn fleet() -> Fleet {
    let site = Site::new();
    let backend = Backend::start("app").await;
    ecdsa(&site, "app", &["app.test"]);
    rotate_key_file(&site.path("keys.txt"), 3).expect("key file");
    let body = format!(
        "{RELOAD}sessions: {{ ticket_key_file: keys.txt }}\nhosts:\n{}",
        host(&["app.test"], &["app"], &[backend.addr], "")
    );
    let config = site.config(&body);
    let a = Lb::start(&config).await;
    let b = Lb::start(&config).await;
    Fleet {
        site,
        a,
        b,
        _backend: backend,
    }
}

/// Rotates the fleet's key file keeping only the new key, and waits until both servers have
/// loaded it.
async fn rotate_fleet_keys(f: &Fleet) {
    let (ga, gb) = (f.a.generation(), f.b.generation());
    rotate_key_file(&f.site.path("keys.txt"), 1).expect("rotate");
    common::wait_for(
        "both servers reload the key file",
        Duration::from_secs(2),
        || async { f.a.generation() > ga && f.b.generation() > gb },
    )
    .await;
    for lb in [&f.a, &f.b] {
        let m = lb.metrics().await;
        assert_eq!(m.value("tlsedge_ticket_keys_loaded", &[]), 1.0);
    }
}

#[tokio::test]
async fn fleet_shares_tickets_until_their_key_is_rotated_out() {
    let f = fleet().await;
    for lb in [&f.a, &f.b] {
        let m = lb.metrics().await;
        assert_eq!(m.value("tlsedge_ticket_keys_loaded", &[]), 1.0);
    }
    let store = AliasStore::new(None);
    let client = client(&f.site, ClientOpts::default(), Mode::Tls13, &store);
    assert!(!hello(f.a.addr, "app.test", &client).await.unwrap().resumed);
    assert!(
        hello(f.b.addr, "app.test", &client).await.unwrap().resumed,
        "a ticket from A resumes on B"
    );
    assert_eq!(store.offered(), 1);
    f.b.wait_metric(HANDSHAKES, &[("resumed", "true")], 1.0)
        .await;

    // keep=1 twice: the key that sealed every ticket the client holds is gone.
    rotate_fleet_keys(&f).await;
    rotate_fleet_keys(&f).await;
    let reply = hello(f.a.addr, "app.test", &client)
        .await
        .expect("a full handshake, not an error");
    assert_eq!(store.offered(), 2, "the old ticket was offered");
    assert!(
        !reply.resumed,
        "a ticket sealed with a removed key must not resume"
    );
    let m = f.a.metrics().await;
    let unknown = m.value(
        "tlsedge_ticket_rejections_total",
        &[("reason", "unknown_key")],
    );
    assert_eq!(unknown, 1.0);
    // The new ticket (new key) resumes on the other server again.
    assert!(hello(f.b.addr, "app.test", &client).await.unwrap().resumed);
    assert_eq!(store.offered(), 3);
}

const PYTHON_CLIENT: &str = r#"
import socket, ssl, sys
cafile, port, name, version = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)
pinned = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
ctx.minimum_version = pinned
ctx.maximum_version = pinned

def once(session=None):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=name, session=session) as tls:
            # Reading application data also processes the TLS 1.3 ticket sent before it.
            line = tls.makefile("rb").readline().decode().strip()
            return tls.session, tls.session_reused, line, tls.version()

first, reused1, line1, v1 = once()
second, reused2, line2, v2 = once(first)
print(f"first_reused={reused1} second_reused={reused2} lines={line1},{line2} version={v1},{v2}")
"#;

#[tokio::test]
async fn python_ssl_resumes() {
    if !common::have("python3") {
        eprintln!("skipped: python3 not installed");
        return;
    }
    let s = two_hosts().await;
    for (version, label) in [("1.3", "TLSv1.3"), ("1.2", "TLSv1.2")] {
        let out = tokio::process::Command::new("python3")
            .arg("-c")
            .arg(PYTHON_CLIENT)
            .arg(s.site.path("ca.pem"))
            .arg(s.lb.addr.port().to_string())
            .arg("app.test")
            .arg(version)
            .stdin(std::process::Stdio::null())
            .output();
        let out = tokio::time::timeout(Duration::from_secs(20), out)
            .await
            .expect("python finishes")
            .expect("run python3");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("python ssl, TLS {version}: {stdout}");
        assert!(out.status.success(), "python3 failed: {stderr}");
        assert!(stdout.contains("first_reused=False"), "{stdout}");
        assert!(stdout.contains("second_reused=True"), "{stdout}{stderr}");
        assert!(stdout.contains("lines=app,app"), "{stdout}");
        assert!(
            stdout.contains(&format!("version={label},{label}")),
            "{stdout}"
        );
        s.lb.wait_metric(
            HANDSHAKES,
            &[
                ("host", "app.test"),
                ("version", label),
                ("resumed", "true"),
            ],
            1.0,
        )
        .await;
    }
}

/// README: "a session never resumes on another host, even if a reload moves a name".
#[tokio::test]
async fn a_name_moved_to_another_host_by_a_reload_does_not_resume_there() {
    let site = Site::new();
    let one = Backend::start("one").await;
    let two = Backend::start("two").await;
    ecdsa(&site, "one", &["one.test", "app.test"]);
    ecdsa(&site, "two", &["two.test", "app.test"]);
    let body = |one_names: &[&str], two_names: &[&str]| {
        format!(
            "{RELOAD}hosts:\n{}{}",
            host(one_names, &["one"], &[one.addr], ""),
            host(two_names, &["two"], &[two.addr], "")
        )
    };
    let lb = Lb::start(&site.config(&body(&["one.test", "app.test"], &["two.test"]))).await;
    let stores: Vec<_> = MODES.iter().map(|_| AliasStore::new(None)).collect();
    let clients: Vec<_> = MODES
        .iter()
        .zip(&stores)
        .map(|(mode, store)| client(&site, ClientOpts::default(), *mode, store))
        .collect();
    for client in &clients {
        let reply = hello(lb.addr, "app.test", client).await.unwrap();
        assert_eq!(reply.backend, "one");
        assert!(!reply.resumed);
    }
    let generation = lb.generation();
    site.config(&body(&["one.test"], &["two.test", "app.test"]));
    common::wait_for("app.test moved", Duration::from_secs(2), || async {
        lb.generation() > generation
    })
    .await;
    for ((mode, client), store) in MODES.iter().zip(&clients).zip(&stores) {
        let reply = hello(lb.addr, "app.test", client).await.unwrap();
        assert_eq!(reply.backend, "two", "{mode:?}");
        assert!(
            store.offered() >= 1,
            "{mode:?}: the old session was offered"
        );
        assert!(
            !reply.resumed,
            "{mode:?}: a session from host one.test resumed on host two.test"
        );
    }
}

/// A rotation period below the old fixed one-minute check is honoured: with
/// `ticket_rotate_every: 2s`, each key is replaced within 2.2 s of its creation (the check runs
/// every tenth of the period).
#[tokio::test]
async fn a_short_ticket_rotation_period_is_honoured() {
    let site = Site::new();
    let app = Backend::start("app").await;
    ecdsa(&site, "app", &["app.test"]);
    let body = format!(
        "sessions: {{ ticket_rotate_every: 2s, ticket_lifetime: 10m }}\nhosts:\n{}",
        host(&["app.test"], &["app"], &[app.addr], "")
    );
    let lb = Lb::start(&site.config(&body)).await;
    let started = tokio::time::Instant::now();
    // Bounded: three rotations take about 6 s; 10 s is the limit.
    loop {
        let keys = lb.metrics().await.value("tlsedge_ticket_keys_loaded", &[]);
        if keys >= 4.0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{keys} keys");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    eprintln!("three rotations after {took:?}");
    // Three periods of at most 2.2 s each, plus start-up and the scrapes' polling.
    assert!(took < Duration::from_millis(3 * 2_200 + 500), "{took:?}");
}

/// A fresh client gets a ticket from `from`, then presents it to `to`: whether it resumed.
async fn ticket_from_resumes_on(site: &Site, from: &Lb, to: &Lb) -> bool {
    let store = AliasStore::new(None);
    let client = client(site, ClientOpts::default(), Mode::Tls13, &store);
    hello(from.addr, "app.test", &client).await.expect("first");
    hello(to.addr, "app.test", &client)
        .await
        .expect("second")
        .resumed
}

/// The fleet problem staging solves: instance A reads the rotated file at once, instance B
/// (no watcher) only when told. A must not seal tickets with the new key before its grace has
/// passed, or B, which does not have it yet, rejects them as `unknown_key`.
#[tokio::test]
async fn a_rotation_read_at_different_moments_rejects_no_ticket() {
    let site = Site::new();
    let backend = Backend::start("app").await;
    ecdsa(&site, "app", &["app.test"]);
    let keys = site.path("keys.txt");
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    rotate_key_file_at(&keys, 3, hour_ago).expect("key file");
    // A 2 s grace keeps the test short; it waits for it to pass once, by polling.
    let sessions = "sessions: { ticket_key_file: keys.txt, ticket_key_grace: 2s }\n";
    let hosts = host(&["app.test"], &["app"], &[backend.addr], "");
    let write = |name: &str, reload: &str| {
        site.write(
            name,
            &format!("listeners: [\"127.0.0.1:0\"]\nadmin: {{ bind: \"127.0.0.1:0\" }}\n{reload}{sessions}hosts:\n{hosts}"),
        );
        site.path(name)
    };
    let a = Lb::start(&write("a.yaml", RELOAD)).await;
    let b = Lb::start(&write("b.yaml", "reload: { watch: false }\n")).await;
    assert!(ticket_from_resumes_on(&site, &a, &b).await);

    rotate_key_file(&keys, 3).expect("rotate");
    a.wait_metric("tlsedge_ticket_keys_loaded", &[], 2.0).await;
    let m = a.metrics().await;
    assert_eq!(m.value("tlsedge_ticket_keys_staged", &[]), 1.0);
    assert_eq!(
        b.metrics().await.value("tlsedge_ticket_keys_loaded", &[]),
        1.0
    );
    // B has not read the file: A's new tickets must still be sealed with the old key.
    for _ in 0..5 {
        assert!(
            ticket_from_resumes_on(&site, &a, &b).await,
            "A → B during the grace"
        );
        assert!(
            ticket_from_resumes_on(&site, &b, &a).await,
            "B → A during the grace"
        );
    }

    assert!(b.trigger.reload());
    b.wait_metric("tlsedge_ticket_keys_loaded", &[], 2.0).await;
    // Both show the age written in the file, though they read it at different moments.
    let age = |m: &Metrics| m.value("tlsedge_ticket_key_age_seconds", &[]);
    let (age_a, age_b) = (age(&a.metrics().await), age(&b.metrics().await));
    assert!((age_a - age_b).abs() <= 1.0, "{age_a} vs {age_b}");
    assert!(age_a < 60.0, "the newest key is the one just made: {age_a}");

    common::wait_for("the grace passes", Duration::from_secs(5), || async {
        a.metrics().await.value("tlsedge_ticket_keys_staged", &[]) == 0.0
            && b.metrics().await.value("tlsedge_ticket_keys_staged", &[]) == 0.0
    })
    .await;
    assert!(
        ticket_from_resumes_on(&site, &a, &b).await,
        "A → B after the grace"
    );
    assert!(
        ticket_from_resumes_on(&site, &b, &a).await,
        "B → A after the grace"
    );
    for lb in [&a, &b] {
        let m = lb.metrics().await;
        let unknown = [("reason", "unknown_key")];
        assert_eq!(m.value("tlsedge_ticket_rejections_total", &unknown), 0.0);
        assert_eq!(
            m.value("tlsedge_ticket_key_rotation_period_seconds", &[]),
            21600.0
        );
    }
}
