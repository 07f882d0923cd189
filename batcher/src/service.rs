//! `BatcherService.Submit`: one call per client request. The request joins
//! the queue; its tokens stream back as its worker produces them. A client
//! that leaves is cancelled all the way down.

use crate::{
    Batching, Error,
    dispatcher::Dispatcher,
    queue::Entry,
    request::{ClientDeadline, Limit, Message, Pending},
};
use horoscoper_proto::{
    deadline,
    interrupt::Interrupted,
    mesh::{SubmitRequest, SubmitResponse, batcher_service_server::BatcherService},
    shutdown::{Drain, Tracked},
    trace_context,
};
use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    time::Instant,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// How long after the client's deadline a request's stream ends by itself.
const BACKSTOP: Duration = Duration::from_millis(10);

/// The batcher's gRPC service.
#[derive(Clone)]
pub struct Batcher {
    dispatcher: Dispatcher,
    time_to_live: Duration,
    /// One permit per request held, queued or running: admission control.
    admission: Arc<Semaphore>,
    max_requests: usize,
    next_request_id: Arc<AtomicU64>,
    /// Once it begins, new requests are refused.
    drain: Drain,
}

impl Batcher {
    pub fn new(dispatcher: Dispatcher, batching: Batching, drain: Drain) -> Batcher {
        Batcher {
            drain,
            dispatcher,
            time_to_live: batching.time_to_live,
            admission: Arc::new(Semaphore::new(batching.max_requests)),
            max_requests: batching.max_requests,
            next_request_id: Arc::new(AtomicU64::new(1)),
        }
    }
}

#[tonic::async_trait]
impl BatcherService for Batcher {
    type SubmitStream = Interrupted<RequestStream>;

    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<Interrupted<RequestStream>>, Status> {
        if self.drain.is_draining() {
            return Err(Error::Draining.into());
        }
        // Fail fast when full: the permit lives as long as the request's stream.
        let Ok(permit) = self.admission.clone().try_acquire_owned() else {
            return Err(Error::Overloaded {
                limit: self.max_requests,
            }
            .into());
        };
        let client_deadline = deadline::from_metadata(request.metadata());
        let limit = Limit::new(self.time_to_live, client_deadline);
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!(
            "submit",
            otel.kind = "server",
            request_id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        trace_context::set_parent_from(&span, request.metadata());
        let SubmitRequest { prefix, request_id } = request.into_inner();
        span.record("request_id", &request_id);
        span.record("trace_id", trace_context::trace_id(&span));
        let queued = tracing::info_span!(
            parent: &span,
            "queued",
            limit_ms = limit.duration().as_millis() as u64
        );
        let (reply, tokens) = mpsc::unbounded_channel();
        let now = Instant::now();
        let entry = Entry {
            id,
            enqueued: now,
            expires: now + limit.duration(),
            item: Pending {
                prefix,
                limit,
                reply,
                log_id: request_id,
                span: span.clone(),
                queued,
                delivered: 0,
                orphaned: None,
                deadline: client_deadline.map(|limit| ClientDeadline::starting(now, limit)),
            },
        };
        if !self.dispatcher.enqueue(entry) {
            return Err(Error::ShuttingDown.into());
        }
        let stream = RequestStream {
            id,
            tokens,
            dispatcher: self.dispatcher.clone(),
            finished: false,
            span,
            _permit: permit,
            _open: self.drain.track(),
        };
        // Past the client's deadline the stream ends; dropping it cancels the
        // request at its worker. A moment later than the deadline, so that
        // the queue (while queued) or the worker connection (once its batch
        // ends) reports it first, saying what the request was waiting for.
        let stream = match client_deadline {
            Some(limit) => Interrupted::new(
                stream,
                tokio::time::sleep_until(now + limit + BACKSTOP),
                Error::DeadlinePassed { limit }.into(),
            ),
            None => Interrupted::never(stream),
        };
        Ok(Response::new(stream))
    }
}

/// A request's tokens. Dropped before its end (the client left), it cancels
/// the request: off the queue, or stopped at its worker.
pub struct RequestStream {
    id: u64,
    tokens: mpsc::UnboundedReceiver<Message>,
    dispatcher: Dispatcher,
    finished: bool,
    /// The request's span ends with its stream.
    span: tracing::Span,
    /// Its place in the batcher, given back when the stream ends.
    _permit: OwnedSemaphorePermit,
    /// Open, for the drain, until it ends.
    _open: Tracked,
}

impl Stream for RequestStream {
    type Item = Result<SubmitResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let item = std::task::ready!(self.tokens.poll_recv(cx)).map(|message| *message);
        self.finished = match &item {
            Some(Ok(response)) => response.last,
            Some(Err(_)) | None => true,
        };
        // Every path that drops a request's reply sends a status first; should
        // one ever not, the client still gets an error rather than a cut text
        // that looks complete.
        Poll::Ready(item.or_else(|| {
            Some(Err(Status::internal(
                "the request ended without its last token",
            )))
        }))
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        if !self.finished {
            self.span
                .in_scope(|| tracing::debug!("client left; cancelling"));
            self.dispatcher.cancel(self.id);
        }
    }
}
