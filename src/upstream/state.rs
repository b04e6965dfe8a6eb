//! Per-backend live state shared by every connection: active connection count, passive health
//! (a backend that refused a connection is skipped until its cooldown ends) and the verdict of
//! active health checks (down after `fall` failed probes in a row, up after `rise` good ones).
//!
//! This state outlives configuration reloads: the snapshot builder hands the same
//! [`BackendState`] to the new pool when a host keeps a backend, so counts and cooldowns carry
//! over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use arc_swap::ArcSwap;

/// Live state of one backend of one host.
#[derive(Debug, Default)]
pub struct BackendState {
    active: AtomicU32,
    /// Milliseconds (on the caller's monotonic clock) until which the backend is skipped;
    /// 0 means up.
    down_until_ms: AtomicU64,
    /// Set by active health checks; a probed-down backend stays down until probes pass.
    probe_down: AtomicBool,
    /// Consecutive probe results of the current streak: failures (`fails`) or passes.
    fails: AtomicU32,
    passes: AtomicU32,
    /// The addresses to connect to: the fixed address, or what the backend's DNS name last
    /// resolved to (empty until it first resolves).
    resolved: ArcSwap<Vec<SocketAddr>>,
}

/// What a probe result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed.
    None,
    /// The backend was just marked down.
    Down,
    /// The backend was just marked up again.
    Up,
}

impl BackendState {
    /// The addresses to try, in order.
    pub fn addrs(&self) -> Arc<Vec<SocketAddr>> {
        self.resolved.load_full()
    }

    /// Replaces the addresses; returns whether they changed.
    pub fn set_addrs(&self, addrs: Vec<SocketAddr>) -> bool {
        if **self.resolved.load() == addrs {
            return false;
        }
        self.resolved.store(Arc::new(addrs));
        true
    }

    /// Connections currently proxied to this backend.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Whether the backend may be chosen at `now_ms`.
    pub fn is_up(&self, now_ms: u64) -> bool {
        !self.probe_down.load(Ordering::Relaxed)
            && self.down_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    /// Records an active probe result: `fall` failures in a row mark the backend down, `rise`
    /// passes in a row mark it up again. (Only the health checker calls this, so the streak
    /// counters need no compare-and-swap.)
    pub fn probed(&self, ok: bool, fall: u32, rise: u32) -> Transition {
        let (streak, other) = if ok {
            (&self.passes, &self.fails)
        } else {
            (&self.fails, &self.passes)
        };
        other.store(0, Ordering::Relaxed);
        let n = streak.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let down = self.probe_down.load(Ordering::Relaxed);
        if ok && down && n >= rise {
            self.probe_down.store(false, Ordering::Relaxed);
            // A passing probe also ends a passive cooldown: the backend answers again.
            self.down_until_ms.store(0, Ordering::Relaxed);
            Transition::Up
        } else if !ok && !down && n >= fall {
            self.probe_down.store(true, Ordering::Relaxed);
            Transition::Down
        } else {
            Transition::None
        }
    }

    /// Records a failed connect: skip the backend until `now_ms + cooldown_ms`.
    /// Returns true when the backend was up before (a transition worth logging).
    pub fn mark_failed(&self, now_ms: u64, cooldown_ms: u64) -> bool {
        let before = self
            .down_until_ms
            .swap(now_ms.saturating_add(cooldown_ms).max(1), Ordering::Relaxed);
        before <= now_ms
    }

    /// Records a successful connect. Returns true when the backend was marked down before.
    pub fn mark_ok(&self) -> bool {
        self.down_until_ms.swap(0, Ordering::Relaxed) != 0
    }

    /// Counts a proxied connection until the guard drops.
    pub fn track(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(Arc::clone(self))
    }
}

/// Decrements the backend's active count when dropped.
#[derive(Debug)]
pub struct ActiveGuard(Arc<BackendState>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooldown_and_transitions() {
        let state = BackendState::default();
        assert!(state.is_up(0));
        assert!(state.mark_failed(100, 50));
        assert!(!state.is_up(120));
        assert!(!state.mark_failed(120, 50), "already down");
        assert!(state.is_up(170));
        assert!(state.mark_ok());
        assert!(!state.mark_ok());
    }

    #[test]
    fn probes_fall_and_rise() {
        let state = BackendState::default();
        assert_eq!(state.probed(false, 2, 2), Transition::None);
        assert_eq!(state.probed(true, 2, 2), Transition::None, "streak broken");
        assert_eq!(state.probed(false, 2, 2), Transition::None);
        assert!(state.is_up(0));
        assert_eq!(state.probed(false, 2, 2), Transition::Down);
        assert!(
            !state.is_up(u64::MAX),
            "down until probes pass, whatever the time"
        );
        assert_eq!(state.probed(false, 2, 2), Transition::None);
        assert_eq!(state.probed(true, 2, 2), Transition::None);
        assert_eq!(state.probed(true, 2, 2), Transition::Up);
        assert!(state.is_up(0));
    }

    #[test]
    fn guard_counts_active_connections() {
        let state = Arc::new(BackendState::default());
        let a = state.track();
        let b = state.track();
        assert_eq!(state.active(), 2);
        drop(a);
        assert_eq!(state.active(), 1);
        drop(b);
        assert_eq!(state.active(), 0);
    }
}
