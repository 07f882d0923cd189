//! `WorkerService.Generate`: one long-lived stream per batcher connection.
//!
//! The worker says Ready, then runs each batch that comes down: it sleeps until
//! each step's absolute deadline, sends one Step holding a token per live
//! request (and those of the steps after it that are already due: at zero
//! delay, the whole text), applies cancellations as they arrive (a batch whose
//! requests all left ends at once), and closes the batch with BatchDone. A
//! request that runs again skips the tokens its client has, and their steps'
//! time. A worker runs one batch at a time, however many streams are open:
//! it offers itself to one batcher at a time (see [`crate::offers`]), and a
//! batcher from before offers waits for the running batch to end.
//! In continuous batching (`--batching continuous`) every Batch joins the
//! worker's one engine instead ([`crate::continuous`]), and the stream
//! forwards what the engine sends it.
//! When its drain begins it says Draining on every stream, so that no
//! batcher sends it another batch, finishes the batch under way, and ends
//! each stream once its batcher has ended its side (or at the grace).

use crate::{
    Error, Generation, Metrics,
    batch::Lockstep,
    continuous::Continuous,
    engine::Group,
    offers::{Call, Offers, Place, Seat},
};
use horoscoper_proto::deadline;
use horoscoper_proto::mesh::{
    BatchDone, Busy, Draining, GenerateRequest, GenerateResponse, Offer, Ready, Recall, Step,
    StepToken, generate_request::Command, generate_response::Event,
    worker_service_server::WorkerService,
};
use horoscoper_runtime::drain::Drain;
use rand::{SeedableRng, rngs::StdRng};
use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};
use tokio::{sync::mpsc, time::Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Span;

type Outbound = mpsc::Sender<Result<GenerateResponse, Status>>;

/// The worker's gRPC service.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    generation: Generation,
    metrics: Metrics,
    rng: Arc<Mutex<StdRng>>,
    /// The one place for a batch, and the batchers' claims on it.
    offers: Offers,
    /// The engine, in continuous batching.
    continuous: Option<Continuous>,
    /// Numbers the streams, for the engine.
    streams: AtomicU64,
    /// When the worker started: free since then, until its first batch.
    started: Instant,
    drain: Drain,
}

impl Worker {
    /// A worker that, once `drain` begins, refuses new streams and ends
    /// its streams between batches; once it cuts, ends them mid-batch with
    /// UNAVAILABLE (the batcher runs those requests again elsewhere).
    pub fn new(id: String, generation: Generation, metrics: Metrics, drain: Drain) -> Worker {
        let rng = match generation.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let rng = Arc::new(Mutex::new(rng));
        let continuous = generation
            .batching
            .is_continuous()
            .then(|| Continuous::start(generation.clone(), rng.clone(), metrics.clone()));
        Worker {
            inner: Arc::new(Inner {
                id,
                generation,
                metrics,
                rng,
                offers: Offers::default(),
                continuous,
                streams: AtomicU64::new(0),
                started: Instant::now(),
                drain,
            }),
        }
    }
}

#[tonic::async_trait]
impl WorkerService for Worker {
    type GenerateStream = ReceiverStream<Result<GenerateResponse, Status>>;

