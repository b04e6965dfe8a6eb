//! When to renew and when to retry: pure arithmetic on Unix seconds, unit-tested.
//!
//! - With the CA's ARI window (RFC 9773), renew at a random moment inside it.
//! - Otherwise renew when two thirds of the lifetime have passed (`renew_before` moves that to
//!   a fixed time before expiry, but never earlier than a third of the lifetime, so a
//!   `renew_before` longer than the CA's lifetimes cannot renew in a loop), minus a jitter of up
//!   to 1/20 of the lifetime (at most 6 h), so a fleet of certificates issued together does not
//!   renew together. The fractions keep working for 6-day and 45-day certificates as well as
//!   90-day ones.
//! - After a failure, wait `first`, doubling per failure up to `max`; while a certificate is
//!   being served, never longer than 1/12 of its lifetime, so several attempts fit before it
//!   expires. A CA's `Retry-After` is always waited out.

use std::time::Duration;

/// The largest jitter before the computed renewal time.
const MAX_JITTER: i64 = 6 * 3600;

/// The Unix time to renew a certificate valid from `not_before` to `not_after`. `random` is
/// uniform in `[0, 1)`.
pub fn renew_at(
    not_before: i64,
    not_after: i64,
    renew_before: Option<Duration>,
    random: f64,
) -> i64 {
    let lifetime = (not_after - not_before).max(1);
    let planned = match renew_before {
        Some(before) => {
            let before = before.as_secs().min(i64::MAX as u64) as i64;
            not_after
                .saturating_sub(before)
                .max(not_before + lifetime / 3)
        }
        None => not_before + lifetime * 2 / 3,
    };
    let jitter = (lifetime / 20).min(MAX_JITTER);
    planned - (jitter as f64 * random) as i64
}

/// A moment inside the CA's suggested window `[start, end]`.
pub fn in_window(start: i64, end: i64, random: f64) -> i64 {
    start + ((end - start).max(0) as f64 * random) as i64
}

/// How long to wait after the `failures`-th failure in a row (1 for the first).
pub fn backoff(
    failures: u32,
    first: Duration,
    max: Duration,
    lifetime: Option<Duration>,
    retry_after: Option<Duration>,
) -> Duration {
    let doubled = first.saturating_mul(1 << failures.saturating_sub(1).min(20));
    let mut wait = doubled.min(max);
    if let Some(lifetime) = lifetime {
        wait = wait.min((lifetime / 12).max(Duration::from_secs(1)));
    }
    wait.max(retry_after.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn renewal_is_at_two_thirds_of_any_lifetime_minus_a_bounded_jitter() {
        for days in [6, 45, 90] {
            let (from, to) = (1_000_000, 1_000_000 + days * DAY);
            let earliest = renew_at(from, to, None, 0.999_999);
            let latest = renew_at(from, to, None, 0.0);
            assert_eq!(latest, from + days * DAY * 2 / 3);
            assert!(latest - earliest <= (days * DAY / 20).min(6 * 3600));
            assert!(earliest > from + days * DAY / 2, "{days} days");
        }
        // A 30-second test certificate renews after 20 s, at most 1.5 s early.
        assert_eq!(renew_at(0, 30, None, 0.0), 20);
        assert!(renew_at(0, 30, None, 0.99) >= 19);
    }

    #[test]
    fn renew_before_counts_back_from_expiry() {
        let week = Duration::from_secs(7 * DAY as u64);
        assert_eq!(renew_at(0, 90 * DAY, Some(week), 0.0), 83 * DAY);
        // Longer than the lifetime: at a third of it, not at once (and so again and again).
        assert_eq!(renew_at(0, 6 * DAY, Some(week), 0.0), 2 * DAY);
    }

    #[test]
    fn ari_windows_are_used_whole() {
        assert_eq!(in_window(100, 200, 0.0), 100);
        assert_eq!(in_window(100, 200, 0.5), 150);
        assert_eq!(
            in_window(200, 100, 0.5),
            200,
            "an inverted window is its start"
        );
    }

    #[test]
    fn backoff_doubles_is_capped_and_honours_retry_after() {
        let (first, max) = (Duration::from_secs(60), Duration::from_secs(3600));
        let waits: Vec<u64> = (1..=8)
            .map(|n| backoff(n, first, max, None, None).as_secs())
            .collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff(u32::MAX, first, max, None, None), max);
        // A served 30 s certificate is retried every 2.5 s, not after a minute.
        let short = Some(Duration::from_secs(30));
        assert_eq!(
            backoff(1, first, max, short, None),
            Duration::from_millis(2500)
        );
        // The CA's Retry-After wins over every cap.
        let ra = Some(Duration::from_secs(7200));
        assert_eq!(backoff(1, first, max, short, ra), Duration::from_secs(7200));
    }
}
