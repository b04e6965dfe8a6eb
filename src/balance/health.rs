//! Per-backend live state shared by every connection: active connection count and passive
//! health (a backend that refused a connection is skipped until its cooldown ends).
//!
//! This state outlives configuration reloads: the snapshot builder hands the same
//! [`BackendState`] to the new pool when a host keeps a backend, so counts and cooldowns carry
//! over.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Live state of one backend of one host.
#[derive(Debug, Default)]
pub struct BackendState {
    active: AtomicU32,
    /// Milliseconds (on the caller's monotonic clock) until which the backend is skipped;
    /// 0 means up.
    down_until_ms: AtomicU64,
}

impl BackendState {
    /// Connections currently proxied to this backend.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Whether the backend may be chosen at `now_ms`.
    pub fn is_up(&self, now_ms: u64) -> bool {
        self.down_until_ms.load(Ordering::Relaxed) <= now_ms
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
