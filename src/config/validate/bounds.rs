//! Upper bounds of every number and duration in the configuration, checked by `validate` (and so
//! by `tlsedge check`), never discovered at run time as an `Instant` overflow or a capacity
//! assertion. They are generous: they catch a typo (`100000000000y`, a zero too many), not a
//! tuning choice. The README's configuration reference lists the same numbers.

use std::time::Duration;

use super::Validator;
use crate::config::problem::{Issue, Quantity};

/// One day: the bound of every timeout, period and delay unless named below.
pub const DAY: Duration = Duration::from_secs(24 * 3600);
/// `timeouts.idle` and `sessions.ticket_rotate_every`: long-lived connections and key periods.
pub const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
/// `limits.max_connections`.
pub const MAX_CONNECTIONS: usize = 1_000_000;
/// `limits.per_client_ip`.
pub const MAX_PER_CLIENT_IP: u32 = 1_000_000;
/// `limits.backend_attempts`.
pub const MAX_BACKEND_ATTEMPTS: usize = 100;
/// `sessions.cache_size`: rustls sizes the cache for this many entries at start (ten million
/// would reserve about a gigabyte).
pub const MAX_CACHE_SIZE: usize = 1_000_000;
/// In-memory ticket keys alive at once (`ticket_lifetime / ticket_rotate_every + 1`): each
/// is tried by name on every resumption, and kept for a ticket lifetime after it retires.
pub const MAX_TICKET_KEYS: u64 = 1000;
/// `health_check.fall` and `health_check.rise`.
pub const MAX_HEALTH_COUNT: u32 = 100;

/// Whether zero is a meaningful value of a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Zero {
    /// Zero is accepted (e.g. `timeouts.drain: 0s` closes at once).
    Allowed,
    /// Zero is an error.
    Refused,
}

impl Validator<'_> {
    /// Checks `value` against `max` (and zero), reporting at `place`; returns whether it passed.
    pub(super) fn duration(
        &mut self,
        place: impl Into<String>,
        value: Duration,
        zero: Zero,
        max: Duration,
    ) -> bool {
        self.bounded(
            place.into(),
            value.is_zero() && zero == Zero::Refused,
            (value > max).then_some((Quantity::Duration(value), Quantity::Duration(max))),
        )
    }

    /// Checks a count or size against `max` (and zero), reporting at `place`; returns whether it
    /// passed.
    pub(super) fn count(
        &mut self,
        place: impl Into<String>,
        value: u64,
        zero: Zero,
        max: u64,
    ) -> bool {
        self.bounded(
            place.into(),
            value == 0 && zero == Zero::Refused,
            (value > max).then_some((Quantity::Number(value), Quantity::Number(max))),
        )
    }

    fn bounded(
        &mut self,
        place: String,
        zero: bool,
        too_large: Option<(Quantity, Quantity)>,
    ) -> bool {
        if zero {
            self.error(place, Issue::Zero);
            return false;
        }
        match too_large {
            Some((value, max)) => {
                self.error(place, Issue::TooLarge { value, max });
                false
            }
            None => true,
        }
    }
}
