//! Admission: which request joins the queue, under what limit and span,
//! and what it holds while it is open (its place under `--max-requests`,
//! its part in the drain).

use crate::{
    Batching, Error,
    dispatcher::Dispatcher,
    queue::Entry,
    request::{ClientDeadline, Departure, Limit, Pending, Reply},
};
use horoscoper_proto::{deadline, limits, mesh::SubmitRequest};
use horoscoper_runtime::{
    drain::{Drain, Tracked},
    trace,
};
use prost::Message as _;
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

/// Admits requests into the queue, one permit each.
#[derive(Clone)]
pub struct Admission {
    dispatcher: Dispatcher,
    time_to_live: Duration,
    /// One permit per request held, queued or running: admission control.
    permits: Arc<Semaphore>,
    max_requests: usize,
    next_request_id: Arc<AtomicU64>,
    /// Once it begins, new requests are refused.
    drain: Drain,
    /// This batcher's id, in its spans and its load reports.
    batcher_id: Arc<str>,
    /// Most requests in a batch, in its load reports.
    batch_size: usize,
    /// Least time between two load reports on a session.
    load_every: Duration,
}

impl Admission {
    pub fn new(
        dispatcher: Dispatcher,
        batching: Batching,
        drain: Drain,
        batcher_id: Arc<str>,
    ) -> Admission {
        Admission {
            batcher_id,
            batch_size: batching.policy.batch_size,
            load_every: batching.load_every,
            drain,
            dispatcher,
            time_to_live: batching.time_to_live,
            permits: Arc::new(Semaphore::new(batching.max_requests)),
            max_requests: batching.max_requests,
            next_request_id: Arc::new(AtomicU64::new(1)),
        }
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Whether this batcher runs continuous batching, for its load reports.
    pub fn continuous(&self) -> bool {
        self.dispatcher.continuous()
    }

    pub fn load_every(&self) -> Duration {
        self.load_every
    }

    pub fn batcher_id(&self) -> &Arc<str> {
        &self.batcher_id
    }

    pub fn drain(&self) -> &Drain {
        &self.drain
    }

    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Queues a request of a session, whose tokens go to `reply`; refuses
    /// it while draining, full or shutting down, saying why on `reply`.
    pub fn admit(&self, submit: SubmitRequest, mut reply: Reply) -> Option<Admitted> {
        if self.drain.is_draining() {
            // Nothing was done: the gateway may send it elsewhere.
            reply.fail(horoscoper_proto::reply::refused(Error::Draining.into()));
            return None;
        }
        // Every request goes to a worker in a batch with others: one that
        // would not fit there fails here, alone.
        let bytes = submit.encoded_len();
        if bytes > limits::MAX_ITEM_BYTES {
            reply.fail(Error::RequestTooLarge { bytes }.into());
            return None;
        }
        // Fail fast when full: the permit lives as long as the request.
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            reply.fail(
                Error::Overloaded {
                    limit: self.max_requests,
                }
                .into(),
            );
            return None;
        };
        let SubmitRequest {
            prefix,
            log_id,
            id: _,
            trace_context,
            time_left,
            delivered,
        } = submit;
        let client_deadline = deadline::left(time_left);
        let limit = Limit::new(self.time_to_live, client_deadline);
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!(
            "submit",
            otel.kind = "server",
            request_id = %log_id,
            trace_id = tracing::field::Empty,
            batcher = &*self.batcher_id,
            delivered,
        );
        trace::set_parent_from_map(&span, &trace_context);
        span.record("trace_id", trace::trace_id(&span));
        let queued = tracing::info_span!(
            target: horoscoper_runtime::trace_only!(),
            parent: &span,
            "queued",
            limit_ms = limit.duration().as_millis() as u64
        );
        let now = Instant::now();
        let departure = reply.departure();
        let entry = Entry {
            id,
            enqueued: now,
            expires: now + limit.duration(),
            item: Pending {
                prefix,
                limit,
                reply,
                log_id,
                span: span.clone(),
                queued,
                delivered,
                first_wait: None,
                orphaned: None,
                lost: 0,
                deadline: client_deadline.map(|limit| ClientDeadline::starting(now, limit)),
            },
        };
        if let Err(mut entry) = self.dispatcher.enqueue(entry) {
            entry.item.reply.fail(Error::ShuttingDown.into());
            return None;
        }
        Some(Admitted {
            id,
            departure,
            span,
            _permit: permit,
            _open: self.drain.track(),
        })
    }
}

/// A request in the batcher, from admission to its last token: its place
/// (given back when it is dropped), its span, and its part in the drain.
pub struct Admitted {
    id: u64,
    departure: Departure,
    span: tracing::Span,
    _permit: OwnedSemaphorePermit,
    _open: Tracked,
}

impl Admitted {
    /// Its client left: off the queue, or stopped at its worker; and
    /// wherever it is in between, it goes no further.
    pub fn cancel(self, dispatcher: &Dispatcher) {
        self.span
            .in_scope(|| tracing::debug!("client left; cancelling"));
        self.departure.leave();
        dispatcher.cancel(self.id);
    }
}
