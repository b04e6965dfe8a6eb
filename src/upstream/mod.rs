//! The backend ("upstream") side: where backends live, how one is chosen, and how tlsedge
//! reaches them.
//!
//! The pure parts hold no I/O, no clock, no tokio and no configuration model, so every rule
//! is testable on its own: [`addr`] (a fixed `ip:port` or a `dns-name:port`), [`policy`] (the
//! balancing policies and their arithmetic), [`pool`] (a host's immutable backend list and the
//! choice among them) and [`state`] (each backend's live counters and health, carried over
//! reloads). The parts that touch the network build on them: `connect` (pick, connect, mark
//! failures), [`tls`] (re-encryption towards backends, with a session cache that survives
//! reloads), [`dns`] (looking up backend names, at snapshot build and periodically after) and
//! `probe` (active health checks).

pub mod addr;
pub(crate) mod connect;
pub mod dns;
pub mod policy;
pub mod pool;
pub(crate) mod probe;
pub mod state;
pub mod tls;

pub use addr::BackendAddr;
pub use policy::Policy;
pub use pool::{Backend, PickContext, Pool};
pub use state::{ActiveGuard, BackendState, Transition};
