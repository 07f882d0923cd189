//! A service's drain, started by its shutdown future.
//!
//! A drain has two moments. When it begins, health turns NOT_SERVING, new
//! calls are answered UNAVAILABLE, and open streams go on. Once none is left
//! (or its grace period is over and it cut them, with UNAVAILABLE), the
//! server stops accepting, closes its connections and the service exits.
//! The server is told to stop only then: an HTTP/2 GOAWAY sent at once would
//! make clients report a call on a closing connection as CANCELLED rather
//! than get the service's clear UNAVAILABLE.

use crate::interrupt::Interrupted;
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio_stream::Stream;
use tokio_util::{
    sync::CancellationToken,
    task::{TaskTracker, task_tracker::TaskTrackerToken},
};

/// A service's drain: [`Drain::begun`] when its shutdown future resolves,
/// [`Drain::cut`] a grace period later.
#[derive(Clone, Debug)]
pub struct Drain {
    begun: CancellationToken,
    cut: CancellationToken,
    /// The service's open streams; closed when the drain begins.
    open: TaskTracker,
}

/// One open stream, counted until dropped.
pub type Tracked = TaskTrackerToken;

impl Drain {
    /// Begins when `shutdown` resolves; cuts `grace` later.
    pub fn start(shutdown: impl Future<Output = ()> + Send + 'static, grace: Duration) -> Drain {
        let drain = Drain {
            begun: CancellationToken::new(),
            cut: CancellationToken::new(),
            open: TaskTracker::new(),
        };
        let (begun, cut, open) = (drain.begun.clone(), drain.cut.clone(), drain.open.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown => {}
                () = begun.cancelled() => {}
            }
            begun.cancel();
            open.close();
            tokio::select! {
                () = tokio::time::sleep(grace) => {
                    tracing::info!(grace_ms = grace.as_millis() as u64, "drain grace period over: cutting open streams");
                }
                () = cut.cancelled() => {}
            }
            cut.cancel();
        });
        drain
    }

    /// Cancelled when the drain begins.
    pub fn begun(&self) -> &CancellationToken {
        &self.begun
    }

    pub fn is_draining(&self) -> bool {
        self.begun.is_cancelled()
    }

    /// Cancelled when the grace period is over.
    pub fn cut(&self) -> &CancellationToken {
        &self.cut
    }

    /// Counts a stream as open until the returned guard is dropped.
    pub fn track(&self) -> Tracked {
        self.open.token()
    }

    /// Resolves once the drain has begun and no tracked stream is open, or
    /// at the cut: when the server should stop.
    pub async fn settled(&self) {
        self.begun.cancelled().await;
        tokio::select! {
            () = self.open.wait() => {}
            () = self.cut.cancelled() => {}
        }
    }

    /// [`Drain::settled`] as an owned future, for the server.
    pub fn settled_owned(&self) -> impl Future<Output = ()> + Send + 'static {
        let drain = self.clone();
        async move { drain.settled().await }
    }

    /// Serves until `served` ends (told to stop by [`Drain::settled`], it
    /// closes every connection), or until a moment after it settled, when
    /// the streams have had time to send their statuses: a client holding a
    /// connection open (a health watch, say) does not hold the exit.
    pub async fn serve<T>(&self, served: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            result = served => Some(result),
            () = async {
                self.settled().await;
                tokio::time::sleep(AFTER_SETTLED).await;
            } => {
                tracing::info!("connections still open after the drain; closing them");
                None
            }
        }
    }
}

/// A response stream that ends with `status` when the drain cuts, unless it
/// ended first. It counts as open (see [`Drain::track`]) until dropped.
pub struct UntilCut<S> {
    inner: Interrupted<S>,
    _open: Tracked,
}

impl<S> UntilCut<S> {
    pub fn new(inner: S, drain: &Drain, status: tonic::Status) -> UntilCut<S> {
        UntilCut {
            inner: Interrupted::new(inner, drain.cut.clone().cancelled_owned(), status),
            _open: drain.track(),
        }
    }
}

impl<S, T> Stream for UntilCut<S>
where
    S: Stream<Item = Result<T, tonic::Status>> + Unpin,
{
    type Item = Result<T, tonic::Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// How long a drained server gets to close its connections.
const AFTER_SETTLED: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_drain_begins_with_the_signal_and_cuts_after_the_grace() {
        let (signal, wait) = tokio::sync::oneshot::channel::<()>();
        let drain = Drain::start(
            async {
                let _ = wait.await;
            },
            Duration::from_secs(3),
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!drain.is_draining(), "nothing before the signal");
        let t0 = Instant::now();
        signal.send(()).unwrap();
        drain.begun().cancelled().await;
        assert_eq!(Instant::now(), t0);
        assert!(!drain.cut().is_cancelled());
        drain.cut().cancelled().await;
        assert_eq!(Instant::now() - t0, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_ends_with_the_status_when_the_drain_cuts() {
        use tokio_stream::StreamExt as _;
        let drain = Drain::start(async {}, Duration::from_secs(3));
        let (sender, receiver) =
            tokio::sync::mpsc::unbounded_channel::<Result<u32, tonic::Status>>();
        let mut stream = UntilCut::new(
            tokio_stream::wrappers::UnboundedReceiverStream::new(receiver),
            &drain,
            tonic::Status::unavailable("cut"),
        );
        sender.send(Ok(1)).unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap(), 1);
        let t0 = Instant::now();
        let status = stream.next().await.unwrap().unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::Unavailable, "cut")
        );
        assert_eq!(Instant::now() - t0, Duration::from_secs(3));
        assert!(stream.next().await.is_none(), "and then it ends");
        drop(sender);
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_settles_when_its_last_stream_closes() {
        let drain = Drain::start(async {}, Duration::from_secs(3));
        let (one, two) = (drain.track(), drain.track());
        let t0 = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(one);
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(two);
        });
        drain.settled().await;
        assert_eq!(Instant::now() - t0, Duration::from_secs(2));
        assert!(!drain.cut().is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_with_a_stream_still_open_settles_at_the_cut() {
        let drain = Drain::start(async {}, Duration::from_secs(3));
        let _open = drain.track();
        let t0 = Instant::now();
        drain.settled().await;
        assert_eq!(Instant::now() - t0, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_closes_in_time_is_not_cut_short() {
        let drain = Drain::start(async {}, Duration::from_secs(3));
        let served = drain
            .serve(tokio::time::sleep(Duration::from_millis(500)))
            .await;
        assert!(served.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_still_open_a_moment_after_it_settled_is_left() {
        let drain = Drain::start(async {}, Duration::from_secs(3));
        let _open = drain.track();
        let t0 = Instant::now();
        let served = drain.serve(std::future::pending::<()>()).await;
        assert!(served.is_none());
        assert_eq!(Instant::now() - t0, Duration::from_secs(3) + AFTER_SETTLED);
    }
}
