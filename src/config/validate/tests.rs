//! Validation of the file-level settings: upper bounds, listeners (plain and object form, PROXY
//! input), `limits.per_client_ip`, and naming start-time changes. No file is read: the hosts'
//! certificate errors (scoped to the host) are filtered out.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::bounds::{DAY, WEEK};
use super::*;
use crate::config::load::{self, LoadError};
use crate::config::problem::Quantity;

const FILE: &str = "/nonexistent/tlsedge.yaml";

/// `listeners` and `hosts` around `body`, or `body` alone when it names its own listeners.
fn yaml(body: &str) -> String {
    let listeners = if body.contains("listeners:") {
        ""
    } else {
        "listeners: [\"127.0.0.1:443\"]\n"
    };
    format!(
        "{listeners}{body}\nhosts:\n  - names: [a.test]\n    certs: [{{ cert: a.pem, key: a.key }}]\n    backends: [{{ address: \"127.0.0.1:8080\" }}]\n"
    )
}

/// Validates `raw` as read from [`FILE`], now, with no earlier load to reuse.
fn validate_now(raw: &RawConfig, provider: &CryptoProvider) -> (Config, Vec<Problem>) {
    let (config, problems, _) = validate(
        raw,
        Path::new(FILE),
        provider,
        &mut FileCache::default(),
        SystemTime::now(),
        None,
    );
    (config, problems)
}

/// The typed config and its config-level problems as `(place, issue)`.
fn check(body: &str) -> (Config, Vec<(String, Issue)>) {
    let raw = load::parse(&yaml(body), Path::new(FILE)).expect("parses");
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let (config, problems) = validate_now(&raw, &provider);
    let problems = problems
        .into_iter()
        .filter(|p| p.scope == Scope::Config)
        .map(|p| (p.place, p.issue))
        .collect();
    (config, problems)
}

/// The config-level problems of one host `a.test` with `lines` (indented four spaces) and
/// top-level `top`, as `place: message`.
pub(super) fn host_problems(top: &str, lines: &str) -> Vec<String> {
    let text = format!(
        "listeners: [\"127.0.0.1:443\"]\n{top}hosts:\n  - names: [a.test]\n    certs: [{{ cert: a.pem, key: a.key }}]\n    backends: [{{ address: \"127.0.0.1:8080\" }}]\n{lines}"
    );
    let raw = load::parse(&text, Path::new(FILE)).expect("parses");
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let (_, found) = validate_now(&raw, &provider);
    found
        .into_iter()
        .filter(|p| p.scope == Scope::Config)
        .map(|p| format!("{}: {}", p.place, p.issue))
        .collect()
}

