//! The task that owns the queue and the free workers, reached through a cheap
//! [`Dispatcher`] handle.
//!
//! It wakes on a command (a request arrives or leaves, a worker frees up or
//! hands requests back) or when the queue's next deadline comes (a window
//! closes, a request expires), expires what is due, and then hands batches
//! to free workers for as long as the batching rule allows: no free worker
//! idles while a dispatchable batch waits.
//!
//! A worker shared by several batchers is free here only while this batcher
//! holds its offer (see `WorkerService.Generate` in the mesh proto). The
//! task publishes its demand for such workers (what waits that no offer it
//! holds will take, and whether a batch is ready) and answers an offer it
//! has no use for with a pass at once; a worker that answers Busy is sent
//! its demand only when called ([`crate::calls`]). It also publishes how
//! many requests wait, which its sessions report to the gateways.
//!
//! Requests whose worker was lost mid-batch come back to the head of the
//! queue and run again on another worker. While no worker at all is
//! connected, those whose clients already have tokens wait
//! [`ORPHAN_GRACE`] for one, then end with UNAVAILABLE; those that got none
//! wait out their time to live like any queued request.

use crate::{
    Error,
    calls::Calls,
    metrics::Meters,
    queue::{Entry, Policy, Queue, Reason},
    request::Pending,
    slots::Slots,
};
use horoscoper_proto::mesh;
use horoscoper_runtime::trace;
use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

/// A worker connection that is ready for a batch.
#[derive(Debug)]
pub struct Slot {
    /// Which connection (one per worker address).
    pub index: usize,
    pub worker_id: Arc<str>,
    pub commands: mpsc::UnboundedSender<ToWorker>,
    /// Since when the worker has been free.
    pub since: Instant,
    /// The worker is free on its offer (it is shared by offers), which is
    /// answered with a batch or a pass.
    pub offered: bool,
}

/// What the dispatcher tells a worker connection.
#[derive(Debug)]
pub enum ToWorker {
    /// Run this batch.
    Dispatch(Dispatched),
    /// The client of this request has left.
    Cancel(u64),
    /// No batch for the worker's offer.
    Pass,
    /// The worker is called (it answers Busy): this batcher's demand.
    Demand(mesh::Demand),
}

/// A sealed batch on its way to a worker.
#[derive(Debug)]
pub struct Dispatched {
    pub batch_id: u64,
    pub reason: Reason,
    pub at: Instant,
    pub requests: Vec<Entry<Pending>>,
    /// The batch's own span, linked to the span of every request it serves;
    /// it ends when the batch does.
    pub span: tracing::Span,
}

/// How long requests whose worker was lost wait for another worker to
/// connect when none is, before they end with UNAVAILABLE.
pub const ORPHAN_GRACE: Duration = Duration::from_millis(500);

/// How a request was orphaned, when its worker was lost after its client
/// had tokens: such a request gives up [`ORPHAN_GRACE`] after the last
/// worker went away. One that got no token has lost nothing yet, and waits
/// for a worker as any queued request does.
fn half_served(request: &Pending) -> Option<&crate::request::Orphaned> {
    request.orphaned.as_ref().filter(|_| request.delivered > 0)
}

/// Since when a request has waited in the queue: since it was queued, or
/// for one run again, since its worker was lost.
fn waiting_since(entry: &Entry<Pending>) -> Instant {
    entry
        .item
        .orphaned
        .as_ref()
        .map_or(entry.enqueued, |orphaned| orphaned.since)
}

enum Command {
    Enqueue(Box<Entry<Pending>>),
    Cancel(u64),
    Connected(usize, mpsc::UnboundedSender<ToWorker>, bool),
    Joins(Slot),
    Ended(usize, usize),
    Unsent(usize, usize),
    Room(usize, mesh::Room),
    Busy(usize),
    Free(Slot),
    Idle(usize),
    Retiring(usize),
    Recall(usize),
    Gone(usize),
    Requeue(Vec<Entry<Pending>>),
    Redispatch(Vec<Entry<Pending>>),
}

/// Most batches a Demand counts: past it, a worker can tell no more than
/// "plenty".
const DEMAND_CAP_BATCHES: usize = 4;

/// The cheap handle to the dispatcher task.
#[derive(Clone, Debug)]
pub struct Dispatcher {
    commands: mpsc::UnboundedSender<Command>,
    continuous: bool,
    demand: watch::Receiver<mesh::Demand>,
    queued: watch::Receiver<u32>,
}

impl Dispatcher {
    /// Starts the task; it runs until `stop` is cancelled, then fails what is
    /// still queued with UNAVAILABLE.
    pub fn spawn(policy: Policy, metrics: Meters, stop: CancellationToken) -> Dispatcher {
        let (commands, receiver) = mpsc::unbounded_channel();
        let (demand, demand_receiver) = watch::channel(mesh::Demand::default());
        let (queued, queued_receiver) = watch::channel(0);
        let task = Task {
            policy,
            demand,
            queued,
            queue: Queue::new(policy),
            free: VecDeque::new(),
            connections: HashMap::new(),
            running: HashSet::new(),
            calls: Calls::default(),
            calling: HashSet::new(),
            slots: Slots::default(),
            no_worker_since: None,
            next_batch_id: 1,
            metrics,
        };
        tokio::spawn(task.run(receiver, stop));
        Dispatcher {
            commands,
            continuous: policy.mode.is_continuous(),
            demand: demand_receiver,
            queued: queued_receiver,
        }
    }

