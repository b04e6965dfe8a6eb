//! A model-checked reload: random sequences of what operators do to the files — add a host,
//! remove one, rotate a certificate, write a broken certificate, write the certificate before
//! its key, write invalid YAML, rewrite a file identically, move a name to another host —
//! against a small model of what must be served. After every step a reload is triggered
//! directly (the watcher is off, so nothing else reloads) and real handshakes check each name:
//! the certificate serial served, unknown names refused, stale flags and the reload's result.
//!
//! Deterministic: a fixed proptest seed, bounded cases and steps, no failure files written.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngAlgorithm, RngSeed, TestRunner};
use rustls::ClientConfig;

use common::{Backend, ClientOpts, Lb, Site, alert_of, hello};
use tlsedge::pki::KeyKind;

/// Hosts `h0.test` … `h3.test`; each certificate also covers `alias.test`, which one host at
/// a time lists.
const HOSTS: usize = 4;
const ALIAS: &str = "alias.test";

#[derive(Debug, Clone)]
enum Op {
    Add(usize),
    Remove(usize),
    Rotate(usize),
    BreakCert(usize),
    CertBeforeKey(usize),
    InvalidYaml,
    IdenticalRewrite,
    MoveAlias(usize),
    /// A log file written beside the config (`tlsedge run > tlsedge.log`): no input changes.
    LogBeside,
}

fn op() -> impl Strategy<Value = Op> {
    let host = 0..HOSTS;
    prop_oneof![
        host.clone().prop_map(Op::Add),
        host.clone().prop_map(Op::Remove),
        host.clone().prop_map(Op::Rotate),
        host.clone().prop_map(Op::BreakCert),
        host.clone().prop_map(Op::CertBeforeKey),
        Just(Op::InvalidYaml),
        Just(Op::IdenticalRewrite),
        host.prop_map(Op::MoveAlias),
        Just(Op::LogBeside),
    ]
}

/// What one host should look like.
#[derive(Debug, Clone)]
struct Expected {
    /// The serial its handshakes present.
    serial: String,
    /// Whether its files are broken (the last good certificate is served, flagged stale).
    stale: bool,
}

/// The model: configured hosts, and who lists the alias.
#[derive(Debug, Default)]
struct Model {
    hosts: BTreeMap<usize, Expected>,
    alias: Option<usize>,
}

/// The system under test and what it needs.
struct World {
    site: Site,
    lb: Lb,
    backend: Backend,
    client: Arc<ClientConfig>,
}

fn name(i: usize) -> String {
    format!("h{i}.test")
}

/// The config the model describes (never without hosts: `Remove` keeps the last one).
fn config_text(m: &Model, backend: std::net::SocketAddr) -> String {
    let mut text = "listeners: [\"127.0.0.1:0\"]\nadmin:\n  bind: \"127.0.0.1:0\"\n\
                    reload: { watch: false, recheck_every: 1h }\nhosts:\n"
        .to_owned();
    for i in m.hosts.keys() {
        let names = if m.alias == Some(*i) {
            format!("[\"{}\", \"{ALIAS}\"]", name(*i))
        } else {
            format!("[\"{}\"]", name(*i))
        };
        text.push_str(&format!(
            "  - names: {names}\n    certs: [{{ cert: h{i}.pem, key: h{i}.key }}]\n    backends: [{{ address: \"{backend}\" }}]\n"
        ));
    }
    text
}

impl World {
    fn issue(&self, i: usize) -> tlsedge::pki::Issued {
        self.site
            .ca
            .issue(&[&name(i), ALIAS], KeyKind::Ecdsa)
            .expect("issue")
    }

    fn write_config(&self, m: &Model) {
        self.site
            .write("tlsedge.yaml", &config_text(m, self.backend.addr));
    }

