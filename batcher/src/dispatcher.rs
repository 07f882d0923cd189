//! The task that owns the queue and the free workers, reached through a cheap
//! [`Dispatcher`] handle.
//!
//! It wakes on a command (a request arrives or leaves, a worker frees up or
//! hands requests back) or when the queue's next deadline comes (a window
//! closes, a request expires), expires what is due, and then hands batches
//! to free workers for as long as the batching rule allows: no free worker
//! idles while a dispatchable batch waits.

use crate::{
    Error,
    queue::{Entry, Policy, Queue, Reason},
    request::Pending,
};
use std::{collections::VecDeque, sync::Arc};
use tokio::{sync::mpsc, time::Instant};
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
}

/// What the dispatcher tells a worker connection.
#[derive(Debug)]
pub enum ToWorker {
    /// Run this batch.
    Dispatch(Dispatched),
    /// The client of this request has left.
    Cancel(u64),
}

/// A sealed batch on its way to a worker.
#[derive(Debug)]
pub struct Dispatched {
    pub batch_id: u64,
    pub reason: Reason,
    pub at: Instant,
    pub requests: Vec<Entry<Pending>>,
}

enum Command {
    Enqueue(Entry<Pending>),
    Cancel(u64),
    Free(Slot),
    Requeue(Vec<Entry<Pending>>),
}

/// The cheap handle to the dispatcher task.
#[derive(Clone, Debug)]
pub struct Dispatcher {
    commands: mpsc::UnboundedSender<Command>,
}

impl Dispatcher {
    /// Starts the task; it runs until `stop` is cancelled, then fails what is
    /// still queued with UNAVAILABLE.
    pub fn spawn(policy: Policy, stop: CancellationToken) -> Dispatcher {
        let (commands, receiver) = mpsc::unbounded_channel();
        let task = Task {
            queue: Queue::new(policy),
            free: VecDeque::new(),
            connections: Vec::new(),
            next_batch_id: 1,
        };
        tokio::spawn(task.run(receiver, stop));
        Dispatcher { commands }
    }

    /// Queues a request; gives it back when the dispatcher has stopped.
    pub fn enqueue(&self, entry: Entry<Pending>) -> Result<(), Entry<Pending>> {
        self.commands
            .send(Command::Enqueue(entry))
            .map_err(|error| match error.0 {
                Command::Enqueue(entry) => entry,
                _ => unreachable!("the command sent was an Enqueue"),
            })
    }

    /// The request's client has left: take it off the queue, or stop it at
    /// its worker.
    pub fn cancel(&self, id: u64) {
        let _ = self.commands.send(Command::Cancel(id));
    }

    /// A worker is ready for a batch.
    pub fn free(&self, slot: Slot) {
        let _ = self.commands.send(Command::Free(slot));
    }

    /// Requests a worker connection could not run: they go back to their
    /// places at the head of the queue.
    pub fn requeue(&self, requests: Vec<Entry<Pending>>) {
        if let Err(error) = self.commands.send(Command::Requeue(requests)) {
            if let Command::Requeue(requests) = error.0 {
                fail_all(requests, Error::ShuttingDown);
            }
        }
    }
}

struct Task {
    queue: Queue<Pending>,
    /// Free workers, longest free first.
    free: VecDeque<Slot>,
    /// Every connection's command channel, by index, for cancellations.
    connections: Vec<Option<mpsc::UnboundedSender<ToWorker>>>,
    next_batch_id: u64,
}

impl Task {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>, stop: CancellationToken) {
        loop {
            let now = Instant::now();
            self.expire(now);
            self.dispatch(now);
            let wake = self.queue.next_wake(!self.free.is_empty());
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
                Command::Enqueue(entry) => self.queue.push(entry),
                Command::Requeue(entries) => entries.into_iter().for_each(|e| self.queue.push(e)),
                Command::Cancel(_) | Command::Free(_) => {}
            }
        }
        fail_all(self.queue.drain(), Error::ShuttingDown);
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Enqueue(entry) => self.queue.push(entry),
            Command::Requeue(entries) => entries.into_iter().for_each(|e| self.queue.push(e)),
            Command::Cancel(id) => {
                if self.queue.remove(id).is_none() {
                    for connection in self.connections.iter().flatten() {
                        let _ = connection.send(ToWorker::Cancel(id));
                    }
                }
            }
            Command::Free(slot) => {
                if self.connections.len() <= slot.index {
                    self.connections.resize(slot.index + 1, None);
                }
                self.connections[slot.index] = Some(slot.commands.clone());
                self.free.retain(|free| free.index != slot.index);
                let at = self.free.partition_point(|free| free.since <= slot.since);
                self.free.insert(at, slot);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        for entry in self.queue.take_expired(now) {
            let error = Error::Expired {
                waited: now - entry.enqueued,
                limit: entry.item.limit,
            };
            tracing::debug!(request_id = entry.id, %error, "request expired in the queue");
            let _ = entry.item.reply.send(Err(error.into()));
        }
    }

    fn dispatch(&mut self, now: Instant) {
        while let Some(slot) = self.free.front() {
            let Some(reason) = self.queue.ready(now, slot.since) else {
                break;
            };
            let slot = self.free.pop_front().expect("a free worker is at the front");
            let requests: Vec<Entry<Pending>> = self
                .queue
                .take_batch()
                .into_iter()
                .filter(|entry| !entry.item.reply.is_closed())
                .collect();
            if requests.is_empty() {
                self.free.push_front(slot);
                continue;
            }
            let batch_id = self.next_batch_id;
            self.next_batch_id += 1;
            tracing::debug!(
                batch_id,
                size = requests.len(),
                reason = reason.as_str(),
                worker = %slot.worker_id,
                "batch dispatched"
            );
            let batch = Dispatched {
                batch_id,
                reason,
                at: now,
                requests,
            };
            if let Err(error) = slot.commands.send(ToWorker::Dispatch(batch)) {
                // The connection went away while free: the batch goes back.
                if let ToWorker::Dispatch(batch) = error.0 {
                    batch.requests.into_iter().for_each(|e| self.queue.push(e));
                }
            }
        }
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
    for entry in requests {
        let _ = entry.item.reply.send(Err(status.clone()));
    }
}
