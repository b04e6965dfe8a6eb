//! In-place upgrades without a refused connection: the running tlsedge (the *predecessor*)
//! hands its listening sockets to a new one (the *successor*, `tlsedge run --upgrade`) over the
//! Unix socket `upgrade.socket`, as HAProxy, Envoy and Pingora do. The sockets themselves move
//! (SCM_RIGHTS), so their accept queues are never closed: a connection waiting in one is
//! accepted by whichever process accepts next.
//!
//! The exchange, on one connection:
//! 1. successor → `tlsedge-upgrade 1\n`;
//! 2. predecessor → a 4-byte length and a JSON list naming each socket's role, with the sockets
//!    attached;
//! 3. the successor claims the sockets by address ([`crate::sockets`]), starts accepting on its
//!    TLS and redirect listeners, then → `ready\n`;
//! 4. the predecessor stops accepting everywhere (admin included), → `stopped\n`, and drains;
//! 5. only then does the successor serve its admin listener and open `upgrade.socket` itself,
//!    so two processes never answer `/readyz` or an upgrade at once.
//!
//! A successor that fails before `ready` (a bad configuration, a crash) changes nothing: the
//! predecessor keeps serving, and its sockets were only ever duplicated.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::TcpListener as StdListener;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, events};

/// The most sockets one hand-over carries.
pub const MAX_SOCKETS: usize = 64;
const HELLO: &[u8] = b"tlsedge-upgrade 1\n";
const READY: &[u8] = b"ready\n";
const STOPPED: &[u8] = b"stopped\n";
const MAX_HEADER: usize = 64 * 1024;
/// How long either side waits for a short reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the predecessor waits for the successor to load its configuration and say `ready`
/// (100,000 hosts take seconds; a stuck successor must not hold the connection forever).
const READY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the successor waits for the predecessor to stop accepting.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an upgrade step failed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The socket could not be reached, read or written.
    #[error("upgrade socket {}: {source}", path.display())]
    Io {
        /// The upgrade socket.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The peer did not speak the protocol.
    #[error("upgrade socket {}: {what}", path.display())]
    Protocol {
        /// The upgrade socket.
        path: PathBuf,
        /// What was wrong.
        what: &'static str,
    },
    /// Another tlsedge already listens on the upgrade socket.
    #[error(
        "upgrade socket {}: a running tlsedge already listens there (replace it with `tlsedge \
         run --upgrade`)",
        path.display()
    )]
    InUse {
        /// The upgrade socket.
        path: PathBuf,
    },
}

/// One socket handed over: its role (`tls`, `redirect`, `admin`) and a duplicate of it.
#[derive(Debug)]
pub struct Handed {
    /// What the socket is for, for logs.
    pub role: &'static str,
    /// A duplicate of the listening socket.
    pub fd: OwnedFd,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    pid: u32,
    roles: Vec<String>,
}

/// The successor's handle on the predecessor, between receiving its sockets and taking over.
#[derive(Debug)]
pub struct Predecessor {
    stream: UnixStream,
    path: PathBuf,
    pid: u32,
}

impl Predecessor {
    /// Connects to the running tlsedge at `path` and receives its listening sockets, each
    /// with its role.
    pub async fn connect(path: &Path) -> Result<(Self, Vec<(String, StdListener)>), UpgradeError> {
        let io = |source| UpgradeError::Io {
            path: path.to_owned(),
            source,
        };
        let mut stream = UnixStream::connect(path).await.map_err(io)?;
        stream.write_all(HELLO).await.map_err(io)?;
        let received = tokio::time::timeout(REPLY_TIMEOUT, receive(&mut stream))
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
            .map_err(io)?;
        let (header, fds) = received;
        let bad = |what| UpgradeError::Protocol {
            path: path.to_owned(),
            what,
        };
        let header: Header = serde_json::from_slice(&header).map_err(|_| bad("bad header"))?;
        if header.roles.len() != fds.len() {
            return Err(bad("the header and the sockets passed disagree"));
        }
        let sockets = header
            .roles
            .into_iter()
            .zip(fds)
            .map(|(role, fd)| (role, StdListener::from(fd)))
            .collect();
        let predecessor = Self {
            stream,
            path: path.to_owned(),
            pid: header.pid,
        };
        Ok((predecessor, sockets))
    }

    /// The predecessor's process ID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Says `ready` and waits until the predecessor has stopped accepting.
    pub async fn take_over(mut self) -> Result<(), UpgradeError> {
        let io = |source| UpgradeError::Io {
            path: self.path.clone(),
            source,
        };
        self.stream.write_all(READY).await.map_err(io)?;
        expect(&mut self.stream, STOPPED, STOP_TIMEOUT)
            .await
            .map_err(io)
    }
}

