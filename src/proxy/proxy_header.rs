//! PROXY protocol v2 header towards backends: the client's address, our address, and the SNI
//! as an authority TLV, so a backend sees who really connected and for which name.

use std::net::SocketAddr;

use ppp::v2::{Builder, Command, Protocol, Type, Version};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::config::model::ProxyProtocol;
use crate::snapshot::Host;

/// The header to send first to the backend, if the host asks for one.
pub(crate) fn build(
    host: &Host,
    client: SocketAddr,
    tls: &TlsStream<TcpStream>,
    sni: Option<&str>,
) -> Option<Vec<u8>> {
    let ProxyProtocol::V2 = host.proxy_protocol?;
    let local = tls.get_ref().0.local_addr().ok()?;
    v2(client, local, sni)
}

/// Encodes a v2 PROXY header for a TCP connection from `client` to `local`.
pub(crate) fn v2(client: SocketAddr, local: SocketAddr, sni: Option<&str>) -> Option<Vec<u8>> {
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
    if let Some(sni) = sni {
        builder = builder.write_tlv(Type::Authority, sni.as_bytes()).ok()?;
    }
    builder.build().ok()
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
        let header = v2(client, local, Some("shop.example.com")).unwrap();
        let parsed = ppp::v2::Header::try_from(header.as_slice()).unwrap();
        match parsed.addresses {
            ppp::v2::Addresses::IPv4(a) => {
                assert_eq!(a.source_address, std::net::Ipv4Addr::new(192, 0, 2, 7));
                assert_eq!(a.source_port, 40000);
                assert_eq!(a.destination_port, 443);
            }
            other => panic!("unexpected addresses {other:?}"),
        }
        let tlv = parsed.tlvs().next().unwrap().unwrap();
        assert_eq!(tlv.kind, Type::Authority as u8);
        assert_eq!(&*tlv.value, b"shop.example.com");
    }
}
