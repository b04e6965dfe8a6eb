//! The bidirectional relay between a decrypted client stream and a backend socket.
//!
//! Memory matters here: an edge proxy holds many idle connections. So the relay owns no buffer
//! while a connection is idle:
//! - client → backend borrows the TLS library's own plaintext buffer (`poll_fill_buf`) and
//!   writes straight from it;
//! - backend → client waits for the backend socket to be readable *before* taking a 16 KiB
//!   buffer from a per-thread pool, and returns it as soon as the bytes are handed to TLS.
//!   16 KiB is one full TLS record, half the records and syscalls of 8 KiB copies.
//!
//! Half-close is propagated both ways (client EOF → backend `shutdown(Write)`, backend EOF →
//! TLS close_notify + FIN). The relay ends when both directions are done, on an error, or when
//! no byte moved either way for the idle timeout — or, once one side has finished sending, for
//! the (shorter) half-closed timeout: a peer that closed and a peer that never answers must not
//! hold two sockets and a connection slot for the whole idle timeout — or at the server's drain
//! deadline.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep, sleep};
use tokio_util::sync::CancellationToken;

/// Size of a relay buffer: one maximal TLS record of plaintext.
const BUFFER_SIZE: usize = 16 * 1024;
/// Free buffers kept per worker thread.
const POOL_PER_THREAD: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Box<[u8]> {
    POOL.with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| vec![0; BUFFER_SIZE].into_boxed_slice())
}

fn give_buffer(buffer: Box<[u8]>) {
    POOL.with_borrow_mut(|pool| {
        if pool.len() < POOL_PER_THREAD {
            pool.push(buffer);
        }
    });
}

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both sides finished.
    Done,
    /// No traffic for the idle timeout.
    IdleTimeout,
    /// One side had finished, and the other sent nothing for the half-closed timeout.
    HalfClosedTimeout,
    /// Reading from or writing to the client failed.
    Client(io::Error),
    /// Reading from or writing to the backend failed.
    Backend(io::Error),
    /// The server's drain deadline passed.
    Aborted,
}

/// Bytes moved and how the relay ended.
#[derive(Debug)]
pub struct RelayOutcome {
    /// Plaintext bytes from the client to the backend.
    pub client_to_backend: u64,
    /// Bytes from the backend to the client.
    pub backend_to_client: u64,
    /// Why it ended.
    pub end: RelayEnd,
}

/// A backend stream the relay reads from without holding a buffer while it is idle.
pub trait BackendRead {
    /// Waits for data, then reads it into `buffer` (taken from the pool only then); returns
    /// how many bytes, 0 at end of stream.
    fn poll_read_pooled(
        &mut self,
        cx: &mut Context<'_>,
        buffer: &mut Option<Box<[u8]>>,
    ) -> Poll<io::Result<usize>>;
}

/// Plain TCP: wait for readability, then read straight into a pooled buffer.
impl BackendRead for TcpStream {
    fn poll_read_pooled(
        &mut self,
        cx: &mut Context<'_>,
        buffer: &mut Option<Box<[u8]>>,
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_read_ready(cx))?;
        let buf = buffer.get_or_insert_with(take_buffer);
        let mut read = ReadBuf::new(buf);
        // `poll_read`, not `try_read`: after a short read tokio knows the socket is drained and
        // waits for the next event, where `try_read` would try again and get EAGAIN (one
        // wasted syscall per response).
        match Pin::new(&mut *self).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(read.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let Some(buf) = buffer.take() {
                    give_buffer(buf);
                }
                Poll::Pending
            }
        }
    }
}

/// TLS to the backend: copy out of the TLS library's plaintext buffer once it has data.
impl<IO> BackendRead for tokio_rustls::client::TlsStream<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read_pooled(
        &mut self,
        cx: &mut Context<'_>,
        buffer: &mut Option<Box<[u8]>>,
    ) -> Poll<io::Result<usize>> {
        let data = match ready!(Pin::new(&mut *self).poll_fill_buf(cx)) {
            Ok(data) => data,
            // Backends often close without close_notify; what they sent is complete.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Poll::Ready(Ok(0)),
            Err(e) => return Poll::Ready(Err(e)),
        };
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let buf = buffer.get_or_insert_with(take_buffer);
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        Pin::new(&mut *self).consume(n);
        Poll::Ready(Ok(n))
    }
}

