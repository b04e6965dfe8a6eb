//! Hot reload: [`watch`] decides when (file events, SIGHUP, retries, periodic re-check) and
//! [`apply`] re-reads, validates, builds and publishes a new snapshot.

pub mod apply;
pub mod watch;

pub use apply::{FirstLoad, Outcome, Reloader};
pub use watch::ReloadTrigger;
