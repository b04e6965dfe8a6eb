//! The data path: accept loop → one task per connection (handshake, backend, relay).

pub(crate) mod backend;
pub(crate) mod health_check;
pub(crate) mod resolve;
