//! Gauges that describe *state* rather than events — certificate expiry, stale certificates,
//! backend health, ticket keys, config generation — rendered at scrape time from the current
//! snapshot. Series of a host removed by a reload disappear with it, which a recorder that
//! only ever adds series could not do.

use std::fmt::Write;
use std::time::SystemTime;

use super::names::*;
use crate::runtime::Runtime;
use crate::tls::tickets::Rejection;

/// Appends the state gauges of `rt` in Prometheus text format.
pub(crate) fn render(rt: &Runtime, out: &mut String) {
    let snapshot = rt.snapshot.load();
    let now_ms = rt.now_ms();
    header(
        out,
        CERT_EXPIRY,
        "Certificate notAfter as a Unix timestamp.",
    );
    for host in &snapshot.hosts {
        for cert in &host.certs {
            let _ = writeln!(
                out,
                "{CERT_EXPIRY}{{host=\"{}\",cert=\"{}\"}} {}",
                escape(&host.label),
                escape(&cert.label()),
                cert.not_after
            );
        }
    }
    header(
        out,
        HOST_CERT_STALE,
        "1 while a host serves an older certificate than its files hold (its new files failed).",
    );
    for host in &snapshot.hosts {
        let stale = u8::from(host.stale);
        let _ = writeln!(
            out,
            "{HOST_CERT_STALE}{{host=\"{}\"}} {stale}",
            escape(&host.label)
        );
    }
    header(
        out,
        BACKEND_UP,
        "1 if the backend is usable, 0 while it cools down after a failure or fails its health checks.",
    );
    for host in &snapshot.hosts {
        for (backend, label) in host.all_backends() {
            let up = u8::from(backend.state.is_up(now_ms));
            let _ = writeln!(
                out,
                "{BACKEND_UP}{{host=\"{}\",backend=\"{}\"}} {up}",
                escape(&host.label),
                escape(label)
            );
        }
    }
    let tickets = &rt.tls.tickets;
    header(
        out,
        TICKET_KEYS_LOADED,
        "Session ticket keys loaded (the first one encrypts).",
    );
    let _ = writeln!(out, "{TICKET_KEYS_LOADED} {}", tickets.loaded());
    let now = SystemTime::now();
    header(
        out,
        TICKET_KEYS_STAGED,
        "Ticket keys in their grace period: they decrypt, and encrypt once it has passed.",
    );
    let _ = writeln!(out, "{TICKET_KEYS_STAGED} {}", tickets.staged(now));
    header(
        out,
        TICKET_KEY_AGE,
        "Age of the newest ticket key, from its creation time in the key file (or in memory).",
    );
    let age = tickets.newest_key_age(now).as_secs();
    let _ = writeln!(out, "{TICKET_KEY_AGE} {age}");
    header(
        out,
        TICKET_ROTATION_PERIOD,
        "How often ticket keys are expected to rotate (sessions.ticket_rotate_every).",
    );
    let period = tickets.rotate_every().as_secs();
    let _ = writeln!(out, "{TICKET_ROTATION_PERIOD} {period}");
    let _ = writeln!(
        out,
        "# HELP {TICKET_REJECTIONS} Presented session tickets that did not resume (a full handshake followed).\n# TYPE {TICKET_REJECTIONS} counter"
    );
    for reason in Rejection::ALL {
        let n = tickets.rejected(reason);
        let _ = writeln!(
            out,
            "{TICKET_REJECTIONS}{{reason=\"{}\"}} {n}",
            reason.as_str()
        );
    }
    let _ = writeln!(
        out,
        "# HELP {PANICS} Panics in any task since start (each is also an error log line).\n# TYPE {PANICS} counter"
    );
    let _ = writeln!(out, "{PANICS} {}", super::panics::count());
    header(
        out,
        CONFIG_GENERATION,
        "Generation number of the configuration being served.",
    );
    let _ = writeln!(out, "{CONFIG_GENERATION} {}", snapshot.generation);
    header(
        out,
        CONFIG_LAST_SUCCESS,
        "Unix time of the last configuration load that was applied (fully or partially).",
    );
    let _ = writeln!(out, "{CONFIG_LAST_SUCCESS} {}", rt.last_success());
    header(
        out,
        CONFIG_LAST_OK,
        "1 if the last configuration load was applied, 0 after a rejected one (the previous configuration is still served).",
    );
    let _ = writeln!(out, "{CONFIG_LAST_OK} {}", u8::from(rt.last_load_ok()));
}

fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

/// Escapes a label value per the exposition format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