    async fn generate(
        &self,
        request: Request<Streaming<GenerateRequest>>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        if self.inner.drain.is_draining() {
            return Err(Error::Draining.into());
        }
        let (outbound, receiver) = mpsc::channel(16);
        let inner = self.inner.clone();
        let inbound = request.into_inner();
        let open = self.inner.drain.track();
        tokio::spawn(async move {
            let _open = open;
            if let Err(status) = inner.serve(inbound, &outbound).await {
                tracing::warn!(code = ?status.code(), message = status.message(), "generate stream failed");
                let _ = outbound.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// How a batch ended.
enum BatchEnd {
    /// Finished or fully cancelled: the stream goes on.
    Batch,
    /// The batcher closed the stream or stopped reading.
    Stream,
}

impl Inner {
    async fn serve(
        &self,
        mut inbound: Streaming<GenerateRequest>,
        outbound: &Outbound,
    ) -> Result<(), Status> {
        if let Some(engine) = &self.continuous {
            return self.serve_joins(engine, inbound, outbound).await;
        }
        let ready = Event::Ready(Ready {
            worker_id: self.id.clone(),
            resumes: true,
            offers: true,
            busy_notices: true,
            joins: false,
        });
        if !send(outbound, ready).await {
            return Ok(());
        }
        let mut stream = StreamState {
            draining: false,
            seat: None,
            place: None,
        };
        loop {
            let command = tokio::select! {
                biased;
                () = self.drain.cut().cancelled() => return Ok(()),
                () = self.drain.begun().cancelled(), if !stream.draining => {
                    if !self.say_draining(outbound, &mut stream).await {
                        return Ok(());
                    }
                    continue;
                }
                message = inbound.message() => message?,
                call = called(stream.seat.as_ref()) => {
                    let event = match call {
                        Call::Offer => Event::Offer(Offer {
                            idle: prost_types::Duration::try_from(self.offers.idle(self.started)).ok(),
                        }),
                        Call::Recall => Event::Recall(Recall {}),
                        Call::Busy => Event::Busy(Busy {}),
                    };
                    if !send(outbound, event).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            match command.map(|request| request.command) {
                None => return Ok(()),
                Some(Some(Command::Batch(batch))) => {
                    // Taken on this stream's offer; from a batcher that does
                    // not offer, once the running batch has ended.
                    stream.place = Some(match stream.seat.as_ref().and_then(Seat::take) {
                        Some(place) => place,
                        None => self.offers.wait_for_place().await,
                    });
                    let spans = request_spans(&batch, &self.id);
                    let deadlines = request_deadlines(&batch, Instant::now());
                    let running = Lockstep::start(batch, &self.generation.corpus)?;
                    let ended = self
                        .run_batch(
                            running,
                            spans,
                            deadlines,
                            &mut stream,
                            &mut inbound,
                            outbound,
                        )
                        .await;
                    stream.place = None; // free: it offers itself again
                    match ended? {
                        BatchEnd::Batch => {}
                        BatchEnd::Stream => return Ok(()),
                    }
                }
                Some(Some(command)) => stream.between_batches(command, &self.offers),
                Some(None) => return Err(Error::NoCommand.into()),
            }
        }
    }

    async fn run_batch(
        &self,
        mut running: Lockstep,
        mut spans: HashMap<u64, Span>,
        deadlines: Vec<(Instant, u64)>,
        stream: &mut StreamState,
        inbound: &mut Streaming<GenerateRequest>,
        outbound: &Outbound,
    ) -> Result<BatchEnd, Status> {
        let offsets = {
            let mut rng = self
                .rng
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            self.generation
                .delays
                .remaining(running.whole_steps(), running.steps(), &mut *rng)
        };
        let batch_id = running.batch_id;
        let start = Instant::now();
        tracing::debug!(batch_id, steps = offsets.len(), "batch started");
        let mut offsets = offsets.into_iter().peekable();
        while let Some(offset) = offsets.next() {
            let due = due(start + offset);
            tokio::pin!(due);
            loop {
                tokio::select! {
                    biased;
                    message = inbound.message() => match message?.map(|request| request.command) {
                        None => return Ok(BatchEnd::Stream),
                        Some(Some(Command::Cancel(cancel))) => {
                            if cancel.batch_id == batch_id
                                && running.cancel(cancel.request_id)
                                && let Some(span) = spans.remove(&cancel.request_id)
                            {
                                span.in_scope(|| tracing::debug!("cancelled: the client left"));
                            }
                            if running.is_done() {
                                tracing::debug!(batch_id, "every request left; batch ended early");
                                return self.finish(batch_id, outbound).await;
                            }
                        }
                        Some(Some(Command::Batch(batch))) => {
                            return Err(Error::Busy { running: batch_id, new: batch.batch_id }.into());
                        }
                        Some(Some(command)) => stream.between_batches(command, &self.offers),
                        Some(None) => return Err(Error::NoCommand.into()),
                    },
                    () = &mut due => break,
                    () = self.drain.cut().cancelled() => {
                        return Err(Error::Cut { batch_id }.into());
                    }
                    () = self.drain.begun().cancelled(), if !stream.draining => {
                        if !self.say_draining(outbound, stream).await {
                            return Ok(BatchEnd::Stream);
                        }
                    }
                }
            }
            // A request past its client's deadline has been failed upstream:
            // generate no more for it.
            let now = Instant::now();
            for &(_, request_id) in deadlines.iter().filter(|(at, _)| *at <= now) {
                if running.cancel(request_id)
                    && let Some(span) = spans.remove(&request_id)
                {
                    span.in_scope(|| tracing::debug!("stopped: the client's deadline passed"));
                }
            }
            if running.is_done() {
                tracing::debug!(batch_id, "every request stopped; batch ended early");
                return self.finish(batch_id, outbound).await;
            }
            let mut tokens = running.step();
            self.metrics.step_requests.observe(tokens.len() as f64);
            // The steps already due go in the same message: at zero delay a
            // batch's whole text is due at once, and goes out in one Step
            // rather than a message (and a wake-up at every hop) per word.
            // Sizes are reckoned only once a further step is due.
            let now = Instant::now();
            let mut bytes = None;
            while !running.is_done() && offsets.peek().is_some_and(|next| start + *next <= now) {
                let bytes = bytes.get_or_insert_with(|| step_tokens_len(&tokens));
                if *bytes >= GATHERED_BYTES {
                    break;
                }
                offsets.next();
                let more = running.step();
                self.metrics.step_requests.observe(more.len() as f64);
                *bytes += step_tokens_len(&more);
                tokens.extend(more);
            }
            self.metrics.tokens.inc_by(tokens.len() as u64);
            for token in tokens.iter().filter(|token| token.last) {
                if let Some(span) = spans.remove(&token.request_id) {
                    span.in_scope(|| tracing::debug!("last token generated"));
                }
            }
            if !send(outbound, Event::Step(Step { batch_id, tokens })).await {
                return Ok(BatchEnd::Stream);
            }
            if running.is_done() {
                break;
            }
        }
        self.finish(batch_id, outbound).await
    }

    /// A stream in continuous batching: each Batch joins the engine, each
    /// Cancel reaches it, and what the engine sends this stream goes out.
    async fn serve_joins(
        &self,
        engine: &Continuous,
        mut inbound: Streaming<GenerateRequest>,
        outbound: &Outbound,
    ) -> Result<(), Status> {
        let ready = Event::Ready(Ready {
            worker_id: self.id.clone(),
            resumes: true,
            offers: false,
            busy_notices: false,
            joins: true,
        });
        if !send(outbound, ready).await {
            return Ok(());
        }
        let stream = self.streams.fetch_add(1, Ordering::Relaxed);
        let mut events = engine.open(stream);
        let _close = Closing { engine, stream };
        // The batches joined on this stream and not yet done.
        let mut open: HashSet<u64> = HashSet::new();
        let mut draining = false;
        loop {
            tokio::select! {
                biased;
                () = self.drain.cut().cancelled() => {
                    return match open.iter().next() {
                        Some(&batch_id) => Err(Error::Cut { batch_id }.into()),
                        None => Ok(()),
                    };
                }
                () = self.drain.begun().cancelled(), if !draining => {
                    draining = true;
                    if !send(outbound, Event::Draining(Draining {})).await {
                        return Ok(());
                    }
                }
                event = events.recv() => {
                    let Some(event) = event else {
                        return Ok(());
                    };
                    if let Event::Done(done) = &event {
                        open.remove(&done.batch_id);
                    }
                    if !send(outbound, event).await {
                        return Ok(());
                    }
                }
                message = inbound.message() => match message?.map(|request| request.command) {
                    None => return Ok(()),
                    Some(Some(Command::Batch(batch))) => {
                        check_batch(&batch)?;
                        if !open.insert(batch.batch_id) {
                            return Err(Error::DuplicateBatch(batch.batch_id).into());
                        }
                        let spans = request_spans(&batch, &self.id);
                        let deadlines = request_deadlines(&batch, Instant::now());
                        let group = Group { stream, batch_id: batch.batch_id };
                        engine.join(group, batch, spans, deadlines);
                    }
                    Some(Some(Command::Cancel(cancel))) => {
                        let group = Group { stream, batch_id: cancel.batch_id };
                        engine.cancel(group, cancel.request_id);
                    }
                    // It makes no offers: there is nothing to demand or pass.
                    Some(Some(Command::Demand(_) | Command::Pass(_))) => {}
                    Some(None) => return Err(Error::NoCommand.into()),
                },
            }
        }
    }

    /// Tells the batcher, once, that this worker drains, and makes no new
    /// offer; false when the batcher has gone.
    async fn say_draining(&self, outbound: &Outbound, stream: &mut StreamState) -> bool {
        stream.draining = true;
        self.offers.close();
        send(outbound, Event::Draining(Draining {})).await
    }

    async fn finish(&self, batch_id: u64, outbound: &Outbound) -> Result<BatchEnd, Status> {
        tracing::debug!(batch_id, "batch done");
        self.metrics.batches.inc();
        let done = send(outbound, Event::Done(BatchDone { batch_id })).await;
        Ok(if done {
            BatchEnd::Batch
        } else {
            BatchEnd::Stream
        })
    }
}

/// Past this size a Step gathers no further steps already due: well under
/// the limit of a message from a worker
/// ([`MAX_STEP_BYTES`](horoscoper_proto::limits::MAX_STEP_BYTES)), whatever
/// the corpus's words.
const GATHERED_BYTES: usize = 256 * 1024;

/// What `tokens` take encoded in a Step's `tokens` field (tag 2).
fn step_tokens_len(tokens: &[StepToken]) -> usize {
    prost::encoding::message::encoded_len_repeated(2, tokens)
}

/// Ends a stream's part in the engine when the stream ends.
struct Closing<'a> {
    engine: &'a Continuous,
    stream: u64,
}

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        self.engine.close(self.stream);
    }
}

/// What a static batch's start refuses, checked before a batch joins.
fn check_batch(batch: &horoscoper_proto::mesh::Batch) -> Result<(), Error> {
    if batch.items.is_empty() {
        return Err(Error::EmptyBatch(batch.batch_id));
    }
    let mut ids = HashSet::with_capacity(batch.items.len());
    for item in &batch.items {
        if !ids.insert(item.request_id) {
            return Err(Error::DuplicateRequest {
                batch_id: batch.batch_id,
                request_id: item.request_id,
            });
        }
    }
    Ok(())
}

/// When each request's client deadline passes, for those that have one.
fn request_deadlines(batch: &horoscoper_proto::mesh::Batch, start: Instant) -> Vec<(Instant, u64)> {
    batch
        .items
        .iter()
        .filter_map(|item| {
            let left = deadline::left(item.time_left)?;
            Some((start + left, item.request_id))
        })
        .collect()
}

/// One span per request of the batch, each a child of the request's span in
/// the batcher (its context travels in the batch item); it ends with the
/// request's last token, or its cancellation.
fn request_spans(batch: &horoscoper_proto::mesh::Batch, worker_id: &str) -> HashMap<u64, Span> {
    batch
        .items
        .iter()
        .map(|item| {
            let span = tracing::info_span!(
                "generate",
                otel.kind = "server",
                request_id = %item.log_id,
                trace_id = tracing::field::Empty,
                batch_id = batch.batch_id,
                batch_size = batch.items.len(),
                worker = worker_id,
            );
            horoscoper_runtime::trace::set_parent_from_map(&span, &item.trace_context);
            span.record("trace_id", horoscoper_runtime::trace::trace_id(&span));
            (item.request_id, span)
        })
        .collect()
}

/// Resolves at `at`; at once when `at` has passed. A tokio timer rounds its
/// deadline up to the next millisecond tick even when the deadline is now,
/// which at zero delay would hold every batch's first step for up to 1 ms.
async fn due(at: Instant) {
    if at > Instant::now() {
        tokio::time::sleep_until(at).await;
    }
}

/// One stream's state across its batches.
struct StreamState {
    /// The worker said Draining on it.
    draining: bool,
    /// Its batcher's part in the offers, once it sent a Demand.
    seat: Option<Seat>,
    /// The worker's place, while a batch of this stream runs.
    place: Option<Place>,
}

impl StreamState {
    /// A command other than a batch or its cancellation.
    fn between_batches(&mut self, command: Command, offers: &Offers) {
        match command {
            Command::Demand(demand) => self.seat.get_or_insert_with(|| offers.seat()).demand(
                demand.waiting,
                demand.ready,
                demand.calls,
            ),
            Command::Pass(_) => {
                if let Some(seat) = &self.seat {
                    seat.pass();
                }
            }
            // A batch it names has already ended; a batch has its own arm.
            Command::Cancel(_) | Command::Batch(_) => {}
        }
    }
}

/// What the stream's seat is told to send next; never, for a stream
/// without one.
async fn called(seat: Option<&Seat>) -> Call {
    match seat {
        Some(seat) => seat.call().await,
        None => std::future::pending().await,
    }
}

/// Sends an event; false when the batcher has gone.
async fn send(outbound: &Outbound, event: Event) -> bool {
    outbound
        .send(Ok(GenerateResponse { event: Some(event) }))
        .await
        .is_ok()
}
