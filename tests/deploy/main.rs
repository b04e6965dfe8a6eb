//! The deployment files under `deploy/` work as shipped. Each is checked by the tool that would
//! reject it in production, and against the other files it has to agree with:
//! - the image (`deploy/Dockerfile`): built by a command CI runs, a numeric non-root user that
//!   the Kubernetes pods also run as, a HEALTHCHECK that works without curl;
//! - Kubernetes (`deploy/kubernetes/`): every manifest against the API's JSON schemas
//!   (kubernetes-validate, strict) and the CRD kinds against subsets of their CRDs; the
//!   ConfigMap's config passes the real `tlsedge check` with the files the pod would have; the
//!   ticket-key CronJob's script really rotates; ports, labels and RBAC line up;
//! - systemd (`deploy/systemd/`): `systemd-analyze verify` and `security`, the socket unit
//!   lists the example config's addresses, sysusers makes the user, and the certbot hook lets
//!   that user read a certbot lineage (`tlsedge check` run as an unprivileged user).
//!
//! Outside tools (python3 with kubernetes-validate, systemd-analyze, setpriv) are required under
//! `CI`; elsewhere a test without them says why it skipped.

#[path = "../common/mod.rs"]
mod common;

mod image;
mod kubernetes;
mod systemd;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use tlsedge::config::model::{RawConfig, RawListener};
use tlsedge::pki::{Ca, KeyKind};

use common::process::{Proc, json_field};
use common::{Site, ecdsa, host, set_mode};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_tlsedge");
/// The oldest Kubernetes the manifests support (`preStop: sleep` is on by default from 1.30);
/// they are also validated against the newest version kubernetes-validate knows.
const OLDEST_KUBERNETES: &str = "1.30.0";

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn output(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    format!("{stdout}{}", String::from_utf8_lossy(&out.stderr))
}

/// Whether `program` runs. Without it a test fails under `CI` and is skipped elsewhere.
fn tool(program: &str, purpose: &str) -> bool {
    available(common::have(program), program, purpose)
}

fn available(present: bool, what: &str, purpose: &str) -> bool {
    assert!(
        present || std::env::var_os("CI").is_none(),
        "CI needs {what} ({purpose})"
    );
    if !present {
        eprintln!("skipped: {what} is not installed ({purpose})");
    }
    present
}
