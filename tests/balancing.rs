//! Every balancing policy over real connections: weighted round robin is exact, least_conn and
//! p2c avoid a busy backend, and hash_client_ip is stable and consistent when a backend is added.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use common::{Backend, ClientOpts, Lb, PATIENCE, Site, backends, connect_from, ecdsa, hello};
use rustls::ClientConfig;
use tokio::io::AsyncWriteExt;

const NAME: &str = "pool.test";

/// One host over `backends` with `policy`; `weights` (if any) in backend order.
fn config(site: &Site, policy: &str, backends: &[&Backend], weights: &[u32]) -> std::path::PathBuf {
    let mut body = format!(
        "reload: {{ watch: false }}\nhosts:\n  - names: [{NAME}]\n    certs:\n      - {{ cert: pool.pem, key: pool.key }}\n    balance: {policy}\n    backends:\n"
    );
    for (i, b) in backends.iter().enumerate() {
        let weight = weights.get(i).copied().unwrap_or(1);
        body.push_str(&format!(
            "      - {{ address: \"{}\", weight: {weight} }}\n",
            b.addr
        ));
    }
    site.config(&body)
}

async fn start(
    policy: &str,
    backends: &[&Backend],
    weights: &[u32],
) -> (Site, Lb, Arc<ClientConfig>) {
    let site = Site::new();
    ecdsa(&site, "pool", &[NAME]);
    let lb = Lb::start(&config(&site, policy, backends, weights)).await;
    let client = ClientOpts::default().build(&site.ca);
    (site, lb, client)
}

/// Makes `n` connections one after another and counts them per backend name.
async fn spread(
    lb: &Lb,
    client: &Arc<ClientConfig>,
    n: usize,
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let reply = hello(lb.addr, NAME, client).await.expect("proxied");
        *counts.entry(reply.backend).or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn round_robin_is_even_within_one() {
    let pool = backends(3).await;
    let (_site, lb, client) = start("round_robin", &pool.iter().collect::<Vec<_>>(), &[]).await;
    let counts = spread(&lb, &client, 1000).await;
    for b in &pool {
        let got = counts.get(&b.name).copied().unwrap_or(0);
        assert!((332..=334).contains(&got), "{counts:?}");
    }
}

#[tokio::test]
async fn round_robin_respects_weights() {
    let pool = backends(3).await;
    let (_site, lb, client) =
        start("round_robin", &pool.iter().collect::<Vec<_>>(), &[1, 2, 7]).await;
    let counts = spread(&lb, &client, 1000).await;
    let got: Vec<usize> = pool.iter().map(|b| counts[&b.name]).collect();
    assert_eq!(got, [100, 200, 700], "{counts:?}");
}

/// Holds five connections on `b0` and none elsewhere, then checks that 1,000 new connections
/// all avoid `b0`.
async fn avoids_the_busy_backend(policy: &str) {
    let pool = backends(3).await;
    let (_site, lb, client) = start(policy, &pool.iter().collect::<Vec<_>>(), &[]).await;
    // Open and hold connections until five are on b0 (both policies spread held connections,
    // so this takes about 15), then release everything not on b0.
    let mut open = Vec::new();
    while open.iter().filter(|(b, _)| b == "b0").count() < 5 {
        assert!(open.len() < 60, "{policy} never chose b0");
        let mut tls = common::connect(lb.addr, NAME, &client).await.unwrap();
        let reply = common::read_reply(&mut tls).await.unwrap();
        open.push((reply.backend, tls));
    }
    let mut held = Vec::new();
    for (backend, mut tls) in open {
        if backend == "b0" {
            held.push(tls);
        } else {
            let _ = tls.shutdown().await;
        }
    }
    lb.wait_metric("tlsedge_connections_active", &[], 5.0).await;
    let counts = spread(&lb, &client, 1000).await;
    assert_eq!(counts.get("b0"), None, "{policy}: {counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 1000);
    // The held connections still work.
    for tls in &mut held {
        tls.write_all(b"ping").await.unwrap();
    }
}

#[tokio::test]
async fn least_conn_favours_idle_backends() {
    avoids_the_busy_backend("least_conn").await;
}

#[tokio::test]
async fn p2c_favours_idle_backends() {
    avoids_the_busy_backend("p2c").await;
}

/// 250 distinct client addresses (127.0.1.1 – 127.0.1.250: all of 127/8 is loopback on Linux).
fn clients() -> Vec<SocketAddr> {
    (1..=250)
        .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 1, i)), 0))
        .collect()
}

async fn map_clients(lb: &Lb, client: &Arc<ClientConfig>) -> Vec<String> {
    let mut chosen = Vec::new();
    for local in clients() {
        let mut tls = connect_from(Some(local), lb.addr, NAME, client)
            .await
            .unwrap();
        chosen.push(common::read_reply(&mut tls).await.unwrap().backend);
        let _ = tls.shutdown().await;
    }
    chosen
}

#[tokio::test]
async fn hash_client_ip_is_stable_and_consistent() {
    let pool = backends(4).await;
    let three: Vec<&Backend> = pool[..3].iter().collect();
    let (site, lb, client) = start("hash_client_ip", &three, &[]).await;
    let first = map_clients(&lb, &client).await;
    assert_eq!(
        map_clients(&lb, &client).await,
        first,
        "same client, same backend"
    );
    for b in &three {
        let share = first.iter().filter(|n| **n == b.name).count();
        assert!((40..=130).contains(&share), "{} got {share} of 250", b.name);
    }

    // Add a fourth backend: about a quarter of the clients move, and only to it.
    let generation = lb.generation();
    config(
        &site,
        "hash_client_ip",
        &pool.iter().collect::<Vec<_>>(),
        &[],
    );
    lb.trigger.reload();
    common::wait_for("reload", PATIENCE, || async {
        lb.generation() > generation
    })
    .await;
    let second = map_clients(&lb, &client).await;
    let moved: Vec<usize> = (0..first.len())
        .filter(|&i| first[i] != second[i])
        .collect();
    assert!(
        moved.iter().all(|&i| second[i] == "b3"),
        "clients moved between old backends"
    );
    let fraction = moved.len() as f64 / first.len() as f64;
    assert!(
        (0.12..=0.40).contains(&fraction),
        "moved {fraction}, expected about 0.25"
    );
    assert_eq!(
        map_clients(&lb, &client).await,
        second,
        "stable after the change"
    );
}
