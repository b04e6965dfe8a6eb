//! systemd and certbot: `deploy/systemd/`, `deploy/certbot-deploy-hook.sh`.

use super::*;

/// `KEY=` values of a unit file, in order, from any section.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    let lines = unit.lines().map(str::trim);
    lines
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

/// The units copied to a temp dir with the built binary for /usr/local/bin/tlsedge (verify
/// wants every ExecStart program to exist).
fn units() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for unit in ["tlsedge.service", "tlsedge.socket"] {
        let text = read(&format!("deploy/systemd/{unit}")).replace("/usr/local/bin/tlsedge", BIN);
        write(&dir.path().join(unit), &text);
        paths.push(dir.path().join(unit));
    }
    let socket = paths.pop().unwrap();
    (dir, paths.pop().unwrap(), socket)
}

/// `systemd-analyze verify`: its complaints about our units (it exits 0 on an ignored line).
fn verify(service: &Path, socket: &Path) -> Vec<String> {
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .args([socket, service]));
    let report = output(&out);
    let dir = service.parent().unwrap().display().to_string();
    let ours = report
        .lines()
        .filter(|l| l.contains("tlsedge") || l.contains(&dir));
    let mut complaints: Vec<String> = ours.map(str::to_owned).collect();
    if !out.status.success() {
        complaints.push(format!("exit {:?}: {report}", out.status.code()));
    }
    complaints
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    if !tool("systemd-analyze", "systemd unit checks") {
        return;
    }
    let (_dir, service, socket) = units();
    assert_eq!(verify(&service, &socket), Vec::<String>::new());
    // The check sees mistakes: a bad address in the socket unit is reported.
    let text = std::fs::read_to_string(&socket).unwrap();
    write(
        &socket,
        &text.replace("ListenStream=0.0.0.0:443", "ListenStream=0.0.0.0:99999"),
    );
    let complaints = verify(&service, &socket);
    assert!(
        complaints.iter().any(|l| l.contains("99999")),
        "{complaints:?}"
    );
}

#[test]
fn systemd_service_is_socket_activated_notify_and_hardened() {
    let service = read("deploy/systemd/tlsedge.service");
    let one = |key: &str| unit_values(&service, key).join(" ");
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("NotifyAccess"), "main");
    assert_eq!(one("Requires"), "tlsedge.socket");
    assert!(one("ExecStartPre").contains("tlsedge check --config /etc/tlsedge/tlsedge.yaml"));
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(
        one("User"),
        "tlsedge",
        "a static user certbot's files can be opened to"
    );
    assert!(unit_values(&service, "DynamicUser").is_empty());
    for caps in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        assert_eq!(
            one(caps),
            "",
            "{caps}: none, the sockets come from tlsedge.socket"
        );
    }
    assert!(one("LimitNOFILE").parse::<u64>().unwrap() >= 65536);
    let example: RawConfig = serde_norway::from_str(&read("config/tlsedge.yaml")).unwrap();
    let stop: u64 = one("TimeoutStopSec").parse().unwrap();
    assert!(
        stop > example.timeouts.drain.as_secs(),
        "TimeoutStopSec covers timeouts.drain"
    );

    if !tool("systemd-analyze", "systemd unit checks") {
        return;
    }
    let (_dir, service, _) = units();
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&service));
    let report = output(&out);
    let level = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for tlsedge.service: "));
    let exposure: f64 = level
        .expect(&report)
        .1
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        exposure <= 2.0,
        "exposure {exposure} (systemd-analyze security):\n{report}"
    );
}

#[test]
fn systemd_socket_lists_every_address_of_the_example_config() {
    let socket = read("deploy/systemd/tlsedge.socket");
    let listed: BTreeSet<String> = unit_values(&socket, "ListenStream").into_iter().collect();
    let example: RawConfig = serde_norway::from_str(&read("config/tlsedge.yaml")).unwrap();
    let mut configured: BTreeSet<String> = example
        .listeners
        .iter()
        .map(|l| match l {
            RawListener::Addr(addr) => addr.clone(),
            RawListener::Object(object) => object.bind.clone(),
        })
        .collect();
    configured.extend(example.http_listeners.iter().cloned());
    configured.extend(example.admin.bind.iter().cloned());
    assert_eq!(listed, configured, "tlsedge.socket vs config/tlsedge.yaml");
}

