//! ACME events: each logs and counts in one place, with the host label (a configured name) as
//! the only per-host label value.

use std::time::{Duration, SystemTime};

use metrics::{counter, gauge};

use super::Metrics;
use super::names::{ACME_CHALLENGES, ACME_LAST_ERROR, ACME_NEXT_RENEWAL, ACME_ORDERS};
use crate::acme::AcmeError;
use crate::acme::storage::unix;
use crate::config::model::AcmeKeyType;

/// A certificate was issued and stored.
pub fn issued(m: &Metrics, host: &str, kind: AcmeKeyType, serial: &str, took: Duration) {
    tracing::info!(
        tls.host = host,
        acme.key_type = kind.as_str(),
        cert.serial = serial,
        took_ms = took.as_millis() as u64,
        "ACME certificate issued"
    );
    m.with(|| counter!(ACME_ORDERS, "host" => host.to_owned(), "result" => "issued").increment(1));
}

/// An order failed; the next attempt is in `retry_in`. The log line carries the CA's problem
/// document when there is one.
pub fn failed(
    m: &Metrics,
    host: &str,
    kind: AcmeKeyType,
    error: &AcmeError,
    failures: u32,
    retry_in: Duration,
) {
    let result = error.result();
    tracing::warn!(
        tls.host = host,
        acme.key_type = kind.as_str(),
        result,
        error = %Chain(error),
        failures,
        retry_in_secs = retry_in.as_secs(),
        "ACME order failed; the current certificate (if any) keeps serving"
    );
    let now = unix(SystemTime::now()) as f64;
    m.with(|| {
        counter!(ACME_ORDERS, "host" => host.to_owned(), "result" => result).increment(1);
        gauge!(ACME_LAST_ERROR, "host" => host.to_owned()).set(now);
    });
}

/// The next renewal (or attempt) of `host`'s certificates is at `at`.
pub fn next_renewal(m: &Metrics, host: &str, at: SystemTime) {
    let at = unix(at) as f64;
    m.with(|| gauge!(ACME_NEXT_RENEWAL, "host" => host.to_owned()).set(at));
}

/// A host has no certificate yet: its handshakes are refused until one is issued. Logged once
/// when the host is first seen without one, not per connection.
pub fn pending(host: &str) {
    tracing::warn!(
        tls.host = host,
        reason = "cert_pending",
        "no ACME certificate yet: handshakes for this host are refused until one is issued"
    );
}

/// A challenge validation request was answered.
pub fn challenge_answered(m: &Metrics, challenge: &'static str, name: &str) {
    tracing::info!(
        acme.challenge = challenge,
        acme.name = name,
        "answered ACME challenge"
    );
    m.with(|| counter!(ACME_CHALLENGES, "challenge" => challenge).increment(1));
}

/// An error with its causes, `outer: inner: innermost` (the CA client's errors keep the
/// useful part, such as a certificate verification failure, in their sources).
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !self.0.to_string().contains(&text) {
                write!(f, ": {text}")?;
            }
            source = cause.source();
        }
        Ok(())
    }
}
