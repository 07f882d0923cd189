//! The workers of continuous batching, as the dispatcher sees them: how many
//! of this batcher's requests each runs, and so how much room it has
//! (synchronous; the dispatcher owns it).
//!
//! The dispatcher alone counts: a request is counted when it is dispatched
//! and uncounted when the worker's connection reports it ended (its last
//! token, its cancellation, its batch's end, or a batch handed back), so a
//! report that crosses a dispatch can never make a worker look emptier than
//! it is.

use std::{collections::HashMap, sync::Arc};

/// The workers that take joins.
#[derive(Debug, Default)]
pub struct Slots {
    workers: HashMap<usize, Worker>,
}

#[derive(Debug)]
struct Worker {
    worker_id: Arc<str>,
    /// This batcher's requests on it.
    live: usize,
    /// It takes new requests (it neither drains nor is retired).
    takes: bool,
}

impl Slots {
    /// A worker that takes joins is up, or takes them again.
    pub fn up(&mut self, index: usize, worker_id: Arc<str>) {
        let worker = self.workers.entry(index).or_insert(Worker {
            worker_id: worker_id.clone(),
            live: 0,
            takes: true,
        });
        worker.worker_id = worker_id;
        worker.takes = true;
    }

    /// It takes no new request; those it runs go on.
    pub fn retiring(&mut self, index: usize) {
        if let Some(worker) = self.workers.get_mut(&index) {
            worker.takes = false;
        }
    }

    /// Its connection is gone, with whatever ran there.
    pub fn gone(&mut self, index: usize) {
        self.workers.remove(&index);
    }

    /// `requests` of it ended.
    pub fn ended(&mut self, index: usize, requests: usize) {
        if let Some(worker) = self.workers.get_mut(&index) {
            worker.live = worker.live.saturating_sub(requests);
        }
    }

    /// `requests` were sent to it.
    pub fn joined(&mut self, index: usize, requests: usize) {
        if let Some(worker) = self.workers.get_mut(&index) {
            worker.live += requests;
        }
    }

    /// The worker with the most room of `size` slots, the lowest index of
    /// equals: its index, id and room.
    pub fn roomiest(&self, size: usize) -> Option<(usize, Arc<str>, usize)> {
        self.workers
            .iter()
            .filter(|(_, worker)| worker.takes && worker.live < size)
            .min_by_key(|(index, worker)| (worker.live, **index))
            .map(|(index, worker)| (*index, worker.worker_id.clone(), size - worker.live))
    }

    /// How many workers run requests of this batcher.
    pub fn busy(&self) -> usize {
        self.workers
            .values()
            .filter(|worker| worker.live > 0)
            .count()
    }

    /// Whether any worker that takes joins is connected.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(workers: usize) -> Slots {
        let mut slots = Slots::default();
        for index in 0..workers {
            slots.up(index, format!("w{index}").into());
        }
        slots
    }

    fn roomiest(slots: &Slots) -> Option<(usize, usize)> {
        slots.roomiest(4).map(|(index, _, room)| (index, room))
    }

    #[test]
    fn the_worker_with_the_most_room_is_chosen_and_a_full_one_never() {
        let mut slots = slots(2);
        assert_eq!(roomiest(&slots), Some((0, 4)));
        slots.joined(0, 3);
        assert_eq!(roomiest(&slots), Some((1, 4)));
        slots.joined(1, 4);
        assert_eq!(roomiest(&slots), Some((0, 1)));
        slots.joined(0, 1);
        assert_eq!(roomiest(&slots), None, "every slot taken");
        slots.ended(1, 1);
        assert_eq!(roomiest(&slots), Some((1, 1)), "a freed slot is reused");
        assert_eq!(slots.busy(), 2);
    }

    #[test]
    fn a_retiring_worker_takes_nothing_and_keeps_its_count() {
        let mut slots = slots(1);
        slots.joined(0, 2);
        slots.retiring(0);
        assert_eq!(roomiest(&slots), None);
        slots.up(0, "w0".into());
        assert_eq!(roomiest(&slots), Some((0, 2)), "its two still run");
        slots.gone(0);
        assert!(slots.is_empty());
        slots.ended(0, 5); // a late report of a gone worker changes nothing
        assert_eq!(roomiest(&slots), None);
    }
}
