//! A response stream that ends early, with a status, when something happens
//! before its end: the client's deadline passes, or a drain cuts it.
//!
//! The event is looked at once per wake-up, not before every item: tonic
//! polls the stream again for each token of a run, and a drain's
//! cancellation token takes a lock to say it is not cancelled (the cost is
//! in `docs/performance.md`). Within a run it is looked at every
//! [`ITEMS_UNWATCHED`] items, so a stream that is always ready still ends.

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
    /// Items given since `when` was last polled: zero makes the next poll
    /// look at it, as does every wake-up (a `Pending` sets it to zero).
    unwatched: usize,
}

/// Most items given in a row without looking at the event.
pub const ITEMS_UNWATCHED: usize = 32;

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
            unwatched: 0,
        }
    }

    /// `inner` as it is, in the same type.
    pub fn never(inner: S) -> Interrupted<S> {
        Interrupted {
            inner,
            when: None,
            status: None,
            done: false,
            unwatched: 0,
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
        if self.unwatched == 0
            && let Some(when) = self.when.as_mut()
            && when.as_mut().poll(cx).is_ready()
        {
            self.done = true;
            return Poll::Ready(self.status.take().map(Err));
        }
        let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) else {
            // `when` was polled in this wake-up, so it wakes the task too.
            self.unwatched = 0;
            return Poll::Pending;
        };
        self.unwatched = (self.unwatched + 1) % ITEMS_UNWATCHED;
        self.done = !matches!(item, Some(Ok(_)));
        Poll::Ready(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering::Relaxed},
        },
        time::Duration,
    };
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

    /// Pending when first polled, ready after; counts its polls.
    struct SecondPoll(Arc<AtomicUsize>);

    impl Future for SecondPoll {
        type Output = ();

        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            if self.0.fetch_add(1, Relaxed) == 0 {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        }
    }

    #[tokio::test]
    async fn the_event_is_looked_at_once_per_wake_up_and_every_few_items() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut stream = Interrupted::new(
            tokio_stream::iter(std::iter::repeat_with(|| Ok::<_, Status>(7))),
            SecondPoll(polls.clone()),
            Status::unavailable("cut"),
        );
        for _ in 0..ITEMS_UNWATCHED {
            assert_eq!(stream.next().await.unwrap().unwrap(), 7);
        }
        assert_eq!(polls.load(Relaxed), 1, "a run of ready items looks once");
        let status = stream.next().await.unwrap().unwrap_err();
        assert_eq!(status.message(), "cut", "an endless run still ends");
        assert_eq!(polls.load(Relaxed), 2);
        assert!(stream.next().await.is_none());
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
