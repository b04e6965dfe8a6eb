//! Configuration: the YAML model, its validation, and loading from disk.
//!
//! The flow is `load` (read the file) → `model` (serde, unknown keys rejected) → `validate`
//! (typed values, every referenced file loaded and checked) → a [`Config`] that
//! [`crate::snapshot`] turns into what the proxy serves.

pub mod load;
pub mod model;
pub mod problem;
pub mod validate;

pub use load::{LoadError, Loaded, load};
pub use problem::{Problem, Problems, Severity};
pub use validate::{BackendConfig, Config, HostConfig, Timeouts};

/// PROXY protocol (v1 or v2) accepted from load balancers in front of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyInput {
    /// Peers allowed to connect and send the header.
    pub trusted: Vec<ipnet::IpNet>,
    /// How long the header may take, within the handshake deadline.
    pub timeout: std::time::Duration,
}