/// How long a relayed connection may go without traffic.
#[derive(Debug, Clone, Copy)]
pub struct Quiet {
    /// While both sides are open.
    pub idle: Duration,
    /// Once either side has finished sending.
    pub half_closed: Duration,
}

/// Relays until both directions are closed, an error, too long without traffic (`quiet`), or
/// `abort`.
///
/// `abort` is checked each time the relay is polled, not waited on: the caller must be woken
/// when it is cancelled (the connection task selects on it), which spares every wake-up of
/// every connection a second poll of the shared token's waiter list.
pub async fn relay<C, B>(
    client: &mut C,
    backend: &mut B,
    quiet: Quiet,
    abort: &CancellationToken,
) -> RelayOutcome
where
    C: AsyncBufRead + AsyncWrite + Unpin,
    B: BackendRead + AsyncWrite + Unpin,
{
    let mut state = Relay {
        up: Upstream::default(),
        down: Downstream::default(),
        last_activity: Instant::now(),
        quiet,
        half_closed: false,
        timer: Box::pin(sleep(quiet.idle)),
    };
    let end = poll_fn(|cx| {
        if abort.is_cancelled() {
            return Poll::Ready(RelayEnd::Aborted);
        }
        state.poll(cx, client, backend)
    })
    .await;
    if let Some(buffer) = state.down.buffer.take() {
        give_buffer(buffer);
    }
    RelayOutcome {
        client_to_backend: state.up.bytes,
        backend_to_client: state.down.bytes,
        end,
    }
}

#[derive(Default)]
struct Upstream {
    bytes: u64,
    eof: bool,
    shut: bool,
}

#[derive(Default)]
struct Downstream {
    bytes: u64,
    buffer: Option<Box<[u8]>>,
    pos: usize,
    end: usize,
    eof: bool,
    needs_flush: bool,
    shut: bool,
}

struct Relay {
    up: Upstream,
    down: Downstream,
    last_activity: Instant,
    quiet: Quiet,
    /// Whether either side has finished (the half-closed timeout applies).
    half_closed: bool,
    timer: Pin<Box<Sleep>>,
}

impl Relay {
    fn poll<C, B>(
        &mut self,
        cx: &mut Context<'_>,
        client: &mut C,
        backend: &mut B,
    ) -> Poll<RelayEnd>
    where
        C: AsyncBufRead + AsyncWrite + Unpin,
        B: BackendRead + AsyncWrite + Unpin,
    {
        let mut progress = false;
        if let Err(end) = self.poll_up(cx, client, backend, &mut progress) {
            return Poll::Ready(end);
        }
        if let Err(end) = self.poll_down(cx, client, backend, &mut progress) {
            return Poll::Ready(end);
        }
        if self.up.shut && self.down.shut {
            return Poll::Ready(RelayEnd::Done);
        }
        if progress {
            self.last_activity = Instant::now();
        }
        if !self.half_closed && (self.up.eof || self.down.eof) {
            // The end of stream counts as traffic; the timer was set for the idle limit and
            // the half-closed one is shorter.
            self.half_closed = true;
            self.last_activity = Instant::now();
            let deadline = self.last_activity + self.limit();
            self.timer.as_mut().reset(deadline);
        }
        self.poll_timer(cx)
    }

    /// How long the relay may go without traffic in its present state.
    fn limit(&self) -> Duration {
        if self.half_closed {
            self.quiet.half_closed.min(self.quiet.idle)
        } else {
            self.quiet.idle
        }
    }

