//! `loadgen`: the TLS load generator behind `benches/compare/run.sh`.
//!
//! A `harness = false` bench target, so it never ships in the `tlsedge` binary. Build and find it
//! with `cargo bench --bench loadgen --no-run`, or run it through cargo:
//!
//! ```sh
//! cargo bench --bench loadgen -- full --addr 127.0.0.1:8443 --ca ca.pem --sni a.bench.test
//! ```
//!
//! Every scenario is bounded in time and prints exactly one JSON line of results on stdout
//! (`idle` prints it once every connection is open, then holds them). The client is rustls on
//! aws-lc-rs with the key exchange pinned to **X25519**, TLS 1.3 only and the cipher suite pinned
//! to **TLS13_AES_256_GCM_SHA384**, so every contender does the same crypto. It runs on one
//! thread (a current-thread tokio runtime): pin it to one core with `taskset`.
//!
//! Scenarios:
//! - `full`: a new TLS connection per request, resumption disabled in the client: connect,
//!   handshake, `GET`, read the response, close. `--workers` at a time.
//! - `resumed`: the same with the client's ticket cache on (rustls only does `psk_dhe_ke`, so a
//!   resumption still costs one X25519 on each side).
//! - `keepalive`: `--conns` persistent connections, each sending small requests back to back;
//!   p50/p99 latency per request.
//! - `bulk`: `--conns` persistent connections fetching `--path` (e.g. a 1 MiB body); MB/s.
//! - `idle`: opens `--conns` proxied connections (handshake and one request each), prints its
//!   line, then holds them for `--hold` (or until stdin closes, with `--hold-stdin`). With
//!   `--alpn h2` (and a server that picks `h2`) the one request is an HTTP/2 one (hyper's
//!   client), and the HTTP/2 connection stays open and idle.
//!
//! `--alpn` sets the ALPN protocols offered (comma separated; default none). Only `idle`
//! speaks HTTP/2: another scenario that gets `h2` negotiated counts it as an error.
//!
//! `--sig ecdsa|rsa|any` restricts the signature schemes the client offers, so a server holding
//! both an ECDSA and an RSA certificate for a name must present the chosen one.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::aws_lc_rs::{self as provider_mod, cipher_suite, kx_group};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, DigitallySignedStruct, HandshakeKind, RootCertStore, SignatureScheme, version,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One operation may take at most this long before it counts as an error.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Full,
    Resumed,
    Keepalive,
    Bulk,
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Sig {
    /// Offer only ECDSA signature schemes.
    Ecdsa,
    /// Offer only RSA signature schemes.
    Rsa,
    /// Offer everything rustls supports.
    Any,
}