    /// Whether this batcher runs continuous batching (its workers must).
    pub fn continuous(&self) -> bool {
        self.continuous
    }

    /// This batcher's demand for workers that offer themselves.
    pub fn demand(&self) -> watch::Receiver<mesh::Demand> {
        self.demand.clone()
    }

    /// How many requests wait in the queue.
    pub fn queued(&self) -> watch::Receiver<u32> {
        self.queued.clone()
    }

    /// Queues a request; gives it back when the dispatcher has stopped.
    pub fn enqueue(&self, entry: Entry<Pending>) -> Result<(), Box<Entry<Pending>>> {
        match self.commands.send(Command::Enqueue(Box::new(entry))) {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(Command::Enqueue(entry))) => Err(entry),
            Err(_) => unreachable!("the command sent was Enqueue"),
        }
    }

    /// The request's client has left: take it off the queue, or stop it at
    /// its worker.
    pub fn cancel(&self, id: u64) {
        let _ = self.commands.send(Command::Cancel(id));
    }

    /// A worker is connected (free or not): it counts among the workers,
    /// and hears of departures. One that `calls` (answers Busy) is free, and
    /// is sent this batcher's demand when called.
    pub fn connected(&self, index: usize, commands: mpsc::UnboundedSender<ToWorker>, calls: bool) {
        let _ = self
            .commands
            .send(Command::Connected(index, commands, calls));
    }

    /// A worker of continuous batching takes requests: as many at once as
    /// a batch holds, each joining as a slot frees.
    pub fn joins(&self, slot: Slot) {
        let _ = self.commands.send(Command::Joins(slot));
    }

    /// `requests` that ran on a worker of continuous batching ended there:
    /// their slots are free.
    pub fn ended(&self, index: usize, requests: usize) {
        let _ = self.commands.send(Command::Ended(index, requests));
    }

    /// `requests` dispatched to a worker of continuous batching were not
    /// sent there (it takes none now); they are requeued apart.
    pub fn unsent(&self, index: usize, requests: usize) {
        let _ = self.commands.send(Command::Unsent(index, requests));
    }

    /// A worker of continuous batching says what it can take.
    pub fn room(&self, index: usize, room: mesh::Room) {
        let _ = self.commands.send(Command::Room(index, room));
    }

    /// A called worker runs another batcher's batch.
    pub fn busy(&self, index: usize) {
        let _ = self.commands.send(Command::Busy(index));
    }

    /// A worker's batch from this batcher has ended.
    pub fn idle(&self, index: usize) {
        let _ = self.commands.send(Command::Idle(index));
    }

    /// A worker is ready for a batch.
    pub fn free(&self, slot: Slot) {
        let _ = self.commands.send(Command::Free(slot));
    }

    /// A worker takes no new batch (it drains, or its address is no longer
    /// resolved); cancellations still reach its running batch.
    pub fn retiring(&self, index: usize) {
        let _ = self.commands.send(Command::Retiring(index));
    }

    /// The worker wants the answer to its offer now.
    pub fn recall(&self, index: usize) {
        let _ = self.commands.send(Command::Recall(index));
    }

    /// A worker that was ready has disconnected.
    pub fn gone(&self, index: usize) {
        let _ = self.commands.send(Command::Gone(index));
    }

    /// Requests a worker connection could not run: they go back to their
    /// places at the head of the queue.
    pub fn requeue(&self, requests: Vec<Entry<Pending>>) {
        self.send_back(Command::Requeue(requests));
    }

    /// Requests whose worker was lost mid-batch (see
    /// [`Pending::orphaned`]): back to the head of the queue, to run again.
    pub fn redispatch(&self, requests: Vec<Entry<Pending>>) {
        self.send_back(Command::Redispatch(requests));
    }

    fn send_back(&self, command: Command) {
        if let Err(error) = self.commands.send(command)
            && let Command::Requeue(requests) | Command::Redispatch(requests) = error.0
        {
            fail_all(requests, Error::ShuttingDown);
        }
    }
}

struct Task {
    policy: Policy,
    demand: watch::Sender<mesh::Demand>,
    queued: watch::Sender<u32>,
    queue: Queue<Pending>,
    /// Free workers, longest free first.
    free: VecDeque<Slot>,
    /// The command channel of every connection whose worker is up, free or
    /// busy, by index: for cancellations, and the worker gauges.
    connections: HashMap<usize, mpsc::UnboundedSender<ToWorker>>,
    /// The connections running a batch of this batcher.
    running: HashSet<usize>,
    /// Which of the workers that answer Busy are called.
    calls: Calls,
    /// The workers that answer Busy.
    calling: HashSet<usize>,
    /// The workers of continuous batching, and the requests each runs.
    slots: Slots,
    /// Since when no worker has been connected, once one was.
    no_worker_since: Option<Instant>,
    next_batch_id: u64,
    metrics: Meters,
}

