//! The per-client-address connection limit (`limits.per_client_ip`): how many connections each
//! client address has open right now, so the one over the limit is closed before it costs a
//! handshake.
//!
//! The count is keyed by the client address as the pipeline knows it (the PROXY header's when
//! there is one), IPv4-mapped IPv6 folded into IPv4. The map lives in the runtime, not in a
//! snapshot: a reload that changes the limit applies to new connections and keeps counting the
//! open ones. One `std::sync::Mutex` over a map is right here: the critical section is a hash
//! lookup, taken twice per connection and only when the limit is on.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};

/// Open connections per client address.
#[derive(Debug, Default)]
pub struct ClientLimits {
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// One admitted connection; gives its slot back when dropped.
#[derive(Debug)]
pub struct ClientSlot {
    limits: Arc<ClientLimits>,
    ip: IpAddr,
}

impl ClientLimits {
    /// Admits a connection from `ip` if it has fewer than `limit` open; `None` when it is over.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, limit: NonZeroU32) -> Option<ClientSlot> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= limit.get() {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            limits: Arc::clone(self),
            ip,
        })
    }

    /// Connections open from `ip` (for tests and introspection).
    pub fn open(&self, ip: IpAddr) -> u32 {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self
            .limits
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            // Addresses with nothing open are removed: the map holds only live clients.
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_connection_over_the_limit_is_refused_per_address() {
        let limits = Arc::new(ClientLimits::default());
        let two = NonZeroU32::new(2).unwrap();
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let b: IpAddr = "192.0.2.8".parse().unwrap();
        let first = limits.admit(a, two).unwrap();
        let second = limits.admit(mapped, two).expect("same client, second slot");
        assert!(limits.admit(a, two).is_none(), "third from one address");
        let other = limits
            .admit(b, two)
            .expect("other addresses are unaffected");
        drop(first);
        let again = limits.admit(a, two).expect("a slot came back");
        drop((second, again, other));
        assert_eq!(limits.open(a), 0);
        assert!(limits.open.lock().unwrap().is_empty());
    }
}