/// TLS load generator (one thread; pin it with taskset).
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Args {
    /// The scenario. Without one, prints this help and exits 0 (so `cargo test --benches`
    /// passes).
    #[arg(value_enum)]
    scenario: Option<Scenario>,
    /// The TLS address of the server under test.
    #[arg(long, default_value = "127.0.0.1:8443")]
    addr: SocketAddr,
    /// PEM file of CA certificates to trust.
    #[arg(long, default_value = "ca.pem")]
    ca: PathBuf,
    /// SNI names, comma separated; connections take them in turn. With `--sni-count N` the one
    /// name is a pattern whose `{}` is replaced by 0..N.
    #[arg(long, default_value = "a.bench.test,b.bench.test")]
    sni: String,
    /// Expand the `{}` in `--sni` into this many names.
    #[arg(long)]
    sni_count: Option<usize>,
    /// How long to run (full, resumed, keepalive, bulk), e.g. `10s`, `500ms`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Concurrent connection loops (full, resumed).
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// Persistent connections (keepalive, bulk) or idle connections to open (idle).
    #[arg(long)]
    conns: Option<usize>,
    /// HTTP path to request (default `/small`; use the 1 MiB path for bulk).
    #[arg(long)]
    path: Option<String>,
    /// Signature schemes offered by the client.
    #[arg(long, value_enum, default_value = "ecdsa")]
    sig: Sig,
    /// Offer the post-quantum hybrid X25519MLKEM768 first (with an X25519 share beside it, as
    /// browsers do) instead of X25519 alone.
    #[arg(long)]
    pq: bool,
    /// idle: how long to hold the connections after opening them.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    hold: Duration,
    /// idle: hold until stdin reaches EOF (or `--hold` passes, whichever comes first).
    #[arg(long)]
    hold_stdin: bool,
    /// idle: connections opened concurrently while setting up.
    #[arg(long, default_value_t = 64)]
    open_concurrency: usize,
    /// ALPN protocols to offer, comma separated (e.g. `h2` or `http/1.1`); default none.
    #[arg(long)]
    alpn: Option<String>,
    /// A free-form label copied into the JSON line (e.g. the contender's name).
    #[arg(long, default_value = "")]
    label: String,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, "s"), |i| s.split_at(i));
    let value: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn main() {
    let args = Args::parse();
    let Some(scenario) = args.scenario else {
        use clap::CommandFactory;
        let _ = Args::command().print_help();
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(scenario, &args)) {
        Ok(line) if line.is_empty() => {}
        Ok(line) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
}

/// Everything a connection loop needs.
struct Target {
    addr: SocketAddr,
    connector: TlsConnector,
    names: Vec<ServerName<'static>>,
    requests: Vec<Vec<u8>>,
}

impl Target {
    fn new(args: &Args, resume: bool, path: &str) -> Result<Self, BoxError> {
        let names: Vec<String> = match args.sni_count {
            Some(n) => (0..n)
                .map(|i| args.sni.replace("{}", &i.to_string()))
                .collect(),
            None => args.sni.split(',').map(str::to_owned).collect(),
        };
        let requests = names
            .iter()
            .map(|n| {
                format!("GET {path} HTTP/1.1\r\nHost: {n}\r\nUser-Agent: tlsedge-loadgen\r\n\r\n")
                    .into_bytes()
            })
            .collect();
        let names = names
            .into_iter()
            .map(ServerName::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            addr: args.addr,
            connector: TlsConnector::from(client_config(args, resume)?),
            names,
            requests,
        })
    }

    /// TCP connect and TLS handshake to name number `i` (mod the number of names), for
    /// HTTP/1.1: an `h2` ALPN answer is an error.
    async fn connect(&self, i: usize) -> Result<TlsStream<TcpStream>, BoxError> {
        let tls = self.connect_any(i).await?;
        if is_h2(&tls) {
            return Err("the server chose ALPN h2: only `idle` speaks HTTP/2".into());
        }
        Ok(tls)
    }

    /// TCP connect and TLS handshake, whatever ALPN protocol the server chose.
    async fn connect_any(&self, i: usize) -> Result<TlsStream<TcpStream>, BoxError> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        Ok(self.connector.connect(self.name(i), tcp).await?)
    }

    fn name(&self, i: usize) -> ServerName<'static> {
        self.names[i % self.names.len()].clone()
    }

    fn request(&self, i: usize) -> &[u8] {
        &self.requests[i % self.requests.len()]
    }
}

fn is_h2(tls: &TlsStream<TcpStream>) -> bool {
    tls.get_ref().1.alpn_protocol() == Some(b"h2")
}

/// The client: TLS 1.3, X25519 only (or X25519MLKEM768 first with `--pq`), AES-256-GCM only,
/// offering `--sig` signature schemes and the `--alpn` protocols.
fn client_config(args: &Args, resume: bool) -> Result<Arc<ClientConfig>, BoxError> {
    let (ca, sig): (&Path, Sig) = (&args.ca, args.sig);
    let mut provider = provider_mod::default_provider();
    provider.kx_groups = if args.pq {
        vec![kx_group::X25519MLKEM768, kx_group::X25519]
    } else {
        vec![kx_group::X25519]
    };
    provider.cipher_suites = vec![cipher_suite::TLS13_AES_256_GCM_SHA384];
    let provider = Arc::new(provider);
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()?;
    let verifier = Arc::new(OfferOnly { inner, sig });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = args
        .alpn
        .iter()
        .flat_map(|list| list.split(','))
        .map(|p| p.as_bytes().to_vec())
        .collect();
    config.resumption = if resume {
        Resumption::in_memory_sessions(4096)
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

/// The WebPKI verifier, advertising only one family of signature schemes.
#[derive(Debug)]
struct OfferOnly {
    inner: Arc<WebPkiServerVerifier>,
    sig: Sig,
}

impl ServerCertVerifier for OfferOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        let keep = |s: &SignatureScheme| {
            let name = format!("{s:?}");
            match self.sig {
                Sig::Any => true,
                Sig::Ecdsa => name.starts_with("ECDSA"),
                Sig::Rsa => name.starts_with("RSA"),
            }
        };
        self.inner
            .supported_verify_schemes()
            .into_iter()
            .filter(keep)
            .collect()
    }
}

