//! HTTP test backends (hyper servers on loopback) and small HTTP client helpers for the HTTP
//! mode tests.
//!
//! A [`WebBackend`] answers by path:
//! - `/status/N`: status N;
//! - `/slow/MS`: waits MS milliseconds, then answers;
//! - `/bytes/N`: streams N bytes of a known pattern in 64 KiB chunks;
//! - `/upload`: reads the body as it streams and answers `bytes=N sum=S`;
//! - anything else: `backend=NAME`, then the method, path and each request header, one per line.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The byte at offset `i` of a `/bytes/N` body.
pub fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// A loopback HTTP backend.
pub struct WebBackend {
    /// Its address.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    /// Requests answered.
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, Infallible>;

impl WebBackend {
    /// An HTTP/1.1 backend named `name`.
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, false, None).await
    }

    /// An HTTP/2 (prior knowledge) backend named `name`.
    pub async fn start_h2(name: &str) -> Self {
        Self::start_with(name, true, None).await
    }

    /// A backend whose every answer has status `status`.
    pub async fn start_failing(name: &str, status: u16) -> Self {
        Self::start_with(name, false, Some(status)).await
    }

    /// A TLS backend presenting `issued`, offering ALPN `h2` and `http/1.1` (HTTP/2 when the
    /// client picks it).
    pub async fn start_tls(name: &str, issued: &tlsedge::pki::Issued) -> Self {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("key");
        let chain = vec![CertificateDer::from(issued.cert_der.clone())];
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("backend TLS config");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::start_inner(name, false, None, Some(Arc::new(config))).await
    }

    async fn start_with(name: &str, h2: bool, fixed: Option<u16>) -> Self {
        Self::start_inner(name, h2, fixed, None).await
    }

    async fn start_inner(
        name: &str,
        h2: bool,
        fixed: Option<u16>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let name: Arc<str> = Arc::from(name);
        let task = {
            let (accepted, requests) = (Arc::clone(&accepted), Arc::clone(&requests));
            let open = Arc::clone(&open);
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    open.fetch_add(1, Ordering::SeqCst);
                    let open = Arc::clone(&open);
                    let (name, requests) = (Arc::clone(&name), Arc::clone(&requests));
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            requests.fetch_add(1, Ordering::SeqCst);
                            answer(Arc::clone(&name), req, fixed)
                        });
                        match tls {
                            None => serve_http(stream, h2, svc).await,
                            Some(config) => {
                                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                                let Ok(secure) = acceptor.accept(stream).await else {
                                    return;
                                };
                                let h2 = secure.get_ref().1.alpn_protocol() == Some(b"h2");
                                serve_http(secure, h2, svc).await;
                            }
                        }
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            })
        };
        Self {
            addr,
            accepted,
            open,
            requests,
            task,
        }
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// TCP connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn serve_http<IO, S>(io: IO, h2: bool, svc: S)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Body> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TokioIo::new(io);
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, svc)
            .with_upgrades()
            .await;
    }
}

fn full(text: String) -> Body {
    Full::new(Bytes::from(text)).boxed()
}

async fn answer(
    name: Arc<str>,
    req: Request<Incoming>,
    fixed: Option<u16>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (verb, arg) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let status = fixed.unwrap_or(200);
    let reply = |status: u16, body: Body| {
        Response::builder()
            .status(status)
            .header("x-backend", &*name)
            // What an application behind an edge proxy sends (scanners look for them).
            .header("x-content-type-options", "nosniff")
            .header("x-frame-options", "DENY")
            .header("content-security-policy", "default-src 'none'")
            .body(body)
            .expect("response")
    };
    Ok(match (verb, arg.parse::<u64>()) {
        ("status", Ok(code)) => reply(code as u16, full(format!("status {code}\n"))),
        ("slow", Ok(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            reply(status, full(format!("backend={name}\nslept={ms}\n")))
        }
        ("bytes", Ok(n)) => reply(status, PatternBody { at: 0, len: n }.boxed()),
        ("upload", _) => {
            let mut body = req.into_body();
            let (mut bytes, mut sum) = (0u64, 0u64);
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    for (i, b) in data.iter().enumerate() {
                        sum = sum.wrapping_add(u64::from(*b) * ((bytes + i as u64) % 7 + 1));
                    }
                    bytes += data.len() as u64;
                }
            }
            reply(status, full(format!("bytes={bytes} sum={sum}\n")))
        }
        _ => {
            let mut text = format!(
                "backend={name}\nmethod={}\npath={}\nversion={:?}\n",
                req.method(),
                req.uri().path_and_query().map_or("/", |p| p.as_str()),
                req.version()
            );
            if let Some(authority) = req.uri().authority() {
                text.push_str(&format!("authority={authority}\n"));
            }
            for (k, v) in req.headers() {
                text.push_str(&format!("header:{k}={}\n", v.to_str().unwrap_or("?")));
            }
            reply(status, full(text))
        }
    })
}

/// The checksum `/upload` computes, for comparing.
pub fn upload_sum(data: &[u8]) -> u64 {
    data.iter().enumerate().fold(0u64, |sum, (i, b)| {
        sum.wrapping_add(u64::from(*b) * (i as u64 % 7 + 1))
    })
}

/// A `/bytes/N` body: N pattern bytes in 64 KiB frames, made as they are polled.
struct PatternBody {
    at: u64,
    len: u64,
}

impl hyper::body::Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.at >= self.len {
            return std::task::Poll::Ready(None);
        }
        let end = (self.at + 65_536).min(self.len);
        let chunk: Vec<u8> = (self.at..end).map(pattern).collect();
        self.at = end;
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.len - self.at)
    }
}

/// What curl got.
#[derive(Debug)]
pub struct Got {
    /// The final status.
    pub status: u16,
    /// Response headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Got {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a `header:NAME=` line the echo backend wrote, if any.
    pub fn echoed(&self, name: &str) -> Option<&str> {
        let prefix = format!("header:{name}=");
        self.body.lines().find_map(|l| l.strip_prefix(&prefix))
    }
}

/// Runs curl against `https://{name}:{port}{path}` (resolved to 127.0.0.1, trusting
/// `ca`), with `args` added; panics when curl cannot run.
pub async fn curl(ca: &std::path::Path, name: &str, port: u16, path: &str, args: &[&str]) -> Got {
    let url = format!("https://{name}:{port}{path}");
    let resolve = format!("{name}:{port}:127.0.0.1");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-i", "--max-time", "30", "--cacert"])
        .arg(ca)
        .args(["--resolve", &resolve])
        .args(args)
        .arg(&url)
        .output()
        .await
        .expect("run curl");
    parse_response(&String::from_utf8_lossy(&out.stdout)).unwrap_or_else(|| {
        panic!(
            "curl {url} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Parses `curl -i` output (the last response, after any 100 Continue).
pub fn parse_response(text: &str) -> Option<Got> {
    let mut rest = text;
    loop {
        let (head, body) = rest.split_once("\r\n\r\n")?;
        let mut lines = head.lines();
        let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        if status == 100 {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        return Some(Got {
            status,
            headers,
            body: body.to_owned(),
        });
    }
}
