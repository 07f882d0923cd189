//! One task per worker address: it keeps a `WorkerService.Generate` stream
//! open (reconnecting with backoff), hands the batches the dispatcher gives
//! it to the worker, and feeds the worker's steps to the running batch's
//! table ([`crate::running`]), which routes each token to its request.
//!
//! A worker shared by offers is free for this batcher only on its Offer: the
//! connection sends it this batcher's Demand (whenever it changes, or, to a
//! worker that answers Busy, when the dispatcher calls it), hands each offer
//! to the dispatcher, and passes on the dispatcher's answer (a batch, or a
//! pass); a Recall asks the dispatcher for its answer at once, a Busy to
//! call another worker.
//!
//! A worker that says Draining, or whose address discovery retires, takes no
//! new batch from that moment; its running batch goes on, departures still
//! reach it, and the stream ends with the batch. Neither is a lost worker.
//! A retired address that resolves again before then takes batches again,
//! on the same connection.

use crate::{
    Error,
    dispatcher::{Dispatched, Dispatcher, Slot, ToWorker},
    running::RunningBatch,
};
use horoscoper_proto::mesh::{
    self, GenerateRequest, GenerateResponse, generate_request::Command, generate_response::Event,
    worker_service_client::WorkerServiceClient,
};
use std::{sync::Arc, time::Duration};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Streaming, transport::Endpoint};

/// Reconnection delays: doubling from `FIRST` up to `MAX`.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A worker connection's task.
pub struct Connection {
    pub index: usize,
    pub endpoint: Endpoint,
    pub dialer: horoscoper_runtime::transport::Dialer,
    pub dispatcher: Dispatcher,
    pub stop: CancellationToken,
    /// True while the worker's address is no longer resolved: the connection
    /// takes no new batch, finishes the one under way, and ends (unless the
    /// address resolves again first). Discovery holds the sender.
    pub retire: watch::Receiver<bool>,
}

/// Why a stream to the worker ended.
enum StreamEnd {
    /// The batcher is stopping.
    Stopped,
    /// The worker's address is gone from discovery; its batch finished.
    Retired,
    /// The worker said it drains; its batch finished.
    Drained,
    /// The worker closed the stream or broke it.
    Lost(String),
}

