//! The queue and its batching decisions: plain synchronous code, driven by the
//! dispatcher task and tested on tokio's paused clock.
//!
//! - Requests queue in arrival order (their ids increase with arrival).
//! - A batch holds at most `batch_size` requests and is sealed only when a
//!   worker is free to take it.
//! - It goes when it is full, or once `window` has passed since its oldest
//!   request was enqueued. A head that already waited the window (because
//!   every worker was busy) goes at once, with as many requests as fit.
//! - A request past its expiry is never dispatched.
//! - In continuous batching there is no window: requests join a worker's
//!   free slots, oldest first, as soon as it has one (`take`).

use horoscoper_runtime::args::BatchingMode;
use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};
use tokio::time::Instant;

/// The batching rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Most requests in one batch (at least 1); in continuous batching, most
    /// requests on one worker at once.
    pub batch_size: usize,
    /// How long the oldest request may wait for the batch to fill (static
    /// batching only).
    pub window: Duration,
    pub mode: BatchingMode,
}

/// Why a batch was dispatched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// It held `batch_size` requests.
    Full,
    /// Its oldest request waited the window while a worker was free.
    Window,
    /// Its oldest request had waited past the window for a free worker.
    StaleHead,
    /// Continuous batching: its requests joined a worker's free slots.
    Join,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 4] = [
        Reason::Full,
        Reason::Window,
        Reason::StaleHead,
        Reason::Join,
    ];

    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Full => "full",
            Reason::Window => "window",
            Reason::StaleHead => "stale_head",
            Reason::Join => "join",
        }
    }
}

/// A queued request.
#[derive(Debug)]
pub struct Entry<T> {
    pub id: u64,
    pub enqueued: Instant,
    pub expires: Instant,
    pub item: T,
}

/// Requests waiting for a batch, oldest first.
#[derive(Debug)]
pub struct Queue<T> {
    policy: Policy,
    entries: BTreeMap<u64, Entry<T>>,
    expiries: BTreeSet<(Instant, u64)>,
}

