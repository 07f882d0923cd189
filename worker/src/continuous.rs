//! The engine's task in continuous batching: one per worker, shared by every
//! batcher stream (see [`crate::engine`] for the rule of a step).
//!
//! A stream hands it each Batch as a group that joins at the next step
//! boundary (at once when nothing generates), and each cancellation, which
//! takes effect at once. The task sleeps until each step's absolute end,
//! then sends each group's tokens, and BatchDone once a group is empty, to
//! the stream the group came from. A stream's events go through a channel
//! of its own that the stream's task forwards: a batcher slow to read holds
//! up its own stream, never the engine that every stream shares.

use crate::{
    Metrics,
    config::Generation,
    engine::{Emitted, Engine, Group},
};
use horoscoper_proto::mesh::{Batch, BatchDone, Step, generate_response::Event};
use rand::rngs::StdRng;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use tokio::{sync::mpsc, time::Instant};
use tracing::Span;

/// The events of one stream, from the engine.
pub type Events = mpsc::UnboundedReceiver<Event>;

/// A handle on the worker's engine.
#[derive(Clone)]
pub struct Continuous {
    inputs: mpsc::UnboundedSender<Input>,
}

enum Input {
    Open {
        stream: u64,
        events: mpsc::UnboundedSender<Event>,
    },
    Join {
        group: Group,
        batch: Batch,
        spans: HashMap<u64, Span>,
        deadlines: Vec<(Instant, u64)>,
    },
    Cancel {
        group: Group,
        request_id: u64,
    },
    Close {
        stream: u64,
    },
}

impl Continuous {
    /// Starts the engine's task; it ends once every handle is dropped.
    pub fn start(generation: Generation, rng: Arc<Mutex<StdRng>>, metrics: Metrics) -> Continuous {
        let (inputs, receiver) = mpsc::unbounded_channel();
        let task = Task {
            engine: Engine::default(),
            streams: HashMap::new(),
            spans: HashMap::new(),
            pending: Vec::new(),
            generation,
            rng,
            metrics,
        };
        tokio::spawn(task.run(receiver));
        Continuous { inputs }
    }

    /// A stream's part: its events come on the receiver.
    pub fn open(&self, stream: u64) -> Events {
        let (events, receiver) = mpsc::unbounded_channel();
        let _ = self.inputs.send(Input::Open { stream, events });
        receiver
    }

    /// A group joins from the next step.
    pub fn join(
        &self,
        group: Group,
        batch: Batch,
        spans: HashMap<u64, Span>,
        deadlines: Vec<(Instant, u64)>,
    ) {
        let _ = self.inputs.send(Input::Join {
            group,
            batch,
            spans,
            deadlines,
        });
    }

    /// A request's client left: it generates nothing more.
    pub fn cancel(&self, group: Group, request_id: u64) {
        let _ = self.inputs.send(Input::Cancel { group, request_id });
    }

    /// The stream ended: its requests leave.
    pub fn close(&self, stream: u64) {
        let _ = self.inputs.send(Input::Close { stream });
    }
}

/// A group waiting for the next step boundary.
struct Joining {
    group: Group,
    batch: Batch,
    /// Each request's client deadline, for those that have one.
    deadlines: Vec<(Instant, u64)>,
}

struct Task {
    engine: Engine,
    streams: HashMap<u64, mpsc::UnboundedSender<Event>>,
    /// One span per request generating, ended with its last token.
    spans: HashMap<(Group, u64), Span>,
    /// Groups that join at the next step boundary.
    pending: Vec<Joining>,
    generation: Generation,
    rng: Arc<Mutex<StdRng>>,
    metrics: Metrics,
}

