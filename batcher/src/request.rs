//! A client request inside the batcher: what the queue holds and how its
//! tokens travel back to the Submit stream.

pub use horoscoper_proto::deadline::ClientDeadline;
use horoscoper_proto::mesh::SubmitResponse;
use std::{sync::Arc, time::Duration};
use tokio::{sync::mpsc, time::Instant};
use tonic::Status;

/// Where a request's tokens go. Unbounded, yet bounded in practice by its
/// text: one message per token, one status at most.
pub type Reply = mpsc::UnboundedSender<Message>;

/// One message on its way back, boxed: a channel allocates its slots 32 at a
/// time, and unboxed (a `Status` is some 180 bytes) that was 6 KB for every
/// open request.
pub type Message = Box<Result<SubmitResponse, Status>>;

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
    /// The request's span in the batcher (its Submit call).
    pub span: tracing::Span,
    /// Its time in the queue: a child span that ends at dispatch.
    pub queued: tracing::Span,
    /// Tokens its client already has. Generation is deterministic, so a
    /// request whose worker was lost mid-batch runs again elsewhere and
    /// skips these.
    pub delivered: u32,
    /// Set when its worker was lost mid-batch and it waits to run again.
    pub orphaned: Option<Orphaned>,
    /// The client's deadline, if it set one.
    pub deadline: Option<ClientDeadline>,
}

/// A request back in the queue because its worker was lost mid-batch.
#[derive(Clone, Debug)]
pub struct Orphaned {
    pub worker_id: Arc<str>,
    pub since: Instant,
}
