//! The example configuration in `config/` must stay valid: every field it documents parses, and
//! with certificates generated for the files it names, it validates without a single problem.

use std::path::Path;

use tlsedge::config::{self, model::RawConfig};
use tlsedge::pki::{Ca, KeyKind};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/tlsedge.yaml");

/// Writes a certificate for `names` at the example's `cert`/`key` paths under `dir`.
fn write_pair(dir: &Path, ca: &Ca, cert: &Path, key: &Path, names: &[String], kind: KeyKind) {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let issued = ca.issue(&names, kind).unwrap();
    for (path, pem) in [(cert, &issued.cert_pem), (key, &issued.key_pem)] {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, pem).unwrap();
        let mode = if path == dir.join(key) { 0o600 } else { 0o644 };
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .unwrap();
    }
}

/// The example, with certificates generated for the files it names, loaded strictly.
fn load_example() -> (tempfile::TempDir, config::Loaded) {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let raw: RawConfig = serde_norway::from_str(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("example CA").unwrap();
    for host in &raw.hosts {
        for pair in host.certs.files() {
            let kind = if pair.cert.to_string_lossy().contains("rsa") {
                KeyKind::Rsa
            } else {
                KeyKind::Ecdsa
            };
            write_pair(dir.path(), &ca, &pair.cert, &pair.key, &host.names, kind);
        }
        if let Some(auth) = &host.client_auth {
            std::fs::write(dir.path().join(&auth.ca), ca.cert_pem()).unwrap();
        }
    }
    let path = dir.path().join("tlsedge.yaml");
    std::fs::write(&path, &text).unwrap();
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let loaded = config::load(&path, &provider).unwrap().strict().unwrap();
    (dir, loaded)
}

#[test]
fn example_config_validates_with_generated_certificates() {
    let (_dir, loaded) = load_example();
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    let config = loaded.config;
    assert_eq!(config.hosts.len(), 4);
    assert_eq!(config.start.listeners.len(), 2);
    let (acme, files): (Vec<_>, Vec<_>) = config.hosts.iter().partition(|h| h.acme);
    assert!(files.iter().all(|h| h.certs.is_some()));
    assert_eq!(acme.len(), 1);
    assert!(acme[0].certs.is_none(), "pending: nothing issued yet");
    assert!(config.start.acme.is_some());
    assert_eq!(config.hosts[0].certs.as_ref().unwrap().len(), 2);
    assert_eq!(config.default_host, Some(0));
    assert!(config.hosts[0].health_check.is_some());
    assert!(config.hosts[2].client_auth.is_some());
}

#[test]
fn example_config_shows_both_listener_forms() {
    let (_dir, loaded) = load_example();
    let listeners = &loaded.config.start.listeners;
    assert_eq!(listeners[0].addr, "0.0.0.0:443".parse().unwrap());
    assert_eq!(listeners[0].proxy_protocol, None);
    assert_eq!(listeners[1].addr, "0.0.0.0:8443".parse().unwrap());
    let proxy = listeners[1].proxy_protocol.as_ref().expect("PROXY input");
    let trusted: Vec<String> = proxy.trusted.iter().map(ToString::to_string).collect();
    assert_eq!(trusted, ["10.0.0.0/8", "192.0.2.7/32"]);
    assert_eq!(proxy.timeout, std::time::Duration::from_secs(3));
    assert_eq!(
        loaded.config.per_client_ip, None,
        "commented out: off by default"
    );
}
