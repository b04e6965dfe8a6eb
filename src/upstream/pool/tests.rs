use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use proptest::prelude::*;

use super::*;

fn pool(weights: &[u32], policy: Policy) -> Pool {
    let backends = weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| {
            let addr = SocketAddr::from(([10, 0, 0, i as u8 + 1], 8080));
            Backend::new(BackendAddr::Ip(addr), weight, Arc::default())
        })
        .collect();
    Pool::new(backends, policy)
}

fn ctx(client: u32, random: u64) -> PickContext {
    PickContext {
        client_ip: IpAddr::V4(Ipv4Addr::from(client)),
        now_ms: 1_000,
        random,
    }
}

fn counts(pool: &Pool, picks: usize) -> Vec<usize> {
    let mut counts = vec![0; pool.backends().len()];
    for i in 0..picks {
        counts[pool.pick(&ctx(i as u32, i as u64), &[]).unwrap()] += 1;
    }
    counts
}

#[test]
fn smooth_schedule_interleaves() {
    let p = pool(&[5, 1, 1], Policy::RoundRobin);
    assert_eq!(p.schedule, vec![0, 0, 1, 0, 2, 0, 0]);
}

#[test]
fn round_robin_skips_down_and_tried_backends() {
    let p = pool(&[1, 1, 1], Policy::RoundRobin);
    p.backends()[1].state.mark_failed(1_000, 10_000);
    for _ in 0..10 {
        let got = p.pick(&ctx(1, 0), &[0]).unwrap();
        assert_eq!(got, 2);
    }
    p.backends()[2].state.mark_failed(1_000, 10_000);
    assert_eq!(p.pick(&ctx(1, 0), &[0]), None);
}

#[test]
fn least_conn_prefers_idle_backend() {
    let p = pool(&[1, 1, 1], Policy::LeastConn);
    let _busy: Vec<_> = (0..3).map(|_| p.backends()[0].state.track()).collect();
    let _one = p.backends()[1].state.track();
    for _ in 0..20 {
        assert_eq!(p.pick(&ctx(1, 0), &[]), Some(2));
    }
}

#[test]
fn p2c_never_picks_the_busier_of_two() {
    let p = pool(&[1, 1], Policy::P2c);
    let _busy = p.backends()[0].state.track();
    for r in 0..100 {
        assert_eq!(p.pick(&ctx(1, r), &[]), Some(1));
    }
}

#[test]
fn hash_moves_about_one_in_n_plus_one_when_adding_a_backend() {
    let before = pool(&[1, 1, 1, 1], Policy::HashClientIp);
    let after = pool(&[1, 1, 1, 1, 1], Policy::HashClientIp);
    let clients = 10_000;
    let mut moved = 0;
    for c in 0..clients {
        let a = before.pick(&ctx(c, 0), &[]).unwrap();
        let b = after.pick(&ctx(c, 0), &[]).unwrap();
        if a != b {
            assert_eq!(b, 4, "a client may only move to the new backend");
            moved += 1;
        }
    }
    let share = f64::from(moved) / f64::from(clients);
    assert!((share - 0.2).abs() < 0.03, "moved share {share}");
}

#[test]
fn hash_falls_back_to_next_choice_when_down() {
    let p = pool(&[1, 1, 1], Policy::HashClientIp);
    let first = p.pick(&ctx(7, 0), &[]).unwrap();
    let second = p.pick(&ctx(7, 0), &[first]).unwrap();
    assert_ne!(first, second);
    p.backends()[first].state.mark_failed(1_000, 10_000);
    assert_eq!(p.pick(&ctx(7, 0), &[]), Some(second));
}

proptest! {
    #[test]
    fn round_robin_respects_weights_exactly_per_cycle(
        weights in prop::collection::vec(1_u32..20, 1..8),
        cycles in 1_usize..5,
    ) {
        let p = pool(&weights, Policy::RoundRobin);
        let total: u32 = weights.iter().sum();
        let got = counts(&p, total as usize * cycles);
        for (i, w) in weights.iter().enumerate() {
            prop_assert_eq!(got[i], *w as usize * cycles);
        }
    }

    #[test]
    fn every_policy_returns_an_eligible_backend(
        n in 1_usize..10,
        down in prop::collection::vec(any::<bool>(), 10),
        tried in prop::collection::vec(0_usize..10, 0..4),
        policy in prop::sample::select(vec![
            Policy::RoundRobin,
            Policy::LeastConn,
            Policy::P2c,
            Policy::HashClientIp,
        ]),
        client in any::<u32>(),
        random in any::<u64>(),
    ) {
        let p = pool(&vec![1; n], policy);
        for (i, b) in p.backends().iter().enumerate() {
            if down[i] {
                b.state.mark_failed(1_000, 5_000);
            }
        }
        let eligible: Vec<usize> =
            (0..n).filter(|i| !down[*i] && !tried.contains(i)).collect();
        match p.pick(&ctx(client, random), &tried) {
            Some(i) => prop_assert!(eligible.contains(&i)),
            None => prop_assert!(eligible.is_empty()),
        }
    }

    #[test]
    fn hash_is_stable_for_a_client(client in any::<u32>(), n in 1_usize..12) {
        let p = pool(&vec![1; n], Policy::HashClientIp);
        let first = p.pick(&ctx(client, 1), &[]);
        for r in 0..5 {
            prop_assert_eq!(p.pick(&ctx(client, r), &[]), first);
        }
    }
}

#[test]
fn hash_spreads_by_weight() {
    let p = pool(&[1, 3], Policy::HashClientIp);
    let mut seen: HashMap<usize, u32> = HashMap::new();
    for c in 0..20_000 {
        *seen.entry(p.pick(&ctx(c, 0), &[]).unwrap()).or_default() += 1;
    }
    let share = f64::from(seen[&1]) / 20_000.0;
    assert!((share - 0.75).abs() < 0.03, "weighted share {share}");
}
