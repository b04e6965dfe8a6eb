//! Panics made visible: a process-wide hook logs every panic (thread, location, message) as an
//! `error` line and counts it, so a task that dies — a connection, the reload watcher, a health
//! checker — is never silent. Rendered as `tlsedge_panics_total` at scrape time.

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

static PANICS: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();

/// Installs the hook once per process, in front of the default one (which still prints).
pub fn install() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::Relaxed);
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let location = info.location().map(ToString::to_string).unwrap_or_default();
            let thread = std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_owned();
            tracing::error!(thread, location, message, "panic: a task died");
            previous(info);
        }));
    });
}

/// Panics seen since the process started.
pub fn count() -> u64 {
    PANICS.load(Ordering::Relaxed)
}
