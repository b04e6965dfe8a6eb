//! Backend selection: pure policies over a host's backend pool.
//!
//! A [`Pool`] is immutable once built (it is part of a snapshot); the only mutable parts are
//! atomics: a round-robin cursor and each backend's [`BackendState`]. No locks, no tokio, no
//! clock or RNG of its own: the caller passes the time and a random number, which keeps every
//! policy testable and deterministic.

pub mod health;
mod target;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use crate::config::model::BalancePolicy;
pub use health::{ActiveGuard, BackendState, Transition};
pub use target::BackendAddr;

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
        let key = stable_hash(addr.to_string().as_bytes(), 0);
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
    policy: BalancePolicy,
    /// Smooth weighted round-robin order of backend indices, one cycle long.
    schedule: Vec<u32>,
    cursor: AtomicUsize,
}

impl Pool {
    /// Builds a pool. Weights of zero are treated as one.
    pub fn new(backends: Vec<Backend>, policy: BalancePolicy) -> Self {
        let schedule = if policy == BalancePolicy::RoundRobin {
            smooth_wrr_schedule(&backends)
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
    pub fn policy(&self) -> BalancePolicy {
        self.policy
    }

    /// Chooses a backend that is up and not in `tried`. `None` when no backend is eligible.
    pub fn pick(&self, ctx: &PickContext, tried: &[usize]) -> Option<usize> {
        let eligible = |i: usize| !tried.contains(&i) && self.backends[i].state.is_up(ctx.now_ms);
        match self.policy {
            BalancePolicy::RoundRobin => self.pick_round_robin(eligible),
            BalancePolicy::LeastConn => self.pick_least_conn(eligible),
            BalancePolicy::P2c => self.pick_p2c(ctx.random, eligible),
            BalancePolicy::HashClientIp => self.pick_hash(ctx.client_ip, eligible),
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
            .map(|i| (i, rendezvous_score(key, &self.backends[i])))
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

/// Nginx's smooth weighted round robin, unrolled into one cycle: weights 5,1,1 give
/// `a a b a c a a` rather than `a a a a a b c`.
fn smooth_wrr_schedule(backends: &[Backend]) -> Vec<u32> {
    let weights: Vec<i64> = backends
        .iter()
        .map(|b| i64::from(b.weight.max(1)))
        .collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0_i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let Some(best) = (0..current.len()).max_by_key(|&i| (current[i], usize::MAX - i)) else {
            break;
        };
        current[best] -= total;
        schedule.push(best as u32);
    }
    schedule
}

/// A stable 64-bit key for an IP address (the same on every instance and every release, so a
/// fleet agrees on where a client goes).
fn ip_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => stable_hash(&v4.octets(), 4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => stable_hash(&v4.octets(), 4),
            None => stable_hash(&v6.octets(), 6),
        },
    }
}

/// Weighted rendezvous (highest random weight) score: `-w / ln(u)` with `u` uniform in (0, 1)
/// derived from the client and backend. Adding a backend to n moves about 1/(n+1) of clients.
fn rendezvous_score(client: u64, backend: &Backend) -> f64 {
    let mut bytes = [0_u8; 16];
    bytes[..8].copy_from_slice(&client.to_le_bytes());
    bytes[8..].copy_from_slice(&backend.key.to_le_bytes());
    let h = stable_hash(&bytes, 0);
    // 53 random bits into (0, 1): never 0 nor 1, so ln(u) is finite and negative.
    let u = ((h >> 11) as f64 + 0.5) / (1_u64 << 53) as f64;
    -f64::from(backend.weight.max(1)) / u.ln()
}

/// FNV-1a followed by the splitmix64 finaliser: small, stable, well mixed.
fn stable_hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests;