/// Reads exactly `message` within `limit`; anything else is an error.
async fn expect(stream: &mut UnixStream, message: &[u8], limit: Duration) -> io::Result<()> {
    let mut got = vec![0; message.len()];
    tokio::time::timeout(limit, stream.read_exact(&mut got))
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))?;
    if got != message {
        let expected = String::from_utf8_lossy(message);
        let what = format!("expected {:?}", expected.trim_end());
        return Err(io::Error::new(io::ErrorKind::InvalidData, what));
    }
    Ok(())
}

/// Reads the length-prefixed header and the sockets attached to it.
async fn receive(stream: &mut UnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0; MAX_HEADER + 4];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let (mut got, fds) = stream
        .async_io(Interest::READABLE, || {
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg =
                rustix::net::recvmsg(&*stream, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
            let mut fds = Vec::new();
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(passed) = message {
                    fds.extend(passed);
                }
            }
            Ok((msg.bytes, fds))
        })
        .await?;
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    while got < 4 {
        let n = stream.read(&mut buf[got..]).await?;
        if n == 0 {
            return Err(invalid("closed before the header"));
        }
        got += n;
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_HEADER {
        return Err(invalid("header too long"));
    }
    if got > 4 + len {
        return Err(invalid("data after the header"));
    }
    stream.read_exact(&mut buf[got..4 + len]).await?;
    buf.truncate(4 + len);
    buf.drain(..4);
    Ok((buf, fds))
}

/// Opens the upgrade socket at `path` (mode 0600: only this user may take the sockets). A
/// socket file left by a process that is gone is replaced; one a live tlsedge answers on is
/// refused, unless `successor` (the predecessor has just stopped using it).
pub async fn listen(path: &Path, successor: bool) -> Result<UnixListener, UpgradeError> {
    let io = |source| UpgradeError::Io {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        if !successor && UnixStream::connect(path).await.is_ok() {
            return Err(UpgradeError::InUse {
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

/// A request from the upgrade task to the server: stop accepting everywhere, then answer.
pub type Handover = oneshot::Sender<()>;

/// The predecessor's side: answers successors on `listener` until `stop`, handing them
/// `sockets`. When one says `ready`, asks the server (through `handover`) to stop accepting,
/// confirms, and returns.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    sockets: Vec<Handed>,
    handover: mpsc::Sender<Handover>,
    metrics: std::sync::Arc<Metrics>,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // A shutdown interrupts a successor that has not said `ready` yet.
        let result = tokio::select! {
            () = stop.cancelled() => return,
            result = hand_over(stream, &sockets, &handover) => result,
        };
        match result {
            Ok(()) => {
                events::upgrade_handed_over(&metrics, &path);
                return;
            }
            Err(e) => events::upgrade_aborted(&metrics, &path, &e),
        }
    }
}

async fn hand_over(
    mut stream: UnixStream,
    sockets: &[Handed],
    handover: &mpsc::Sender<Handover>,
) -> io::Result<()> {
    expect(&mut stream, HELLO, REPLY_TIMEOUT).await?;
    send(&mut stream, sockets).await?;
    expect(&mut stream, READY, READY_TIMEOUT).await?;
    let (done, stopped) = oneshot::channel();
    handover
        .send(done)
        .await
        .map_err(|_| io::Error::other("the server is shutting down"))?;
    stopped
        .await
        .map_err(|_| io::Error::other("the server is shutting down"))?;
    stream.write_all(STOPPED).await
}

/// Sends the header and, attached to its first bytes, the sockets.
async fn send(stream: &mut UnixStream, sockets: &[Handed]) -> io::Result<()> {
    let header = Header {
        pid: std::process::id(),
        roles: sockets.iter().map(|s| s.role.to_owned()).collect(),
    };
    let json = serde_json::to_vec(&header).map_err(io::Error::other)?;
    let mut message = (json.len() as u32).to_be_bytes().to_vec();
    message.extend_from_slice(&json);
    let fds: Vec<_> = sockets.iter().map(|s| s.fd.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                return Err(io::Error::other("too many sockets to hand over"));
            }
            let iov = [IoSlice::new(&message)];
            Ok(rustix::net::sendmsg(
                &*stream,
                &iov,
                &mut control,
                SendFlags::empty(),
            )?)
        })
        .await?;
    // The sockets went with the first bytes; the rest of a long header follows plainly.
    stream.write_all(&message[sent..]).await
}
