//! Automatic certificates (ACME, RFC 8555) for hosts with `certs: acme`.
//!
//! The ACME client only ever writes files: [`manager`] decides when a host's certificate is
//! due, takes the host's lease in the shared storage, orders ([`order`], through the account of
//! [`client`]), writes the key and chain into storage ([`storage`]) and asks for a reload. The
//! reload serves the new file through the same snapshot build as configured certificate files,
//! so the last good certificate, the expiry gauges and the stale flag work exactly as for them;
//! other instances sharing the storage pick the file up through their watchers.
//!
//! The connection pipeline answers the challenges the CA validates ([`challenges`]): TLS-ALPN-01
//! on the TLS listeners and HTTP-01 on the plain-HTTP ones. [`schedule`] is the pure timing.

pub mod challenges;
pub mod client;
pub mod manager;
pub mod order;
pub mod schedule;
pub mod storage;

use std::time::Duration;

/// Why obtaining a certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA answered with a problem document.
    #[error("the CA refused: {0}")]
    Ca(instant_acme::Problem),
    /// The CA could not be reached, or did not answer in time.
    #[error("cannot reach the CA: {0}")]
    Unreachable(#[source] instant_acme::Error),
    /// The CA could not validate a challenge.
    #[error("validation of {name} failed: {problem}")]
    Challenge {
        /// The name being validated.
        name: String,
        /// The CA's problem document, or what went wrong.
        problem: String,
    },
    /// The CA's answers did not make sense.
    #[error("unexpected answer from the CA: {0}")]
    Protocol(#[source] instant_acme::Error),
    /// The order did not complete in time.
    #[error("the order did not complete within {}s", .0.as_secs())]
    Timeout(Duration),
    /// Storage could not be read or written.
    #[error("storage: {0}")]
    Storage(#[from] storage::StorageError),
    /// A key, CSR or challenge certificate could not be made.
    #[error("{0}")]
    Certificate(String),
    /// The client could not be set up (trust anchors, credentials).
    #[error("{0}")]
    Setup(String),
}

impl From<instant_acme::Error> for AcmeError {
    fn from(e: instant_acme::Error) -> Self {
        use instant_acme::Error as E;
        match e {
            E::Api(problem) => Self::Ca(problem),
            E::Hyper(_) | E::Http(_) | E::Other(_) | E::Str(_) => Self::Unreachable(e),
            E::Timeout(_) => Self::Timeout(Duration::ZERO),
            other => Self::Protocol(other),
        }
    }
}

impl AcmeError {
    /// The bounded `result` label of `tlsedge_acme_orders_total`.
    pub fn result(&self) -> &'static str {
        match self {
            Self::Ca(_) => "ca_error",
            Self::Unreachable(_) => "unreachable",
            Self::Challenge { .. } => "challenge_failed",
            Self::Protocol(_) => "protocol",
            Self::Timeout(_) => "timeout",
            Self::Storage(_) => "storage",
            Self::Certificate(_) | Self::Setup(_) => "setup",
        }
    }

    /// Whether the CA does not know the stored account (a reset test CA, a deleted account).
    pub fn unknown_account(&self) -> bool {
        let Self::Ca(problem) = self else {
            return false;
        };
        let kind = problem.r#type.as_deref().unwrap_or_default();
        let detail = problem.detail.as_deref().unwrap_or_default();
        kind.ends_with(":accountDoesNotExist")
            || (kind.ends_with(":unauthorized") && detail.to_ascii_lowercase().contains("account"))
    }
}
