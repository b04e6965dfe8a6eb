//! A stream that first replays bytes already read from it.
//!
//! The PROXY header reader reads the socket in chunks, so its last read may take the first
//! bytes of the ClientHello too. Those bytes are handed back here and the TLS stage reads them
//! before the socket. With nothing to replay (no PROXY header, or a header read exactly) the
//! wrapper costs one branch per read and holds no buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, preceded by a few bytes already taken from it.
#[derive(Debug)]
pub struct Rewind<IO> {
    prefix: Option<Box<[u8]>>,
    pos: usize,
    inner: IO,
}

impl<IO> Rewind<IO> {
    /// Nothing to replay.
    pub fn new(inner: IO) -> Self {
        Self {
            prefix: None,
            pos: 0,
            inner,
        }
    }

    /// Replays `prefix` before reading from `inner`.
    pub fn with_prefix(inner: IO, prefix: &[u8]) -> Self {
        Self {
            prefix: (!prefix.is_empty()).then(|| prefix.into()),
            pos: 0,
            inner,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &IO {
        &self.inner
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(prefix) = &this.prefix {
            let rest = &prefix[this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == prefix.len() {
                // Freed as soon as it is replayed: a long-lived connection keeps no copy.
                this.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn replays_the_prefix_then_reads_the_stream() {
        let (mut far, near) = tokio::io::duplex(64);
        far.write_all(b"world").await.unwrap();
        drop(far);
        let mut stream = Rewind::with_prefix(near, b"hello ");
        let mut small = [0_u8; 4];
        stream.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"hell");
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"o world");
        assert!(stream.prefix.is_none(), "the replayed bytes are freed");
    }
}
