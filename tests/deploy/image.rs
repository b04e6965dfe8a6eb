//! The container image: `deploy/Dockerfile`.

use super::*;
use crate::kubernetes::{at, configmap_config, find, manifests};

/// The Dockerfile's instructions as (keyword, arguments): continuations joined, comments dropped.
fn dockerfile(keyword: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = String::new();
    for line in read("deploy/Dockerfile").lines().map(str::trim) {
        if line.starts_with('#') || (pending.is_empty() && line.is_empty()) {
            continue;
        }
        if let Some(part) = line.strip_suffix('\\') {
            pending.push_str(part.trim_end());
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let (op, args) = pending.split_once(' ').unwrap_or((pending.as_str(), ""));
        if op.eq_ignore_ascii_case(keyword) {
            found.push(args.trim().to_owned());
        }
        pending.clear();
    }
    found
}

#[test]
fn dockerfile_builds_with_a_command_ci_runs() {
    let builds: Vec<String> = dockerfile("RUN")
        .into_iter()
        .filter(|run| run.contains("cargo "))
        .collect();
    assert_eq!(builds, ["cargo build --release --locked --bin tlsedge"]);
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|line| line.trim() == builds[0]),
        ".ci/run must run the image's build step, verbatim, as a line of its own: {}",
        builds[0]
    );
    let copy = dockerfile("COPY")
        .into_iter()
        .find(|copy| copy.starts_with("--from=build "))
        .expect("the runtime stage copies from the build stage");
    assert!(copy.contains("/target/release/tlsedge "), "{copy}");
}

#[test]
fn dockerfile_runs_a_numeric_non_root_user_on_the_builders_debian() {
    let froms = dockerfile("FROM");
    assert_eq!(froms.len(), 2, "a build and a runtime stage: {froms:?}");
    assert!(froms[0].ends_with(" AS build"), "{froms:?}");
    // Same Debian release, so the binary's glibc is the runtime's.
    assert!(froms.iter().all(|f| f.contains("bookworm")), "{froms:?}");
    let user = dockerfile("USER").pop().expect("USER");
    let (uid, gid) = user.split_once(':').expect("USER uid:gid");
    // Numeric: runAsNonRoot is checked against the image's user without reading /etc/passwd.
    let uid: u64 = uid.parse().expect("numeric uid");
    gid.parse::<u64>().expect("numeric gid");
    assert_ne!(uid, 0);
    let docs = manifests();
    for (kind, name, pod) in [
        ("Deployment", "tlsedge", "/spec/template/spec"),
        (
            "CronJob",
            "tlsedge-ticket-keys",
            "/spec/jobTemplate/spec/template/spec",
        ),
    ] {
        let security = at(find(&docs, kind, name), &format!("{pod}/securityContext"));
        assert_eq!(
            security["runAsUser"], uid,
            "{kind} {name}: the image's user"
        );
        assert_eq!(security["runAsNonRoot"], true, "{kind} {name}");
    }
}

/// Runs the image's HEALTHCHECK command (exec form) against `port`.
fn healthy(port: u16) -> bool {
    let check = dockerfile("HEALTHCHECK").pop().expect("HEALTHCHECK");
    let (_, cmd) = check
        .split_once("CMD ")
        .expect("HEALTHCHECK [options] CMD [...]");
    let cmd: Vec<String> = serde_json::from_str(cmd).expect("exec form");
    let status = Command::new(&cmd[0])
        .args(&cmd[1..])
        .env("TLSEDGE_HEALTH_PORT", port.to_string())
        .status()
        .unwrap();
    status.success()
}

#[test]
fn dockerfile_healthcheck_asks_healthz_without_curl() {
    let docs = manifests();
    let admin = configmap_config(&docs).admin.bind.expect("admin listener");
    let admin: SocketAddr = admin.parse().unwrap();
    let env = format!("TLSEDGE_HEALTH_PORT={}", admin.port());
    assert!(
        dockerfile("ENV").contains(&env),
        "default is the admin port"
    );

    let site = Site::new();
    ecdsa(&site, "a", &["a.test"]);
    let backend = "127.0.0.1:9".parse().unwrap();
    let config = site.config(&format!(
        "hosts:\n{}",
        host(&["a.test"], &["a"], &[backend], "")
    ));
    let tlsedge = Proc::spawn(
        Command::new(BIN)
            .args(["run", "--log-format", "json", "--config"])
            .arg(&config),
    );
    let line = tlsedge.wait_line("serving /metrics");
    let admin: SocketAddr = json_field(&line, "admin.addr").parse().unwrap();
    assert!(healthy(admin.port()), "a running tlsedge is healthy");
    drop(tlsedge);

    // Something that answers, but not 200, is not healthy; nothing listening is not either.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = [0; 512];
        assert!(conn.read(&mut request).unwrap() > 0);
        conn.write_all(b"HTTP/1.0 503 Service Unavailable\r\n\r\n")
            .unwrap();
    });
    assert!(!healthy(port), "503");
    answer.join().unwrap();
    assert!(!healthy(port), "closed port");
}
