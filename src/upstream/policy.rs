//! The balancing policies and the pure arithmetic behind them: the smooth weighted
//! round-robin schedule and the weighted rendezvous hash. Everything here is a function of its
//! arguments; [`super::pool`] applies it to a pool's live state.
//!
//! The configuration has its own serde enum (`config::model::BalancePolicy`); validation maps
//! it to [`Policy`], so this module knows nothing of YAML.

use std::net::IpAddr;

/// How a pool chooses among its eligible backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Weighted round robin, smoothly interleaved.
    #[default]
    RoundRobin,
    /// Fewest active connections relative to weight.
    LeastConn,
    /// Power of two random choices by active connections.
    P2c,
    /// Consistent (rendezvous) hashing of the client IP address.
    HashClientIp,
}

/// Nginx's smooth weighted round robin, unrolled into one cycle of indices into `weights`:
/// weights 5,1,1 give `a a b a c a a` rather than `a a a a a b c`. Weights of zero count as one.
pub(super) fn smooth_wrr_schedule(weights: &[u32]) -> Vec<u32> {
    let weights: Vec<i64> = weights.iter().map(|&w| i64::from(w.max(1))).collect();
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
pub(super) fn ip_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => stable_hash(&v4.octets(), 4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => stable_hash(&v4.octets(), 4),
            None => stable_hash(&v6.octets(), 6),
        },
    }
}

/// A stable 64-bit key for a backend, from its configured address text.
pub(super) fn backend_key(addr: &str) -> u64 {
    stable_hash(addr.as_bytes(), 0)
}

/// Weighted rendezvous (highest random weight) score: `-w / ln(u)` with `u` uniform in (0, 1)
/// derived from the client and backend keys. Adding a backend to n moves about 1/(n+1) of
/// clients.
pub(super) fn rendezvous_score(client: u64, backend: u64, weight: u32) -> f64 {
    let mut bytes = [0_u8; 16];
    bytes[..8].copy_from_slice(&client.to_le_bytes());
    bytes[8..].copy_from_slice(&backend.to_le_bytes());
    let h = stable_hash(&bytes, 0);
    // 53 random bits into (0, 1): never 0 nor 1, so ln(u) is finite and negative.
    let u = ((h >> 11) as f64 + 0.5) / (1_u64 << 53) as f64;
    -f64::from(weight.max(1)) / u.ln()
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
mod tests {
    use super::*;

    #[test]
    fn schedule_counts_zero_weight_as_one() {
        assert_eq!(smooth_wrr_schedule(&[0, 2]), vec![1, 0, 1]);
    }

    #[test]
    fn mapped_v4_clients_hash_like_plain_v4() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(v4), ip_key(mapped));
    }
}