fn places(body: &str) -> Vec<String> {
    check(body).1.into_iter().map(|(place, _)| place).collect()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn defaults_and_the_largest_values_pass() {
    assert_eq!(places(""), Vec::<String>::new());
    let largest = "timeouts: { handshake: 1d, backend_connect: 1d, idle: 7d, drain: 1d, \
                   backend_cooldown: 1d, half_closed: 7d }\n\
                   limits: { max_connections: 1000000, backend_attempts: 100, \
                   per_client_ip: 1000000 }\n\
                   sessions: { cache_size: 1000000, ticket_rotate_every: 7d, \
                   ticket_lifetime: 24h }\n\
                   reload: { debounce: 1d, max_delay: 1d, recheck_every: 1d, dns_refresh: 1d }\n";
    assert_eq!(places(largest), Vec::<String>::new());
}

#[test]
fn a_huge_duration_is_too_large_not_a_panic() {
    let (_, problems) = check("timeouts: { handshake: 100000000000y }");
    let [(place, Issue::TooLarge { value, max })] = &problems[..] else {
        panic!("{problems:?}");
    };
    assert_eq!(place, "timeouts.handshake");
    assert!(matches!(value, Quantity::Duration(d) if *d > DAY));
    assert_eq!(*max, Quantity::Duration(DAY));
    let message = problems[0].1.to_string();
    assert!(message.contains("maximum of 1day"), "{message}");
}

#[test]
fn every_number_and_duration_has_an_upper_bound() {
    let body = "timeouts: { handshake: 25h, backend_connect: 2d, idle: 8d, drain: 2d, \
                backend_cooldown: 2d, half_closed: 8d }\n\
                limits: { max_connections: 1000001, backend_attempts: 101, \
                per_client_ip: 1000001 }\n\
                sessions: { cache_size: 10000001, ticket_rotate_every: 8d }\n\
                reload: { debounce: 2d, max_delay: 2d, recheck_every: 2d, dns_refresh: 2d }\n";
    let (_, problems) = check(body);
    let too_large: Vec<&str> = problems
        .iter()
        .filter(|(_, issue)| matches!(issue, Issue::TooLarge { .. }))
        .map(|(place, _)| place.as_str())
        .collect();
    assert_eq!(
        too_large,
        [
            "limits.max_connections",
            "sessions.ticket_rotate_every",
            "sessions.cache_size",
            "reload.debounce",
            "reload.max_delay",
            "reload.recheck_every",
            "reload.dns_refresh",
            "timeouts.handshake",
            "timeouts.backend_connect",
            "timeouts.idle",
            "timeouts.drain",
            "timeouts.backend_cooldown",
            "timeouts.half_closed",
            "limits.backend_attempts",
            "limits.per_client_ip",
        ]
    );
    assert_eq!(too_large.len(), problems.len(), "{problems:?}");
    let idle = &problems
        .iter()
        .find(|(p, _)| p == "timeouts.idle")
        .unwrap()
        .1;
    assert!(matches!(idle, Issue::TooLarge { max, .. } if *max == Quantity::Duration(WEEK)));
}

#[test]
fn zero_is_refused_where_it_makes_no_sense() {
    let body = "timeouts: { handshake: 0s, backend_connect: 0s, idle: 0s, drain: 0s, \
                backend_cooldown: 0s, half_closed: 0s }\n\
                limits: { max_connections: 0, backend_attempts: 0, per_client_ip: 0 }\n\
                sessions: { cache_size: 0, ticket_rotate_every: 0s }\n\
                reload: { debounce: 0s, max_delay: 0s, recheck_every: 0s, dns_refresh: 0s }\n";
    let (_, problems) = check(body);
    assert!(problems.iter().all(|(_, i)| matches!(i, Issue::Zero)));
    let zero: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        zero,
        [
            "limits.max_connections",
            "sessions.ticket_rotate_every",
            "reload.recheck_every",
            "reload.dns_refresh",
            "timeouts.handshake",
            "timeouts.backend_connect",
            "timeouts.idle",
            "timeouts.half_closed",
            "limits.backend_attempts",
            "limits.per_client_ip",
        ]
    );
}

#[test]
fn health_check_bounds_name_the_host() {
    let body = "listeners: [\"127.0.0.1:443\"]";
    let text = yaml(body).replace(
        "    backends:",
        "    health_check: { interval: 2d, timeout: 0s, fall: 101, rise: 0 }\n    backends:",
    );
    let raw = load::parse(&text, Path::new(FILE)).unwrap();
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let (config, problems) = validate_now(&raw, &provider);
    let found: Vec<(String, String)> = problems
        .iter()
        .filter(|p| p.scope == Scope::Config)
        .map(|p| (p.place.clone(), p.issue.to_string()))
        .collect();
    let at = "hosts[0] (a.test): health_check";
    assert_eq!(
        found,
        [
            (
                format!("{at}.interval"),
                "2days is more than the maximum of 1day".to_owned()
            ),
            (format!("{at}.timeout"), "must be greater than zero".into()),
            (
                format!("{at}.fall"),
                "101 is more than the maximum of 100".into()
            ),
            (format!("{at}.rise"), "must be greater than zero".into()),
        ]
    );
    assert!(config.hosts[0].health_check.is_none());
}