/// Reads one HTTP/1.1 response with a `Content-Length` body (no chunked encoding: the
/// backends are nginx serving fixed bodies). Returns the body length. `buf` is scratch space.
async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
) -> Result<usize, BoxError> {
    let mut have = 0;
    let header_end = loop {
        if have == buf.len() {
            return Err("response header too large".into());
        }
        let n = stream.read(&mut buf[have..]).await?;
        if n == 0 {
            return Err("connection closed before the response header".into());
        }
        have += n;
        if let Some(pos) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = std::str::from_utf8(&buf[..header_end]).map_err(|_| "non-UTF-8 header")?;
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("HTTP status {status:?}").into());
    }
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .ok_or("response without Content-Length")?;
    let mut body = have - header_end;
    while body < length {
        let n = stream.read(buf).await?;
        if n == 0 {
            return Err("connection closed inside the response body".into());
        }
        body += n;
    }
    if body != length {
        return Err("more bytes than Content-Length (unexpected pipelining)".into());
    }
    Ok(length)
}

/// What one connection loop measured.
#[derive(Default)]
struct Tally {
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    resumed: u64,
    full: u64,
    body_bytes: u64,
    /// Per-operation latency, microseconds.
    latency_us: Vec<u32>,
    /// Connect + handshake latency, microseconds (full, resumed, idle).
    handshake_us: Vec<u32>,
    /// What the first handshake negotiated: version, cipher, key exchange, key type, ALPN.
    negotiated: Option<(String, String, String, String, String)>,
}

impl Tally {
    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    fn handshake_done(&mut self, tls: &TlsStream<TcpStream>, took: Duration) {
        let conn = tls.get_ref().1;
        if conn.handshake_kind() == Some(HandshakeKind::Resumed) {
            self.resumed += 1;
        } else {
            self.full += 1;
        }
        self.handshake_us.push(micros(took));
        if self.negotiated.is_none() {
            let version = conn
                .protocol_version()
                .map_or_else(String::new, |v| format!("{v:?}"));
            let cipher = conn
                .negotiated_cipher_suite()
                .map_or_else(String::new, |s| format!("{:?}", s.suite()));
            let kx = conn
                .negotiated_key_exchange_group()
                .map_or_else(String::new, |g| format!("{:?}", g.name()));
            // The leaf's key type: its CA is of the same family, so the OID alone tells.
            let key = conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map_or("", |leaf| {
                    let der = leaf.as_ref();
                    if contains(der, RSA_ENCRYPTION_OID) {
                        "rsa"
                    } else if contains(der, EC_PUBLIC_KEY_OID) {
                        "ecdsa"
                    } else {
                        "other"
                    }
                });
            let alpn = conn
                .alpn_protocol()
                .map_or_else(String::new, |p| String::from_utf8_lossy(p).into_owned());
            self.negotiated = Some((version, cipher, kx, key.to_owned(), alpn));
        }
    }

    fn merge(&mut self, other: Self) {
        self.ops += other.ops;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.resumed += other.resumed;
        self.full += other.full;
        self.body_bytes += other.body_bytes;
        self.latency_us.extend(other.latency_us);
        self.handshake_us.extend(other.handshake_us);
        if self.negotiated.is_none() {
            self.negotiated = other.negotiated;
        }
    }
}

/// DER of the OIDs rsaEncryption (1.2.840.113549.1.1.1) and id-ecPublicKey (1.2.840.10045.2.1).
const RSA_ENCRYPTION_OID: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
const EC_PUBLIC_KEY_OID: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One connection per request until `deadline` (full, resumed).
async fn connection_loop(target: Arc<Target>, worker: usize, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut buf = vec![0_u8; 64 * 1024];
    let mut i = worker;
    while Instant::now() < deadline {
        let start = Instant::now();
        let op = async {
            let mut tls = target.connect(i).await?;
            tally.handshake_done(&tls, start.elapsed());
            tls.write_all(target.request(i)).await?;
            let body = read_response(&mut tls, &mut buf).await?;
            let _ = tls.shutdown().await;
            Ok::<_, BoxError>(body)
        };
        match tokio::time::timeout(OP_TIMEOUT, op).await {
            Ok(Ok(body)) => {
                tally.ops += 1;
                tally.body_bytes += body as u64;
                tally.latency_us.push(micros(start.elapsed()));
            }
            Ok(Err(e)) => tally.error(e),
            Err(_) => tally.error("operation timed out"),
        }
        i += 1;
    }
    tally
}

