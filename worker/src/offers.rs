//! The worker's one place for a batch, shared by every batcher's stream.
//!
//! A batcher that knows offers sends a Demand (how much it has waiting, and
//! whether a batch is ready); its stream holds a [`Seat`]. While the worker
//! is free it offers itself to one seat at a time, of those that want it
//! the least recently offered: in turn, whatever each says it has waiting,
//! since a batcher that calls (below) stops telling a busy worker how its
//! queue grows, and a choice by those stale counts would starve it. A seat
//! that passes is not offered again until its demand changes. When another
//! seat becomes ready while the offer waits on a window, the holder is asked
//! to recall it (or, if the offer is not sent yet, it is withdrawn unseen).
//! A batch taken on an offer holds the place until it ends, so a worker is
//! never booked twice.
//!
//! A batcher that calls (its Demand says so) sends its Demand only to the
//! workers it needs; a seat whose batcher calls and wants the worker while a
//! batch of another seat runs is told to say Busy, once per Demand, so that
//! its batcher calls another worker.
//!
//! A batcher that sends no Demand (one from before offers) gets the place
//! the old way: its batch waits until the running one has ended.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};
use tokio::{
    sync::{Notify, OwnedMutexGuard},
    time::Instant,
};

/// What a seat is told to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// Send an Offer.
    Offer,
    /// Send a Recall.
    Recall,
    /// Send Busy.
    Busy,
}

/// The worker's place for a batch and the seats that want it.
#[derive(Clone, Default)]
pub struct Offers {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Held while a batch runs, or while an offer waits for its answer.
    place: Arc<tokio::sync::Mutex<()>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    seats: HashMap<u64, SeatState>,
    next_seat: u64,
    /// The seat the worker is offered to, with the place it holds for it.
    offer: Option<(u64, OwnedMutexGuard<()>)>,
    /// Counts offers made, to rotate among equal seats.
    turn: u64,
    /// The worker drains: no new offer.
    closed: bool,
    /// When the last batch ended (`None`: none has run).
    free_since: Option<Instant>,
    /// A batch holds the place, and the seat it was taken on (`None`: a
    /// batcher's from before offers).
    running: Option<Option<u64>>,
}

struct SeatState {
    waiting: u32,
    ready: bool,
    /// It passed, and its demand has not changed since.
    passed: bool,
    last_offer: u64,
    /// What it has been told and not yet done.
    call: Option<Call>,
    /// A Recall was asked of it for the current offer.
    recalled: bool,
    /// Its batcher calls: it is told Busy.
    calls: bool,
    /// Busy was asked of it for its current demand.
    told_busy: bool,
    wake: Arc<Notify>,
}

impl Offers {
    fn state(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A seat for a stream whose batcher sent its first Demand.
    pub fn seat(&self) -> Seat {
        let wake = Arc::new(Notify::new());
        let mut state = self.state();
        let id = state.next_seat;
        state.next_seat += 1;
        state.seats.insert(
            id,
            SeatState {
                waiting: 0,
                ready: false,
                passed: false,
                last_offer: 0,
                call: None,
                recalled: false,
                calls: false,
                told_busy: false,
                wake: wake.clone(),
            },
        );
        Seat {
            offers: self.clone(),
            id,
            wake,
        }
    }

    /// The place, the old way: once no batch runs and no offer waits.
    pub async fn wait_for_place(&self) -> Place {
        let guard = self.shared.place.clone().lock_owned().await;
        self.state().running = Some(None);
        self.tell_busy();
        Place {
            offers: self.clone(),
            guard: Some(guard),
        }
    }

    /// How long the worker has been free, at most since `started`.
    pub fn idle(&self, started: Instant) -> std::time::Duration {
        let since = self.state().free_since.unwrap_or(started);
        since.elapsed()
    }

    /// No new offer: the worker drains.
    pub fn close(&self) {
        self.state().closed = true;
    }

    /// While a batch runs: every seat whose batcher calls and that wants
    /// the worker is told Busy, once per demand.
    fn tell_busy(&self) {
        let mut state = self.state();
        let Some(running) = state.running else {
            return;
        };
        for (id, seat) in &mut state.seats {
            if Some(*id) != running
                && seat.calls
                && seat.wants()
                && !seat.told_busy
                && seat.call.is_none()
            {
                seat.told_busy = true;
                seat.call = Some(Call::Busy);
                seat.wake.notify_one();
            }
        }
    }

    /// Makes an offer if the worker is free and a seat wants it, or asks the
    /// holder of an offer that waits on a window to recall it.
    fn choose(&self) {
        let mut state = self.state();
        let state = &mut *state;
        if state.closed {
            return;
        }
        if let Some((holder, _)) = &state.offer {
            let holder = *holder;
            let waits_on_window = state.seats.get(&holder).is_some_and(|seat| !seat.ready);
            let other_ready = state
                .seats
                .iter()
                .any(|(id, seat)| *id != holder && seat.wants() && seat.ready);
            if !(waits_on_window && other_ready) {
                return;
            }
            let Some(seat) = state.seats.get_mut(&holder) else {
                return;
            };
            if seat.call == Some(Call::Offer) {
                // Not sent yet: withdrawn here, unseen, rather than recalled
                // (a Recall in its place would leave the batcher an offer it
                // never saw, and the worker booked for good).
                seat.call = None;
                state.offer = None;
            } else {
                if !seat.recalled {
                    seat.recalled = true;
                    seat.call = Some(Call::Recall);
                    seat.wake.notify_one();
                }
                return;
            }
        }
        let Some((&id, _)) = state
            .seats
            .iter()
            .filter(|(_, seat)| seat.wants())
            .min_by_key(|(id, seat)| (seat.last_offer, **id))
        else {
            return;
        };
        let Ok(place) = self.shared.place.clone().try_lock_owned() else {
            // A batch runs; its end chooses again.
            return;
        };
        state.turn += 1;
        let seat = state.seats.get_mut(&id).expect("chosen from the seats");
        seat.last_offer = state.turn;
        seat.call = Some(Call::Offer);
        seat.recalled = false;
        seat.wake.notify_one();
        state.offer = Some((id, place));
    }
}

impl SeatState {
    fn wants(&self) -> bool {
        self.waiting > 0 && !self.passed
    }
}

/// One batcher stream's part in the offers. Dropped (the stream ended), it
/// lets go of any offer it holds.
pub struct Seat {
    offers: Offers,
    id: u64,
    wake: Arc<Notify>,
}

impl Seat {
    /// The batcher's new demand; `calls`: it sent it to this worker alone
    /// of many, and wants Busy while the worker cannot answer.
    pub fn demand(&self, waiting: u32, ready: bool, calls: bool) {
        {
            let mut state = self.offers.state();
            if let Some(seat) = state.seats.get_mut(&self.id) {
                seat.passed = false;
                seat.waiting = waiting;
                seat.ready = ready;
                seat.calls = calls;
                seat.told_busy = false;
                if seat.call == Some(Call::Busy) {
                    seat.call = None;
                }
            }
        }
        self.offers.tell_busy();
        self.offers.choose();
    }