#[test]
fn listeners_mix_plain_and_object_forms() {
    let (config, problems) = check(
        "listeners: [\"0.0.0.0:443\", { bind: \"0.0.0.0:8443\", proxy_protocol: \
         { trusted: [\"10.0.0.0/8\", \"192.0.2.7\"], timeout: 5s } }, { bind: \"[::]:443\" }, \
         { bind: \"[::]:8443\", proxy_protocol: { trusted: [\"2001:db8::/32\"] } }]",
    );
    assert!(problems.is_empty(), "{problems:?}");
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    let net = |s: &str| s.parse::<IpNet>().unwrap();
    assert_eq!(
        config.start.listeners,
        [
            ListenerConfig {
                addr: addr("0.0.0.0:443"),
                proxy_protocol: None
            },
            ListenerConfig {
                addr: addr("0.0.0.0:8443"),
                proxy_protocol: Some(ProxyInput {
                    trusted: vec![net("10.0.0.0/8"), net("192.0.2.7/32")],
                    timeout: secs(5),
                }),
            },
            ListenerConfig {
                addr: addr("[::]:443"),
                proxy_protocol: None
            },
            ListenerConfig {
                addr: addr("[::]:8443"),
                proxy_protocol: Some(ProxyInput {
                    trusted: vec![net("2001:db8::/32")],
                    timeout: secs(3),
                }),
            },
        ]
    );
}

#[test]
fn proxy_input_needs_trusted_senders_and_a_bounded_timeout() {
    let problems = check(
        "listeners: [\"0.0.0.0:443\", { bind: \"0.0.0.0:8443\", proxy_protocol: \
         { trusted: [\"10.0.0.0/33\", \"192.0.2.7\", \"lb.example\"], timeout: 0s } }, \
         { bind: \"0.0.0.0:8444\", proxy_protocol: {} }, \
         { bind: \"0.0.0.0:8445\", proxy_protocol: { trusted: [\"10.0.0.1\"], timeout: 2d } }]",
    )
    .1;
    let found: Vec<(&str, &Issue)> = problems.iter().map(|(p, i)| (p.as_str(), i)).collect();
    assert!(
        matches!(
            found[..],
            [
                (
                    "listeners[1].proxy_protocol.trusted[0]",
                    Issue::BadCidr { .. }
                ),
                (
                    "listeners[1].proxy_protocol.trusted[2]",
                    Issue::BadCidr { .. }
                ),
                ("listeners[1].proxy_protocol.timeout", Issue::Zero),
                (
                    "listeners[2].proxy_protocol.trusted",
                    Issue::NoTrustedProxies
                ),
                (
                    "listeners[3].proxy_protocol.timeout",
                    Issue::TooLarge { .. }
                ),
            ]
        ),
        "{found:?}"
    );
}

#[test]
fn listener_objects_reject_unknown_keys_with_serde_s_message() {
    let text = yaml("listeners: [{ bnd: \"0.0.0.0:443\" }]");
    let Err(LoadError::Parse { source, .. }) = load::parse(&text, Path::new(FILE)) else {
        panic!("parsed");
    };
    let message = source.to_string();
    assert!(message.contains("listeners[0]"), "{message}");
    assert!(message.contains("unknown field `bnd`"), "{message}");
    let text = yaml("listeners: [{ bind: \"0.0.0.0:443\", proxy_protocol: { trust: [] } }]");
    assert!(load::parse(&text, Path::new(FILE)).is_err());
    assert!(load::parse(&yaml("listeners: [443]"), Path::new(FILE)).is_err());
}

#[test]
fn duplicate_listener_addresses_are_errors_except_ephemeral_ports() {
    let problems = check(
        "listeners: [\"127.0.0.1:443\", { bind: \"127.0.0.1:443\" }, \"127.0.0.1:0\", \
         \"127.0.0.1:0\"]\nadmin: { bind: \"127.0.0.1:443\" }",
    )
    .1;
    let found: Vec<(&str, String)> = problems
        .iter()
        .map(|(p, i)| (p.as_str(), i.to_string()))
        .collect();
    assert_eq!(
        found,
        [
            (
                "listeners[1].bind",
                "address 127.0.0.1:443 is already used by listeners[0]".to_owned()
            ),
            (
                "admin.bind",
                "address 127.0.0.1:443 is already used by listeners[0]".to_owned()
            ),
        ]
    );
    assert!(places("listeners: [\"127.0.0.1:0\"]\nadmin: { bind: \"127.0.0.1:0\" }").is_empty());
}

#[test]
fn per_client_ip_is_off_unless_set() {
    assert_eq!(check("").0.per_client_ip, None);
    let (config, problems) = check("limits: { per_client_ip: 50 }");
    assert!(problems.is_empty());
    assert_eq!(config.per_client_ip, NonZeroU32::new(50));
}

