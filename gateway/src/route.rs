//! One request's way back to its client: where its tokens wait for its
//! stream ([`Route`]), and the stream that reads them ([`Tokens`]).
//!
//! A route outlives the session it was sent on: it keeps the request as it
//! was sent and counts the tokens it got, so that, should that batcher be
//! lost, the request can move to another and go on where its client is.

use horoscoper_proto::{
    deadline::ClientDeadline,
    mesh::{SubmitRequest, SubmitResponse},
    reply::{self, Message, Messages},
};
use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};
use tokio_stream::Stream;
use tonic::Status;

/// Where a route is open (a batcher session): told when its client leaves.
pub trait Withdraw: Send + Sync {
    /// The client of request `id` left.
    fn withdraw(&self, id: u64);
}

/// Where one request's messages wait for its stream: its tokens, in the
/// runs they arrived in, the status that ends it, and the stream's waker.
pub struct Route {
    state: Mutex<RouteState>,
    /// The request as it was sent, to send again elsewhere.
    pub request: SubmitRequest,
    /// The client's deadline, if it set one.
    pub deadline: Option<ClientDeadline>,
    /// The request's span in the gateway.
    pub span: tracing::Span,
}

struct RouteState {
    /// Each reply's tokens as they were decoded, so a run of tokens is
    /// queued without being moved one by one.
    runs: VecDeque<std::vec::IntoIter<SubmitResponse>>,
    /// Boxed, so that a route without one is small (a `Status` is some 180
    /// bytes).
    end: Option<Box<Status>>,
    waker: Option<Waker>,
    /// Tokens received: what its client has, or will have.
    delivered: u32,
    /// The session it is open on and its id there, while it is open.
    at: Option<(Arc<dyn Withdraw>, u64)>,
    /// How many times it moved to another batcher.
    moves: u32,
    /// Its client left.
    left: bool,
}

impl Route {
    pub fn new(
        request: SubmitRequest,
        deadline: Option<ClientDeadline>,
        span: tracing::Span,
    ) -> Route {
        Route {
            state: Mutex::new(RouteState {
                runs: VecDeque::new(),
                end: None,
                waker: None,
                delivered: 0,
                at: None,
                moves: 0,
                left: false,
            }),
            request,
            deadline,
            span,
        }
    }

    /// The state, even after a panic while it was held: the request must
    /// still end with a status.
    fn state(&self) -> MutexGuard<'_, RouteState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn push(&self, messages: Messages) {
        let mut state = self.state();
        match messages {
            Ok(tokens) => {
                let count = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
                state.delivered = state.delivered.saturating_add(count);
                state.runs.push_back(tokens.into_iter());
            }
            Err(status) => state.end = Some(Box::new(status)),
        }
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// It is open on `session` as `id`.
    pub fn opened(&self, session: Arc<dyn Withdraw>, id: u64) {
        self.state().at = Some((session, id));
    }

    /// It is no longer open on its session (it ended there, or the session
    /// did).
    pub fn closed(&self) {
        self.state().at = None;
    }

    /// Whether it may move to another batcher: its client is still there,
    /// and it moved fewer than `most` times. Counts the move, and says how
    /// many tokens the client has.
    pub fn may_move(&self, most: u32) -> Option<u32> {
        let mut state = self.state();
        if state.left || state.moves >= most {
            return None;
        }
        state.moves += 1;
        Some(state.delivered)
    }

    /// The next token, or once none is left, the ending status.
    fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Message> {
        let mut state = self.state();
        while let Some(run) = state.runs.front_mut() {
            match run.next() {
                Some(token) => return Poll::Ready(Ok(token)),
                None => {
                    state.runs.pop_front();
                }
            }
        }
        if let Some(status) = state.end.take() {
            return Poll::Ready(Err(*status));
        }
        if !state
            .waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            state.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Its client left: withdraw it from the session it is open on.
    fn leave(&self) {
        let at = {
            let mut state = self.state();
            state.left = true;
            state.at.take()
        };
        if let Some((session, id)) = at {
            session.withdraw(id);
        }
    }
}

/// One request's tokens from the batcher, or the status that ended them.
/// Dropped before its end (its client left), it withdraws the request.
pub struct Tokens {
    route: Arc<Route>,
    finished: bool,
}

impl Tokens {
    pub fn new(route: Arc<Route>) -> Tokens {
        Tokens {
            route,
            finished: false,
        }
    }
}

impl Stream for Tokens {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let message = std::task::ready!(self.route.poll_pop(cx));
        // A route ends with a last token or a status.
        self.finished = reply::is_last(&message);
        Poll::Ready(Some(message))
    }
}

impl Drop for Tokens {
    fn drop(&mut self) {
        if !self.finished {
            self.route.leave();
        }
    }
}