    /// Triggers one reload and returns its result label.
    async fn reload(&self) -> String {
        let before = self.reloads().await;
        assert!(self.lb.trigger.reload());
        for _ in 0..500 {
            let now = self.reloads().await;
            for (result, n) in &now {
                if before.get(result).copied().unwrap_or(0.0) < *n {
                    return result.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the reload did not finish");
    }

    async fn reloads(&self) -> BTreeMap<String, f64> {
        let m = self.lb.metrics().await;
        ["applied", "partial", "rejected", "unchanged"]
            .iter()
            .map(|r| {
                let n = m.value("tlsedge_config_reloads_total", &[("result", r)]);
                ((*r).to_owned(), n)
            })
            .collect()
    }

    /// Checks every name and stale flag against the model.
    async fn check(&self, m: &Model, step: &str) {
        for i in 0..HOSTS {
            let got = hello(self.lb.addr, &name(i), &self.client).await;
            match m.hosts.get(&i) {
                Some(expected) => {
                    let got = got.unwrap_or_else(|e| panic!("{step}: h{i} refused: {e}"));
                    assert_eq!(got.serial, expected.serial, "{step}: h{i} serial");
                }
                None => {
                    let e = got
                        .map(|r| r.serial)
                        .expect_err(&format!("{step}: h{i} served"));
                    assert_eq!(
                        alert_of(&e),
                        Some(rustls::AlertDescription::UnrecognisedName),
                        "{step}: h{i}: {e}"
                    );
                }
            }
        }
        let got = hello(self.lb.addr, ALIAS, &self.client).await;
        match m.alias.filter(|a| m.hosts.contains_key(a)) {
            Some(owner) => {
                let got = got.unwrap_or_else(|e| panic!("{step}: alias refused: {e}"));
                assert_eq!(
                    got.serial, m.hosts[&owner].serial,
                    "{step}: alias → h{owner}"
                );
            }
            None => assert!(got.is_err(), "{step}: alias served without an owner"),
        }
        let metrics = self.lb.metrics().await;
        for (i, expected) in &m.hosts {
            let stale = metrics.value("tlsedge_host_certificate_stale", &[("host", &name(*i))]);
            assert_eq!(
                stale,
                f64::from(u8::from(expected.stale)),
                "{step}: h{i} stale flag"
            );
        }
    }
}

/// Writes a new certificate and key for host `i`, which the model then expects served.
fn fresh_pair(w: &World, m: &mut Model, i: usize) {
    let issued = w.issue(i);
    w.site.write_pair(&format!("h{i}"), &issued);
    let expected = Expected {
        serial: issued.serial,
        stale: false,
    };
    m.hosts.insert(i, expected);
}

/// Applies `op` to the files and the model; returns the reload result the step must produce.
async fn step(w: &World, m: &mut Model, op: &Op) -> Option<&'static str> {
    match *op {
        Op::Add(i) if !m.hosts.contains_key(&i) => {
            fresh_pair(w, m, i);
            w.write_config(m);
            Some("applied")
        }
        Op::Remove(i) if m.hosts.len() > 1 && m.hosts.remove(&i).is_some() => {
            if m.alias == Some(i) {
                m.alias = None;
            }
            w.write_config(m);
            None // applied, or partial while another host is still broken
        }
        Op::Rotate(i) if m.hosts.contains_key(&i) => {
            fresh_pair(w, m, i);
            None
        }
        Op::BreakCert(i) if m.hosts.contains_key(&i) => {
            w.site.write(
                &format!("h{i}.pem"),
                "-----BEGIN CERTIFICATE-----\nbroken\n",
            );
            let host = m.hosts.get_mut(&i).unwrap();
            let was_broken = std::mem::replace(&mut host.stale, true);
            // The same broken bytes again change no file.
            Some(if was_broken { "unchanged" } else { "partial" })
        }
        Op::CertBeforeKey(i) if m.hosts.contains_key(&i) => {
            // The certificate lands, the reload runs, and only then the key: the host keeps
            // its last good pair in between, flagged stale.
            let issued = w.issue(i);
            w.site.write(&format!("h{i}.pem"), &issued.cert_pem);
            m.hosts.get_mut(&i).unwrap().stale = true;
            assert_eq!(w.reload().await, "partial", "cert before key: first reload");
            w.check(m, &format!("{op:?} (cert only)")).await;
            w.site.write(&format!("h{i}.key"), &issued.key_pem);
            m.hosts.insert(
                i,
                Expected {
                    serial: issued.serial,
                    stale: false,
                },
            );
            None
        }
        Op::InvalidYaml => {
            let good = config_text(m, w.backend.addr);
            w.site
                .write("tlsedge.yaml", "hosts: [ {names: [unterminated\n");
            assert_eq!(w.reload().await, "rejected", "invalid YAML");
            w.check(m, "invalid YAML").await;
            w.site.write("tlsedge.yaml", &good);
            None
        }
        Op::IdenticalRewrite => {
            w.write_config(m);
            for i in m.hosts.keys() {
                let pem = std::fs::read_to_string(w.site.path(&format!("h{i}.pem"))).unwrap();
                w.site.write(&format!("h{i}.pem"), &pem);
            }
            None
        }
        Op::MoveAlias(j) if m.hosts.contains_key(&j) => {
            m.alias = Some(j);
            w.write_config(m);
            None
        }
        Op::LogBeside => {
            use std::io::Write as _;
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(w.site.path("tlsedge.log"))
                .unwrap();
            writeln!(log, "a log line").unwrap();
            Some("unchanged")
        }
        _ => Some("unchanged"), // not applicable in this state: nothing is written
    }
}

#[test]
fn random_operation_sequences_serve_what_the_model_says() {
    let config = Config {
        cases: 32,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(20261202),
        max_shrink_iters: 50,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let steps = proptest::collection::vec(op(), 1..=16);
    let total = std::cell::Cell::new(0_usize);
    runner
        .run(&steps, |ops| {
            total.set(total.get() + ops.len());
            rt.block_on(run_case(&ops));
            Ok(())
        })
        .unwrap();
    eprintln!(
        "{} operations in 32 sequences matched the model",
        total.get()
    );
}

async fn run_case(ops: &[Op]) {
    let site = Site::new();
    let backend = Backend::start("b").await;
    // Start with h0, so the server has something to serve.
    let mut m = Model::default();
    let first = site.ca.issue(&[&name(0), ALIAS], KeyKind::Ecdsa).unwrap();
    site.write_pair("h0", &first);
    m.hosts.insert(
        0,
        Expected {
            serial: first.serial,
            stale: false,
        },
    );
    site.write("tlsedge.yaml", &config_text(&m, backend.addr));
    let lb = Lb::start(&site.path("tlsedge.yaml")).await;
    let client = ClientOpts::default().build(&site.ca);
    let w = World {
        site,
        lb,
        backend,
        client,
    };
    w.check(&m, "start").await;
    for (n, op) in ops.iter().enumerate() {
        let want = step(&w, &mut m, op).await;
        let got = w.reload().await;
        let label = format!("step {n} {op:?}");
        match want {
            Some("unchanged") => {
                assert_eq!(got, "unchanged", "{label}")
            }
            Some(want) => assert!(
                got == want || (want == "applied" && got == "partial"),
                "{label}: reload {got}, want {want}"
            ),
            None => assert_ne!(got, "rejected", "{label}"),
        }
        // A stale host keeps every later reload partial; without one, nothing is partial.
        let any_stale = m.hosts.values().any(|e| e.stale);
        if got != "unchanged" {
            assert_eq!(
                got == "partial",
                any_stale,
                "{label}: reload {got}, model {m:?}"
            );
        }
        w.check(&m, &label).await;
    }
}
