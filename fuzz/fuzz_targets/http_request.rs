//! Arbitrary bytes as one decrypted HTTP/1.1 client connection of an `http`-mode host:
//! hyper's parser, then `tlsedge::http::service::handle` (route, 421 check, limits, header
//! rewrites, upgrade handling, forwarding to a backend that refuses). Plaintext: the TLS layer
//! is covered by `pipeline`. Every connection must end, without a panic.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tlsedge_fuzz::PipelineFixture;

static FIXTURE: LazyLock<PipelineFixture> = LazyLock::new(PipelineFixture::new);

fuzz_target!(|data: &[u8]| {
    FIXTURE.feed_http1(data);
});
