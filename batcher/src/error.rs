//! The batcher's errors, and the one place they become gRPC statuses.

use crate::request::Limit;
use std::{sync::Arc, time::Duration};
use tonic::{Code, Status};

/// What can go wrong with a request in the batcher.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not dispatched in time; `lost` names the worker lost while running
    /// it, when it waited to run again, and `waited` counts from then.
    #[error("{}", expired_message(*.waited, *.limit, .lost.as_deref()))]
    Expired {
        waited: Duration,
        limit: Limit,
        lost: Option<Arc<str>>,
    },
    #[error(
        "worker {worker_id} was lost while generating this request, and no other worker is connected to finish it"
    )]
    WorkerLost { worker_id: String },
    #[error(
        "worker {worker_id} gave this request a different text than the worker it was lost on (are their corpora the same?)"
    )]
    TextDiffers { worker_id: String },
    #[error(
        "{lost} workers were lost while generating this request (the last {worker_id}); it is not run again"
    )]
    LostTooOften { lost: u32, worker_id: String },
    #[error("worker {worker_id} ended batch {batch_id} before this request's last token")]
    BatchCutShort { worker_id: String, batch_id: u64 },
    #[error("the batcher is shutting down")]
    ShuttingDown,
    #[error(
        "the request is {bytes} bytes with its ids and trace context, at most {} are allowed",
        horoscoper_proto::limits::MAX_ITEM_BYTES
    )]
    RequestTooLarge { bytes: usize },
    #[error("the batcher is draining: it takes no new request")]
    Draining,
    #[error(
        "the client's deadline passed before the last token ({} ms were left when the request reached the batcher)",
        .limit.as_millis()
    )]
    DeadlinePassed { limit: Duration },
    #[error("the batcher holds {limit} requests, its limit (--max-requests); try again shortly")]
    Overloaded { limit: usize },
    #[error("worker at {url} broke the protocol: {message}")]
    WorkerProtocol { url: String, message: String },
}

fn expired_message(waited: Duration, limit: Limit, lost: Option<&str>) -> String {
    let waited = waited.as_millis();
    let again = lost.map_or_else(String::new, |worker| {
        format!(" to run again after worker {worker} was lost")
    });
    match limit {
        Limit::TimeToLive(ttl) => format!(
            "waited {waited} ms for a free worker{again}: not dispatched within the request time to live of {} ms",
            ttl.as_millis()
        ),
        Limit::ClientDeadline(deadline) => format!(
            "waited {waited} ms for a free worker{again}: not dispatched within the client's deadline of {} ms",
            deadline.as_millis()
        ),
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = match &error {
            Error::Expired { .. } | Error::DeadlinePassed { .. } => Code::DeadlineExceeded,
            Error::WorkerLost { .. }
            | Error::LostTooOften { .. }
            | Error::ShuttingDown
            | Error::Draining => Code::Unavailable,
            Error::Overloaded { .. } => Code::ResourceExhausted,
            Error::RequestTooLarge { .. } => Code::InvalidArgument,
            Error::BatchCutShort { .. }
            | Error::TextDiffers { .. }
            | Error::WorkerProtocol { .. } => Code::Internal,
        };
        Status::new(code, error.to_string())
    }
}
