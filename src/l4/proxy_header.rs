//! PROXY protocol v2 header towards backends: the client's address, our address, the SNI (an
//! authority TLV), the negotiated ALPN protocol, and an SSL TLV with the TLS version, cipher and,
//! when the client presented a verified certificate, its subject common name — what HAProxy's
//! `send-proxy-v2-ssl-cn` sends, so a backend behind mutual TLS can tell who the client is.

use std::net::SocketAddr;

use ppp::v2::{Builder, Command, Protocol, Type, Version};
use rustls::ServerConnection;

use crate::conn::Endpoints;
use crate::conn::accept::Negotiated;

/// The header could not be encoded (a field too long for its TLV). The connection is closed
/// rather than sent on without it: a backend that expects the header would otherwise read the
/// client's bytes as one, or trust the wrong address.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode the PROXY v2 header: {0}")]
pub struct HeaderError(#[from] std::io::Error);

/// The v2 header for a connection between `ends` over `conn`.
pub(crate) fn build(
    ends: Endpoints,
    conn: &ServerConnection,
    negotiated: &Negotiated,
) -> Result<Vec<u8>, HeaderError> {
    let peer_certs = conn.peer_certificates();
    let session = Session {
        sni: conn.server_name(),
        alpn: conn.alpn_protocol(),
        version: negotiated.handshake.version,
        cipher: negotiated.handshake.cipher(),
        client_cn: peer_certs
            .and_then(|certs| certs.first())
            .and_then(|leaf| common_name(leaf)),
        client_cert: peer_certs.is_some_and(|c| !c.is_empty()),
    };
    v2(ends.client, ends.server, &session)
}

/// What the header says about the TLS session.
#[derive(Debug, Default)]
pub(crate) struct Session<'a> {
    pub(crate) sni: Option<&'a str>,
    pub(crate) alpn: Option<&'a [u8]>,
    pub(crate) version: &'a str,
    pub(crate) cipher: &'a str,
    pub(crate) client_cert: bool,
    pub(crate) client_cn: Option<String>,
}

/// Encodes a v2 PROXY header for a TCP connection from `client` to `local`.
pub(crate) fn v2(
    client: SocketAddr,
    local: SocketAddr,
    session: &Session<'_>,
) -> Result<Vec<u8>, HeaderError> {
    // Both addresses must be of one family; map IPv4 to IPv6 when they differ.
    let (client, local) = match (client, local) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
            (client, local)
        }
        _ => (to_v6(client), to_v6(local)),
    };
    let mut builder = Builder::with_addresses(
        Version::Two | Command::Proxy,
        Protocol::Stream,
        (client, local),
    );
    if let Some(alpn) = session.alpn {
        builder = builder.write_tlv(Type::ALPN, alpn)?;
    }
    if let Some(sni) = session.sni {
        builder = builder.write_tlv(Type::Authority, sni.as_bytes())?;
    }
    builder = builder.write_tlv(Type::SSL, &ssl_tlv(session))?;
    Ok(builder.build()?)
}

/// The PP2_TYPE_SSL value: client flags, the verify result, then sub-TLVs. The spec's verify
/// field is zero only when the client presented a certificate and it verified (rustls only
/// completes a handshake whose presented certificate verified); without a certificate it is
/// non-zero.
fn ssl_tlv(session: &Session<'_>) -> Vec<u8> {
    const CLIENT_SSL: u8 = 0x01;
    const CLIENT_CERT_CONN: u8 = 0x02;
    let mut flags = CLIENT_SSL;
    if session.client_cert {
        flags |= CLIENT_CERT_CONN;
    }
    let verify: u32 = if session.client_cert { 0 } else { 1 };
    let mut value = vec![flags];
    value.extend_from_slice(&verify.to_be_bytes());
    let mut sub = |kind: Type, bytes: &[u8]| {
        let Ok(len) = u16::try_from(bytes.len()) else {
            return;
        };
        value.push(kind as u8);
        value.extend_from_slice(&len.to_be_bytes());
        value.extend_from_slice(bytes);
    };
    sub(Type::SSLVersion, session.version.as_bytes());
    if let Some(cn) = &session.client_cn {
        sub(Type::SSLCommonName, cn.as_bytes());
    }
    if !session.cipher.is_empty() {
        sub(Type::SSLCipher, session.cipher.as_bytes());
    }
    value
}

/// The subject common name of a DER certificate.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

fn to_v6(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_header_carries_addresses_and_sni() {
        let client: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:443".parse().unwrap();
        let session = Session {
            sni: Some("shop.example.com"),
            alpn: Some(b"h2"),
            version: "TLSv1.3",
            cipher: "TLS13_AES_128_GCM_SHA256",
            client_cert: true,
            client_cn: Some("client-7".into()),
        };
        let header = v2(client, local, &session).unwrap();
        let parsed = ppp::v2::Header::try_from(header.as_slice()).unwrap();
        match parsed.addresses {
            ppp::v2::Addresses::IPv4(a) => {
                assert_eq!(a.source_address, std::net::Ipv4Addr::new(192, 0, 2, 7));
                assert_eq!(a.source_port, 40000);
                assert_eq!(a.destination_port, 443);
            }
            other => panic!("unexpected addresses {other:?}"),
        }
        let tlvs: Vec<_> = parsed.tlvs().map(Result::unwrap).collect();
        assert_eq!(tlvs[0].kind, Type::ALPN as u8);
        assert_eq!(&*tlvs[0].value, b"h2");
        assert_eq!(tlvs[1].kind, Type::Authority as u8);
        assert_eq!(&*tlvs[1].value, b"shop.example.com");
        assert_eq!(tlvs[2].kind, Type::SSL as u8);
        let ssl = &*tlvs[2].value;
        assert_eq!(ssl[0], 0x03, "TLS, with a client certificate");
        assert_eq!(&ssl[1..5], &[0, 0, 0, 0], "verified");
        let sub = &ssl[5..];
        assert_eq!(sub[0], Type::SSLVersion as u8);
        assert_eq!(&sub[3..10], b"TLSv1.3");
        assert_eq!(sub[10], Type::SSLCommonName as u8);
        assert_eq!(&sub[13..21], b"client-7");
    }

    #[test]
    fn ssl_tlv_says_not_verified_without_a_client_certificate() {
        let session = Session {
            version: "TLSv1.3",
            ..Session::default()
        };
        let ssl = ssl_tlv(&session);
        assert_eq!(ssl[0], 0x01, "TLS, no client certificate");
        assert_ne!(
            &ssl[1..5],
            &[0, 0, 0, 0],
            "verify is non-zero without a certificate"
        );
    }
}
