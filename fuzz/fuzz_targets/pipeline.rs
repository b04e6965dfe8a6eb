//! The whole connection pipeline (`tlsedge::conn::serve`) fed arbitrary client bytes: PROXY
//! header (when the input starts like one), ClientHello, route by SNI, allow list, handshake,
//! and whatever records follow, against a snapshot with a `tcp` and an `http` host. Time is
//! paused, so handshake and header deadlines elapse at once; every connection must end.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tlsedge_fuzz::PipelineFixture;

static FIXTURE: LazyLock<PipelineFixture> = LazyLock::new(PipelineFixture::new);

fuzz_target!(|data: &[u8]| {
    FIXTURE.feed(data);
});
