//! Body wrappers: bodies stream through frame by frame, never buffered whole.
//!
//! [`RequestBody`] counts what a client uploads and stops it at `max_body_bytes`;
//! [`ResponseBody`] counts what a backend sends and runs its completion once at the end — on
//! the last frame, or on drop when the client went away — which gives the backend connection
//! back to the pool (only after a complete response), drops the in-flight count and writes the
//! request's log line and metrics.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Bytes, Frame, SizeHint};

/// Any error a body may end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every proxied request and response.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A short text body (error answers, redirects).
pub fn text(message: impl Into<Bytes>) -> ProxyBody {
    http_body_util::Full::new(message.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The request body was larger than the host's `max_body_bytes`.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {limit} bytes")]
pub struct TooLarge {
    /// The limit.
    pub limit: u64,
}

/// A client's request body on its way to a backend.
#[derive(Debug)]
pub struct RequestBody<B> {
    inner: B,
    limit: u64,
    /// Bytes passed so far; shared with the request's log line.
    seen: Arc<AtomicU64>,
}

impl<B> RequestBody<B> {
    /// Wraps `inner`, failing once more than `limit` bytes arrive; `seen` counts them.
    pub fn new(inner: B, limit: u64, seen: Arc<AtomicU64>) -> Self {
        Self { inner, limit, seen }
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        Poll::Ready(match frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let total = self.seen.fetch_add(data.len() as u64, Ordering::Relaxed)
                        + data.len() as u64;
                    if total > self.limit {
                        return Poll::Ready(Some(Err(Box::new(TooLarge { limit: self.limit }))));
                    }
                }
                Some(Ok(frame))
            }
            Some(Err(e)) => Some(Err(e.into())),
            None => None,
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What runs once when a response body ends: `complete` tells whether every byte arrived,
/// `bytes` how many went to the client.
pub type OnEnd = Box<dyn FnOnce(bool, u64) + Send>;

/// A backend's response body on its way to the client.
pub struct ResponseBody<B: Body> {
    inner: B,
    bytes: u64,
    on_end: Option<OnEnd>,
}

impl<B: Body> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl<B: Body> ResponseBody<B> {
    /// Wraps `inner`; `on_end` runs once at its end.
    pub fn new(inner: B, on_end: OnEnd) -> Self {
        Self {
            inner,
            bytes: 0,
            on_end: Some(on_end),
        }
    }

    fn end(&mut self, complete: bool) {
        if let Some(on_end) = self.on_end.take() {
            on_end(complete, self.bytes);
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.end(true);
                }
            }
            Some(Err(_)) => self.end(false),
            None => self.end(true),
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for ResponseBody<B> {
    fn drop(&mut self) {
        // Never polled to its end: complete only if there was nothing more to send (HEAD, 204,
        // 304), which a server may answer without polling the body at all.
        let complete = self.inner.is_end_stream();
        self.end(complete);
    }
}
