//! TLS scanners as deployment gates: `sslyze --mozilla_config` passes for an `intermediate`
//! and a `modern` host, and testssl.sh finds nothing at MEDIUM or above except what the test
//! certificates themselves lack (no CRL or OCSP URI). `.ci/run` installs both; elsewhere a
//! missing scanner skips its test.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::web::WebBackend;
use common::{Lb, Site};
use tlsedge::pki::KeyKind;

/// Bounds of one scanner run (testssl.sh takes about two minutes here).
const SSLYZE_LIMIT: Duration = Duration::from_secs(180);
const TESTSSL_LIMIT: Duration = Duration::from_secs(900);

/// Whether `tool` can run; under CI (`.ci/run` installs it) a missing one is a failure.
fn have(tool: &str) -> bool {
    let found = std::process::Command::new(tool)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(std::env::var_os("CI").is_none(), "{tool} is not installed");
        eprintln!("{tool} is not installed: skipping");
    }
    found
}

/// An `intermediate` host (ECDSA and RSA certificates) and a `modern` one, both in HTTP mode
/// with HSTS for 180 days, certificates valid for 90 days.
async fn scanned() -> (Site, Lb, WebBackend) {
    let site = Site::new();
    let backend = WebBackend::start("app").await;
    for (stem, name, key) in [
        ("inter", "intermediate.test", KeyKind::Ecdsa),
        ("inter-rsa", "intermediate.test", KeyKind::Rsa),
        ("modern", "modern.test", KeyKind::Ecdsa),
    ] {
        site.cert(stem, &[name], key);
    }
    let body = format!(
        "hosts:\n\
         \x20 - names: [intermediate.test]\n\
         \x20   certs: [{{ cert: inter.pem, key: inter.key }}, {{ cert: inter-rsa.pem, key: inter-rsa.key }}]\n\
         \x20   tls_profile: intermediate\n\
         \x20   mode: http\n\
         \x20   http: {{ hsts: 180d }}\n\
         \x20   backends: [{{ address: \"{addr}\" }}]\n\
         \x20 - names: [modern.test]\n\
         \x20   certs: [{{ cert: modern.pem, key: modern.key }}]\n\
         \x20   tls_profile: modern\n\
         \x20   mode: http\n\
         \x20   http: {{ hsts: 180d }}\n\
         \x20   backends: [{{ address: \"{addr}\" }}]\n",
        addr = backend.addr
    );
    let lb = Lb::start(&site.config(&body)).await;
    (site, lb, backend)
}

async fn run(limit: Duration, cmd: &mut tokio::process::Command) -> (bool, String) {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .expect("scanner finished in time")
        .expect("scanner runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslyze_finds_each_profile_compliant() {
    if !have("sslyze") {
        return;
    }
    let (site, lb, _backend) = scanned().await;
    let ca = site.path("ca.pem");
    std::fs::write(&ca, site.ca.cert_pem()).unwrap();
    for (name, profile) in [
        ("intermediate.test", "intermediate"),
        ("modern.test", "modern"),
    ] {
        let target = format!("{name}:{}{{127.0.0.1}}", lb.addr.port());
        let (ok, text) = run(
            SSLYZE_LIMIT,
            tokio::process::Command::new("sslyze")
                .arg(format!("--mozilla_config={profile}"))
                .arg("--certinfo_ca_file")
                .arg(&ca)
                .arg(&target),
        )
        .await;
        let verdict = text
            .lines()
            .find(|l| l.contains(&target.replace("{127.0.0.1}", "")) && l.contains(" - "))
            .unwrap_or("no verdict line");
        eprintln!("sslyze {profile}: {}", verdict.trim());
        assert!(ok && text.contains("OK - Compliant"), "{profile}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testssl_reports_nothing_medium_or_above_but_certificate_properties() {
    if !have("testssl") {
        return;
    }
    let (site, lb, _backend) = scanned().await;
    let ca = site.path("ca.pem");
    std::fs::write(&ca, site.ca.cert_pem()).unwrap();
    let json = site.path("testssl.json");
    let (_, text) = run(
        TESTSSL_LIMIT,
        tokio::process::Command::new("testssl")
            .args([
                "--quiet",
                "--color",
                "0",
                "--ip",
                "127.0.0.1",
                "--warnings",
                "off",
            ])
            .args(["--severity", "MEDIUM", "--add-ca"])
            .arg(&ca)
            .arg("--jsonfile")
            .arg(&json)
            .arg(format!("intermediate.test:{}", lb.addr.port())),
    )
    .await;
    for line in text.lines().filter(|l| {
        [
            "Session Ticket",
            "Session Resumption",
            "server cipher order",
        ]
        .iter()
        .any(|k| l.contains(k))
    }) {
        eprintln!("testssl: {}", line.trim());
    }
    let findings = findings(&json);
    assert!(!findings.is_empty() || text.contains("Done"), "{text}");
    let unexpected: Vec<&(String, String, String)> = findings
        .iter()
        .filter(|(severity, _, _)| ["MEDIUM", "HIGH", "CRITICAL"].contains(&severity.as_str()))
        // The test CA puts no revocation URI in its certificates; a public CA would.
        .filter(|(_, id, _)| !id.starts_with("cert_revocation"))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:#?}\n{text}");
    assert!(text.contains("Has server cipher order?     yes"), "{text}");
}

/// testssl.sh's JSON findings as (severity, id, finding).
fn findings(json: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(json).expect("testssl wrote its JSON");
    let all: Vec<serde_json::Value> = serde_json::from_str(&text).expect("JSON");
    all.iter()
        .map(|f| {
            let field = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
            (field("severity"), field("id"), field("finding"))
        })
        .collect()
}
