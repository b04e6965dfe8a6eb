//! Configuration text → YAML model → validation. Neither step may panic on any text, and every
//! problem validation reports must say where it is (`Problem::place`): an error an operator
//! cannot locate is a bug.
//!
//! `Problem` has no file-level variant (`Scope::Config` means "blocks the whole file", not
//! "has no place"), so the place is required of every problem. Referenced files resolve under
//! `/fuzz/`, which does not exist: validation reports them unreadable. The same raw model is
//! then validated again with the first pass's hosts offered for reuse, as a reload of an
//! unchanged file does: the problems and the hosts must be the same.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use rustls::crypto::CryptoProvider;
use tlsedge::config::files::FileCache;
use tlsedge::config::model::RawConfig;
use tlsedge::config::validate::{Checked, Config, Reuse};

static PROVIDER: LazyLock<CryptoProvider> =
    LazyLock::new(rustls::crypto::aws_lc_rs::default_provider);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/fuzz/tlsedge.yaml");
    let Ok(raw) = tlsedge::config::load::parse(text, path) else {
        return;
    };
    // A fresh cache per input: each run stands alone, as a first load does.
    let mut files = FileCache::default();
    let (config, problems, checked) = validate(&raw, path, &PROVIDER, &mut files, None);
    for problem in &problems {
        assert!(
            !problem.place.trim().is_empty(),
            "problem without a place: {problem:?}"
        );
        assert_eq!(
            problem.file, path,
            "problem names another file: {problem:?}"
        );
        // Display must not panic either: `tlsedge check` prints every problem.
        let _ = problem.to_string();
    }
    // A reload of the same text with nothing changed takes the clean hosts as they were
    // checked: it must find the same problems and the same hosts as checking them all again.
    let reuse = Reuse::new(0, raw.hosts.clone(), &config.hosts, checked);
    let (again, problems_again, _) = validate(&raw, path, &PROVIDER, &mut files, Some(&reuse));
    let text = |problems: &[tlsedge::config::Problem]| -> Vec<String> {
        problems.iter().map(ToString::to_string).collect()
    };
    assert_eq!(text(&problems), text(&problems_again), "reuse changed the problems");
    assert!(config.hosts == again.hosts, "reuse changed the hosts");
});

fn validate(
    raw: &RawConfig,
    path: &Path,
    provider: &CryptoProvider,
    files: &mut FileCache,
    reuse: Option<&Reuse>,
) -> (Config, Vec<tlsedge::config::Problem>, Checked) {
    tlsedge::config::validate::validate(raw, path, provider, files, SystemTime::now(), reuse)
}
