//! One task per worker address: it keeps a `WorkerService.Generate` stream
//! open (reconnecting with backoff), runs the batches the dispatcher hands
//! it, and routes each step's tokens to their requests' streams.

use crate::{
    Error,
    dispatcher::{Dispatched, Dispatcher, Slot, ToWorker},
    queue::Entry,
    request::{Limit, Orphaned, Pending},
};
use horoscoper_proto::{
    mesh::{
        self, Batch, BatchItem, GenerateRequest, GenerateResponse, Step, SubmitResponse,
        generate_request::Command, generate_response::Event,
        worker_service_client::WorkerServiceClient,
    },
    trace_context,
};
use std::{collections::HashMap, sync::Arc, time::Duration};
use tokio::{sync::mpsc, time::Instant};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming, transport::Endpoint};

/// Reconnection delays: doubling from `FIRST` up to `MAX`.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A worker connection's task.
pub struct Connection {
    pub index: usize,
    pub endpoint: Endpoint,
    pub dispatcher: Dispatcher,
    pub stop: CancellationToken,
    /// Cancelled when the worker's address is no longer resolved: the
    /// connection takes no new batch, finishes the one under way, and ends.
    pub retire: CancellationToken,
}

/// Why a session with the worker ended.
enum Ended {
    /// The batcher is stopping.
    Stopped,
    /// The worker's address is gone from discovery; its batch finished.
    Retired,
    /// The worker closed the stream (it is draining) or broke it.
    Lost(String),
}