    /// What to send next, once there is something.
    pub async fn call(&self) -> Call {
        loop {
            let notified = self.wake.notified();
            if let Some(call) = self.take_call() {
                return call;
            }
            notified.await;
        }
    }

    fn take_call(&self) -> Option<Call> {
        self.offers
            .state()
            .seats
            .get_mut(&self.id)
            .and_then(|seat| seat.call.take())
    }

    /// Whether this seat holds the worker's offer.
    #[cfg(test)]
    fn holds_offer(&self) -> bool {
        self.offers
            .state()
            .offer
            .as_ref()
            .is_some_and(|(id, _)| *id == self.id)
    }

    /// The batcher answered the offer with a batch: the place is the
    /// batch's until it ends. `None` when this seat holds no offer.
    pub fn take(&self) -> Option<Place> {
        let mut state = self.offers.state();
        if state.offer.as_ref().is_none_or(|(id, _)| *id != self.id) {
            return None;
        }
        let (_, guard) = state.offer.take().expect("checked above");
        if let Some(seat) = state.seats.get_mut(&self.id) {
            seat.call = None;
        }
        state.running = Some(Some(self.id));
        drop(state);
        self.offers.tell_busy();
        Some(Place {
            offers: self.offers.clone(),
            guard: Some(guard),
        })
    }

