//! The worker's errors, and the one place they become gRPC statuses.

use tonic::{Code, Status};

/// What can go wrong with a request (a batch) on the worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "batch {new} arrived while batch {running} was still running; a worker runs one batch at a time"
    )]
    Busy { running: u64, new: u64 },
    #[error("batch {0} has no requests")]
    EmptyBatch(u64),
    #[error("batch {batch_id} holds request {request_id} twice")]
    DuplicateRequest { batch_id: u64, request_id: u64 },
    #[error("batch {0} joined while a batch of that id still generates on this stream")]
    DuplicateBatch(u64),
    #[error("a GenerateRequest carried no command")]
    NoCommand,
    #[error("the worker is draining: it takes no new stream")]
    Draining,
    #[error("the worker is shutting down: its drain grace period ended batch {batch_id}")]
    Cut { batch_id: u64 },
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = match &error {
            Error::Busy { .. } => Code::FailedPrecondition,
            Error::Draining | Error::Cut { .. } => Code::Unavailable,
            Error::EmptyBatch(_)
            | Error::DuplicateRequest { .. }
            | Error::DuplicateBatch(_)
            | Error::NoCommand => Code::InvalidArgument,
        };
        Status::new(code, error.to_string())
    }
}
