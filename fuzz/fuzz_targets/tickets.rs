//! Session ticket decryption with attacker-chosen ticket bytes, and the encrypt → decrypt round
//! trip of arbitrary plaintext. `decrypt` must never panic and must not accept bytes it did not
//! issue (a forgery would need the AEAD tag); a ticket it issued must decrypt to the input, for
//! the same host context only.
#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rustls::server::ProducesTickets;

use tlsedge::tls::tickets::TicketKeys;

struct Ticketers {
    a: Arc<dyn ProducesTickets>,
    b: Arc<dyn ProducesTickets>,
}

static TICKETERS: LazyLock<Ticketers> = LazyLock::new(|| {
    let keys = Arc::new(
        TicketKeys::in_memory(Duration::from_secs(3600), Duration::from_secs(7200))
            .expect("ticket keys"),
    );
    Ticketers {
        a: keys.for_host(1),
        b: keys.for_host(2),
    }
});

fuzz_target!(|data: &[u8]| {
    let t = &*TICKETERS;
    if let Some(plain) = t.a.decrypt(data) {
        panic!("forged ticket of {} bytes accepted: {plain:?}", data.len());
    }
    let ticket = t.a.encrypt(data).expect("encrypt");
    assert_eq!(t.a.decrypt(&ticket).as_deref(), Some(data), "round trip");
    assert!(
        t.b.decrypt(&ticket).is_none(),
        "ticket decrypts for another host"
    );
    // Any change to an issued ticket must be refused.
    if let Some((last, head)) = ticket.split_last() {
        let mut flipped = head.to_vec();
        flipped.push(last ^ 1);
        assert!(t.a.decrypt(&flipped).is_none(), "tampered ticket accepted");
        assert!(t.a.decrypt(head).is_none(), "truncated ticket accepted");
    }
});
