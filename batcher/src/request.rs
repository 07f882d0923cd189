//! A client request inside the batcher: what the queue holds and how its
//! tokens travel back to its session.

pub use horoscoper_proto::deadline::ClientDeadline;
use horoscoper_proto::{
    mesh::SubmitResponse,
    reply::{self, Messages},
};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::{sync::mpsc, time::Instant};
use tonic::Status;

/// On its way back to a request's session: tokens (those of one step) or the
/// status that ends the request, tagged with the request's id in the session.
#[derive(Debug)]
pub struct Tagged {
    pub id: u64,
    pub message: Messages,
}

/// Where a request's tokens go: its session's channel (shared by all the
/// session's requests), tagged with its id there. Unbounded, yet bounded in
/// practice by the texts of the open requests.
///
/// Every request ends with a last message: dropped without having sent one,
/// it sends INTERNAL, so that its session never holds it open forever.
#[derive(Debug)]
pub struct Reply {
    id: u64,
    session: mpsc::UnboundedSender<Tagged>,
    ended: bool,
    left: Departure,
}

impl Reply {
    pub fn new(id: u64, session: mpsc::UnboundedSender<Tagged>) -> Reply {
        Reply {
            id,
            session,
            ended: false,
            left: Departure::default(),
        }
    }

    /// The handle that says the request's client has left.
    pub fn departure(&self) -> Departure {
        self.left.clone()
    }

    /// Sends tokens, in order; false when the session is gone.
    pub fn send_tokens(&mut self, tokens: Vec<SubmitResponse>) -> bool {
        self.send(Ok(tokens))
    }

    /// Ends the request with `status`; false when the session is gone.
    pub fn fail(&mut self, status: Status) -> bool {
        self.send(Err(status))
    }

    fn send(&mut self, message: Messages) -> bool {
        self.ended |= reply::ends(&message);
        self.session
            .send(Tagged {
                id: self.id,
                message,
            })
            .is_ok()
    }

    /// Whether its client is gone: it left, or its whole session did.
    pub fn is_gone(&self) -> bool {
        self.left.has_left() || self.session.is_closed()
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if !self.ended && !self.left.has_left() {
            let _ = self.fail(Status::internal("the request ended without its last token"));
        }
    }
}

/// Says that a request's client has left. Set by its session, read wherever
/// the request is: in the queue, in a batch, or on its way between them (a
/// batch handed back, a lost worker's requests), so that a departure that
/// meets a request in transit still stops it.
#[derive(Clone, Debug, Default)]
pub struct Departure(Arc<AtomicBool>);

impl Departure {
    pub fn leave(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn has_left(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What bounds a request's time in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The batcher's `--request-ttl-ms`.
    TimeToLive(Duration),
    /// The client's gRPC deadline, shorter than the time to live.
    ClientDeadline(Duration),
}

impl Limit {
    /// The shorter of the time to live and the client's deadline.
    pub fn new(time_to_live: Duration, client_deadline: Option<Duration>) -> Limit {
        match client_deadline {
            Some(deadline) if deadline < time_to_live => Limit::ClientDeadline(deadline),
            _ => Limit::TimeToLive(time_to_live),
        }
    }

    pub fn duration(self) -> Duration {
        match self {
            Limit::TimeToLive(duration) | Limit::ClientDeadline(duration) => duration,
        }
    }
}

/// A request waiting in the queue or running in a batch.
#[derive(Debug)]
pub struct Pending {
    pub prefix: String,
    pub limit: Limit,
    pub reply: Reply,
    /// The request's id in logs and traces, from the gateway.
    pub log_id: String,
    /// The request's span in the batcher (`submit`).
    pub span: tracing::Span,
    /// Its time in the queue: a child span that ends at dispatch.
    pub queued: tracing::Span,
    /// Tokens its client already has. Generation is deterministic, so a
    /// request whose worker was lost mid-batch runs again elsewhere and
    /// skips these.
    pub delivered: u32,
    /// How long it waited for its first batch: what its client is told,
    /// however many times it runs.
    pub first_wait: Option<Duration>,
    /// Set when its worker was lost mid-batch and it waits to run again.
    pub orphaned: Option<Orphaned>,
    /// How many of its workers were lost while generating it.
    pub lost: u32,
    /// The client's deadline, if it set one.
    pub deadline: Option<ClientDeadline>,
}

/// A request back in the queue because its worker was lost mid-batch.
#[derive(Clone, Debug)]
pub struct Orphaned {
    pub worker_id: Arc<str>,
    pub since: Instant,
}