impl Connection {
    /// Runs until `stop`, or until its address is retired.
    pub async fn run(self) {
        let url = self.endpoint.uri().to_string();
        let mut retire = self.retire.clone();
        let mut backoff = FIRST_BACKOFF;
        let mut failures = 0u32;
        loop {
            if *retire.borrow_and_update() {
                tracing::info!(worker = %url, "worker retired: its address is no longer resolved");
                return;
            }
            let ended = self.stream(&url, &mut backoff).await;
            // A session that got through to the worker reset the backoff: a
            // loss after it is a new outage.
            if backoff == FIRST_BACKOFF {
                failures = 0;
            }
            match ended {
                StreamEnd::Stopped => return,
                // Unless it resolved again meanwhile: then at once.
                StreamEnd::Retired => continue,
                StreamEnd::Drained => {
                    // Its replacement may come up at the same address; until
                    // then, failing to connect is no news.
                    tracing::info!(worker = %url, "worker drained; it takes no batch from here");
                    failures = 1;
                }
                StreamEnd::Lost(reason) => {
                    failures += 1;
                    // Say it once per outage, not once per retry.
                    if failures == 1 {
                        tracing::warn!(worker = %url, %reason, "worker unavailable; retrying with backoff");
                    } else {
                        tracing::debug!(worker = %url, %reason, ?backoff, "worker still unavailable");
                    }
                }
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                Ok(_) = retire.wait_for(|retired| *retired) => {}
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Connects, says Ready to the dispatcher and serves batches until the
    /// stream ends.
    async fn stream(&self, url: &str, backoff: &mut Duration) -> StreamEnd {
        let channel = match self.dialer.connect(self.endpoint.clone()).await {
            Ok(channel) => channel,
            Err(error) => {
                return StreamEnd::Lost(format!(
                    "cannot connect: {}",
                    horoscoper_runtime::error_chain(&error)
                ));
            }
        };
        let (down, down_receiver) = mpsc::channel(32);
        let mut up = match WorkerServiceClient::new(channel)
            .max_encoding_message_size(horoscoper_proto::limits::MAX_BATCH_BYTES)
            .max_decoding_message_size(horoscoper_proto::limits::MAX_STEP_BYTES)
            .generate(ReceiverStream::new(down_receiver))
            .await
        {
            Ok(response) => response.into_inner(),
            Err(status) => return StreamEnd::Lost(format!("Generate refused: {status}")),
        };
        let ready = match up.message().await {
            Ok(Some(GenerateResponse {
                event: Some(Event::Ready(ready)),
            })) => ready,
            Ok(other) => return StreamEnd::Lost(format!("expected Ready first, got {other:?}")),
            Err(status) => return StreamEnd::Lost(format!("stream failed before Ready: {status}")),
        };
        *backoff = FIRST_BACKOFF;
        let worker_id: Arc<str> = ready.worker_id.into();
        tracing::info!(worker = %url, %worker_id, offers = ready.offers, busy_notices = ready.busy_notices, "worker connected");
        let calls = ready.offers && ready.busy_notices;
        let continuous = self.dispatcher.continuous();
        if ready.joins != continuous {
            let (worker, here) = if ready.joins {
                ("continuous", "static")
            } else {
                ("static", "continuous")
            };
            return StreamEnd::Lost(format!(
                "the worker runs {worker} batching and this batcher {here}: give both the same --batching"
            ));
        }

        let (commands, mut receiver) = mpsc::unbounded_channel();
        let mut retire = self.retire.clone();
        let mut stream = GenerateStream {
            index: self.index,
            url,
            worker_id,
            resumes: ready.resumes,
            offers: ready.offers,
            calls,
            demand: (ready.offers && !calls).then(|| self.dispatcher.demand()),
            joins: ready.joins,
            connected: Instant::now(),
            commands,
            down,
            running: Vec::new(),
            retired: *retire.borrow_and_update(),
            draining: false,
            dispatcher: &self.dispatcher,
        };
        // A panic while handling one message is that message's trouble: the
        // stream counts as lost, and its batch runs again elsewhere.
        let serve = horoscoper_runtime::panic::caught(async {
            stream.ready().await?;
            Err(stream.serve(&mut up, &mut receiver, &mut retire).await)
        });
        let ended = tokio::select! {
            () = self.stop.cancelled() => StreamEnd::Stopped,
            ended = serve => match ended {
                Ok(Ok(())) => unreachable!("serving ends only with how it ended"),
                Ok(Err(ended)) => ended,
                Err(panic) => {
                    tracing::error!(worker = %url, %panic, "the worker's stream panicked; ending it");
                    StreamEnd::Lost(format!("the batcher panicked: {panic}"))
                }
            },
        };

        // Nothing that reached this connection may be lost: a batch cut short
        // by a lost worker runs again elsewhere (generation is deterministic),
        // one cut short by shutdown ends with a status, batches not yet
        // started go back to the queue.
        self.dispatcher.gone(self.index);
        match &ended {
            StreamEnd::Stopped | StreamEnd::Retired | StreamEnd::Drained => {
                for running in stream.running.drain(..) {
                    running.fail(Error::ShuttingDown);
                }
            }
            StreamEnd::Lost(reason) => {
                let now = Instant::now();
                let orphans: Vec<_> = stream
                    .running
                    .drain(..)
                    .flat_map(|running| running.orphan(now))
                    .collect();
                if !orphans.is_empty() {
                    tracing::warn!(
                        worker = %url,
                        worker_id = %stream.worker_id,
                        requests = orphans.len(),
                        %reason,
                        "worker lost mid-batch; its requests run again on another worker"
                    );
                    self.dispatcher.redispatch(orphans);
                }
            }
        }
        receiver.close();
        while let Ok(command) = receiver.try_recv() {
            if let ToWorker::Dispatch(batch) = command {
                self.dispatcher.requeue(batch.requests);
            }
        }
        if !matches!(ended, StreamEnd::Lost(_)) {
            goodbye(stream, up).await;
        }
        ended
    }
}

/// Most time a stopping batcher gives its workers to end their streams.
pub const GOODBYE: Duration = Duration::from_millis(500);

/// Ends the stream to the worker and waits, at most [`GOODBYE`], for the
/// worker to end its side with a status. Without it a batcher that stops
/// drops the connection as its process exits, mid-stream, and the worker
/// reports a broken stream ("h2 protocol error") where there was none.
async fn goodbye(stream: GenerateStream<'_>, mut up: Streaming<GenerateResponse>) {
    // Its `down` sender: the worker reads the end of the stream.
    drop(stream);
    let drained = async { while let Ok(Some(_)) = up.message().await {} };
    let _ = tokio::time::timeout(GOODBYE, drained).await;
}

/// Resolves when this batcher's demand changes; never, for a worker that
/// does not offer.
async fn changed(
    demand: Option<&mut watch::Receiver<mesh::Demand>>,
) -> Result<(), watch::error::RecvError> {
    match demand {
        Some(demand) => demand.changed().await,
        None => std::future::pending().await,
    }
}

/// One open Generate stream.
struct GenerateStream<'a> {
    index: usize,
    url: &'a str,
    worker_id: Arc<str>,
    /// The worker skips the tokens a re-run's client has.
    resumes: bool,
    /// The worker is shared by offers.
    offers: bool,
    /// It answers Busy: it is sent the demand when called.
    calls: bool,
    /// This batcher's demand as it changes, for a worker shared by offers
    /// that does not answer Busy.
    demand: Option<watch::Receiver<mesh::Demand>>,
    /// The worker runs continuous batching: batches join, several run.
    joins: bool,
    /// When the stream was set up.
    connected: Instant,
    commands: mpsc::UnboundedSender<ToWorker>,
    down: mpsc::Sender<GenerateRequest>,
    /// The batches running: at most one in static batching.
    running: Vec<RunningBatch>,
    /// Its address is no longer resolved.
    retired: bool,
    /// The worker said Draining.
    draining: bool,
    dispatcher: &'a Dispatcher,
}

impl GenerateStream<'_> {
    /// Whether the worker takes new batches; when not, the stream ends
    /// with its running batch.
    fn takes_batches(&self) -> bool {
        !self.retired && !self.draining
    }

    /// The stream is up: a worker shared by offers is told this batcher's
    /// demand (one that answers Busy, that nothing waits until it is
    /// called); one that is not is free now.
    async fn ready(&mut self) -> Result<(), StreamEnd> {
        if self.joins {
            self.takes_joins();
            return Ok(());
        }
        self.dispatcher
            .connected(self.index, self.commands.clone(), self.calls);
        if let Some(demand) = &mut self.demand {
            let demand = *demand.borrow_and_update();
            self.send(Command::Demand(demand)).await
        } else if self.calls {
            let nothing = mesh::Demand {
                calls: true,
                ..Default::default()
            };
            self.send(Command::Demand(nothing)).await
        } else {
            self.free(false, Duration::ZERO);
            Ok(())
        }
    }

    /// Says the worker of continuous batching takes requests, if it does.
    fn takes_joins(&self) {
        if self.takes_batches() {
            self.dispatcher.joins(self.slot(false, Duration::ZERO));
        }
    }

    /// Tells the dispatcher that `requests` ended here (continuous
    /// batching): their slots are free.
    fn ended_here(&self, requests: usize) {
        if self.joins && requests > 0 {
            self.dispatcher.ended(self.index, requests);
        }
    }

    /// This worker as the dispatcher takes it.
    fn slot(&self, offered: bool, idle: Duration) -> Slot {
        let now = Instant::now();
        Slot {
            index: self.index,
            worker_id: self.worker_id.clone(),
            commands: self.commands.clone(),
            since: now.checked_sub(idle).unwrap_or(now),
            offered,
        }
    }

    /// Says the worker is free (for `idle` already), if it takes batches.
    fn free(&self, offered: bool, idle: Duration) {
        if !self.takes_batches() {
            return;
        }
        self.dispatcher.free(self.slot(offered, idle));
    }

    /// Whether the worker waits for offers to be answered.
    fn offers(&self) -> bool {
        self.offers
    }

    async fn serve(
        &mut self,
        up: &mut Streaming<GenerateResponse>,
        receiver: &mut mpsc::UnboundedReceiver<ToWorker>,
        retire: &mut watch::Receiver<bool>,
    ) -> StreamEnd {
        let mut discovery = true;
        let mut demand = self.demand.clone();
        loop {
            if self.running.is_empty() {
                if self.draining {
                    return StreamEnd::Drained;
                }
                if self.retired {
                    return StreamEnd::Retired;
                }
            }
            tokio::select! {
                changed = retire.changed(), if discovery => {
                    if changed.is_err() {
                        discovery = false; // the batcher is stopping
                        continue;
                    }
                    let retired = *retire.borrow_and_update();
                    self.set_retired(retired);
                }
                changed = changed(demand.as_mut()) => {
                    if changed.is_err() {
                        demand = None; // the batcher is stopping
                        continue;
                    }
                    let now = *demand.as_mut().expect("it changed").borrow_and_update();
                    if let Err(ended) = self.send(Command::Demand(now)).await {
                        return ended;
                    }
                }
                command = receiver.recv() => {
                    let Some(command) = command else {
                        return StreamEnd::Lost("command channel closed".into());
                    };
                    if let Err(ended) = self.command(command).await {
                        return ended;
                    }
                }
                message = up.message() => {
                    let event = match message {
                        Ok(Some(GenerateResponse { event: Some(event) })) => event,
                        Ok(Some(GenerateResponse { event: None })) => {
                            return self.protocol_error("a GenerateResponse carried no event");
                        }
                        Ok(None) => return StreamEnd::Lost("the worker closed the stream".into()),
                        Err(status) => return StreamEnd::Lost(format!("stream failed: {status}")),
                    };
                    if let Err(ended) = self.event(event).await {
                        return ended;
                    }
                }
            }
        }
    }

    /// Out of the free list at once, or back in it; a batch already on its
    /// way here goes back to the queue (see `start`).
    fn set_retired(&mut self, retired: bool) {
        let before = self.takes_batches();
        self.retired = retired;
        if before && !self.takes_batches() {
            self.dispatcher.retiring(self.index);
        } else if !before && self.takes_batches() {
            tracing::info!(worker = %self.url, "worker address resolved again; it takes batches again");
            // One that offers is free again on its next offer; one that
            // answers Busy may be called again.
            if self.joins {
                self.takes_joins();
            } else if self.running.is_empty() && !self.offers() {
                self.free(false, Duration::ZERO);
            } else if self.calls {
                self.dispatcher
                    .connected(self.index, self.commands.clone(), true);
            }
        }
    }

    async fn command(&mut self, command: ToWorker) -> Result<(), StreamEnd> {
        match command {
            ToWorker::Dispatch(batch) => self.start(batch).await,
            ToWorker::Pass => self.send(Command::Pass(mesh::Pass {})).await,
            ToWorker::Demand(demand) => self.send(Command::Demand(demand)).await,
            ToWorker::Cancel(request_id) => {
                let Some(batch_id) = self
                    .running
                    .iter_mut()
                    .find_map(|running| running.cancel(request_id).then(|| running.batch_id()))
                else {
                    return Ok(());
                };
                self.ended_here(1);
                self.send(Command::Cancel(mesh::Cancel {
                    batch_id,
                    request_id,
                }))
                .await
            }
        }
    }

    async fn start(&mut self, batch: Dispatched) -> Result<(), StreamEnd> {
        if !self.takes_batches() {
            let requests = batch.requests.len();
            self.dispatcher.requeue(batch.requests);
            if self.joins {
                self.dispatcher.unsent(self.index, requests);
                return Ok(());
            }
            self.dispatcher.idle(self.index);
            // The offer it answered is still owed an answer.
            if self.offers() {
                return self.send(Command::Pass(mesh::Pass {})).await;
            }
            return Ok(());
        }
        if let Some(running) = self.running.first().filter(|_| !self.joins) {
            // The dispatcher only hands a batch to a free worker.
            let message = format!(
                "batch {} dispatched while batch {} runs",
                batch.batch_id,
                running.batch_id()
            );
            self.dispatcher.requeue(batch.requests);
            return Err(self.protocol_error(&message));
        }
        let (running, batch) =
            RunningBatch::start(batch, self.worker_id.clone(), self.resumes, self.joins);
        self.running.push(running);
        self.send(Command::Batch(batch)).await
    }

    async fn event(&mut self, event: Event) -> Result<(), StreamEnd> {
        match event {
            Event::Step(step) => self.step(step).await,
            Event::Done(done) => {
                let Some(at) = self
                    .running
                    .iter()
                    .position(|running| running.batch_id() == done.batch_id)
                else {
                    return Err(self.protocol_error(&format!(
                        "BatchDone for unknown batch {}",
                        done.batch_id
                    )));
                };
                let running = self.running.remove(at);
                let open = running.open();
                running.done(Instant::now());
                if self.joins {
                    self.ended_here(open);
                    return Ok(());
                }
                self.dispatcher.idle(self.index);
                // One that offers is free again on its next offer.
                if !self.offers() {
                    self.free(false, Duration::ZERO);
                }
                Ok(())
            }
            Event::Offer(_) if !self.offers() => {
                Err(self.protocol_error("an Offer from a worker whose Ready did not say offers"))
            }
            Event::Offer(offer) => {
                if !self.running.is_empty() {
                    return Err(self.protocol_error("an Offer while a batch runs"));
                }
                if self.takes_batches() {
                    // How long it was free, at most since it connected.
                    let idle = horoscoper_proto::deadline::left(offer.idle)
                        .unwrap_or_default()
                        .min(self.connected.elapsed());
                    self.free(true, idle);
                    Ok(())
                } else {
                    self.send(Command::Pass(mesh::Pass {})).await
                }
            }
            Event::Recall(_) => {
                self.dispatcher.recall(self.index);
                Ok(())
            }
            Event::Busy(_) if !self.calls => {
                Err(self.protocol_error("a Busy from a worker this batcher does not call"))
            }
            Event::Busy(_) => {
                self.dispatcher.busy(self.index);
                Ok(())
            }
            Event::Draining(_) => {
                if !self.draining {
                    tracing::info!(worker = %self.url, worker_id = %self.worker_id, "worker draining: it takes no new batch");
                    if self.takes_batches() {
                        self.dispatcher.retiring(self.index);
                    }
                    self.draining = true;
                }
                Ok(())
            }
            Event::Room(_) if !self.joins => {
                Err(self.protocol_error("a Room from a worker whose Ready did not say joins"))
            }
            Event::Room(room) => {
                self.dispatcher.room(self.index, room);
                Ok(())
            }
            Event::Ready(_) => Err(self.protocol_error("Ready sent twice")),
        }
    }

    async fn step(&mut self, step: mesh::Step) -> Result<(), StreamEnd> {
        let Some(running) = self
            .running
            .iter_mut()
            .find(|running| running.batch_id() == step.batch_id)
        else {
            return Err(self.protocol_error(&format!("Step for unknown batch {}", step.batch_id)));
        };
        let batch_id = running.batch_id();
        let open = running.open();
        let left = running.step(step);
        let ended = open - running.open();
        self.ended_here(ended);
        for request_id in left {
            self.send(Command::Cancel(mesh::Cancel {
                batch_id,
                request_id,
            }))
            .await?;
        }
        Ok(())
    }

    async fn send(&self, command: Command) -> Result<(), StreamEnd> {
        self.down
            .send(GenerateRequest {
                command: Some(command),
            })
            .await
            .map_err(|_| StreamEnd::Lost("the stream to the worker closed".into()))
    }

    fn protocol_error(&self, message: &str) -> StreamEnd {
        let error = Error::WorkerProtocol {
            url: self.url.to_string(),
            message: message.to_string(),
        };
        tracing::error!(%error);
        StreamEnd::Lost(error.to_string())
    }
}