impl Connection {
    /// Runs until `stop` or `retire` is cancelled.
    pub async fn run(self) {
        let url = self.endpoint.uri().to_string();
        let mut backoff = FIRST_BACKOFF;
        let mut failures = 0u32;
        loop {
            let ended = self.session(&url, &mut backoff).await;
            // A session that got through to the worker reset the backoff: a
            // loss after it is a new outage.
            if backoff == FIRST_BACKOFF {
                failures = 0;
            }
            match ended {
                Ended::Stopped => return,
                Ended::Retired => {
                    tracing::info!(worker = %url, "worker retired: its address is no longer resolved");
                    return;
                }
                Ended::Lost(reason) => {
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
                () = self.retire.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Connects, says Ready to the dispatcher and serves batches until the
    /// stream ends.
    async fn session(&self, url: &str, backoff: &mut Duration) -> Ended {
        let channel = match self.endpoint.connect().await {
            Ok(channel) => channel,
            Err(error) => {
                return Ended::Lost(format!(
                    "cannot connect: {}",
                    horoscoper_proto::process::error_chain(&error)
                ));
            }
        };
        let (down, down_receiver) = mpsc::channel(32);
        let mut up = match WorkerServiceClient::new(channel)
            .max_encoding_message_size(horoscoper_proto::net::MAX_BATCH_BYTES)
            .max_decoding_message_size(horoscoper_proto::net::MAX_STEP_BYTES)
            .generate(ReceiverStream::new(down_receiver))
            .await
        {
            Ok(response) => response.into_inner(),
            Err(status) => return Ended::Lost(format!("Generate refused: {status}")),
        };
        let worker_id: Arc<str> = match up.message().await {
            Ok(Some(GenerateResponse {
                event: Some(Event::Ready(ready)),
            })) => ready.worker_id.into(),
            Ok(other) => return Ended::Lost(format!("expected Ready first, got {other:?}")),
            Err(status) => return Ended::Lost(format!("stream failed before Ready: {status}")),
        };
        *backoff = FIRST_BACKOFF;
        tracing::info!(worker = %url, %worker_id, "worker connected");

        let (commands, mut receiver) = mpsc::unbounded_channel();
        let mut session = Session {
            index: self.index,
            url,
            worker_id,
            commands,
            down,
            running: None,
            retiring: false,
            dispatcher: &self.dispatcher,
        };
        session.ready();
        let ended = tokio::select! {
            () = self.stop.cancelled() => Ended::Stopped,
            ended = session.serve(&mut up, &mut receiver, &self.retire) => ended,
        };

        // Nothing that reached this connection may be lost: a batch cut short
        // by a lost worker runs again elsewhere (generation is deterministic),
        // one cut short by shutdown ends with a status, batches not yet
        // started go back to the queue.
        self.dispatcher.gone(self.index);
        match &ended {
            Ended::Stopped | Ended::Retired => session.fail_running(Error::ShuttingDown),
            Ended::Lost(reason) => {
                let orphans = session.orphan_running();
                if !orphans.is_empty() {
                    tracing::warn!(
                        worker = %url,
                        worker_id = %session.worker_id,
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
        if !matches!(ended, Ended::Lost(_)) {
            goodbye(session, up).await;
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
async fn goodbye(session: Session<'_>, mut up: Streaming<GenerateResponse>) {
    // Its `down` sender: the worker reads the end of the stream.
    drop(session);
    let drained = async { while let Ok(Some(_)) = up.message().await {} };
    let _ = tokio::time::timeout(GOODBYE, drained).await;
}

/// A request of the running batch.
struct Route {
    /// The request as it was queued, to run again should the worker be lost.
    entry: Entry<Pending>,
    /// Tokens the worker has produced for it in this batch.
    seen: u32,
    /// Its tokens of the step being read, sent together at the step's end.
    ready: Vec<SubmitResponse>,
    queue_time: Duration,
    /// The request's generation, a child of its submit span: it ends with
    /// the request's last token.
    _span: tracing::Span,
}

/// The batch the worker is running.
struct Running {
    batch_id: u64,
    size: u32,
    routes: HashMap<u64, Route>,
    /// The batch's own span; it ends with the batch.
    _span: tracing::Span,
}

/// One open Generate stream.
struct Session<'a> {
    index: usize,
    url: &'a str,
    worker_id: Arc<str>,
    commands: mpsc::UnboundedSender<ToWorker>,
    down: mpsc::Sender<GenerateRequest>,
    running: Option<Running>,
    /// Retired: no new batch; the session ends when the running one does.
    retiring: bool,
    dispatcher: &'a Dispatcher,
}

impl Session<'_> {
    fn ready(&self) {
        if self.retiring {
            return;
        }
        self.dispatcher.free(Slot {
            index: self.index,
            worker_id: self.worker_id.clone(),
            commands: self.commands.clone(),
            since: Instant::now(),
        });
    }

    async fn serve(
        &mut self,
        up: &mut Streaming<GenerateResponse>,
        receiver: &mut mpsc::UnboundedReceiver<ToWorker>,
        retire: &CancellationToken,
    ) -> Ended {
        loop {
            if self.retiring && self.running.is_none() {
                return Ended::Retired;
            }
            tokio::select! {
                () = retire.cancelled(), if !self.retiring => {
                    // Out of the free list at once; a batch already on its
                    // way here goes back to the queue (see `start`).
                    self.retiring = true;
                    self.dispatcher.gone(self.index);
                }
                command = receiver.recv() => {
                    let Some(command) = command else {
                        return Ended::Lost("command channel closed".into());
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
                        Ok(None) => return Ended::Lost("the worker closed the stream".into()),
                        Err(status) => return Ended::Lost(format!("stream failed: {status}")),
                    };
                    if let Err(ended) = self.event(event).await {
                        return ended;
                    }
                }
            }
        }
    }

    async fn command(&mut self, command: ToWorker) -> Result<(), Ended> {
        match command {
            ToWorker::Dispatch(batch) => self.start(batch).await,
            ToWorker::Cancel(request_id) => {
                let Some(running) = &mut self.running else {
                    return Ok(());
                };
                if running.routes.remove(&request_id).is_none() {
                    return Ok(());
                }
                let batch_id = running.batch_id;
                self.send(Command::Cancel(mesh::Cancel {
                    batch_id,
                    request_id,
                }))
                .await
            }
        }
    }

    async fn start(&mut self, batch: Dispatched) -> Result<(), Ended> {
        if self.retiring {
            self.dispatcher.requeue(batch.requests);
            return Ok(());
        }
        if let Some(running) = &self.running {
            // The dispatcher only hands a batch to a free worker.
            let message = format!(
                "batch {} dispatched while batch {} runs",
                batch.batch_id, running.batch_id
            );
            self.dispatcher.requeue(batch.requests);
            return Err(self.protocol_error(&message));
        }
        let size = batch.requests.len();
        let mut items = Vec::with_capacity(size);
        let mut routes = HashMap::with_capacity(size);
        for entry in batch.requests {
            let span = tracing::info_span!(
                target: horoscoper_proto::trace_only!(),
                parent: &entry.item.span,
                "generate",
                batch_id = batch.batch_id,
                batch_size = size,
                reason = batch.reason.as_str(),
                worker = %self.worker_id,
            );
            // Without an exporter, nothing builds the generation's span: the
            // request's own span is the worker's parent then.
            let parent = if span.is_disabled() {
                &entry.item.span
            } else {
                &span
            };
            parent.in_scope(|| {
                tracing::debug!(batch_id = batch.batch_id, worker = %self.worker_id, "dispatched")
            });
            items.push(BatchItem {
                request_id: entry.id,
                prefix: entry.item.prefix.clone(),
                trace_context: trace_context::to_map(parent),
                log_id: entry.item.log_id.clone(),
                time_left: entry
                    .item
                    .deadline
                    .map(|deadline| deadline.time_left(batch.at)),
            });
            routes.insert(
                entry.id,
                Route {
                    queue_time: batch.at - entry.enqueued,
                    entry,
                    seen: 0,
                    ready: Vec::new(),
                    _span: span,
                },
            );
        }
        self.running = Some(Running {
            batch_id: batch.batch_id,
            size: size as u32,
            routes,
            _span: batch.span,
        });
        self.send(Command::Batch(Batch {
            batch_id: batch.batch_id,
            items,
        }))
        .await
    }

    async fn event(&mut self, event: Event) -> Result<(), Ended> {
        match event {
            Event::Step(step) => self.step(step).await,
            Event::Done(done) => {
                match &self.running {
                    Some(running) if running.batch_id == done.batch_id => {}
                    _ => {
                        return Err(self.protocol_error(&format!(
                            "BatchDone for unknown batch {}",
                            done.batch_id
                        )));
                    }
                }
                let running = self.running.take().expect("checked above");
                let now = Instant::now();
                for mut route in running.routes.into_values() {
                    // The worker stops a request at its client's deadline.
                    let error = match route.entry.item.deadline {
                        Some(deadline) if deadline.at <= now => Error::DeadlinePassed {
                            limit: deadline.limit,
                        },
                        _ => Error::BatchCutShort {
                            worker_id: self.worker_id.to_string(),
                            batch_id: running.batch_id,
                        },
                    };
                    let _ = route.entry.item.reply.fail(error.into());
                }
                self.ready();
                Ok(())
            }
            Event::Ready(_) => Err(self.protocol_error("Ready sent twice")),
        }
    }

    async fn step(&mut self, step: Step) -> Result<(), Ended> {
        let Some(running) = self
            .running
            .as_mut()
            .filter(|r| r.batch_id == step.batch_id)
        else {
            return Err(self.protocol_error(&format!("Step for unknown batch {}", step.batch_id)));
        };
        // A request's tokens of one step go to its session together.
        let mut touched = Vec::new();
        for token in step.tokens {
            let Some(route) = running.routes.get_mut(&token.request_id) else {
                continue; // cancelled since the step was sent
            };
            if route.ready.last().is_some_and(|token| token.last) {
                continue; // nothing follows a last token
            }
            route.seen += 1;
            if route.seen <= route.entry.item.delivered {
                if token.last {
                    // The lost worker had given more tokens than this whole text.
                    let status = Status::from(Error::TextDiffers {
                        worker_id: self.worker_id.to_string(),
                    });
                    let _ = route.entry.item.reply.fail(status);
                    running.routes.remove(&token.request_id);
                }
                continue; // its client has this token from the lost worker
            }
            let batch = token.last.then(|| mesh::BatchInfo {
                batch_id: running.batch_id,
                batch_size: running.size,
                worker_id: self.worker_id.to_string(),
                queue_time: prost_types::Duration::try_from(route.queue_time).ok(),
            });
            if route.ready.is_empty() {
                touched.push(token.request_id);
            }
            route.ready.push(SubmitResponse {
                text: token.text,
                last: token.last,
                batch,
            });
        }
        let mut left = Vec::new();
        for request_id in touched {
            let Some(route) = running.routes.get_mut(&request_id) else {
                continue;
            };
            let tokens = std::mem::take(&mut route.ready);
            let last = tokens.last().is_some_and(|token| token.last);
            let delivered = route.entry.item.reply.send_tokens(tokens);
            if last || !delivered {
                // Dropping the route ends the request's stream after its
                // last token.
                running.routes.remove(&request_id);
            }
            if !delivered {
                left.push(request_id);
            }
        }
        let batch_id = running.batch_id;
        for request_id in left {
            self.send(Command::Cancel(mesh::Cancel {
                batch_id,
                request_id,
            }))
            .await?;
        }
        Ok(())
    }

    async fn send(&self, command: Command) -> Result<(), Ended> {
        self.down
            .send(GenerateRequest {
                command: Some(command),
            })
            .await
            .map_err(|_| Ended::Lost("the stream to the worker closed".into()))
    }

    fn protocol_error(&self, message: &str) -> Ended {
        let error = Error::WorkerProtocol {
            url: self.url.to_string(),
            message: message.to_string(),
        };
        tracing::error!(%error);
        Ended::Lost(error.to_string())
    }

    fn fail_running(&mut self, error: Error) {
        if let Some(running) = self.running.take() {
            let status = Status::from(error);
            for mut route in running.routes.into_values() {
                let _ = route.entry.item.reply.fail(status.clone());
            }
        }
    }

    /// The running batch's requests whose clients are still there, ready
    /// to queue again: each skips the tokens its client already has, and
    /// waits for a worker for a time to live of its own again (a client's
    /// deadline stays what it was).
    fn orphan_running(&mut self) -> Vec<Entry<Pending>> {
        let Some(running) = self.running.take() else {
            return Vec::new();
        };
        let now = Instant::now();
        let orphaned = Orphaned {
            worker_id: self.worker_id.clone(),
            since: now,
        };
        running
            .routes
            .into_values()
            .filter(|route| !route.entry.item.reply.is_closed())
            .map(|route| {
                let mut entry = route.entry;
                entry.item.delivered = entry.item.delivered.max(route.seen);
                entry.item.orphaned = Some(orphaned.clone());
                if let Limit::TimeToLive(time_to_live) = entry.item.limit {
                    entry.expires = now + time_to_live;
                }
                entry
            })
            .collect()
    }
}