/// One persistent connection sending requests back to back until `deadline` (keepalive, bulk).
async fn persistent_loop(target: Arc<Target>, worker: usize, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut buf = vec![0_u8; 64 * 1024];
    let start = Instant::now();
    let mut tls = match tokio::time::timeout(OP_TIMEOUT, target.connect(worker)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tally.error(e);
            return tally;
        }
        Err(_) => {
            tally.error("handshake timed out");
            return tally;
        }
    };
    tally.handshake_done(&tls, start.elapsed());
    let request = target.request(worker).to_vec();
    while Instant::now() < deadline {
        let start = Instant::now();
        let op = async {
            tls.write_all(&request).await?;
            read_response(&mut tls, &mut buf).await
        };
        match tokio::time::timeout(OP_TIMEOUT, op).await {
            Ok(Ok(body)) => {
                tally.ops += 1;
                tally.body_bytes += body as u64;
                tally.latency_us.push(micros(start.elapsed()));
            }
            Ok(Err(e)) => {
                tally.error(e);
                break;
            }
            Err(_) => {
                tally.error("request timed out");
                break;
            }
        }
    }
    let _ = tls.shutdown().await;
    tally
}

async fn run(scenario: Scenario, args: &Args) -> Result<String, BoxError> {
    let default_path = match scenario {
        Scenario::Bulk => "/1m",
        _ => "/small",
    };
    let path = args.path.clone().unwrap_or_else(|| default_path.to_owned());
    let resume = scenario == Scenario::Resumed;
    let target = Arc::new(Target::new(args, resume, &path)?);
    if scenario == Scenario::Idle {
        return idle(target, args).await;
    }
    let (loops, conns) = match scenario {
        Scenario::Full | Scenario::Resumed => (args.workers, None),
        Scenario::Keepalive => (args.conns.unwrap_or(50), args.conns.or(Some(50))),
        _ => (args.conns.unwrap_or(4), args.conns.or(Some(4))),
    };
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..loops {
        let target = Arc::clone(&target);
        match scenario {
            Scenario::Full | Scenario::Resumed => {
                tasks.spawn(connection_loop(target, worker, deadline));
            }
            _ => {
                tasks.spawn(persistent_loop(target, worker, deadline));
            }
        }
    }
    let mut tally = Tally::default();
    while let Some(done) = tasks.join_next().await {
        tally.merge(done?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(report(scenario, args, &path, loops, conns, elapsed, tally))
}

fn report(
    scenario: Scenario,
    args: &Args,
    path: &str,
    workers: usize,
    conns: Option<usize>,
    elapsed: f64,
    mut tally: Tally,
) -> String {
    tally.latency_us.sort_unstable();
    tally.handshake_us.sort_unstable();
    let (version, cipher, kx, server_key, alpn) = tally.negotiated.clone().unwrap_or_default();
    let handshakes = tally.resumed + tally.full;
    let mut fields = vec![
        (
            "scenario",
            json_str(&format!("{scenario:?}").to_lowercase()),
        ),
        ("label", json_str(&args.label)),
        ("sig", json_str(&format!("{:?}", args.sig).to_lowercase())),
        ("path", json_str(path)),
        ("workers", workers.to_string()),
        (
            "conns",
            conns.map_or_else(|| "null".into(), |c| c.to_string()),
        ),
        ("sni_names", tally_names(args).to_string()),
        ("elapsed_s", format!("{elapsed:.3}")),
        ("ops", tally.ops.to_string()),
        ("errors", tally.errors.to_string()),
        (
            "first_error",
            tally
                .first_error
                .as_deref()
                .map_or_else(|| "null".into(), json_str),
        ),
        ("ops_per_s", format!("{:.1}", tally.ops as f64 / elapsed)),
        ("handshakes", handshakes.to_string()),
        ("handshakes_resumed", tally.resumed.to_string()),
        ("handshakes_full", tally.full.to_string()),
        ("body_bytes", tally.body_bytes.to_string()),
        (
            "mb_per_s",
            format!("{:.1}", tally.body_bytes as f64 / elapsed / 1e6),
        ),
        ("p50_us", percentile(&tally.latency_us, 50.0).to_string()),
        ("p99_us", percentile(&tally.latency_us, 99.0).to_string()),
        (
            "handshake_p50_us",
            percentile(&tally.handshake_us, 50.0).to_string(),
        ),
        (
            "handshake_p99_us",
            percentile(&tally.handshake_us, 99.0).to_string(),
        ),
        ("version", json_str(&version)),
        ("cipher", json_str(&cipher)),
        ("kx", json_str(&kx)),
        ("server_key", json_str(&server_key)),
        ("alpn", json_str(&alpn)),
        ("client_kx_pinned", json_str("X25519")),
        (
            "client_cpu_us",
            own_cpu_us().map_or_else(|| "null".into(), |us| us.to_string()),
        ),
    ];
    if scenario == Scenario::Idle {
        fields.push(("ready", "true".into()));
    }
    let body = fields
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect::<Vec<_>>()
        .join(",");
    format!("{{{body}}}")
}

/// This process's CPU time so far (utime + stime from `/proc/self/stat`), assuming the usual
/// 100 Hz clock tick.
fn own_cpu_us() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split(' ').collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 10_000)
}

