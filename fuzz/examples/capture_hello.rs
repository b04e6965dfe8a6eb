//! Writes the `pipeline` seeds: real rustls ClientHellos (the client's first flight, taken
//! from `ClientConnection::write_tls` before any server byte), bare or behind a PROXY header.
//! Run from `fuzz/`: `cargo +nightly run --example capture_hello -- corpus/pipeline`.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::ServerName;

fn hello(sni: &str, alpn: &[&[u8]]) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from(sni.to_owned()).expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write_tls");
    }
    out
}

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "corpus/pipeline".into()),
    );
    std::fs::create_dir_all(&dir).expect("dir");
    let v2 = {
        // PROXY v2, PROXY command, TCP over IPv4, 192.0.2.7:40000 → 192.0.2.1:443.
        let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        h.extend_from_slice(&[192, 0, 2, 7, 192, 0, 2, 1]);
        h.extend_from_slice(&40000u16.to_be_bytes());
        h.extend_from_slice(&443u16.to_be_bytes());
        h
    };
    let v1 = b"PROXY TCP4 192.0.2.7 192.0.2.1 40000 443\r\n".to_vec();
    let seeds: [(&str, Vec<u8>, Vec<u8>); 4] = [
        (
            "bare_hello_web",
            Vec::new(),
            hello("web.test", &[b"h2", b"http/1.1"]),
        ),
        (
            "proxy_v1_hello_relay",
            v1,
            hello("relay.test", &[b"x-fuzz"]),
        ),
        ("proxy_v2_hello_web", v2, hello("web.test", &[b"http/1.1"])),
        (
            "bare_hello_acme_alpn",
            Vec::new(),
            hello("relay.test", &[b"acme-tls/1"]),
        ),
    ];
    for (name, prefix, hello) in seeds {
        let mut bytes = prefix;
        bytes.extend_from_slice(&hello);
        let path = dir.join(name);
        std::fs::write(&path, &bytes).expect("write");
        println!("{} ({} bytes)", path.display(), bytes.len());
    }
}
