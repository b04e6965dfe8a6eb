//! Upgraded requests (WebSocket over HTTP/1.1): once the backend answered 101 and both sides
//! have switched, the two connections are relayed byte for byte, until both close, nothing
//! moves for `timeouts.idle`, or the drain deadline. The relay is a task the client
//! connection waits for, so it drains with it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::ConnCtx;

/// Relays an upgraded request (WebSocket) both ways once both sides have switched, as a
/// task the connection waits for.
pub fn relay(
    ctx: &Arc<ConnCtx>,
    client: hyper::upgrade::OnUpgrade,
    backend: hyper::upgrade::OnUpgrade,
) {
    let idle = ctx.snapshot.timeouts.idle;
    let abort = ctx.shutdown.abort.clone();
    let task = async move {
        let (Ok(client), Ok(backend)) = (client.await, backend.await) else {
            return;
        };
        let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
        let relay = copy_until_idle(&mut client, &mut backend, idle);
        tokio::select! {
            result = relay => tracing::debug!(result = ?result, "upgraded connection closed"),
            () = abort.cancelled() => tracing::debug!("upgraded connection cut at the drain deadline"),
        }
    };
    ctx.upgrades.spawn(task);
}

/// Relays an upgraded connection both ways until both sides close, or until nothing moved
/// for `idle` (checked once per `idle` period, so it cuts after one to two periods).
async fn copy_until_idle<A, B>(
    a: &mut A,
    b: &mut B,
    idle: std::time::Duration,
) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a, mut b) = (Watched::new(a), Watched::new(b));
    let seen = Arc::clone(&a.seen);
    let seen_b = Arc::clone(&b.seen);
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    let watch = async {
        let mut last = (0, 0);
        loop {
            tokio::time::sleep(idle).await;
            let now = (seen.load(Ordering::Relaxed), seen_b.load(Ordering::Relaxed));
            if now == last {
                return;
            }
            last = now;
        }
    };
    tokio::select! {
        result = copy => result,
        () = watch => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// A stream that counts the bytes read from it, for [`copy_until_idle`]'s idle check.
struct Watched<'a, T> {
    inner: &'a mut T,
    seen: Arc<AtomicU64>,
}

impl<'a, T> Watched<'a, T> {
    fn new(inner: &'a mut T) -> Self {
        Self {
            inner,
            seen: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.seen.fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}
