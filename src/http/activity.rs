//! When a client connection is idle, and how long a request head has been arriving: the two
//! clocks behind `limits.idle_timeout` and `limits.header_timeout`.
//!
//! hyper's own header timeout starts as soon as an HTTP/1.1 connection waits for its next
//! request, so it would also cut every idle keep-alive connection after `header_timeout` (and
//! call it a protocol error). Here the header clock starts at the first byte of a new request
//! instead ([`HeadWatch`] sees it), and the idle clock runs while no request is in flight.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// No head is arriving.
const NONE: u64 = u64::MAX;

/// Requests in flight on one connection, when the last one ended, and when the bytes of the
/// next one began.
#[derive(Debug)]
pub struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `started` to the end of the last request.
    last_end: AtomicU64,
    /// Set while no request is in flight: the next byte read starts a request head.
    between: AtomicBool,
    /// Milliseconds from `started` to the first byte of the head being read, or `NONE`.
    head_began: AtomicU64,
    changed: Notify,
}

/// Which clock ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// No request for `idle_timeout`.
    Idle,
    /// A request head began and did not complete within `header_timeout`.
    Header,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    /// The clocks of a connection that starts now, waiting for its first request.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
            between: AtomicBool::new(true),
            head_began: AtomicU64::new(NONE),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }

    /// A request head arrived complete.
    pub fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.between.store(false, Ordering::Relaxed);
        self.head_began.store(NONE, Ordering::Relaxed);
    }

    /// A request ended (its response was sent, or abandoned).
    pub fn end(&self) {
        self.last_end.store(self.now_ms(), Ordering::Relaxed);
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.between.store(true, Ordering::Relaxed);
        }
    }

    /// Bytes were read from the client.
    fn read(&self) {
        if self.between.swap(false, Ordering::Relaxed) {
            self.head_began.store(self.now_ms(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// Resolves when a clock runs out: no request in flight for `idle`, or (with `header`) a
    /// head that began `header` ago and is still not complete.
    pub async fn expired(&self, idle: Duration, header: Option<Duration>) -> Expired {
        loop {
            let now = Instant::now();
            let wake = if self.in_flight.load(Ordering::Relaxed) > 0 {
                // Its end moves the idle clock: look again one period later.
                now + idle
            } else {
                let began = self.head_began.load(Ordering::Relaxed);
                match header {
                    Some(header) if began != NONE => {
                        let due = self.at(began) + header;
                        if now >= due {
                            return Expired::Header;
                        }
                        due
                    }
                    _ => {
                        let due = self.at(self.last_end.load(Ordering::Relaxed)) + idle;
                        if now >= due {
                            return Expired::Idle;
                        }
                        due
                    }
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = self.changed.notified() => {}
            }
        }
    }
}

/// The client stream, telling the [`Activity`] when the bytes of a new request begin.
#[derive(Debug)]
pub struct HeadWatch<IO> {
    inner: IO,
    activity: Arc<Activity>,
}

impl<IO> HeadWatch<IO> {
    /// Watches reads of `inner`.
    pub fn new(inner: IO, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for HeadWatch<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for HeadWatch<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_runs_only_without_requests_and_header_from_the_first_byte() {
        let idle = Duration::from_secs(60);
        let header = Some(Duration::from_secs(10));
        let activity = Activity::new();
        let started = Instant::now();
        // Nothing at all: the idle clock, from the start.
        assert_eq!(activity.expired(idle, header).await, Expired::Idle);
        assert_eq!(started.elapsed(), idle);

        // A request in flight for two idle periods, then idle from its end.
        activity.read();
        activity.begin();
        let end = tokio::time::sleep(2 * idle);
        tokio::pin!(end);
        tokio::select! {
            _ = activity.expired(idle, header) => panic!("expired with a request in flight"),
            () = &mut end => activity.end(),
        }
        let ended = Instant::now();
        assert_eq!(activity.expired(idle, header).await, Expired::Idle);
        assert_eq!(ended.elapsed(), idle);

        // The first byte of the next head starts the header clock, mid-way through idling.
        activity.read();
        activity.begin();
        activity.end();
        let first_byte = tokio::time::sleep(Duration::from_secs(30));
        tokio::pin!(first_byte);
        let expired = async {
            let watch = activity.expired(idle, header);
            tokio::pin!(watch);
            tokio::select! {
                _ = &mut watch => panic!("expired before the head began"),
                () = &mut first_byte => activity.read(),
            }
            watch.await
        };
        let before = Instant::now();
        assert_eq!(expired.await, Expired::Header);
        assert_eq!(before.elapsed(), Duration::from_secs(40));
    }
}
