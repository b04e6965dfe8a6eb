//! A host's backend pool and the choice among its backends.
//!
//! A [`Pool`] is immutable once built (it is part of a snapshot); the only mutable parts are
//! atomics: a round-robin cursor and each backend's [`BackendState`]. No locks, no tokio, no
//! clock or RNG of its own: the caller passes the time and a random number, which keeps every
//! policy testable and deterministic.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::addr::BackendAddr;
use super::policy::{Policy, backend_key, ip_key, rendezvous_score, smooth_wrr_schedule};
use super::state::BackendState;

/// One backend in a pool.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Where to connect, as configured.
    pub addr: BackendAddr,
    /// Relative share.
    pub weight: u32,
    /// Live state, shared across reloads.
    pub state: Arc<BackendState>,
    /// Stable hash of the address, for `hash_client_ip`.
    key: u64,
}

impl Backend {
    /// A backend at `addr`; a fixed address is also recorded as the state's only address.
    pub fn new(addr: BackendAddr, weight: u32, state: Arc<BackendState>) -> Self {
        if let Some(ip) = addr.ip() {
            state.set_addrs(vec![ip]);
        }
        let key = backend_key(&addr.to_string());
        Self {
            addr,
            weight,
            state,
            key,
        }
    }
}

/// What a selection needs to know about the moment and the client.
#[derive(Debug, Clone, Copy)]
pub struct PickContext {
    /// The client's address (for `hash_client_ip`).
    pub client_ip: IpAddr,
    /// Monotonic milliseconds, on the same clock as the backends' cooldowns.
    pub now_ms: u64,
    /// A random number (for `p2c`).
    pub random: u64,
}

/// A host's backends and the policy choosing among them.
#[derive(Debug)]
pub struct Pool {
    backends: Vec<Backend>,
    policy: Policy,
    /// Smooth weighted round-robin order of backend indices, one cycle long.
    schedule: Vec<u32>,
    cursor: AtomicUsize,
}

impl Pool {
    /// Builds a pool. Weights of zero are treated as one.
    pub fn new(backends: Vec<Backend>, policy: Policy) -> Self {
        let schedule = if policy == Policy::RoundRobin {
            let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
            smooth_wrr_schedule(&weights)
        } else {
            Vec::new()
        };
        Self {
            backends,
            policy,
            schedule,
            cursor: AtomicUsize::new(0),
        }
    }

    /// The backends, in configuration order.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Chooses a backend that is up and not in `tried`. `None` when no backend is eligible.
    pub fn pick(&self, ctx: &PickContext, tried: &[usize]) -> Option<usize> {
        let eligible = |i: usize| !tried.contains(&i) && self.backends[i].state.is_up(ctx.now_ms);
        match self.policy {
            Policy::RoundRobin => self.pick_round_robin(eligible),
            Policy::LeastConn => self.pick_least_conn(eligible),
            Policy::P2c => self.pick_p2c(ctx.random, eligible),
            Policy::HashClientIp => self.pick_hash(ctx.client_ip, eligible),
        }
    }

    fn pick_round_robin(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.schedule.len();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|step| self.schedule[(start + step) % len] as usize)
            .find(|&i| eligible(i))
    }

    fn pick_least_conn(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        // Rotating the scan start spreads ties instead of always favouring the first backend.
        let n = self.backends.len();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|step| (start + step) % n)
            .filter(|&i| eligible(i))
            .reduce(|best, i| if self.less_loaded(i, best) { i } else { best })
    }

    fn pick_p2c(&self, random: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.backends.len();
        if n >= 2 {
            let a = (random % n as u64) as usize;
            let b = (a + 1 + ((random >> 32) % (n as u64 - 1)) as usize) % n;
            if eligible(a) && eligible(b) {
                return Some(if self.less_loaded(b, a) { b } else { a });
            }
        }
        // A candidate was down or already tried: fall back to the least loaded eligible one.
        self.pick_least_conn(eligible)
    }

    fn pick_hash(&self, client_ip: IpAddr, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let key = ip_key(client_ip);
        (0..self.backends.len())
            .filter(|&i| eligible(i))
            .map(|i| {
                let b = &self.backends[i];
                (i, rendezvous_score(key, b.key, b.weight))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }

    /// Whether backend `a` carries less load per unit of weight than backend `b`.
    fn less_loaded(&self, a: usize, b: usize) -> bool {
        let (a, b) = (&self.backends[a], &self.backends[b]);
        u64::from(a.state.active()) * u64::from(b.weight.max(1))
            < u64::from(b.state.active()) * u64::from(a.weight.max(1))
    }
}

#[cfg(test)]
mod tests;