impl Task {
    async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<Input>) {
        // When the step under way ends; `None` while nothing generates.
        let mut step_ends: Option<Instant> = None;
        loop {
            let input = match step_ends {
                None => inputs.recv().await,
                Some(at) => tokio::select! {
                    biased;
                    input = inputs.recv() => input,
                    () = due(at) => {
                        self.step(at);
                        step_ends = self.next_step(at);
                        continue;
                    }
                },
            };
            let Some(input) = input else {
                return;
            };
            self.handle(input);
            if step_ends.is_none() {
                // Nothing was generating: a group that joins starts now.
                let now = Instant::now();
                self.join_pending(now);
                step_ends = self.next_step(now);
            }
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Open { stream, events } => {
                self.streams.insert(stream, events);
            }
            Input::Join {
                group,
                batch,
                spans,
                deadlines,
            } => {
                for (request_id, span) in spans {
                    self.spans.insert((group, request_id), span);
                }
                self.pending.push(Joining {
                    group,
                    batch,
                    deadlines,
                });
            }
            Input::Cancel { group, request_id } => {
                if let Some(span) = self.spans.remove(&(group, request_id)) {
                    span.in_scope(|| tracing::debug!("cancelled: the client left"));
                }
                let mut emptied = false;
                self.pending.retain_mut(|joining| {
                    if joining.group != group {
                        return true;
                    }
                    let items = &mut joining.batch.items;
                    items.retain(|item| item.request_id != request_id);
                    emptied = items.is_empty();
                    !emptied
                });
                if emptied {
                    let done = Emitted {
                        tokens: Vec::new(),
                        done: true,
                    };
                    self.emit(group, done);
                }
                if let Some(emitted) = self.engine.cancel(group, request_id) {
                    self.emit(group, emitted);
                }
            }
            Input::Close { stream } => {
                self.streams.remove(&stream);
                self.engine.drop_stream(stream);
                self.pending
                    .retain(|joining| joining.group.stream != stream);
                self.spans.retain(|(group, _), _| group.stream != stream);
            }
        }
    }

    /// The step that ended at `at`: deadlines, then every request's next
    /// token (and, while the steps after it are due at once, theirs too, in
    /// the same messages), then the groups waiting join.
    fn step(&mut self, at: Instant) {
        let now = Instant::now();
        for (group, emitted) in self.engine.expire(now) {
            self.emit(group, emitted);
        }
        let mut out: Vec<(Group, Emitted)> = Vec::new();
        let mut bytes = 0;
        loop {
            for (group, emitted) in self.engine.step() {
                bytes += emitted
                    .tokens
                    .iter()
                    .map(|t| t.text.len() + 16)
                    .sum::<usize>();
                match out.iter_mut().find(|(g, _)| *g == group) {
                    Some((_, gathered)) => {
                        gathered.tokens.extend(emitted.tokens);
                        gathered.done = emitted.done;
                    }
                    None => out.push((group, emitted)),
                }
            }
            self.join_pending(at);
            let again = !self.engine.is_empty()
                && self.engine.step_length().is_zero()
                && bytes < GATHERED_BYTES;
            if !again {
                break;
            }
        }
        for (group, emitted) in out {
            self.emit(group, emitted);
        }
    }

    /// When the next step ends, if anything generates.
    fn next_step(&self, starts: Instant) -> Option<Instant> {
        (!self.engine.is_empty()).then(|| starts + self.engine.step_length())
    }

    fn join_pending(&mut self, now: Instant) {
        for Joining {
            group,
            batch,
            deadlines,
        } in std::mem::take(&mut self.pending)
        {
            let deadline = |request_id: u64| {
                deadlines
                    .iter()
                    .find(|(_, id)| *id == request_id)
                    .map(|(at, _)| *at)
            };
            let joined = {
                let mut rng = self
                    .rng
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                self.engine.join(
                    group,
                    &batch,
                    &self.generation.corpus,
                    &self.generation.delays,
                    &mut *rng,
                    deadline,
                )
            };
            match joined {
                Ok(Some(done)) => self.emit(group, done),
                Ok(None) => {
                    tracing::debug!(batch_id = group.batch_id, requests = batch.items.len(), at = ?now, "group joined");
                }
                Err(error) => {
                    // The stream checks a batch before it hands it here.
                    tracing::warn!(%error, "group refused");
                    self.emit(
                        group,
                        Emitted {
                            tokens: Vec::new(),
                            done: true,
                        },
                    );
                }
            }
        }
    }

    /// Sends a group's tokens, and its end, to its stream.
    fn emit(&mut self, group: Group, emitted: Emitted) {
        for token in emitted.tokens.iter().filter(|token| token.last) {
            if let Some(span) = self.spans.remove(&(group, token.request_id)) {
                span.in_scope(|| tracing::debug!(shared = token.shared, "last token generated"));
            }
        }
        let Some(events) = self.streams.get(&group.stream) else {
            return;
        };
        if !emitted.tokens.is_empty() {
            self.metrics.tokens.inc_by(emitted.tokens.len() as u64);
            let _ = events.send(Event::Step(Step {
                batch_id: group.batch_id,
                tokens: emitted.tokens,
            }));
        }
        if emitted.done {
            self.metrics.batches.inc();
            self.spans.retain(|(g, _), _| *g != group);
            let _ = events.send(Event::Done(BatchDone {
                batch_id: group.batch_id,
            }));
        }
    }
}

/// Past this size a Step gathers no further steps already due (as in a
/// static batch).
const GATHERED_BYTES: usize = 256 * 1024;

/// Resolves at `at`; at once when `at` has passed.
async fn due(at: Instant) {
    if at > Instant::now() {
        tokio::time::sleep_until(at).await;
    }
}
