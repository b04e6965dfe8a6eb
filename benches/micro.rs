//! Criterion micro-benchmarks of the parts of tlsedge that do not touch the network:
//!
//! - `sni/{exact,wildcard}/N`: [`NameIndex::lookup`] with N = 1, 1,000, 100,000 hosts;
//! - `balance/POLICY/N`: [`Pool::pick`] for every policy with 2 and 16 backends;
//! - `config/load_10000_hosts` and `snapshot/build_10000_hosts`: validating a 10,000-host
//!   configuration (every host names the same wildcard certificate file) and building the
//!   runtime snapshot from it (one rustls `ServerConfig` per host);
//! - `handshake/{full,resumed}/{server,both}`: a TLS 1.3 handshake (X25519, ECDSA P-256,
//!   AES-256-GCM) between an in-memory rustls client and tlsedge's own per-host `ServerConfig`
//!   (its certificate choice and ticketer). `server` times only the server's calls: the
//!   library floor of a proxied connection's CPU; `both` is client + server.
//!
//! Measurement times are short so `cargo bench --bench micro` takes a few minutes.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rustls::client::Resumption;
use rustls::crypto::aws_lc_rs::{self as provider_mod, cipher_suite, kx_group};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, ServerConnection};

use tlsedge::config::Config;
use tlsedge::pki::{Ca, KeyKind};
use tlsedge::snapshot::Snapshot;
use tlsedge::tls::TlsShared;
use tlsedge::tls::names::{HostName, NameIndex};
use tlsedge::upstream::dns::Answers;
use tlsedge::upstream::{Backend, BackendAddr, PickContext, Policy, Pool};

fn sni(c: &mut Criterion) {
    let mut group = c.benchmark_group("sni");
    for n in [1_usize, 1_000, 100_000] {
        let mut index = NameIndex::default();
        for i in 0..n {
            let exact = HostName::parse(&format!("h{i}.example.com")).expect("name");
            let wildcard = HostName::parse(&format!("*.w{i}.example.com")).expect("name");
            index.insert(&exact, i);
            index.insert(&wildcard, i);
        }
        let exact = format!("h{}.example.com", n / 2);
        let wildcard = format!("www.w{}.example.com", n / 2);
        assert_eq!(index.lookup(&exact), Some(n / 2));
        assert_eq!(index.lookup(&wildcard), Some(n / 2));
        group.bench_with_input(BenchmarkId::new("exact", n), &exact, |b, name| {
            b.iter(|| index.lookup(black_box(name)));
        });
        group.bench_with_input(BenchmarkId::new("wildcard", n), &wildcard, |b, name| {
            b.iter(|| index.lookup(black_box(name)));
        });
        group.bench_with_input(BenchmarkId::new("miss", n), &"nope.other.org", |b, name| {
            b.iter(|| index.lookup(black_box(name)));
        });
    }
    group.finish();
}

fn balance(c: &mut Criterion) {
    let mut group = c.benchmark_group("balance");
    let policies = [
        ("round_robin", Policy::RoundRobin),
        ("least_conn", Policy::LeastConn),
        ("p2c", Policy::P2c),
        ("hash_client_ip", Policy::HashClientIp),
    ];
    for (name, policy) in policies {
        for n in [2_u16, 16] {
            let backends = (0..n)
                .map(|i| {
                    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 8000 + i);
                    Backend::new(BackendAddr::Ip(addr), u32::from(i % 3 + 1), Arc::default())
                })
                .collect();
            let pool = Pool::new(backends, policy);
            let mut random = 0x9e37_79b9_7f4a_7c15_u64;
            let mut client = 0_u32;
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    random = random
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1);
                    client = client.wrapping_add(1);
                    let ctx = PickContext {
                        client_ip: IpAddr::V4(Ipv4Addr::from(client)),
                        now_ms: 1_000,
                        random,
                    };
                    pool.pick(black_box(&ctx), &[])
                });
            });
        }
    }
    group.finish();
}

/// A temporary site: a CA and one wildcard ECDSA certificate for `*.bench.test`.
struct Site {
    dir: tempfile::TempDir,
    ca_der: Vec<u8>,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::new("tlsedge micro-bench CA").expect("CA");
        let issued = ca
            .issue(&["*.bench.test"], KeyKind::Ecdsa)
            .expect("certificate");
        std::fs::write(dir.path().join("wildcard.pem"), &issued.cert_pem).expect("write");
        let key = dir.path().join("wildcard.key");
        std::fs::write(&key, &issued.key_pem).expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        Self {
            dir,
            ca_der: ca.cert_der(),
        }
    }

    /// The YAML of a configuration with `hosts` hosts `hN.bench.test`.
    fn config_text(hosts: usize) -> String {
        let mut text = String::from(
            "listeners: [\"127.0.0.1:0\"]\nadmin:\n  bind: null\nreload:\n  watch: false\nhosts:\n",
        );
        for i in 0..hosts {
            text.push_str(&format!(
                "  - names: [h{i}.bench.test]\n    certs:\n      - {{ cert: wildcard.pem, key: wildcard.key }}\n    backends:\n      - {{ address: \"127.0.0.1:9\" }}\n      - {{ address: \"127.0.0.2:9\" }}\n"
            ));
        }
        text
    }

    fn load(&self, text: &str) -> Config {
        let path = self.dir.path().join("tlsedge.yaml");
        let provider = provider_mod::default_provider();
        tlsedge::config::load::from_str(text, &path, &provider)
            .and_then(tlsedge::config::Loaded::strict)
            .expect("valid configuration")
            .config
    }
}

