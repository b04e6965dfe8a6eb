//! Configuration text → YAML model → validation. Neither step may panic on any text, and every
//! problem validation reports must say where it is (`Problem::place`): an error an operator
//! cannot locate is a bug.
//!
//! `Problem` has no file-level variant (`Scope::Config` means "blocks the whole file", not
//! "has no place"), so the place is required of every problem. Referenced files resolve under
//! `/fuzz/`, which does not exist: validation reports them unreadable.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use rustls::crypto::CryptoProvider;
use tlsedge::config::files::FileCache;

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
    let (_config, problems) =
        tlsedge::config::validate::validate(&raw, path, &PROVIDER, &mut files, SystemTime::now());
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
});