    /// The batcher passed: the worker offers itself elsewhere, and not here
    /// again until this batcher's demand changes. A pass with no offer held
    /// (it crossed nothing) changes nothing.
    pub fn pass(&self) {
        {
            let mut state = self.offers.state();
            if state.offer.as_ref().is_none_or(|(id, _)| *id != self.id) {
                return;
            }
            state.offer = None;
            if let Some(seat) = state.seats.get_mut(&self.id) {
                seat.passed = true;
                seat.call = None;
            }
        }
        self.offers.choose();
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        {
            let mut state = self.offers.state();
            state.seats.remove(&self.id);
            if state.offer.as_ref().is_some_and(|(id, _)| *id == self.id) {
                state.offer = None;
            }
        }
        self.offers.choose();
    }
}

/// The worker's place, held by a running batch; when it is dropped the
/// worker offers itself again.
pub struct Place {
    offers: Offers,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for Place {
    fn drop(&mut self) {
        {
            let mut state = self.offers.state();
            state.free_since = Some(Instant::now());
            state.running = None;
        }
        self.guard.take();
        self.offers.choose();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(seat: &Seat) -> Option<Call> {
        seat.take_call()
    }

    #[tokio::test]
    async fn a_free_worker_offers_itself_in_turn_and_an_offer_on_a_window_is_recalled() {
        let offers = Offers::default();
        let (a, b, c) = (offers.seat(), offers.seat(), offers.seat());
        a.demand(8, false, false);
        // `a` waits on a window: offered, for want of better.
        assert_eq!(pending(&a), Some(Call::Offer));
        b.demand(2, true, false);
        // `b` is ready: `a` is asked to recall, once.
        assert_eq!(pending(&a), Some(Call::Recall));
        c.demand(5, true, false);
        assert_eq!(pending(&a), None);
        a.pass();
        // In turn: `b` and `c` were never offered; the older seat first,
        // whatever they have waiting.
        assert_eq!(pending(&b), Some(Call::Offer));
        assert_eq!(pending(&c), None);
        b.pass();
        assert_eq!(pending(&c), Some(Call::Offer));
        assert!(c.holds_offer());
    }

    #[tokio::test]
    async fn an_offer_not_yet_sent_is_withdrawn_not_recalled() {
        let offers = Offers::default();
        let (a, b) = (offers.seat(), offers.seat());
        a.demand(8, false, false);
        // `a` is offered the worker, but its stream has not sent the Offer
        // when `b` turns ready: `a` never hears of it, and `b` is offered.
        b.demand(2, true, false);
        assert_eq!(pending(&a), None, "no Recall of an offer never sent");
        assert_eq!(pending(&b), Some(Call::Offer));
        assert!(b.holds_offer());
        b.pass();
        // `a` did not pass: it is offered again, and this time it hears.
        assert_eq!(pending(&a), Some(Call::Offer));
        assert!(a.holds_offer());
    }

    #[tokio::test]
    async fn a_taken_offer_books_the_worker_until_its_batch_ends() {
        let offers = Offers::default();
        let (a, b) = (offers.seat(), offers.seat());
        a.demand(4, true, false);
        b.demand(4, true, false);
        let first = if pending(&a) == Some(Call::Offer) {
            &a
        } else {
            &b
        };
        let second = if std::ptr::eq(first, &a) { &b } else { &a };
        let place = first.take().expect("it holds the offer");
        second.demand(9, true, false);
        assert_eq!(pending(second), None, "no offer while a batch runs");
        assert!(
            second.take().is_none(),
            "a batch without an offer is not one"
        );
        drop(place);
        assert_eq!(pending(second), Some(Call::Offer));
    }

    #[tokio::test]
    async fn a_calling_seat_that_wants_the_busy_worker_is_told_busy_once_per_demand() {
        let offers = Offers::default();
        let (a, b, old) = (offers.seat(), offers.seat(), offers.seat());
        a.demand(1, true, true);
        assert_eq!(pending(&a), Some(Call::Offer));
        let place = a.take().expect("it holds the offer");
        a.demand(3, true, true);
        assert_eq!(pending(&a), None, "the running seat's own batcher knows");
        b.demand(2, true, true);
        assert_eq!(pending(&b), Some(Call::Busy));
        assert_eq!(pending(&b), None, "once");
        b.demand(2, true, true);
        assert_eq!(pending(&b), Some(Call::Busy), "again for a new demand");
        old.demand(2, true, false);
        assert_eq!(
            pending(&old),
            None,
            "a batcher that does not call is not told"
        );
        drop(place);
        // Free: it offers itself to one of them, which did not pass.
        let offered = [&a, &b, &old]
            .iter()
            .filter(|seat| pending(seat) == Some(Call::Offer))
            .count();
        assert_eq!(offered, 1);
    }

    #[tokio::test]
    async fn a_seat_that_passed_is_offered_again_only_when_its_demand_changes() {
        let offers = Offers::default();
        let a = offers.seat();
        a.demand(1, false, false);
        assert_eq!(pending(&a), Some(Call::Offer));
        a.pass();
        assert_eq!(pending(&a), None);
        a.demand(2, false, false);
        assert_eq!(pending(&a), Some(Call::Offer));
    }

    #[tokio::test]
    async fn a_stream_that_ends_holding_the_offer_frees_the_worker() {
        let offers = Offers::default();
        let (a, b) = (offers.seat(), offers.seat());
        a.demand(3, true, false);
        assert_eq!(pending(&a), Some(Call::Offer));
        b.demand(1, true, false);
        drop(a);
        assert_eq!(pending(&b), Some(Call::Offer));
    }

    #[tokio::test]
    async fn equal_seats_take_turns() {
        let offers = Offers::default();
        let (a, b) = (offers.seat(), offers.seat());
        a.demand(4, true, false);
        b.demand(4, true, false);
        let mut order = Vec::new();
        for _ in 0..4 {
            let seat = if a.holds_offer() { &a } else { &b };
            order.push(std::ptr::eq(seat, &a));
            drop(seat.take());
            seat.demand(4, true, false);
        }
        assert_eq!(order, [true, false, true, false]);
    }

    #[tokio::test]
    async fn a_batch_the_old_way_waits_for_the_offered_place() {
        let offers = Offers::default();
        let a = offers.seat();
        a.demand(1, true, false);
        let place = a.take().expect("offered");
        let waiting = tokio::spawn({
            let offers = offers.clone();
            async move { offers.wait_for_place().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(place);
        let old = waiting.await.expect("the old way gets the place");
        a.demand(2, true, false);
        assert_eq!(pending(&a), None, "the old way's batch holds it");
        drop(old);
        assert_eq!(pending(&a), Some(Call::Offer));
    }

    #[tokio::test]
    async fn a_draining_worker_offers_nothing() {
        let offers = Offers::default();
        offers.close();
        let a = offers.seat();
        a.demand(4, true, false);
        assert_eq!(pending(&a), None);
    }
}