fn snapshot(c: &mut Criterion) {
    let site = Site::new();
    let text = Site::config_text(10_000);
    let mut group = c.benchmark_group("config");
    group.sample_size(10);
    group.bench_function("load_10000_hosts", |b| b.iter(|| site.load(&text)));
    group.finish();
    let config = Arc::new(site.load(&text));
    let tls = TlsShared::new(&config.start.sessions, config.ticket_key_file.as_deref())
        .expect("tls state");
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    group.bench_function("build_10000_hosts", |b| {
        b.iter(|| Snapshot::build(Arc::clone(&config), &tls, None, 1, &Answers::none()).0);
    });
    group.finish();
}

/// A TLS 1.3 client offering one AES-256 suite and `groups` (key shares for the first, and
/// for X25519 too when it follows the hybrid, as browsers send them).
fn client_config(
    ca_der: &[u8],
    resume: bool,
    groups: &[&'static dyn rustls::crypto::SupportedKxGroup],
) -> Arc<ClientConfig> {
    let mut provider = provider_mod::default_provider();
    provider.kx_groups = groups.to_vec();
    provider.cipher_suites = vec![cipher_suite::TLS13_AES_256_GCM_SHA384];
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .expect("CA");
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = if resume {
        Resumption::in_memory_sessions(64)
    } else {
        Resumption::disabled()
    };
    Arc::new(config)
}

/// Moves records both ways until neither side has anything to send. Returns the time spent in
/// the server's calls.
fn pump(client: &mut ClientConnection, server: &mut ServerConnection) -> Duration {
    let mut server_time = Duration::ZERO;
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let mut moved = false;
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).expect("client write");
        }
        if !buf.is_empty() {
            moved = true;
            let start = Instant::now();
            let mut rd = &buf[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).expect("server read");
                server.process_new_packets().expect("server process");
            }
            server_time += start.elapsed();
        }
        buf.clear();
        let start = Instant::now();
        while server.wants_write() {
            server.write_tls(&mut buf).expect("server write");
        }
        server_time += start.elapsed();
        if !buf.is_empty() {
            moved = true;
            let mut rd = &buf[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).expect("client read");
                client.process_new_packets().expect("client process");
            }
        }
        if !moved {
            return server_time;
        }
    }
}

/// One handshake (plus the server's ticket reaching the client); returns the server's time and
/// the handshake kind the client saw.
fn handshake(
    client_config: &Arc<ClientConfig>,
    server_config: &Arc<rustls::ServerConfig>,
) -> (Duration, Option<HandshakeKind>) {
    let name = ServerName::try_from("h0.bench.test").expect("name");
    let mut client = ClientConnection::new(Arc::clone(client_config), name).expect("client");
    let start = Instant::now();
    let mut server = ServerConnection::new(Arc::clone(server_config)).expect("server");
    let mut server_time = start.elapsed();
    server_time += pump(&mut client, &mut server);
    assert!(!client.is_handshaking() && !server.is_handshaking());
    (server_time, client.handshake_kind())
}

fn handshakes(c: &mut Criterion) {
    let site = Site::new();
    let config = Arc::new(site.load(&Site::config_text(1)));
    let tls = TlsShared::new(&config.start.sessions, config.ticket_key_file.as_deref())
        .expect("tls state");
    let snapshot = Snapshot::build(config, &tls, None, 1, &Answers::none()).0;
    let server_config = Arc::clone(&snapshot.hosts[0].tls);
    let mut group = c.benchmark_group("handshake");
    // The post-quantum hybrid against plain X25519: what `X25519MLKEM768` costs the server.
    let pq = [kx_group::X25519MLKEM768, kx_group::X25519];
    let classic = [kx_group::X25519];
    for (kind, resume, groups) in [
        ("full", false, &classic[..]),
        ("full-x25519mlkem768", false, &pq[..]),
        ("resumed", true, &classic[..]),
        ("resumed-x25519mlkem768", true, &pq[..]),
    ] {
        let client_config = client_config(&site.ca_der, resume, groups);
        // Prime the ticket cache; every resumed handshake then brings a fresh ticket.
        handshake(&client_config, &server_config);
        let want = if resume {
            HandshakeKind::Resumed
        } else {
            HandshakeKind::Full
        };
        assert_eq!(handshake(&client_config, &server_config).1, Some(want));
        group.bench_function(BenchmarkId::new(kind, "server"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| handshake(&client_config, &server_config).0)
                    .sum()
            });
        });
        group.bench_function(BenchmarkId::new(kind, "both"), |b| {
            b.iter(|| handshake(&client_config, &server_config));
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = sni, balance, snapshot, handshakes
}
criterion_main!(benches);
