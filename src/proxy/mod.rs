//! The data path: accept loop → one task per connection (handshake, backend, relay).

pub(crate) mod connection;
pub(crate) mod listener;
pub(crate) mod proxy_header;
pub mod relay;
