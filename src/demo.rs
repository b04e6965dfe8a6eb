//! `tlsedge demo`: a self-contained showcase. It makes a demo CA and certificates for two hosts,
//! starts two small HTTP backends on loopback, writes a configuration file next to the
//! certificates, and serves it through the normal start-up path. `app.tlsedge.test` is in
//! `http` mode (HTTP/1.1 and HTTP/2, per-request balancing, forwarding headers, HSTS); the
//! wildcard host is in `tcp` mode (a byte relay after TLS).

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::pki::{Ca, KeyKind, PkiError};

/// The demo's exact-name host.
pub const APP_HOST: &str = "app.tlsedge.test";
/// A name served by the demo's wildcard host.
pub const WILDCARD_EXAMPLE: &str = "www.tlsedge.test";

/// Why the demo could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Certificate generation failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Writing files or binding a backend failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

/// The files the demo wrote.
#[derive(Debug)]
pub struct DemoFiles {
    /// The configuration file to run.
    pub config: PathBuf,
    /// The demo CA certificate, for clients.
    pub ca: PathBuf,
}

/// Writes the demo PKI and configuration into `dir` and starts two HTTP backends on loopback.
pub async fn prepare(
    dir: &Path,
    listen: SocketAddr,
    admin: SocketAddr,
) -> Result<DemoFiles, DemoError> {
    std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
    let ca = Ca::new("tlsedge demo CA")?;
    let ca_path = dir.join("ca.pem");
    write(&ca_path, &ca.cert_pem(), 0o644)?;
    let app_ecdsa = ca.issue(&[APP_HOST], KeyKind::Ecdsa)?;
    let app_rsa = ca.issue(&[APP_HOST], KeyKind::Rsa)?;
    let wildcard = ca.issue(&["*.tlsedge.test"], KeyKind::Ecdsa)?;
    for (name, issued) in [
        ("app", &app_ecdsa),
        ("app-rsa", &app_rsa),
        ("wildcard", &wildcard),
    ] {
        write(&dir.join(format!("{name}.pem")), &issued.cert_pem, 0o644)?;
        write(&dir.join(format!("{name}.key")), &issued.key_pem, 0o600)?;
    }
    let mut backends = Vec::new();
    for n in 1..=2 {
        backends.push(start_backend(n).await?);
    }
    let config = format!(
        "# Written by `tlsedge demo`.\n\
         listeners: [\"{listen}\"]\n\
         admin:\n  bind: \"{admin}\"\n\
         default_host: {APP_HOST}\n\
         hosts:\n\
         \x20 - names: [{APP_HOST}]\n\
         \x20   certs:\n\
         \x20     - {{ cert: app.pem, key: app.key }}\n\
         \x20     - {{ cert: app-rsa.pem, key: app-rsa.key }}\n\
         \x20   mode: http\n\
         \x20   http:\n\
         \x20     hsts: 1d\n\
         \x20     via: true\n\
         \x20   balance: round_robin\n\
         \x20   backends:\n\
         \x20     - {{ address: \"{b1}\" }}\n\
         \x20     - {{ address: \"{b2}\" }}\n\
         \x20 - names: [\"*.tlsedge.test\"]\n\
         \x20   certs:\n\
         \x20     - {{ cert: wildcard.pem, key: wildcard.key }}\n\
         \x20   alpn: [http/1.1]\n\
         \x20   balance: least_conn\n\
         \x20   backends:\n\
         \x20     - {{ address: \"{b1}\" }}\n\
         \x20     - {{ address: \"{b2}\" }}\n",
        b1 = backends[0],
        b2 = backends[1],
    );
    let config_path = dir.join("tlsedge.yaml");
    write(&config_path, &config, 0o644)?;
    Ok(DemoFiles {
        config: config_path,
        ca: ca_path,
    })
}

/// The instructions printed once the demo listens on `tls` (and `admin`).
pub fn instructions(files: &DemoFiles, tls: SocketAddr, admin: Option<SocketAddr>) -> String {
    let ca = files.ca.display();
    let (ip, port) = (tls.ip(), tls.port());
    let mut text = format!(
        "tlsedge demo is running (config: {config}). Try:\n\
         \x20 curl --cacert {ca} --resolve {APP_HOST}:{port}:{ip} --http2 -i https://{APP_HOST}:{port}/\n\
         \x20 curl --cacert {ca} --resolve {WILDCARD_EXAMPLE}:{port}:{ip} https://{WILDCARD_EXAMPLE}:{port}/\n\
         \x20 openssl s_client -connect {tls} -servername {APP_HOST} -CAfile {ca} </dev/null\n",
        config = files.config.display(),
    );
    if let Some(admin) = admin {
        text.push_str(&format!("\x20 curl http://{admin}/metrics\n"));
    }
    text.push_str("Press Ctrl-C to stop.\n");
    text
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), DemoError> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(format!("create {}", path.display())))?;
    file.write_all(contents.as_bytes())
        .map_err(io_err(format!("write {}", path.display())))
}

/// Starts demo backend `n` on an ephemeral loopback port; it answers every HTTP request with a
/// short text naming itself.
async fn start_backend(n: u32) -> Result<SocketAddr, DemoError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io_err("bind demo backend"))?;
    let addr = listener
        .local_addr()
        .map_err(io_err("demo backend address"))?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let host = req
                    .headers()
                    .get(hyper::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let forwarded = req
                    .headers()
                    .get("x-forwarded-for")
                    .and_then(|h| h.to_str().ok())
                    .map(|f| format!(", x-forwarded-for {f}"))
                    .unwrap_or_default();
                let body = format!(
                    "hello from demo backend {n} (host {host}, path {}{forwarded})\n",
                    req.uri().path()
                );
                async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    Ok(addr)
}
