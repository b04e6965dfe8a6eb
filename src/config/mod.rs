//! Configuration: the YAML model, its validation, and loading from disk.
//!
//! The flow is `load` (read the file) → `model` (serde, unknown keys rejected) → `validate`
//! (typed values, every referenced file loaded and checked) → a [`Config`] that
//! [`crate::snapshot`] turns into what the proxy serves.

pub mod files;
pub mod load;
pub mod model;
pub mod problem;
pub mod validate;

pub use files::FileCache;
pub use load::{LoadError, Loaded, load, load_with};
pub use problem::{Problem, Problems, Severity};
pub use validate::{
    BackendConfig, Config, HostConfig, ListenerConfig, ProxyInput, StartConfig, Timeouts,
};