fn tally_names(args: &Args) -> usize {
    args.sni_count
        .unwrap_or_else(|| args.sni.split(',').count())
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Opens `--conns` proxied connections (handshake + one request each), prints the result line,
/// then holds them.
async fn idle(target: Arc<Target>, args: &Args) -> Result<String, BoxError> {
    let count = args.conns.unwrap_or(2000);
    let start = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(args.open_concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let target = Arc::clone(&target);
        let semaphore = Arc::clone(&semaphore);
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let start = Instant::now();
            let op = async {
                let mut tls = target.connect_any(i).await?;
                let handshake = start.elapsed();
                let mut tally = Tally::default();
                tally.handshake_done(&tls, handshake);
                if is_h2(&tls) {
                    let held = h2_one_request(tls, &target, i).await?;
                    return Ok::<_, BoxError>((held, tally));
                }
                tls.write_all(target.request(i)).await?;
                let mut buf = vec![0_u8; 16 * 1024];
                read_response(&mut tls, &mut buf).await?;
                Ok((Held::H1(Box::new(tls)), tally))
            };
            match tokio::time::timeout(OP_TIMEOUT, op).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err("open timed out".to_owned()),
            }
        });
    }
    let mut tally = Tally::default();
    let mut held = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        match done? {
            Ok((conn, opened)) => {
                tally.merge(opened);
                tally.ops += 1;
                held.push(conn);
            }
            Err(e) => tally.error(e),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let line = report(
        Scenario::Idle,
        args,
        &target_path(&target),
        args.open_concurrency,
        Some(count),
        elapsed,
        tally,
    );
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    let hold = tokio::time::sleep(args.hold);
    if args.hold_stdin {
        let stdin_closed = async {
            let mut stdin = tokio::io::stdin();
            let mut sink = [0_u8; 256];
            while !matches!(stdin.read(&mut sink).await, Ok(0) | Err(_)) {}
        };
        tokio::select! {
            () = hold => {},
            () = stdin_closed => {},
        }
    } else {
        hold.await;
    }
    drop(held);
    // The line was printed already; main prints nothing more for idle.
    Ok(String::new())
}

fn target_path(target: &Target) -> String {
    String::from_utf8_lossy(&target.requests[0])
        .split(' ')
        .nth(1)
        .unwrap_or("")
        .to_owned()
}

/// A connection `idle` holds open (never read: it is only kept until dropped).
#[allow(dead_code)]
enum Held {
    H1(Box<TlsStream<TcpStream>>),
    /// The request sender and the task driving the connection (aborted when dropped).
    H2(
        hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
        AbortOnDrop,
    ),
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One HTTP/2 `GET` of the target's path on `tls` (hyper's client); the connection is kept.
async fn h2_one_request(
    tls: TlsStream<TcpStream>,
    target: &Target,
    i: usize,
) -> Result<Held, BoxError> {
    use http_body_util::BodyExt as _;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    let task = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let name = target.name(i).to_str().into_owned();
    let request = hyper::Request::get(format!("https://{name}{}", target_path(target)))
        .header(hyper::header::USER_AGENT, "tlsedge-loadgen")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    if response.status() != hyper::StatusCode::OK {
        return Err(format!("HTTP status {}", response.status()).into());
    }
    response.into_body().collect().await?;
    Ok(Held::H2(sender, task))
}
