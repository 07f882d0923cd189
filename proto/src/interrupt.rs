//! A response stream that ends early, with a status, when something happens
//! before its end: the client's deadline passes, or a drain cuts it.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};
use tokio_stream::Stream;
use tonic::Status;

/// `inner` until `when` resolves; then `status`, and the end.
pub struct Interrupted<S> {
    inner: S,
    /// `None`: never interrupted (no allocation, nothing polled per item).
    when: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    status: Option<Status>,
    done: bool,
}

impl<S> Interrupted<S> {
    pub fn new(
        inner: S,
        when: impl Future<Output = ()> + Send + 'static,
        status: Status,
    ) -> Interrupted<S> {
        Interrupted {
            inner,
            when: Some(Box::pin(when)),
            status: Some(status),
            done: false,
        }
    }

    /// `inner` as it is, in the same type.
    pub fn never(inner: S) -> Interrupted<S> {
        Interrupted {
            inner,
            when: None,
            status: None,
            done: false,
        }
    }
}

impl<S, T> Stream for Interrupted<S>
where
    S: Stream<Item = Result<T, Status>> + Unpin,
{
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(when) = self.when.as_mut()
            && when.as_mut().poll(cx).is_ready()
        {
            self.done = true;
            return Poll::Ready(self.status.take().map(Err));
        }
        let item = std::task::ready!(Pin::new(&mut self.inner).poll_next(cx));
        self.done = !matches!(item, Some(Ok(_)));
        Poll::Ready(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::Instant;
    use tokio_stream::{StreamExt as _, wrappers::UnboundedReceiverStream};

    #[tokio::test(start_paused = true)]
    async fn ends_with_the_status_when_the_event_comes_first() {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<Result<u32, Status>>();
        let t0 = Instant::now();
        let mut stream = Interrupted::new(
            UnboundedReceiverStream::new(receiver),
            tokio::time::sleep(Duration::from_secs(3)),
            Status::deadline_exceeded("late"),
        );
        sender.send(Ok(1)).unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), 1);
        let status = stream.next().await.unwrap().unwrap_err();
        assert_eq!(status.message(), "late");
        assert_eq!(Instant::now() - t0, Duration::from_secs(3));
        assert!(stream.next().await.is_none(), "and then it ends");
        drop(sender);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_ends_first_is_left_alone() {
        let mut stream = Interrupted::new(
            tokio_stream::iter([Ok::<_, Status>(1), Ok(2)]),
            std::future::pending(),
            Status::deadline_exceeded("late"),
        );
        assert_eq!(stream.next().await.unwrap().unwrap(), 1);
        assert_eq!(stream.next().await.unwrap().unwrap(), 2);
        assert!(stream.next().await.is_none());
    }
}
