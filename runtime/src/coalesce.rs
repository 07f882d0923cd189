//! Fewer, larger writes: a connection that lets the other ready tasks run
//! once before it writes.
//!
//! HTTP/2 writes from one task per connection, and that task writes whatever
//! its streams have queued each time it runs. When a step's tokens reach many
//! streams at once, the connection's task may already be queued ahead of
//! some of them (woken by a read, say), and then it writes (one `writev`,
//! with the whole loopback receive path and a wakeup of the peer behind it)
//! before they have queued their frames, and again after. [`Coalesced`]
//! answers the first write after a flush with `Pending` and wakes its own
//! task, which puts that task at the back of the runtime's queue: the
//! streams already woken queue their frames first, and one write then
//! carries them all. The same idea as Netty's `FlushConsolidationHandler`.
//!
//! The delay is one pass over the tasks that are ready anyway; an idle
//! runtime polls the connection again at once. Nothing is held back once the
//! write is let through, and every read and flush goes straight to the
//! socket.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// A connection whose first write after each flush yields once.
#[derive(Debug)]
pub struct Coalesced<T> {
    inner: T,
    /// Whether the writes since the last flush have already yielded.
    yielded: bool,
}

impl<T> Coalesced<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            yielded: false,
        }
    }

    /// `Pending` (with the task woken, so it runs again after the other
    /// ready tasks) on the first write since the last flush.
    fn yield_once(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.yield_once(cx));
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.yield_once(cx));
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = std::task::ready!(Pin::new(&mut self.inner).poll_flush(cx));
        self.yielded = false;
        Poll::Ready(flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: Connected> Connected for Coalesced<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts its wakes.
    struct Wakes(AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    #[tokio::test]
    async fn the_first_write_after_a_flush_yields_once_and_wakes_its_task() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut near = Coalesced::new(near);
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = wakes.clone().into();
        let mut cx = Context::from_waker(&waker);
        let mut pinned = Pin::new(&mut near);

        assert!(pinned.as_mut().poll_write(&mut cx, b"ab").is_pending());
        assert_eq!(wakes.0.load(Relaxed), 1, "the yield wakes its own task");
        assert!(matches!(
            pinned.as_mut().poll_write(&mut cx, b"ab"),
            Poll::Ready(Ok(2))
        ));
        assert!(matches!(
            pinned.as_mut().poll_write(&mut cx, b"cd"),
            Poll::Ready(Ok(2))
        ));
        assert!(matches!(
            pinned.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        let vectored = [io::IoSlice::new(b"e"), io::IoSlice::new(b"f")];
        assert!(
            pinned
                .as_mut()
                .poll_write_vectored(&mut cx, &vectored)
                .is_pending()
        );
        assert_eq!(wakes.0.load(Relaxed), 2, "and again after a flush");

        near.write_all(b"ef").await.unwrap();
        near.flush().await.unwrap();
        let mut got = [0; 6];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abcdef", "nothing is lost or reordered");
    }

    #[tokio::test]
    async fn reads_pass_straight_through() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut near = Coalesced::new(near);
        far.write_all(b"hello").await.unwrap();
        let mut got = [0; 5];
        near.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
    }
}
