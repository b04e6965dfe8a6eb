//! PROXY protocol input (v1 text and v2 binary, parsed by the `ppp` crate): the first stage of
//! a connection on a listener behind a load balancer.
//!
//! The rules, in order:
//! - only peers in the listener's `trusted` networks may connect at all; anyone else is refused
//!   before a byte is read (a listener that takes PROXY headers from anyone lets every client
//!   claim any address);
//! - from a trusted peer the header is required, since an optional header would again let a
//!   client that reaches the listener directly spoof its address;
//! - the header read is bounded in size ([`MAX_HEADER`]) and in time (the listener's
//!   `timeout`, within the handshake deadline);
//! - `LOCAL` (v2) and `UNKNOWN` (v1) keep the socket's addresses, as the spec says; IPv4-mapped
//!   IPv6 addresses are normalised to IPv4, so allow lists and `hash_client_ip` see one form.

use std::net::{IpAddr, SocketAddr};

use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::{Instant, timeout_at};

use super::Endpoints;
use super::rewind::Rewind;
use crate::config::ProxyInput;

/// The longest header accepted: a v1 line is at most 107 bytes; v2 headers from cloud load
/// balancers carry a few small TLVs. Larger is treated as malformed.
pub const MAX_HEADER: usize = 4096;
/// Bytes read per attempt: a v2 header with its TLVs, usually in one read.
const READ_CHUNK: usize = 512;

/// Why a PROXY header was not accepted. `reason()` is the metric label.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The TCP peer is not in the listener's trusted networks.
    #[error("peer {peer} is not a trusted load balancer")]
    Untrusted {
        /// The socket peer.
        peer: IpAddr,
    },
    /// The bytes are not a PROXY header, or it is too long.
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    /// The connection closed before the header was complete.
    #[error("connection closed inside the PROXY header")]
    Truncated,
    /// Reading the connection failed.
    #[error("reading the PROXY header failed: {0}")]
    Io(#[from] std::io::Error),
    /// No complete header in time.
    #[error("no complete PROXY header in time")]
    Timeout,
}

impl ProxyError {
    /// The bounded `reason` label of `tlsedge_proxy_protocol_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Untrusted { .. } => "untrusted",
            Self::Malformed(_) | Self::Truncated | Self::Io(_) => "malformed",
            Self::Timeout => "timeout",
        }
    }
}

/// Whether `peer` may send PROXY headers to a listener trusting `input`.
pub fn is_trusted(input: &ProxyInput, peer: IpAddr) -> bool {
    let peer = peer.to_canonical();
    input.trusted.iter().any(|net| net.contains(&peer))
}

/// Reads the PROXY header from `io`, whose socket endpoints are `socket`. Returns the stream
/// (replaying any bytes read past the header) and the endpoints the header names.
pub async fn read<IO>(
    mut io: IO,
    input: &ProxyInput,
    socket: Endpoints,
    deadline: Instant,
) -> Result<(Rewind<IO>, Endpoints), ProxyError>
where
    IO: AsyncRead + Unpin,
{
    if !is_trusted(input, socket.client.ip()) {
        return Err(ProxyError::Untrusted {
            peer: socket.client.ip(),
        });
    }
    let deadline = deadline.min(Instant::now() + input.timeout);
    let mut buf = Vec::with_capacity(READ_CHUNK);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(READ_CHUNK);
        }
        let read = timeout_at(deadline, io.read_buf(&mut buf))
            .await
            .map_err(|_| ProxyError::Timeout)??;
        if read == 0 {
            return Err(ProxyError::Truncated);
        }
        if let Some((len, endpoints)) = parse(&buf, socket)? {
            return Ok((Rewind::with_prefix(io, &buf[len..]), endpoints));
        }
        if buf.len() >= MAX_HEADER {
            return Err(ProxyError::Malformed(format!(
                "longer than {MAX_HEADER} bytes"
            )));
        }
    }
}

/// Parses a header at the start of `bytes`: `None` while incomplete, else its length and the
/// endpoints it names (the socket's for `LOCAL` and `UNKNOWN`).
pub fn parse(bytes: &[u8], socket: Endpoints) -> Result<Option<(usize, Endpoints)>, ProxyError> {
    let parsed = HeaderResult::parse(bytes);
    if parsed.is_incomplete() {
        return Ok(None);
    }
    let malformed = |e: &dyn std::fmt::Display| ProxyError::Malformed(e.to_string());
    let (len, addrs) = match parsed {
        HeaderResult::V1(Err(e)) => return Err(malformed(&e)),
        HeaderResult::V2(Err(e)) => return Err(malformed(&e)),
        HeaderResult::V1(Ok(header)) => (header.header.len(), v1_addrs(&header.addresses)),
        HeaderResult::V2(Ok(header)) => {
            let addrs = match header.command {
                v2::Command::Local => None,
                v2::Command::Proxy => v2_addrs(&header.addresses),
            };
            (header.len(), addrs)
        }
    };
    let endpoints = addrs.map_or(socket, |(client, server)| Endpoints {
        client: canonical(client),
        server: canonical(server),
    });
    Ok(Some((len, endpoints)))
}

fn v1_addrs(addrs: &v1::Addresses) -> Option<(SocketAddr, SocketAddr)> {
    match addrs {
        v1::Addresses::Tcp4(a) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        v1::Addresses::Tcp6(a) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        v1::Addresses::Unknown => None,
    }
}