impl Task {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        stop: CancellationToken,
    ) {
        loop {
            let now = Instant::now();
            self.expire(now);
            self.dispatch(now);
            let held = self.pass_unneeded_offers();
            let (demand, needed) = self.publish(now, held);
            self.call(demand, needed);
            self.metrics.queue_length.set(self.queue.len() as i64);
            self.metrics.workers.set(self.connections.len() as i64);
            self.metrics
                .workers_busy
                .set((self.running.len() + self.slots.busy()) as i64);
            // Also when the head's window closes while no worker is free:
            // the demand turns ready, and a worker may offer itself.
            let wake = earliest(
                // Continuous batching has no window: only expiries wake it.
                self.queue
                    .next_wake(!self.free.is_empty() && !self.policy.mode.is_continuous()),
                earliest(
                    self.orphans_give_up(),
                    self.queue.window_closes().filter(|at| *at > now),
                ),
            );
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                command = commands.recv() => match command {
                    Some(command) => self.handle(command),
                    None => break,
                },
                () = sleep_until(wake) => {}
            }
        }
        commands.close();
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Enqueue(entry) => self.queue.push(*entry),
                Command::Requeue(entries) | Command::Redispatch(entries) => {
                    entries.into_iter().for_each(|e| self.queue.push(e))
                }
                Command::Cancel(_)
                | Command::Connected(..)
                | Command::Joins(_)
                | Command::Ended(..)
                | Command::Unsent(..)
                | Command::Room(..)
                | Command::Busy(_)
                | Command::Free(_)
                | Command::Idle(_)
                | Command::Retiring(_)
                | Command::Recall(_)
                | Command::Gone(_) => {}
            }
        }
        fail_all(self.queue.drain(), Error::ShuttingDown);
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Enqueue(entry) => self.queue.push(*entry),
            Command::Requeue(entries) => self.put_back(entries),
            Command::Redispatch(entries) => {
                self.metrics.redispatched.inc_by(entries.len() as u64);
                self.put_back(entries);
            }
            Command::Cancel(id) => {
                if self.queue.remove(id).is_none() {
                    for connection in self.connections.values() {
                        let _ = connection.send(ToWorker::Cancel(id));
                    }
                }
            }
            Command::Connected(index, commands, calls) => {
                self.no_worker_since = None;
                self.connections.insert(index, commands);
                if calls {
                    self.calling.insert(index);
                    // One running a batch here is callable when it ends.
                    if !self.running.contains(&index) {
                        self.calls.callable(index);
                    }
                }
            }
            Command::Joins(slot) => {
                self.no_worker_since = None;
                self.connections.insert(slot.index, slot.commands.clone());
                self.slots.up(slot.index, slot.worker_id);
            }
            Command::Ended(index, requests) => self.slots.ended(index, requests),
            Command::Unsent(index, requests) => self.slots.unsent(index, requests),
            Command::Room(index, room) => self.slots.room(index, room.free, room.taken),
            Command::Busy(index) => self.calls.busy(index),
            Command::Idle(index) => {
                self.running.remove(&index);
                if self.calling.contains(&index) {
                    self.calls.callable(index);
                }
            }
            Command::Free(slot) => {
                self.running.remove(&slot.index);
                self.calls.left(slot.index);
                self.no_worker_since = None;
                self.connections.insert(slot.index, slot.commands.clone());
                self.free.retain(|free| free.index != slot.index);
                let at = self.free.partition_point(|free| free.since <= slot.since);
                self.free.insert(at, slot);
            }
            Command::Retiring(index) => {
                self.slots.retiring(index);
                self.unfree(index);
                self.calls.left(index);
                self.calling.remove(&index);
            }
            Command::Recall(index) => self.unfree(index),
            Command::Gone(index) => {
                self.slots.gone(index);
                self.calls.left(index);
                self.calling.remove(&index);
                self.running.remove(&index);
                if self.connections.remove(&index).is_some() && self.connections.is_empty() {
                    self.no_worker_since = Some(Instant::now());
                }
                self.free.retain(|free| free.index != index);
            }
        }
    }

    /// Takes a worker off the free list; its offer, if it made one, is
    /// passed.
    fn unfree(&mut self, index: usize) {
        if let Some(at) = self.free.iter().position(|free| free.index == index) {
            let slot = self.free.remove(at).expect("found in the free list");
            if slot.offered {
                self.pass(&slot);
            }
        }
    }

    /// Answers a worker's offer with a pass: it is free to serve another
    /// batcher, and may be called again.
    fn pass(&mut self, slot: &Slot) {
        let _ = slot.commands.send(ToWorker::Pass);
        if self.calling.contains(&slot.index) {
            self.calls.callable(slot.index);
        }
    }

    /// Passes the offers that no batch the queue could fill will take, the
    /// latest first, so that those workers serve another batcher; returns
    /// how many offers it still holds.
    fn pass_unneeded_offers(&mut self) -> usize {
        let needed = self.queue.len().div_ceil(self.policy.batch_size);
        let mut held = self.free.iter().filter(|free| free.offered).count();
        while held > needed {
            let Some(at) = self.free.iter().rposition(|free| free.offered) else {
                break;
            };
            let slot = self.free.remove(at).expect("found in the free list");
            self.pass(&slot);
            held -= 1;
        }
        held
    }

    /// Publishes the queue's length, and the demand for workers that offer:
    /// what waits beyond the `held` offers, and whether a batch could go now.
    /// Returns the demand and how many batches wait beyond the offers.
    fn publish(&self, now: Instant, held: usize) -> (mesh::Demand, usize) {
        let queued = u32::try_from(self.queue.len()).unwrap_or(u32::MAX);
        self.queued
            .send_if_modified(|was| std::mem::replace(was, queued) != queued);
        // In whole batches, so that it changes (and is a message to every
        // worker that does not answer Busy) once a batch, not once a request.
        let batches = self
            .queue
            .len()
            .saturating_sub(held * self.policy.batch_size)
            .div_ceil(self.policy.batch_size);
        let demand = mesh::Demand {
            waiting: u32::try_from(batches.min(DEMAND_CAP_BATCHES)).unwrap_or(u32::MAX),
            ready: batches > 0 && self.queue.ready(now, now).is_some(),
            calls: false,
        };
        self.demand.send_if_modified(|was| {
            let changed = *was != demand;
            *was = demand;
            changed
        });
        (demand, batches)
    }

    /// Calls as many of the workers that answer Busy as the queue has
    /// `needed` batches (see [`crate::calls`]).
    fn call(&mut self, demand: mesh::Demand, needed: usize) {
        if self.calling.is_empty() {
            return;
        }
        let demand = mesh::Demand {
            calls: true,
            ..demand
        };
        for (index, demand) in self.calls.call(needed, demand) {
            if let Some(connection) = self.connections.get(&index) {
                let _ = connection.send(ToWorker::Demand(demand));
            }
        }
    }

    /// Requests handed back (a batch a worker could not take, a lost worker's
    /// requests) return to their places, except those whose clients left on
    /// the way.
    fn put_back(&mut self, entries: Vec<Entry<Pending>>) {
        for entry in entries {
            if !entry.item.reply.is_gone() {
                self.queue.push(entry);
            }
        }
    }

    /// When the first orphaned request gives up waiting for a worker, while
    /// none is connected.
    fn orphans_give_up(&self) -> Option<Instant> {
        let none_since = self.no_worker_since?;
        self.queue
            .iter()
            .filter_map(|entry| half_served(&entry.item))
            .map(|orphaned| orphaned.since.max(none_since) + ORPHAN_GRACE)
            .min()
    }

    fn expire(&mut self, now: Instant) {
        if let Some(none_since) = self.no_worker_since {
            let given_up = self.queue.take_where(|entry| {
                half_served(&entry.item)
                    .is_some_and(|orphaned| orphaned.since.max(none_since) + ORPHAN_GRACE <= now)
            });
            for mut entry in given_up {
                let worker_id = entry.item.orphaned.as_ref().expect("taken as orphaned");
                let error = Error::WorkerLost {
                    worker_id: worker_id.worker_id.to_string(),
                };
                entry
                    .item
                    .span
                    .in_scope(|| tracing::info!(%error, "no worker left to finish the request"));
                let _ = entry.item.reply.fail(error.into());
            }
        }
        for mut entry in self.queue.take_expired(now) {
            let error = Error::Expired {
                waited: now - waiting_since(&entry),
                limit: entry.item.limit,
                lost: entry.item.orphaned.as_ref().map(|o| o.worker_id.clone()),
            };
            entry
                .item
                .span
                .in_scope(|| tracing::info!(%error, "request expired in the queue"));
            let _ = entry.item.reply.fail(error.into());
        }
    }

    fn dispatch(&mut self, now: Instant) {
        if self.policy.mode.is_continuous() {
            self.dispatch_joins(now);
            return;
        }
        while let Some(slot) = self.free.front() {
            let Some(reason) = self.queue.ready(now, slot.since) else {
                break;
            };
            let slot = self
                .free
                .pop_front()
                .expect("a free worker is at the front");
            let requests = self.take(self.policy.batch_size);
            if requests.is_empty() {
                self.free.push_front(slot);
                continue;
            }
            let batch = self.seal(requests, reason, &slot.worker_id, now);
            self.running.insert(slot.index);
            if let Err(error) = slot.commands.send(ToWorker::Dispatch(batch)) {
                self.running.remove(&slot.index);
                // The connection went away while free: the batch goes back.
                if let ToWorker::Dispatch(batch) = error.0 {
                    batch.requests.into_iter().for_each(|e| self.queue.push(e));
                }
            }
        }
    }

    /// Continuous batching: the oldest requests join the worker with the
    /// most room (see [`Slots`]), at once, for as long as one has room.
    fn dispatch_joins(&mut self, now: Instant) {
        while !self.queue.is_empty() {
            let Some((index, worker_id, room)) = self.slots.roomiest(self.policy.batch_size) else {
                break;
            };
            let Some(commands) = self.connections.get(&index).cloned() else {
                self.slots.gone(index);
                continue;
            };
            let requests = self.take(room);
            if requests.is_empty() {
                continue;
            }
            let joining = requests.len();
            let batch = self.seal(requests, Reason::Join, &worker_id, now);
            self.slots.joined(index, joining);
            if let Err(error) = commands.send(ToWorker::Dispatch(batch)) {
                self.slots.gone(index);
                if let ToWorker::Dispatch(batch) = error.0 {
                    batch.requests.into_iter().for_each(|e| self.queue.push(e));
                }
            }
        }
    }

    /// Up to `most` of the oldest requests whose clients are still there.
    fn take(&mut self, most: usize) -> Vec<Entry<Pending>> {
        self.queue
            .take(most)
            .into_iter()
            .filter(|entry| !entry.item.reply.is_gone())
            .collect()
    }

    /// Seals `requests` into a batch for `worker_id`: its span, linked to
    /// each request's, and the metrics of its dispatch.
    fn seal(
        &mut self,
        mut requests: Vec<Entry<Pending>>,
        reason: Reason,
        worker_id: &str,
        now: Instant,
    ) -> Dispatched {
        let batch_id = self.next_batch_id;
        self.next_batch_id += 1;
        let span = tracing::info_span!(
            parent: None,
            "batch",
            batch_id,
            batch_size = requests.len(),
            reason = reason.as_str(),
            worker = %worker_id,
        );
        for entry in &mut requests {
            trace::link(&span, &entry.item.span);
            self.metrics
                .queue_wait
                .observe((now - waiting_since(entry)).as_secs_f64());
            entry.item.queued = tracing::Span::none(); // its time queued ends here
        }
        span.in_scope(|| tracing::debug!("batch dispatched"));
        self.metrics.batch(reason);
        self.metrics.batch_size.observe(requests.len() as f64);
        Dispatched {
            batch_id,
            reason,
            at: now,
            requests,
            span,
        }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Ends each request's stream with `error`'s status.
pub fn fail_all(requests: Vec<Entry<Pending>>, error: Error) {
    let status = tonic::Status::from(error);
    for mut entry in requests {
        let _ = entry.item.reply.fail(status.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Metrics,
        request::{Limit, Reply},
    };
    use horoscoper_runtime::args::BatchingMode;
    use std::time::Duration;
    use tonic::Code;

    const WINDOW: Duration = Duration::from_millis(250);
    const TTL: Duration = Duration::from_secs(7);

    type Tokens = mpsc::UnboundedReceiver<crate::request::Tagged>;

    struct Harness {
        dispatcher: Dispatcher,
        stop: CancellationToken,
        next_id: u64,
    }

    impl Harness {
        fn new(batch_size: usize) -> Harness {
            Harness::with_mode(batch_size, BatchingMode::Static)
        }

        fn with_mode(batch_size: usize, mode: BatchingMode) -> Harness {
            let stop = CancellationToken::new();
            let policy = Policy {
                batch_size,
                window: WINDOW,
                mode,
            };
            Harness {
                dispatcher: Dispatcher::spawn(policy, Metrics::default().of("test"), stop.clone()),
                stop,
                next_id: 1,
            }
        }

        fn request_with(&mut self, time_to_live: Duration) -> (u64, Tokens) {
            let (session, tokens) = mpsc::unbounded_channel();
            let id = self.next_id;
            let reply = Reply::new(id, session);
            self.next_id += 1;
            let now = Instant::now();
            let entry = Entry {
                id,
                enqueued: now,
                expires: now + time_to_live,
                item: Pending {
                    prefix: format!("request {id}"),
                    limit: Limit::TimeToLive(time_to_live),
                    reply,
                    log_id: format!("r{id}"),
                    span: tracing::Span::none(),
                    queued: tracing::Span::none(),
                    delivered: 0,
                    first_wait: None,
                    orphaned: None,
                    lost: 0,
                    deadline: None,
                },
            };
            assert!(
                self.dispatcher.enqueue(entry).is_ok(),
                "the dispatcher runs"
            );
            (id, tokens)
        }

        fn requests(&mut self, count: usize) -> Vec<Tokens> {
            (0..count).map(|_| self.request_with(TTL).1).collect()
        }

        fn free(&self, index: usize) -> mpsc::UnboundedReceiver<ToWorker> {
            let (commands, receiver) = mpsc::unbounded_channel();
            self.free_with(index, commands);
            receiver
        }

        fn free_with(&self, index: usize, commands: mpsc::UnboundedSender<ToWorker>) {
            self.slot(index, commands, false);
        }

        /// A worker of continuous batching is up, with 4 free slots.
        fn joins(&self, index: usize) -> mpsc::UnboundedReceiver<ToWorker> {
            let (commands, receiver) = mpsc::unbounded_channel();
            self.dispatcher.joins(Slot {
                index,
                worker_id: format!("worker-{index}").into(),
                commands,
                since: Instant::now(),
                offered: false,
            });
            self.room(index, 4, 0);
            receiver
        }

        /// A worker of continuous batching says its Room.
        fn room(&self, index: usize, free: u32, taken: u64) {
            self.dispatcher.room(index, mesh::Room { free, taken });
        }

        /// A worker shared by offers offers itself.
        fn offer(&self, index: usize) -> mpsc::UnboundedReceiver<ToWorker> {
            let (commands, receiver) = mpsc::unbounded_channel();
            self.slot(index, commands, true);
            receiver
        }

        fn slot(&self, index: usize, commands: mpsc::UnboundedSender<ToWorker>, offered: bool) {
            self.dispatcher.free(Slot {
                index,
                worker_id: format!("worker-{index}").into(),
                commands,
                since: Instant::now(),
                offered,
            });
        }
    }

    async fn batch(worker: &mut mpsc::UnboundedReceiver<ToWorker>) -> Dispatched {
        match worker.recv().await {
            Some(ToWorker::Dispatch(batch)) => batch,
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    fn ids(batch: &Dispatched) -> Vec<u64> {
        batch.requests.iter().map(|e| e.id).collect()
    }

    /// Lets the dispatcher task handle what was sent, without moving the clock.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// The ids of the requests sent to a worker until now, in order.
    async fn joined(worker: &mut mpsc::UnboundedReceiver<ToWorker>) -> Vec<u64> {
        settle().await;
        let mut joined = Vec::new();
        while let Ok(command) = worker.try_recv() {
            if let ToWorker::Dispatch(batch) = command {
                assert_eq!(batch.reason, Reason::Join);
                joined.extend(ids(&batch));
            }
        }
        joined
    }

    #[tokio::test(start_paused = true)]
    async fn in_continuous_batching_requests_join_free_slots_at_once_and_freed_slots_are_reused() {
        let mut h = Harness::with_mode(4, BatchingMode::Continuous);
        let start = Instant::now();
        let mut a = h.joins(0);
        let _tokens = h.requests(6);
        // No window to wait out: each joins as it comes, while a slot is free.
        assert_eq!(joined(&mut a).await, [1, 2, 3, 4]);
        // Two end there: the two waiting take their slots, together.
        h.dispatcher.ended(0, 2);
        h.room(0, 2, 4);
        assert_eq!(ids(&batch(&mut a).await), [5, 6]);
        // A second worker: the next go to the one with the most room.
        let mut b = h.joins(1);
        let _more = h.requests(3);
        assert_eq!(joined(&mut b).await, [7, 8, 9]);
        h.dispatcher.ended(0, 1);
        h.room(0, 1, 6);
        let _last = h.requests(2);
        assert_eq!(joined(&mut a).await, [10]);
        assert_eq!(joined(&mut b).await, [11]);
        // A worker that retires takes nothing more.
        h.dispatcher.retiring(1);
        h.dispatcher.ended(1, 4);
        let _after = h.requests(1);
        assert!(joined(&mut b).await.is_empty());
        assert_eq!(Instant::now(), start, "no time passed");
    }

    #[tokio::test(start_paused = true)]
    async fn dispatches_a_full_batch_at_once() {
        let mut h = Harness::new(4);
        let mut worker = h.free(0);
        let t0 = Instant::now();
        let _requests = h.requests(4);
        let batch = batch(&mut worker).await;
        assert_eq!(ids(&batch), [1, 2, 3, 4]);
        assert_eq!(batch.reason, Reason::Full);
        assert_eq!(Instant::now(), t0);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_the_window_before_sending_a_partial_batch() {
        let mut h = Harness::new(4);
        let mut worker = h.free(0);
        let t0 = Instant::now();
        let _requests = h.requests(2);
        let batch = batch(&mut worker).await;
        assert_eq!(ids(&batch), [1, 2]);
        assert_eq!(batch.reason, Reason::Window);
        assert_eq!(Instant::now() - t0, WINDOW);
    }

    #[tokio::test(start_paused = true)]
    async fn sends_a_stale_head_as_soon_as_a_worker_frees() {
        let mut h = Harness::new(4);
        let _requests = h.requests(1);
        tokio::time::advance(Duration::from_millis(400)).await;
        let t1 = Instant::now();
        let mut worker = h.free(0);
        let batch = batch(&mut worker).await;
        assert_eq!(batch.reason, Reason::StaleHead);
        assert_eq!(
            Instant::now(),
            t1,
            "a stale head does not wait a second window"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn eight_requests_arriving_two_then_six_give_batches_of_two_four_and_two() {
        let mut h = Harness::new(4);
        let mut first = h.free(0);
        let mut second = h.free(1);
        let _early = h.requests(2);
        let one = batch(&mut first).await;
        assert_eq!((ids(&one), one.reason), (vec![1, 2], Reason::Window));

        let _late = h.requests(6);
        let two = batch(&mut second).await;
        assert_eq!((ids(&two), two.reason), (vec![3, 4, 5, 6], Reason::Full));

        // Both workers are busy past the window; the first to free takes the rest.
        tokio::time::advance(Duration::from_millis(600)).await;
        let mut first = h.free(0);
        let three = batch(&mut first).await;
        assert_eq!((ids(&three), three.reason), (vec![7, 8], Reason::StaleHead));
    }

    #[tokio::test(start_paused = true)]
    async fn seals_no_batch_until_a_worker_can_take_it() {
        let mut h = Harness::new(4);
        let _requests = h.requests(3);
        tokio::time::advance(WINDOW * 4).await;
        let _more = h.requests(3);
        settle().await;
        // Had the window sealed a batch of 3 while every worker was busy, the
        // free worker would get 3; it gets the 4 oldest instead.
        let mut worker = h.free(0);
        let batch = batch(&mut worker).await;
        assert_eq!(
            (ids(&batch), batch.reason),
            (vec![1, 2, 3, 4], Reason::Full)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_free_worker_idles_while_a_batch_is_ready() {
        let mut h = Harness::new(2);
        let mut first = h.free(0);
        let mut second = h.free(1);
        let _requests = h.requests(4);
        assert_eq!(ids(&batch(&mut first).await), [1, 2]);
        assert_eq!(ids(&batch(&mut second).await), [3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_free_worker_gets_the_next_batch() {
        let mut h = Harness::new(1);
        let mut first = h.free(0);
        tokio::time::advance(Duration::from_millis(5)).await;
        let mut second = h.free(1);
        let _requests = h.requests(1);
        assert_eq!(ids(&batch(&mut first).await), [1]);
        settle().await;
        assert!(second.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_not_dispatched_in_time_ends_with_deadline_exceeded() {
        let mut h = Harness::new(4);
        let (_, mut tokens) = h.request_with(Duration::from_millis(100));
        let status = tokens.recv().await.unwrap().message.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert_eq!(
            status.message(),
            "waited 100 ms for a free worker: not dispatched within the request time to live of 100 ms"
        );
        // It is gone from the queue: a worker that frees later gets nothing.
        let mut worker = h.free(0);
        tokio::time::advance(WINDOW * 2).await;
        settle().await;
        assert!(worker.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_leaves_the_queue_is_not_dispatched() {
        let mut h = Harness::new(4);
        let (gone, _tokens) = h.request_with(TTL);
        let _stays = h.requests(1);
        let (_, dropped) = h.request_with(TTL);
        drop(dropped);
        h.dispatcher.cancel(gone);
        let mut worker = h.free(0);
        let batch = batch(&mut worker).await;
        assert_eq!(ids(&batch), [2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancel_for_a_dispatched_request_reaches_its_worker() {
        let mut h = Harness::new(1);
        let mut worker = h.free(0);
        let (id, _tokens) = h.request_with(TTL);
        batch(&mut worker).await;
        h.dispatcher.cancel(id);
        match worker.recv().await {
            Some(ToWorker::Cancel(cancelled)) => assert_eq!(cancelled, id),
            other => panic!("expected a cancel, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_for_a_vanished_worker_goes_to_the_next_one_intact() {
        let mut h = Harness::new(2);
        let (commands, receiver) = mpsc::unbounded_channel();
        h.free_with(0, commands);
        drop(receiver);
        let mut alive = h.free(1);
        let _requests = h.requests(2);
        assert_eq!(ids(&batch(&mut alive).await), [1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn requeued_requests_keep_their_place() {
        let mut h = Harness::new(2);
        let mut worker = h.free(0);
        let _requests = h.requests(3);
        let first = batch(&mut worker).await;
        h.dispatcher.requeue(first.requests);
        let mut worker = h.free(0);
        assert_eq!(ids(&batch(&mut worker).await), [1, 2]);
    }

    /// Marks a batch's requests as orphaned by `worker`, as a connection
    /// whose worker was lost does.
    fn orphan(batch: Dispatched, worker: &str) -> Vec<Entry<Pending>> {
        let orphaned = crate::request::Orphaned {
            worker_id: worker.into(),
            since: Instant::now(),
        };
        batch
            .requests
            .into_iter()
            .map(|mut entry| {
                entry.item.delivered = 3;
                entry.item.orphaned = Some(orphaned.clone());
                entry
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_workers_requests_run_again_first_on_the_next_free_worker() {
        let mut h = Harness::new(2);
        let mut lost = h.free(0);
        let mut other = h.free(1);
        let _requests = h.requests(4);
        let first = batch(&mut lost).await;
        assert_eq!(ids(&batch(&mut other).await), [3, 4]);
        let _later = h.requests(2);
        h.dispatcher.gone(0);
        h.dispatcher.redispatch(orphan(first, "worker-0"));
        settle().await;
        let t0 = Instant::now();
        let mut other = h.free(1);
        let again = batch(&mut other).await;
        assert_eq!(ids(&again), [1, 2], "ahead of the requests queued since");
        assert_eq!(Instant::now(), t0, "at once");
        assert!(again.requests.iter().all(|e| e.item.delivered == 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_workers_requests_end_with_unavailable_when_no_worker_is_left() {
        let mut h = Harness::new(2);
        let mut lost = h.free(0);
        let mut requests = h.requests(2);
        let first = batch(&mut lost).await;
        let t0 = Instant::now();
        h.dispatcher.gone(0);
        h.dispatcher.redispatch(orphan(first, "worker-0"));
        for tokens in &mut requests {
            let status = tokens.recv().await.unwrap().message.unwrap_err();
            assert_eq!(status.code(), Code::Unavailable);
            assert_eq!(
                status.message(),
                "worker worker-0 was lost while generating this request, and no other worker is connected to finish it"
            );
        }
        assert_eq!(Instant::now() - t0, ORPHAN_GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_connecting_within_the_grace_takes_the_lost_workers_requests() {
        let mut h = Harness::new(2);
        let mut lost = h.free(0);
        let _requests = h.requests(2);
        let first = batch(&mut lost).await;
        h.dispatcher.gone(0);
        h.dispatcher.redispatch(orphan(first, "worker-0"));
        tokio::time::advance(ORPHAN_GRACE / 2).await;
        let mut back = h.free(2);
        assert_eq!(ids(&batch(&mut back).await), [1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_workers_requests_that_had_no_token_wait_out_their_time_to_live() {
        let mut h = Harness::new(2);
        let mut lost = h.free(0);
        let mut requests = h.requests(2);
        let first = batch(&mut lost).await;
        h.dispatcher.gone(0);
        let mut orphans = orphan(first, "worker-0");
        for entry in &mut orphans {
            entry.item.delivered = 0;
        }
        h.dispatcher.redispatch(orphans);
        tokio::time::advance(ORPHAN_GRACE * 4).await;
        settle().await;
        for tokens in &mut requests {
            assert!(tokens.try_recv().is_err(), "still waiting for a worker");
        }
        let mut back = h.free(2);
        assert_eq!(ids(&batch(&mut back).await), [1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rerun_that_expires_says_how_long_it_waited_since_its_worker_was_lost() {
        let mut h = Harness::new(2);
        let mut lost = h.free(0);
        let mut requests = h.requests(1);
        let first = batch(&mut lost).await;
        // It ran for 5 s before its worker was lost: its wait starts then.
        tokio::time::advance(Duration::from_secs(5)).await;
        h.dispatcher.gone(0);
        let mut orphans = orphan(first, "worker-0");
        for entry in &mut orphans {
            entry.item.delivered = 0;
            entry.expires = Instant::now() + TTL;
        }
        h.dispatcher.redispatch(orphans);
        let status = requests[0].recv().await.unwrap().message.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert_eq!(
            status.message(),
            "waited 7000 ms for a free worker to run again after worker worker-0 was lost: not dispatched within the request time to live of 7000 ms"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_client_left_while_it_was_handed_back_is_not_run_again() {
        let mut h = Harness::new(2);
        let mut lost = h.free(0);
        let _requests = h.requests(2);
        let first = batch(&mut lost).await;
        // The departure reaches the dispatcher while the request is on its
        // way back: neither in the queue nor at a worker.
        first.requests[0].item.reply.departure().leave();
        h.dispatcher.cancel(first.requests[0].id);
        settle().await;
        h.dispatcher.gone(0);
        h.dispatcher.redispatch(orphan(first, "worker-0"));
        let mut other = h.free(1);
        assert_eq!(ids(&batch(&mut other).await), [2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retiring_worker_takes_no_batch_but_still_hears_of_departures() {
        let mut h = Harness::new(1);
        let (commands, mut retiring) = mpsc::unbounded_channel();
        h.free_with(0, commands.clone());
        let (id, _tokens) = h.request_with(TTL);
        batch(&mut retiring).await;
        // Free again, then retired before anything else is queued.
        h.free_with(0, commands);
        h.dispatcher.retiring(0);
        let _more = h.requests(1);
        h.dispatcher.cancel(id);
        match retiring.recv().await {
            Some(ToWorker::Cancel(cancelled)) => assert_eq!(cancelled, id),
            other => panic!("expected the cancel, got {other:?}"),
        }
        tokio::time::advance(WINDOW * 2).await;
        settle().await;
        assert!(retiring.try_recv().is_err(), "no new batch");
    }

    #[tokio::test(start_paused = true)]
    async fn an_offer_is_passed_at_once_when_nothing_waits_and_held_while_a_batch_fills() {
        let mut h = Harness::new(4);
        let demand = h.dispatcher.demand();
        let mut idle = h.offer(0);
        assert!(matches!(idle.recv().await, Some(ToWorker::Pass)));
        let _requests = h.requests(3);
        settle().await;
        assert_eq!(
            *demand.borrow(),
            mesh::Demand {
                waiting: 1,
                ready: false,
                calls: false,
            }
        );
        assert_eq!(*h.dispatcher.queued().borrow(), 3);
        // The head's window closes with no worker free: the demand turns
        // ready, and a worker that offers now takes the batch at once.
        tokio::time::sleep(WINDOW).await;
        settle().await;
        assert!(demand.borrow().ready);
        let t0 = Instant::now();
        let mut worker = h.offer(1);
        let batch = batch(&mut worker).await;
        assert_eq!((ids(&batch), batch.reason), (vec![1, 2, 3], Reason::Window));
        assert_eq!(Instant::now(), t0);
        settle().await;
        assert_eq!(*demand.borrow(), mesh::Demand::default());
    }

    #[tokio::test(start_paused = true)]
    async fn only_as_many_workers_as_batches_wait_are_called_and_a_busy_one_is_replaced() {
        let mut h = Harness::new(4);
        let mut workers: Vec<_> = (0..3)
            .map(|index| {
                let (commands, receiver) = mpsc::unbounded_channel();
                h.dispatcher.connected(index, commands, true);
                receiver
            })
            .collect();
        // The last demand a worker was sent since asked.
        let mut called = |index: usize| {
            let mut last = None;
            while let Ok(command) = workers[index].try_recv() {
                match command {
                    ToWorker::Demand(demand) if demand.calls => last = Some(demand.waiting),
                    other => panic!("expected a demand, got {other:?}"),
                }
            }
            last
        };
        let _requests = h.requests(5);
        settle().await;
        // Two batches wait: the two longest connected are called, not all.
        assert_eq!((called(0), called(1), called(2)), (Some(2), Some(2), None));
        h.dispatcher.busy(0);
        settle().await;
        assert_eq!(
            (called(0), called(2)),
            (None, Some(2)),
            "one busy, another called"
        );
        // Worker 1 offers itself and takes the full batch; worker 2, still
        // called, hears that one batch waits now.
        let mut offered = h.offer(1);
        assert_eq!(ids(&batch(&mut offered).await), [1, 2, 3, 4]);
        settle().await;
        assert_eq!((called(0), called(1), called(2)), (None, None, Some(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn offers_beyond_what_the_queue_fills_are_passed_and_a_recall_is_answered() {
        let mut h = Harness::new(4);
        let _requests = h.requests(2);
        let (mut first, mut second) = (h.offer(0), h.offer(1));
        settle().await;
        // Two requests fill one batch: the later offer is passed, the
        // earlier held for the window, and the demand counts nothing more.
        assert!(matches!(second.recv().await, Some(ToWorker::Pass)));
        assert!(first.try_recv().is_err());
        assert_eq!(h.dispatcher.demand().borrow().waiting, 0);
        // Another batcher is ready: the worker recalls its offer.
        h.dispatcher.recall(0);
        assert!(matches!(first.recv().await, Some(ToWorker::Pass)));
        assert_eq!(h.dispatcher.demand().borrow().waiting, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_fails_what_is_queued_with_unavailable() {
        let mut h = Harness::new(4);
        let mut requests = h.requests(2);
        settle().await;
        h.stop.cancel();
        for tokens in &mut requests {
            let status = tokens.recv().await.unwrap().message.unwrap_err();
            assert_eq!(status.code(), Code::Unavailable);
        }
    }
}