#[test]
fn start_time_changes_are_named_by_their_field() {
    let (running, _) = check("");
    assert!(running.start.changed(&running.start).is_empty());
    let (new, _) = check(
        "listeners: [\"127.0.0.1:443\", \"127.0.0.1:8443\"]\nadmin: { bind: null }\n\
         limits: { max_connections: 5, per_client_ip: 3 }\nreload: { debounce: 1s, watch: false }\n\
         sessions: { cache_size: 1, ticket_key_file: keys }\ntimeouts: { idle: 1m }",
    );
    assert_eq!(
        new.start.changed(&running.start),
        [
            "listeners",
            "admin.bind",
            "limits.max_connections",
            "sessions.cache_size",
            "reload.watch",
            "reload.debounce",
        ]
    );
    // Reloadable settings are not part of the start-time settings.
    let (reloadable, _) = check(
        "limits: { per_client_ip: 3, backend_attempts: 1 }\ntimeouts: { idle: 1m }\n\
         sessions: { ticket_key_file: keys }",
    );
    assert_eq!(reloadable.start, running.start);
}

#[test]
fn tls_policy_names_each_bad_field() {
    let at = "hosts[0] (a.test)";
    for ok in [
        "    tls_profile: modern\n",
        "    tls_profile: intermediate\n    min_tls: \"1.3\"\n",
        "    cipher_suites: [TLS_CHACHA20_POLY1305_SHA256, tls_ecdhe_rsa_with_aes_128_gcm_sha256]\n",
        "    kx_groups: [X25519MLKEM768, P-256]\n",
    ] {
        assert_eq!(host_problems("", ok), Vec::<String>::new(), "{ok}");
    }
    let found = host_problems("", "    tls_profile: modern\n    min_tls: \"1.2\"\n");
    assert_eq!(
        found,
        [format!("{at}: min_tls: tls_profile modern is TLS 1.3 only")]
    );
    let found = host_problems(
        "",
        "    tls_profile: modern\n    cipher_suites: [TLS_AES_128_GCM_SHA256, TLS_RSA_WITH_RC4_128_SHA, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n",
    );
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found[0].starts_with(&format!(
            "{at}: cipher_suites[1]: unknown cipher suite \"TLS_RSA_WITH_RC4_128_SHA\" (known: TLS_AES_256_GCM_SHA384,"
        )),
        "{found:?}"
    );
    assert_eq!(
        found[1],
        format!(
            "{at}: cipher_suites[2]: a TLS 1.2 suite on a TLS 1.3 only host (tls_profile modern or min_tls \"1.3\")"
        )
    );
    assert_eq!(
        found[2],
        format!("{at}: cipher_suites[3]: TLS_AES_128_GCM_SHA256 is listed twice")
    );
    let found = host_problems("", "    cipher_suites: [TLS_AES_128_GCM_SHA256]\n");
    assert_eq!(
        found,
        [format!(
            "{at}: cipher_suites: lists no TLS 1.2 suite while TLS 1.2 is enabled (add one, or set min_tls: \"1.3\")"
        )]
    );
    let found = host_problems("", "    kx_groups: [X25519MLKEM768, ffdhe2048]\n");
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with(&format!(
        "{at}: kx_groups[1]: unknown key exchange group \"ffdhe2048\" (known: "
    )));
    assert_eq!(
        found[1],
        format!(
            "{at}: kx_groups: lists no group usable with TLS 1.2 (X25519MLKEM768 is TLS 1.3 only)"
        )
    );
    let found = host_problems("", "    kx_groups: []\n");
    assert_eq!(found, [format!("{at}: kx_groups: must not be empty")]);
    let text = yaml("").replace("    backends:", "    tls_profile: old\n    backends:");
    let err = load::parse(&text, Path::new(FILE)).unwrap_err().to_string();
    assert!(
        err.contains("tls_profile") && err.contains("modern"),
        "{err}"
    );
}

#[test]
fn ticket_keys_that_would_pile_up_are_refused() {
    assert_eq!(
        places("sessions: { ticket_rotate_every: 5s, ticket_lifetime: 1h }\n"),
        Vec::<String>::new()
    );
    let (_, problems) = check("sessions: { ticket_rotate_every: 5s, ticket_lifetime: 12h }\n");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, "sessions.ticket_rotate_every");
    let message = problems[0].1.to_string();
    assert!(message.contains("keeps 8641 keys"), "{message}");
}
