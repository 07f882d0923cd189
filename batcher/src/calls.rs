//! Which shared workers the batcher calls (synchronous; the dispatcher owns
//! it).
//!
//! A worker whose Ready says `busy_notices` is sent this batcher's Demand
//! only when it is called: as many workers as the queue has batches beyond
//! the offers held, and no more, so that a change of demand is not a message
//! to every worker.
//!
//! A worker is callable while this batcher believes it free: since it
//! connected, since its batch here ended, or since its offer here was
//! passed. A called worker offers itself (and leaves the calls), or answers
//! Busy when it runs another batcher's batch: it leaves the calls, and the
//! next callable worker is called. A worker that said Busy comes back on
//! its own: once free, it offers itself to this batcher if the Demand it
//! was sent still stands and no other batcher's is better.

use horoscoper_proto::mesh::Demand;
use std::collections::{HashSet, VecDeque};

/// The calls of one batcher.
#[derive(Debug, Default)]
pub struct Calls {
    /// Workers believed free and not called, longest known free first; an
    /// index not in `free` is stale and skipped.
    queue: VecDeque<usize>,
    /// Workers callable now.
    free: HashSet<usize>,
    /// Workers called, whose answer (an offer, or Busy) has not come.
    called: HashSet<usize>,
    /// The Demand last sent to the called workers.
    told: Demand,
}

impl Calls {
    /// A worker believed free: it may be called.
    pub fn callable(&mut self, index: usize) {
        self.called.remove(&index);
        if self.free.insert(index) {
            self.queue.push_back(index);
        }
    }

    /// A worker no longer to be called: it offered itself, runs a batch,
    /// retires or is gone.
    pub fn left(&mut self, index: usize) {
        self.called.remove(&index);
        self.free.remove(&index);
    }

    /// A worker answered Busy. Only a called one leaves: its last Demand
    /// from here wants it, so it comes back by itself once free. A Busy that
    /// crossed its release (a Demand of nothing, after which it wants
    /// nothing from here) leaves it callable, or it would be lost to this
    /// batcher for good.
    pub fn busy(&mut self, index: usize) {
        self.called.remove(&index);
    }

    /// Calls workers until `needed` are called (sending each `demand`), and
    /// tells those already called when the demand changed; what to send to
    /// whom. A demand of nothing releases the called workers: they become
    /// callable again.
    pub fn call(&mut self, needed: usize, demand: Demand) -> Vec<(usize, Demand)> {
        let mut sends = Vec::new();
        if demand != self.told {
            self.told = demand;
            sends.extend(self.called.iter().map(|&index| (index, demand)));
            if needed == 0 {
                let mut released: Vec<_> = self.called.drain().collect();
                released.sort_unstable();
                for index in released {
                    self.callable(index);
                }
            }
        }
        while self.called.len() < needed {
            let Some(index) = self.queue.pop_front() else {
                break;
            };
            if self.free.remove(&index) {
                self.called.insert(index);
                sends.push((index, demand));
            }
        }
        sends
    }

    /// How many workers are called now.
    #[cfg(test)]
    pub fn called(&self) -> usize {
        self.called.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(waiting: u32) -> Demand {
        Demand {
            waiting,
            ready: waiting > 0,
            calls: true,
        }
    }

    fn to(sends: &[(usize, Demand)]) -> Vec<usize> {
        sends.iter().map(|(index, _)| *index).collect()
    }

    #[test]
    fn as_many_are_called_as_are_needed_longest_free_first() {
        let mut calls = Calls::default();
        for index in [3, 1, 2] {
            calls.callable(index);
        }
        assert_eq!(to(&calls.call(2, demand(2))), vec![3, 1]);
        assert_eq!(calls.call(2, demand(2)), vec![], "nothing new to say");
        // One offered itself: still one called, and one more needed of the
        // next demand.
        calls.left(3);
        assert_eq!(to(&calls.call(2, demand(3))), vec![1, 2]);
        assert_eq!(calls.called(), 2);
    }

    #[test]
    fn a_busy_worker_is_replaced_and_comes_back_only_when_freed() {
        let mut calls = Calls::default();
        calls.callable(1);
        calls.callable(2);
        assert_eq!(to(&calls.call(1, demand(1))), vec![1]);
        calls.busy(1);
        assert_eq!(to(&calls.call(1, demand(1))), vec![2]);
        calls.left(2);
        assert_eq!(calls.call(1, demand(1)), vec![], "no one left to call");
        calls.callable(1); // its batch here ended, or its offer was passed
        assert_eq!(to(&calls.call(1, demand(1))), vec![1]);
    }

    #[test]
    fn a_busy_that_crossed_a_release_leaves_the_worker_callable() {
        let mut calls = Calls::default();
        calls.callable(1);
        assert_eq!(to(&calls.call(1, demand(1))), vec![1]);
        // Released (told that nothing waits) while its Busy was on the way.
        assert_eq!(to(&calls.call(0, demand(0))), vec![1]);
        calls.busy(1);
        assert_eq!(to(&calls.call(1, demand(1))), vec![1], "still callable");
        calls.busy(1);
        assert_eq!(calls.called(), 0);
        assert_eq!(calls.call(1, demand(1)), vec![], "it comes back by itself");
    }

    #[test]
    fn no_demand_releases_the_called_and_a_worker_is_queued_once() {
        let mut calls = Calls::default();
        calls.callable(1);
        calls.callable(1);
        calls.callable(2);
        assert_eq!(to(&calls.call(2, demand(2))), vec![1, 2]);
        let mut released = to(&calls.call(0, demand(0)));
        released.sort();
        assert_eq!(released, vec![1, 2], "told that nothing waits");
        assert_eq!(calls.called(), 0);
        assert_eq!(to(&calls.call(1, demand(1))), vec![1]);
        assert_eq!(to(&calls.call(2, demand(1))), vec![2]);
        assert_eq!(calls.call(3, demand(1)), vec![]);
    }
}
