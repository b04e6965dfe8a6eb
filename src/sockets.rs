//! Where the listening sockets come from: passed by systemd (socket activation), handed over by
//! the tlsedge this process replaces (`run --upgrade`, see [`crate::upgrade`]), or bound here.
//!
//! Inherited sockets are matched to the configured listeners by the address they are bound to,
//! so the order in which systemd or the predecessor passes them does not matter. A socket is
//! bound here only when nothing was inherited for its address, and never with `SO_REUSEPORT`:
//! a second tlsedge started by mistake on the same address fails with "address in use" instead
//! of silently sharing the traffic.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};

use tokio::net::{TcpListener, TcpSocket};

/// Pending-connection queue per listener (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: u32 = 4096;

/// Who passed a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// systemd, through `LISTEN_FDS`.
    Systemd,
    /// The tlsedge this process replaces.
    Predecessor,
}

/// Why the listening sockets could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A socket could not be bound.
    #[error("cannot listen on {addr}: {source}{}", in_use_hint(source))]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A passed file descriptor is not a listening TCP socket.
    #[error("socket activation: fd {fd} ({name}): {source}")]
    NotTcp {
        /// The descriptor number.
        fd: usize,
        /// Its `LISTEN_FDNAMES` entry.
        name: String,
        /// Why it was refused.
        #[source]
        source: io::Error,
    },
    /// systemd passed a socket that no listener of the configuration names: connections to it
    /// would queue and never be served.
    #[error(
        "socket activation: the socket {name} on {addr} is not in the configuration's \
         listeners, http_listeners or admin.bind: add it there or remove it from the .socket unit"
    )]
    Unclaimed {
        /// Its `LISTEN_FDNAMES` entry.
        name: String,
        /// The address it is bound to.
        addr: SocketAddr,
    },
}

fn in_use_hint(e: &io::Error) -> &'static str {
    if e.kind() == io::ErrorKind::AddrInUse {
        " (another process listens there, perhaps a tlsedge already running: replace it with \
         `tlsedge run --upgrade`, or restart it under systemd socket activation)"
    } else {
        ""
    }
}

/// One inherited socket.
#[derive(Debug)]
struct Passed {
    addr: SocketAddr,
    name: String,
    socket: StdListener,
}

/// Listening sockets opened before this process read its configuration.
#[derive(Debug)]
pub struct Inherited {
    origin: Origin,
    sockets: Vec<Passed>,
}

impl Inherited {
    /// Nothing inherited: every listener is bound here.
    pub fn none() -> Self {
        Self {
            origin: Origin::Systemd,
            sockets: Vec::new(),
        }
    }

    /// The sockets systemd passed (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`), if any. Call
    /// it first thing in `main`, before any thread starts: it unsets those variables so that
    /// child processes do not inherit them.
    pub fn from_systemd() -> Result<Self, SocketError> {
        let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
        let mut names = names.split(':');
        let mut fds = listenfd::ListenFd::from_env();
        let mut sockets = Vec::with_capacity(fds.len());
        for fd in 0..fds.len() {
            let name = names
                .next()
                .filter(|n| !n.is_empty())
                .map_or_else(|| format!("fd{}", fd + 3), str::to_owned);
            let not_tcp = |source| SocketError::NotTcp {
                fd: fd + 3,
                name: name.clone(),
                source,
            };
            let Some(socket) = fds.take_tcp_listener(fd).map_err(not_tcp)? else {
                continue;
            };
            let addr = socket.local_addr().map_err(not_tcp)?;
            sockets.push(Passed { addr, name, socket });
        }
        Ok(Self {
            origin: Origin::Systemd,
            sockets,
        })
    }

    /// Sockets handed over by the predecessor, each with its address.
    pub(crate) fn from_predecessor(sockets: Vec<(String, StdListener)>) -> io::Result<Self> {
        let sockets = sockets
            .into_iter()
            .map(|(name, socket)| {
                Ok(Passed {
                    addr: socket.local_addr()?,
                    name,
                    socket,
                })
            })
            .collect::<io::Result<_>>()?;
        Ok(Self {
            origin: Origin::Predecessor,
            sockets,
        })
    }

