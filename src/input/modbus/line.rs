//! The bus under tokio-modbus: a transport that discards whatever is waiting to be read
//! when a request starts. Nothing that arrived before a request can be its answer: it is a
//! late answer to a request that timed out, or line noise. Without this, a late answer
//! would be taken for the next request's, and every answer after it would be one behind.
//!
//! **Invariant:** the bytes discarded are counted in `stale`, for the input to log.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug)]
pub struct Line<T> {
    inner: T,
    /// Bytes discarded so far.
    pub stale: Arc<AtomicU64>,
}

impl<T> Line<T> {
    pub fn new(inner: T) -> Line<T> {
        Line {
            inner,
            stale: Arc::default(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Line<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Line<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        // No answer can arrive before its request is whole: draining before each part of
        // a request (one part, as a rule) drains before the request.
        let mut scratch = [0u8; 256];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    self.stale.fetch_add(buf.filled().len() as u64, Relaxed);
                }
                // Nothing waiting (or the end: the write or the next read says so).
                Poll::Ready(Ok(())) | Poll::Pending => break,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
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
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn what_waits_before_a_request_is_discarded_and_the_answer_kept() {
        let (ours, mut slave) = tokio::io::duplex(1024);
        let mut line = Line::new(ours);
        slave.write_all(b"late answer").await.unwrap();
        tokio::task::yield_now().await;
        line.write_all(b"request").await.unwrap();
        let mut got = [0u8; 7];
        slave.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"request");
        slave.write_all(b"answer").await.unwrap();
        let mut got = [0u8; 6];
        line.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"answer");
        assert_eq!(line.stale.load(Relaxed), 11);
        // The next request drains again.
        slave.write_all(b"xy").await.unwrap();
        line.write_all(b"r2").await.unwrap();
        assert_eq!(line.stale.load(Relaxed), 13);
    }
}
