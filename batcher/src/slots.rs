//! The workers of continuous batching, as the dispatcher sees them: how many
//! of this batcher's requests each runs, and so how much room it has
//! (synchronous; the dispatcher owns it).
//!
//! A worker's slots are shared by every batcher, so its room is what its
//! last Room said was free, less what this batcher sent it since: the
//! worker counts the requests it took from this batcher, and whatever it has
//! not yet counted is in flight. Room never exceeds the batch size less
//! this batcher's requests there, which the dispatcher alone counts: a
//! request is counted when it is dispatched and uncounted when the worker's
//! connection reports it ended (its last token, its cancellation, its
//! batch's end, or a batch handed back), so a report that crosses a
//! dispatch can never make a worker look emptier than it is.

use std::{cmp::Reverse, collections::HashMap, sync::Arc};

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
    /// Requests sent to it on this connection.
    sent: u64,
    /// Its last Room: free slots, and how many of `sent` it had taken then.
    /// `None` until the first: no room.
    room: Option<(u32, u64)>,
    /// It takes new requests (it neither drains nor is retired).
    takes: bool,
}

impl Worker {
    fn room(&self, size: usize) -> usize {
        let Some((free, taken)) = self.room else {
            return 0;
        };
        let in_flight = self.sent.saturating_sub(taken);
        let free = (free as u64).saturating_sub(in_flight);
        size.saturating_sub(self.live)
            .min(usize::try_from(free).unwrap_or(usize::MAX))
    }
}

impl Slots {
    /// A worker that takes joins is up, or takes them again.
    pub fn up(&mut self, index: usize, worker_id: Arc<str>) {
        let worker = self.workers.entry(index).or_insert(Worker {
            worker_id: worker_id.clone(),
            live: 0,
            sent: 0,
            room: None,
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

    /// `requests` dispatched to it were handed back unsent.
    pub fn unsent(&mut self, index: usize, requests: usize) {
        if let Some(worker) = self.workers.get_mut(&index) {
            worker.live = worker.live.saturating_sub(requests);
            worker.sent = worker.sent.saturating_sub(requests as u64);
        }
    }

    /// `requests` were sent to it.
    pub fn joined(&mut self, index: usize, requests: usize) {
        if let Some(worker) = self.workers.get_mut(&index) {
            worker.live += requests;
            worker.sent += requests as u64;
        }
    }

    /// Its Room: `free` slots, when it had taken `taken` of this batcher's
    /// requests on this connection.
    pub fn room(&mut self, index: usize, free: u32, taken: u64) {
        if let Some(worker) = self.workers.get_mut(&index) {
            worker.room = Some((free, taken));
        }
    }

    /// The worker with the most room, of at most `size` for this batcher;
    /// of equals, the one running fewest of its requests, then the lowest
    /// index: its index, id and room.
    pub fn roomiest(&self, size: usize) -> Option<(usize, Arc<str>, usize)> {
        self.workers
            .iter()
            .filter(|(_, worker)| worker.takes)
            .map(|(index, worker)| (*index, worker, worker.room(size)))
            .filter(|(_, _, room)| *room > 0)
            .max_by_key(|(index, worker, room)| (*room, Reverse(worker.live), Reverse(*index)))
            .map(|(index, worker, room)| (index, worker.worker_id.clone(), room))
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

    /// Workers of 4 free slots that have taken nothing.
    fn slots(workers: usize) -> Slots {
        let mut slots = Slots::default();
        for index in 0..workers {
            slots.up(index, format!("w{index}").into());
            slots.room(index, 4, 0);
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
        assert_eq!(roomiest(&slots), None, "not free until the worker says so");
        slots.room(1, 1, 4);
        assert_eq!(roomiest(&slots), Some((1, 1)), "a freed slot is reused");
        assert_eq!(slots.busy(), 2);
    }

    #[test]
    fn a_worker_shared_with_other_batchers_has_only_the_room_it_says() {
        let mut slots = Slots::default();
        slots.up(0, "w0".into());
        assert_eq!(roomiest(&slots), None, "no room before the first Room");
        // Other batchers run 3 of its 4 slots.
        slots.room(0, 1, 0);
        assert_eq!(roomiest(&slots), Some((0, 1)));
        slots.joined(0, 1);
        assert_eq!(roomiest(&slots), None, "the one free slot is on its way");
        // A Room sent before the worker took it: still no room.
        slots.room(0, 1, 0);
        assert_eq!(roomiest(&slots), None);
        // It took it, and two of the others' ended.
        slots.room(0, 2, 1);
        assert_eq!(roomiest(&slots), Some((0, 2)));
        // A batch handed back unsent is not in flight.
        slots.joined(0, 2);
        slots.unsent(0, 2);
        assert_eq!(roomiest(&slots), Some((0, 2)));
    }

    #[test]
    fn a_retiring_worker_takes_nothing_and_keeps_its_count() {
        let mut slots = slots(1);
        slots.joined(0, 2);
        slots.retiring(0);
        assert_eq!(roomiest(&slots), None);
        slots.up(0, "w0".into());
        slots.room(0, 2, 2);
        assert_eq!(roomiest(&slots), Some((0, 2)), "its two still run");
        slots.gone(0);
        assert!(slots.is_empty());
        slots.ended(0, 5); // a late report of a gone worker changes nothing
        assert_eq!(roomiest(&slots), None);
    }
}