#[test]
fn systemd_sysusers_creates_the_tlsedge_system_user() {
    if !tool("systemd-sysusers", "systemd unit checks") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let conf = Path::new(ROOT).join("deploy/systemd/tlsedge.sysusers.conf");
    let out = run(Command::new("systemd-sysusers")
        .arg("--root")
        .arg(root.path())
        .arg(conf));
    assert!(out.status.success(), "{}", output(&out));
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let user = passwd
        .lines()
        .find(|l| l.starts_with("tlsedge:"))
        .expect(&passwd);
    let fields: Vec<&str> = user.split(':').collect();
    assert!(
        fields[2].parse::<u32>().unwrap() < 1000,
        "a system user: {user}"
    );
    assert_eq!(fields[5], "/var/lib/tlsedge", "home: the StateDirectory");
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    assert!(
        group
            .lines()
            .any(|l| l.starts_with(&format!("tlsedge:x:{}:", fields[3])))
    );
}

/// `bin check` as uid/gid 65534 (nobody/nogroup), like the service user.
fn check_as_nobody(bin: &Path, config: &Path) -> Output {
    let ids = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    run(Command::new("setpriv")
        .args(ids)
        .arg(bin)
        .args(["check", "--config"])
        .arg(config))
}

/// A certbot lineage as certbot leaves it: live/ and archive/ 0700, the key 0600.
fn certbot_lineage(site: &Site, name: &str) -> PathBuf {
    let issued = ecdsa(site, "issued", &[name]);
    let le = site.path("letsencrypt");
    let archive = le.join("archive").join(name);
    let live = le.join("live").join(name);
    for (file, pem) in [
        ("fullchain", &issued.cert_pem),
        ("privkey", &issued.key_pem),
    ] {
        write(&archive.join(format!("{file}1.pem")), pem);
        std::fs::create_dir_all(&live).unwrap();
        let target = format!("../../archive/{name}/{file}1.pem");
        std::os::unix::fs::symlink(target, live.join(format!("{file}.pem"))).unwrap();
    }
    set_mode(&archive.join("privkey1.pem"), 0o600);
    set_mode(&le.join("archive"), 0o700);
    set_mode(&le.join("live"), 0o700);
    live
}

#[test]
fn certbot_hook_lets_the_service_group_read_the_lineage() {
    let root = run(Command::new("id").arg("-u")).stdout == b"0\n";
    if !available(root, "root", "the certbot hook changes file groups")
        || !tool("setpriv", "running tlsedge check as an unprivileged user")
    {
        return;
    }
    let group = run(Command::new("getent").args(["group", "65534"]));
    let group = String::from_utf8(group.stdout).unwrap();
    let group = group.split(':').next().unwrap().to_owned();
    let site = Site::new();
    set_mode(site.dir.path(), 0o755);
    // A copy the unprivileged user can run wherever the checkout is.
    let bin = site.path("tlsedge");
    std::fs::copy(BIN, &bin).unwrap();
    let live = certbot_lineage(&site, "le.test");
    let body = format!(
        "hosts:\n  - names: [le.test]\n    certs:\n      - {{ cert: {0}/fullchain.pem, key: {0}/privkey.pem }}\n    backends: [{{ address: \"127.0.0.1:9\" }}]\n",
        live.display()
    );
    let config = site.config(&body);
    set_mode(&config, 0o644);
    let before = check_as_nobody(&bin, &config);
    assert_eq!(before.status.code(), Some(1), "{}", output(&before));
    assert!(output(&before).to_lowercase().contains("permission denied"));

    // certbot runs the hook with RENEWED_LINEAGE; a stand-in systemctl records the reload.
    let systemctl = site.path("bin/systemctl");
    let called = site.path("systemctl.args");
    write(
        &systemctl,
        &format!("#!/bin/sh\necho \"$@\" > {}\n", called.display()),
    );
    set_mode(&systemctl, 0o755);
    let path = format!(
        "{}:{}",
        site.path("bin").display(),
        std::env::var("PATH").unwrap()
    );
    let hook = Path::new(ROOT).join("deploy/certbot-deploy-hook.sh");
    let out = run(Command::new("sh")
        .arg(hook)
        .env("RENEWED_LINEAGE", &live)
        .env("TLSEDGE_GROUP", &group)
        .env("PATH", path));
    assert!(out.status.success(), "{}", output(&out));
    let called = std::fs::read_to_string(called).unwrap();
    assert_eq!(called.trim(), "try-reload-or-restart tlsedge.service");

    let after = check_as_nobody(&bin, &config);
    assert!(after.status.success(), "{}", output(&after));
    let key = site.path("letsencrypt/archive/le.test/privkey1.pem");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o640, "group-readable, never world-readable");
}