impl<T> Queue<T> {
    pub fn new(policy: Policy) -> Queue<T> {
        Queue {
            policy,
            entries: BTreeMap::new(),
            expiries: BTreeSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Queues a request. Ids must increase with arrival; a request put back
    /// after a failed dispatch keeps its id, and so its place.
    pub fn push(&mut self, entry: Entry<T>) {
        self.expiries.insert((entry.expires, entry.id));
        self.entries.insert(entry.id, entry);
    }

    /// Takes a request off the queue (its client left).
    pub fn remove(&mut self, id: u64) -> Option<Entry<T>> {
        let entry = self.entries.remove(&id)?;
        self.expiries.remove(&(entry.expires, id));
        Some(entry)
    }

    /// Takes off every request whose expiry is at or before `now`.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Entry<T>> {
        let mut expired = Vec::new();
        while let Some(&(expires, id)) = self.expiries.first() {
            if expires > now {
                break;
            }
            self.expiries.pop_first();
            expired.extend(self.entries.remove(&id));
        }
        expired
    }

    /// When the head's window closes.
    fn head_deadline(&self) -> Option<Instant> {
        let (_, head) = self.entries.first_key_value()?;
        Some(head.enqueued + self.policy.window)
    }

    /// When the head's window closes (it may have passed).
    pub fn window_closes(&self) -> Option<Instant> {
        self.head_deadline()
    }

    /// Whether a batch should go now to a worker free since `free_since`, and
    /// why. Call [`Queue::take_expired`] first.
    pub fn ready(&self, now: Instant, free_since: Instant) -> Option<Reason> {
        if self.entries.len() >= self.policy.batch_size {
            return Some(Reason::Full);
        }
        let deadline = self.head_deadline()?;
        if now < deadline {
            None
        } else if free_since <= deadline {
            Some(Reason::Window)
        } else {
            Some(Reason::StaleHead)
        }
    }

    /// Seals a batch: up to `batch_size` of the oldest requests.
    #[cfg(test)]
    pub fn take_batch(&mut self) -> Vec<Entry<T>> {
        self.take(self.policy.batch_size)
    }

    /// Up to `most` of the oldest requests.
    pub fn take(&mut self, most: usize) -> Vec<Entry<T>> {
        let size = most.min(self.entries.len());
        let batch: Vec<Entry<T>> = (0..size)
            .filter_map(|_| self.entries.pop_first().map(|(_, entry)| entry))
            .collect();
        for entry in &batch {
            self.expiries.remove(&(entry.expires, entry.id));
        }
        batch
    }

    /// Takes off every request for which `take` says so, oldest first.
    pub fn take_where(&mut self, mut take: impl FnMut(&Entry<T>) -> bool) -> Vec<Entry<T>> {
        let ids: Vec<u64> = self
            .entries
            .values()
            .filter(|entry| take(entry))
            .map(|entry| entry.id)
            .collect();
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// The queued requests, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Entry<T>> {
        self.entries.values()
    }

    /// Empties the queue, oldest first.
    pub fn drain(&mut self) -> Vec<Entry<T>> {
        self.expiries.clear();
        std::mem::take(&mut self.entries).into_values().collect()
    }

    /// The next instant at which something happens by itself: a request
    /// expires, or (when a worker is free) the head's window closes.
    pub fn next_wake(&self, worker_free: bool) -> Option<Instant> {
        let expiry = self.expiries.first().map(|&(expires, _)| expires);
        let window = self.head_deadline().filter(|_| worker_free);
        match (expiry, window) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(250);
    const TTL: Duration = Duration::from_secs(7);

    fn queue(batch_size: usize) -> Queue<()> {
        Queue::new(Policy {
            batch_size,
            window: WINDOW,
            mode: BatchingMode::Static,
        })
    }

    fn push(queue: &mut Queue<()>, id: u64, at: Instant) {
        queue.push(Entry {
            id,
            enqueued: at,
            expires: at + TTL,
            item: (),
        });
    }

    fn ids(batch: &[Entry<()>]) -> Vec<u64> {
        batch.iter().map(|e| e.id).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_goes_at_once() {
        let t0 = Instant::now();
        let mut q = queue(4);
        for id in 0..4 {
            push(&mut q, id, t0);
        }
        assert_eq!(q.ready(t0, t0), Some(Reason::Full));
        assert_eq!(ids(&q.take_batch()), [0, 1, 2, 3]);
        assert_eq!(q.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_waits_for_the_window() {
        let t0 = Instant::now();
        let mut q = queue(4);
        push(&mut q, 0, t0);
        push(&mut q, 1, t0 + Duration::from_millis(100));
        assert_eq!(q.ready(t0 + Duration::from_millis(249), t0), None);
        assert_eq!(q.next_wake(true), Some(t0 + WINDOW));
        assert_eq!(q.ready(t0 + WINDOW, t0), Some(Reason::Window));
        assert_eq!(ids(&q.take_batch()), [0, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_head_goes_as_soon_as_a_worker_frees() {
        let t0 = Instant::now();
        let mut q = queue(4);
        push(&mut q, 0, t0);
        push(&mut q, 1, t0 + Duration::from_millis(300));
        // No worker was free when the window closed; one frees at 400 ms.
        let freed = t0 + Duration::from_millis(400);
        assert_eq!(q.ready(freed, freed), Some(Reason::StaleHead));
        assert_eq!(ids(&q.take_batch()), [0, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_is_not_watched_while_every_worker_is_busy() {
        let t0 = Instant::now();
        let mut q = queue(4);
        push(&mut q, 0, t0);
        assert_eq!(q.next_wake(false), Some(t0 + TTL));
        assert_eq!(q.next_wake(true), Some(t0 + WINDOW));
    }

    #[tokio::test(start_paused = true)]
    async fn eight_requests_arriving_two_then_six_give_batches_of_two_four_and_two() {
        let t0 = Instant::now();
        let mut q = queue(4);
        push(&mut q, 0, t0);
        push(&mut q, 1, t0);
        assert_eq!(q.ready(t0 + WINDOW, t0), Some(Reason::Window));
        assert_eq!(ids(&q.take_batch()), [0, 1]);

        let t1 = t0 + Duration::from_millis(500);
        for id in 2..8 {
            push(&mut q, id, t1);
        }
        assert_eq!(q.ready(t1, t0), Some(Reason::Full));
        assert_eq!(ids(&q.take_batch()), [2, 3, 4, 5]);
        assert_eq!(q.ready(t1, t0), None);
        assert_eq!(q.ready(t1 + WINDOW, t0), Some(Reason::Window));
        assert_eq!(ids(&q.take_batch()), [6, 7]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_queue_is_served_oldest_first_in_batches_of_at_most_the_size() {
        let t0 = Instant::now();
        let mut q = queue(3);
        for id in 0..7 {
            push(&mut q, id, t0);
        }
        assert_eq!(ids(&q.take_batch()), [0, 1, 2]);
        assert_eq!(ids(&q.take_batch()), [3, 4, 5]);
        assert_eq!(q.ready(t0, t0), None);
        assert_eq!(ids(&q.take_batch()), [6]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_put_back_keeps_its_place() {
        let t0 = Instant::now();
        let mut q = queue(2);
        for id in 0..3 {
            push(&mut q, id, t0);
        }
        let batch = q.take_batch();
        for entry in batch {
            q.push(entry);
        }
        assert_eq!(ids(&q.take_batch()), [0, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn removed_and_expired_requests_leave_the_queue() {
        let t0 = Instant::now();
        let mut q = queue(4);
        push(&mut q, 0, t0);
        q.push(Entry {
            id: 1,
            enqueued: t0,
            expires: t0 + Duration::from_millis(100),
            item: (),
        });
        push(&mut q, 2, t0);
        assert!(q.remove(2).is_some());
        assert!(q.remove(2).is_none());
        assert_eq!(q.next_wake(false), Some(t0 + Duration::from_millis(100)));
        assert!(q.take_expired(t0 + Duration::from_millis(99)).is_empty());
        assert_eq!(ids(&q.take_expired(t0 + Duration::from_millis(100))), [1]);
        assert_eq!(ids(&q.take_batch()), [0]);
        assert_eq!(q.next_wake(true), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_size_of_one_never_waits() {
        let t0 = Instant::now();
        let mut q = queue(1);
        push(&mut q, 0, t0);
        assert_eq!(q.ready(t0, t0), Some(Reason::Full));
    }
}