    /// Whether nothing was inherited.
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Takes the socket bound to `addr`. A wildcard address matches either family's wildcard
    /// (systemd's `ListenStream=443` is bound to `[::]:443`, which also serves IPv4).
    fn take(&mut self, addr: SocketAddr) -> Option<Passed> {
        let exact = self.sockets.iter().position(|p| p.addr == addr);
        let wildcard = || {
            self.sockets.iter().position(|p| {
                addr.ip().is_unspecified()
                    && p.addr.ip().is_unspecified()
                    && p.addr.port() == addr.port()
            })
        };
        let i = exact.or_else(wildcard)?;
        Some(self.sockets.swap_remove(i))
    }

    /// Opens the listener for `addr`: the inherited socket for it if there is one, else a new
    /// one bound here.
    pub fn open(&mut self, addr: SocketAddr) -> Result<TcpListener, SocketError> {
        let Some(passed) = self.take(addr) else {
            return bind(addr);
        };
        let bind_error = |source| SocketError::Bind { addr, source };
        passed.socket.set_nonblocking(true).map_err(bind_error)?;
        let listener = TcpListener::from_std(passed.socket).map_err(bind_error)?;
        tracing::info!(
            listener.addr = %passed.addr,
            socket = %passed.name,
            from = ?self.origin,
            "using an inherited socket"
        );
        Ok(listener)
    }

    /// What no listener claimed. systemd's sockets must all be claimed (systemd would keep
    /// queueing connections nobody serves); a predecessor's leftovers are listeners the new
    /// configuration dropped, closed here with a warning.
    pub fn finish(self) -> Result<(), SocketError> {
        for passed in self.sockets {
            match self.origin {
                Origin::Systemd => {
                    return Err(SocketError::Unclaimed {
                        name: passed.name,
                        addr: passed.addr,
                    });
                }
                Origin::Predecessor => tracing::warn!(
                    listener.addr = %passed.addr,
                    "the new configuration no longer listens here: closing the socket"
                ),
            }
        }
        Ok(())
    }
}

/// Binds a new listener on `addr` with `SO_REUSEADDR` (so a restart is not refused by
/// connections in `TIME_WAIT`) and without `SO_REUSEPORT` (so a second process cannot share it).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, SocketError> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    };
    socket
        .and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(addr)?;
            s.listen(BACKLOG)
        })
        .map_err(|source| SocketError::Bind { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_bind_on_the_same_address_is_refused_with_a_hint() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let error = bind(addr).unwrap_err();
        let message = error.to_string();
        assert!(message.contains(&addr.to_string()), "{message}");
        assert!(message.contains("run --upgrade"), "{message}");
    }

    #[tokio::test]
    async fn inherited_sockets_are_matched_by_address_and_leftovers_reported() {
        let a = StdListener::bind("127.0.0.1:0").unwrap();
        let b = StdListener::bind("127.0.0.1:0").unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let sockets = vec![("tls".to_owned(), a), ("admin".to_owned(), b)];
        let mut inherited = Inherited::from_predecessor(sockets).unwrap();
        let listener = inherited.open(a_addr).unwrap();
        assert_eq!(listener.local_addr().unwrap(), a_addr);
        // Not inherited: bound here.
        let other = inherited.open("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(other.local_addr().unwrap(), b_addr);
        inherited.finish().unwrap();

        let c = StdListener::bind("127.0.0.1:0").unwrap();
        let c_addr = c.local_addr().unwrap();
        let systemd = Inherited {
            origin: Origin::Systemd,
            sockets: vec![Passed {
                addr: c_addr,
                name: "https".to_owned(),
                socket: c,
            }],
        };
        let error = systemd.finish().unwrap_err().to_string();
        assert!(
            error.contains(&c_addr.to_string()) && error.contains("https"),
            "{error}"
        );
    }
}
