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
//!
//! The worker's slots (`--slots`) are shared by every stream. The task tells
//! each stream, in Room, how many are free whenever that changes. Groups
//! join in the order they came, each once its requests fit: batchers that
//! answer the same Room at once wait here for the next free slots, and no
//! more requests ever generate than there are slots.

use crate::{
    Metrics,
    config::Generation,
    engine::{Emitted, Engine, Group},
};
use horoscoper_proto::mesh::{Batch, BatchDone, Room, Step, generate_response::Event};
use rand::rngs::StdRng;
use std::{
    collections::{HashMap, VecDeque},
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
            pending: VecDeque::new(),
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

/// A batcher stream, as the engine's task sees it.
struct Stream {
    events: mpsc::UnboundedSender<Event>,
    /// Requests received from it.
    taken: u64,
    /// The last Room it was told: free slots, and its requests taken then.
    told: Option<(u32, u64)>,
}

struct Task {
    engine: Engine,
    streams: HashMap<u64, Stream>,
    /// One span per request generating, ended with its last token.
    spans: HashMap<(Group, u64), Span>,
    /// Groups that join at a step boundary once they fit, in the order
    /// they came.
    pending: VecDeque<Joining>,
    /// How it generates, and its slots: the most requests at once.
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
                // A step due goes first: a flood of inputs never delays it.
                Some(at) => tokio::select! {
                    biased;
                    () = due(at) => {
                        self.step(at);
                        step_ends = self.next_step(at);
                        self.tell_room();
                        continue;
                    }
                    input = inputs.recv() => input,
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
            self.tell_room();
        }
    }

    /// Free slots: neither generating nor promised to a group waiting.
    fn free(&self) -> u32 {
        let waiting: usize = self
            .pending
            .iter()
            .map(|joining| joining.batch.items.len())
            .sum();
        let free = self
            .generation
            .slots
            .saturating_sub(self.engine.len() + waiting);
        u32::try_from(free).unwrap_or(u32::MAX)
    }

    /// Tells every stream its Room, where it changed.
    fn tell_room(&mut self) {
        let free = self.free();
        for stream in self.streams.values_mut() {
            let room = (free, stream.taken);
            if stream.told != Some(room) {
                stream.told = Some(room);
                let _ = stream.events.send(Event::Room(Room {
                    free,
                    taken: stream.taken,
                }));
            }
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Open { stream, events } => {
                let stream_state = Stream {
                    events,
                    taken: 0,
                    told: None,
                };
                self.streams.insert(stream, stream_state);
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
                if let Some(stream) = self.streams.get_mut(&group.stream) {
                    stream.taken += batch.items.len() as u64;
                }
                self.pending.push_back(Joining {
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
        self.expire_pending(now);
        let mut out: Vec<(Group, Emitted)> = Vec::new();
        // Each group's place in `out`.
        let mut places: HashMap<Group, usize> = HashMap::new();
        let mut bytes = 0;
        loop {
            self.metrics.step_requests.observe(self.engine.len() as f64);
            for (group, emitted) in self.engine.step() {
                bytes += emitted
                    .tokens
                    .iter()
                    .map(|t| t.text.len() + 16)
                    .sum::<usize>();
                match places.get(&group) {
                    Some(&place) => {
                        let gathered = &mut out[place].1;
                        gathered.tokens.extend(emitted.tokens);
                        gathered.done = emitted.done;
                    }
                    None => {
                        places.insert(group, out.len());
                        out.push((group, emitted));
                    }
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

    /// Drops the requests waiting to join whose client's deadline has
    /// passed by `now`, and ends the groups that this empties.
    fn expire_pending(&mut self, now: Instant) {
        let mut emptied = Vec::new();
        self.pending.retain_mut(|joining| {
            let deadlines = &joining.deadlines;
            joining.batch.items.retain(|item| {
                !deadlines
                    .iter()
                    .any(|(at, id)| *id == item.request_id && *at <= now)
            });
            if joining.batch.items.is_empty() {
                emptied.push(joining.group);
            }
            !joining.batch.items.is_empty()
        });
        for group in emptied {
            let done = Emitted {
                tokens: Vec::new(),
                done: true,
            };
            self.emit(group, done);
        }
    }

    /// The groups waiting that fit join, in the order they came. A group
    /// larger than every slot joins only an idle engine, so it is never
    /// held for good.
    fn join_pending(&mut self, now: Instant) {
        while let Some(head) = self.pending.front() {
            let fits = self.engine.len() + head.batch.items.len() <= self.generation.slots;
            if !fits && !self.engine.is_empty() {
                break;
            }
            let Some(Joining {
                group,
                batch,
                deadlines,
            }) = self.pending.pop_front()
            else {
                break;
            };
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
        let Some(Stream { events, .. }) = self.streams.get(&group.stream) else {
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