fn v2_addrs(addrs: &v2::Addresses) -> Option<(SocketAddr, SocketAddr)> {
    match addrs {
        v2::Addresses::IPv4(a) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        v2::Addresses::IPv6(a) => Some((
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        )),
        // Unix sockets and unspecified families carry no IP endpoints: keep the socket's.
        v2::Addresses::Unix(_) | v2::Addresses::Unspecified => None,
    }
}

/// `::ffff:192.0.2.7` → `192.0.2.7`.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use super::*;

    fn socket() -> Endpoints {
        Endpoints {
            client: "10.0.0.5:50000".parse().unwrap(),
            server: "10.0.0.1:443".parse().unwrap(),
        }
    }

    fn trusting(nets: &[&str]) -> ProxyInput {
        ProxyInput {
            trusted: nets.iter().map(|n| n.parse().unwrap()).collect(),
            timeout: Duration::from_secs(3),
        }
    }

    fn v2_header(client: SocketAddr, server: SocketAddr, command: v2::Command) -> Vec<u8> {
        v2::Builder::with_addresses(
            v2::Version::Two | command,
            v2::Protocol::Stream,
            (client, server),
        )
        .write_tlv(v2::Type::NoOp, &[0; 40])
        .unwrap()
        .build()
        .unwrap()
    }

    #[test]
    fn v1_addresses_are_taken() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n\x16\x03\x01";
        let (len, ends) = parse(line, socket()).unwrap().unwrap();
        assert_eq!(len, line.len() - 3);
        assert_eq!(ends.client, "192.0.2.7:40000".parse().unwrap());
        assert_eq!(ends.server, "198.51.100.1:443".parse().unwrap());
    }

    #[test]
    fn v1_unknown_and_v2_local_keep_the_socket_addresses() {
        let (_, ends) = parse(b"PROXY UNKNOWN\r\n", socket()).unwrap().unwrap();
        assert_eq!(ends, socket());
        let header = v2_header(
            "192.0.2.7:1".parse().unwrap(),
            "192.0.2.8:2".parse().unwrap(),
            v2::Command::Local,
        );
        let (len, ends) = parse(&header, socket()).unwrap().unwrap();
        assert_eq!((len, ends), (header.len(), socket()));
    }

    #[test]
    fn v2_mapped_addresses_are_normalised() {
        let header = v2_header(
            "[::ffff:192.0.2.7]:40000".parse().unwrap(),
            "[2001:db8::1]:443".parse().unwrap(),
            v2::Command::Proxy,
        );
        let (_, ends) = parse(&header, socket()).unwrap().unwrap();
        assert_eq!(ends.client, "192.0.2.7:40000".parse().unwrap());
        assert_eq!(ends.server, "[2001:db8::1]:443".parse().unwrap());
    }

    #[test]
    fn partial_headers_wait_and_garbage_fails() {
        let header = v2_header(
            "192.0.2.7:1".parse().unwrap(),
            "192.0.2.8:2".parse().unwrap(),
            v2::Command::Proxy,
        );
        for cut in [1, 12, 15, 20, header.len() - 1] {
            assert!(parse(&header[..cut], socket()).unwrap().is_none(), "{cut}");
        }
        assert!(parse(b"PROXY TCP4 192.0.2.7", socket()).unwrap().is_none());
        for garbage in [
            &b"\x16\x03\x01\x02\x00"[..],
            b"GET / HTTP/1.1\r\n",
            b"PROXY TCP5 x\r\n",
        ] {
            let err = parse(garbage, socket()).unwrap_err();
            assert_eq!(err.reason(), "malformed", "{garbage:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn read_replays_the_bytes_after_the_header() {
        let (mut far, near) = tokio::io::duplex(1024);
        far.write_all(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\nhello")
            .await
            .unwrap();
        drop(far);
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut io, ends) = read(near, &trusting(&["10.0.0.0/8"]), socket(), deadline)
            .await
            .unwrap();
        assert_eq!(ends.client, "[2001:db8::7]:40000".parse().unwrap());
        let mut rest = String::new();
        io.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "hello");
    }

    #[tokio::test(start_paused = true)]
    async fn untrusted_peers_slow_and_long_headers_are_refused() {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (_far, near) = tokio::io::duplex(64);
        let err = read(near, &trusting(&["192.0.2.0/24"]), socket(), deadline)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "untrusted");

        // A trusted peer that sends half a header and stalls: the listener's 3 s timeout, well
        // inside the 10 s handshake deadline, ends it (paused time: no real wait).
        let (mut far, near) = tokio::io::duplex(64);
        far.write_all(b"PROXY TCP4 192.0.2.7").await.unwrap();
        let started = Instant::now();
        let err = read(near, &trusting(&["10.0.0.0/8"]), socket(), deadline)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "timeout");
        assert_eq!(started.elapsed(), Duration::from_secs(3));

        let (mut far, near) = tokio::io::duplex(MAX_HEADER * 2);
        let mut huge = v2_header(
            "192.0.2.7:1".parse().unwrap(),
            "192.0.2.8:2".parse().unwrap(),
            v2::Command::Proxy,
        );
        huge[14..16].copy_from_slice(&60_000_u16.to_be_bytes());
        huge.resize(MAX_HEADER + 100, 0);
        far.write_all(&huge).await.unwrap();
        let err = read(near, &trusting(&["10.0.0.0/8"]), socket(), deadline)
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::Malformed(_)), "{err}");
    }
}