    /// Ends the relay once its limit has passed without traffic. The timer is only re-armed
    /// when it fires early, not on every byte moved.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<RelayEnd> {
        while self.timer.as_mut().poll(cx).is_ready() {
            let deadline = self.last_activity + self.limit();
            if Instant::now() >= deadline {
                return Poll::Ready(if self.half_closed {
                    RelayEnd::HalfClosedTimeout
                } else {
                    RelayEnd::IdleTimeout
                });
            }
            self.timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }

    /// Client → backend, straight out of the TLS library's plaintext buffer.
    fn poll_up<C, B>(
        &mut self,
        cx: &mut Context<'_>,
        client: &mut C,
        backend: &mut B,
        progress: &mut bool,
    ) -> Result<(), RelayEnd>
    where
        C: AsyncBufRead + AsyncWrite + Unpin,
        B: BackendRead + AsyncWrite + Unpin,
    {
        while !self.up.eof {
            let data = match Pin::new(&mut *client).poll_fill_buf(cx) {
                Poll::Pending => break,
                Poll::Ready(Ok([])) => {
                    self.up.eof = true;
                    break;
                }
                Poll::Ready(Ok(data)) => data,
                // A client that closes TCP without close_notify has still finished sending.
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.up.eof = true;
                    break;
                }
                Poll::Ready(Err(e)) => return Err(RelayEnd::Client(e)),
            };
            match Pin::new(&mut *backend).poll_write(cx, data) {
                Poll::Pending => break,
                Poll::Ready(Ok(n)) => {
                    Pin::new(&mut *client).consume(n);
                    self.up.bytes += n as u64;
                    *progress = true;
                }
                Poll::Ready(Err(e)) => return Err(RelayEnd::Backend(e)),
            }
        }
        if self.up.eof && !self.up.shut {
            match Pin::new(&mut *backend).poll_shutdown(cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => self.up.shut = true,
                Poll::Ready(Err(e)) => return Err(RelayEnd::Backend(e)),
            }
        }
        Ok(())
    }

    /// Backend → client, through a buffer held only while bytes are in flight.
    fn poll_down<C, B>(
        &mut self,
        cx: &mut Context<'_>,
        client: &mut C,
        backend: &mut B,
        progress: &mut bool,
    ) -> Result<(), RelayEnd>
    where
        C: AsyncBufRead + AsyncWrite + Unpin,
        B: BackendRead + AsyncWrite + Unpin,
    {
        let d = &mut self.down;
        loop {
            if d.pos < d.end {
                let Some(buffer) = d.buffer.as_deref() else {
                    break;
                };
                match Pin::new(&mut *client).poll_write(cx, &buffer[d.pos..d.end]) {
                    Poll::Pending => break,
                    Poll::Ready(Ok(n)) => {
                        d.pos += n;
                        d.bytes += n as u64;
                        d.needs_flush = true;
                        *progress = true;
                    }
                    Poll::Ready(Err(e)) => return Err(RelayEnd::Client(e)),
                }
                continue;
            }
            if let Some(buffer) = d.buffer.take() {
                give_buffer(buffer);
            }
            if d.eof {
                break;
            }
            match backend.poll_read_pooled(cx, &mut d.buffer) {
                Poll::Pending => break,
                Poll::Ready(Ok(0)) => d.eof = true,
                Poll::Ready(Ok(n)) => {
                    (d.pos, d.end) = (0, n);
                    *progress = true;
                }
                Poll::Ready(Err(e)) => return Err(RelayEnd::Backend(e)),
            }
        }
        if d.needs_flush {
            match Pin::new(&mut *client).poll_flush(cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => d.needs_flush = false,
                Poll::Ready(Err(e)) => return Err(RelayEnd::Client(e)),
            }
        }
        if d.eof && d.pos == d.end && !d.needs_flush && !d.shut {
            match Pin::new(&mut *client).poll_shutdown(cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => d.shut = true,
                // The client may already be gone; there is nothing left to deliver.
                Poll::Ready(Err(_)) => d.shut = true,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};

    use super::*;

    /// An in-memory backend for the relay.
    impl BackendRead for DuplexStream {
        fn poll_read_pooled(
            &mut self,
            cx: &mut Context<'_>,
            buffer: &mut Option<Box<[u8]>>,
        ) -> Poll<io::Result<usize>> {
            let buf = buffer.get_or_insert_with(take_buffer);
            let mut read = ReadBuf::new(buf);
            ready!(Pin::new(self).poll_read(cx, &mut read))?;
            Poll::Ready(Ok(read.filled().len()))
        }
    }

    const QUIET: Quiet = Quiet {
        idle: Duration::from_secs(60),
        half_closed: Duration::from_secs(5),
    };

    #[tokio::test(start_paused = true)]
    async fn a_half_closed_connection_ends_at_the_half_closed_timeout() {
        let (client_far, client_near) = tokio::io::duplex(1024);
        let (backend_near, mut backend_far) = tokio::io::duplex(1024);
        let mut client = BufReader::new(client_near);
        let mut backend = backend_near;
        let abort = CancellationToken::new();
        let started = Instant::now();
        let traffic = async {
            let mut client_far = client_far;
            client_far.write_all(b"request").await.unwrap();
            sleep(Duration::from_secs(2)).await;
            // The client is done sending; the backend keeps its side open and says nothing.
            client_far.shutdown().await.unwrap();
            let mut got = Vec::new();
            backend_far.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"request", "the client's EOF reached the backend");
            (client_far, backend_far)
        };
        let (outcome, _ends) =
            tokio::join!(relay(&mut client, &mut backend, QUIET, &abort), traffic);
        assert!(
            matches!(outcome.end, RelayEnd::HalfClosedTimeout),
            "{:?}",
            outcome.end
        );
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(7),
            "5 s after the last byte"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_counts_from_the_last_byte_either_way() {
        let (client_far, client_near) = tokio::io::duplex(1024);
        let (backend_near, mut backend_far) = tokio::io::duplex(1024);
        let mut client = BufReader::new(client_near);
        let mut backend = backend_near;
        let abort = CancellationToken::new();
        let started = Instant::now();
        let traffic = async {
            let mut client_far = client_far;
            // One byte each way at 0 s and 40 s; then silence.
            client_far.write_all(b"a").await.unwrap();
            sleep(Duration::from_secs(40)).await;
            backend_far.write_all(b"b").await.unwrap();
            let mut got = [0_u8; 2];
            client_far.read_exact(&mut got[..1]).await.unwrap();
            backend_far.read_exact(&mut got[1..]).await.unwrap();
            assert_eq!(&got, b"ba");
            (client_far, backend_far)
        };
        let (outcome, _ends) =
            tokio::join!(relay(&mut client, &mut backend, QUIET, &abort), traffic);
        assert!(
            matches!(outcome.end, RelayEnd::IdleTimeout),
            "{:?}",
            outcome.end
        );
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(100),
            "60 s after the last byte"
        );
        assert_eq!(
            (outcome.client_to_backend, outcome.backend_to_client),
            (1, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn abort_ends_the_relay_with_its_counts() {
        let (mut client_far, client_near) = tokio::io::duplex(1024);
        let (mut backend, mut backend_far) = tokio::io::duplex(1024);
        let mut client = BufReader::new(client_near);
        let abort = CancellationToken::new();
        client_far.write_all(b"hello").await.unwrap();
        let cut = async {
            let mut got = [0_u8; 5];
            backend_far.read_exact(&mut got).await.unwrap();
            abort.cancel();
        };
        // As in the connection task: whoever runs the relay is woken by the abort.
        let relayed = async {
            tokio::select! {
                biased;
                outcome = relay(&mut client, &mut backend, QUIET, &abort) => outcome,
                () = abort.cancelled() => unreachable!("the relay is polled first"),
            }
        };
        let (outcome, ()) = tokio::join!(relayed, cut);
        assert!(
            matches!(outcome.end, RelayEnd::Aborted),
            "{:?}",
            outcome.end
        );
        assert_eq!(outcome.client_to_backend, 5);
    }
}
