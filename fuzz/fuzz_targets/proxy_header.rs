//! The PROXY v1/v2 header reader (`tlsedge::conn::proxy_protocol::read`) over arbitrary bytes,
//! delivered in chunks whose sizes come from the input's first byte, so the incremental path
//! (an incomplete header completed by a later read) is covered too. Checked: no panic; on
//! success the stream replays exactly the bytes after the header; an error is one of the
//! expected kinds, never a timeout (the bytes are all there, then EOF).
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncReadExt;

use tlsedge::config::ProxyInput;
use tlsedge::conn::Endpoints;
use tlsedge::conn::proxy_protocol::{self, ProxyError};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let input = ProxyInput {
        trusted: vec!["10.0.0.0/8".parse().expect("net")],
        timeout: Duration::from_secs(3),
    };
    let socket = Endpoints {
        client: tlsedge_fuzz::addr(tlsedge_fuzz::PEER),
        server: tlsedge_fuzz::addr(tlsedge_fuzz::LOCAL),
    };
    // The whole-buffer parser must agree with itself on any prefix: no panic, whatever it says.
    let _ = proxy_protocol::parse(bytes, socket);
    tlsedge_fuzz::run_paused(async {
        let (mut tx, rx) = tokio::io::duplex(64 * 1024);
        let writer = async {
            use tokio::io::AsyncWriteExt;
            for piece in bytes.chunks(chunk) {
                if tx.write_all(piece).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            let _ = tx.shutdown().await;
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let reader = async {
            match proxy_protocol::read(rx, &input, socket, deadline).await {
                Ok((mut rest, _ends)) => {
                    let mut replay = Vec::new();
                    rest.read_to_end(&mut replay).await.expect("replay");
                    assert!(
                        bytes.ends_with(&replay),
                        "replayed bytes are not the input's tail"
                    );
                    assert!(replay.len() < bytes.len(), "a header of zero bytes");
                }
                Err(ProxyError::Malformed(_) | ProxyError::Truncated) => {}
                Err(e) => panic!("unexpected error with all bytes sent: {e:?}"),
            }
        };
        tokio::join!(writer, reader);
    });
});
