//! The worker's errors, and the one place they become gRPC statuses.

use std::path::PathBuf;
use tonic::{Code, Status};

/// Everything that can go wrong in the worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The corpus file cannot be used.
    #[error("{}", corpus_location(.path, .line).map_or_else(|| .message.clone(), |at| format!("{at}: {}", .message)))]
    Corpus {
        path: Option<PathBuf>,
        /// The 1-based line at fault, when one is.
        line: Option<u64>,
        message: String,
    },
    #[error("--min-delay-ms ({min}) must not be greater than --max-delay-ms ({max})")]
    DelayRange { min: u64, max: u64 },
    #[error("cannot read the listener's address: {0}")]
    Listen(#[source] std::io::Error),
    #[error("cannot build server reflection: {0}")]
    Reflection(#[source] horoscoper_proto::serving::ReflectionError),
    #[error("server failed: {0}")]
    Serve(#[source] tonic::transport::Error),
    #[error("{0}")]
    Tls(String),
    #[error(
        "batch {new} arrived while batch {running} was still running; a worker runs one batch at a time"
    )]
    Busy { running: u64, new: u64 },
    #[error("batch {0} has no requests")]
    EmptyBatch(u64),
    #[error("batch {batch_id} holds request {request_id} twice")]
    DuplicateRequest { batch_id: u64, request_id: u64 },
    #[error("a GenerateRequest carried no command")]
    NoCommand,
    #[error("the worker is draining: it takes no new stream")]
    Draining,
    #[error("the worker is shutting down: its drain grace period ended batch {batch_id}")]
    Cut { batch_id: u64 },
}

fn corpus_location(path: &Option<PathBuf>, line: &Option<u64>) -> Option<String> {
    match (path, line) {
        (Some(path), Some(line)) => Some(format!("{}:{line}", path.display())),
        (Some(path), None) => Some(path.display().to_string()),
        (None, Some(line)) => Some(format!("line {line}")),
        (None, None) => None,
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = match &error {
            Error::Busy { .. } => Code::FailedPrecondition,
            Error::Draining | Error::Cut { .. } => Code::Unavailable,
            Error::EmptyBatch(_) | Error::DuplicateRequest { .. } | Error::NoCommand => {
                Code::InvalidArgument
            }
            Error::Corpus { .. }
            | Error::DelayRange { .. }
            | Error::Listen(_)
            | Error::Reflection(_)
            | Error::Serve(_)
            | Error::Tls(_) => Code::Internal,
        };
        Status::new(code, error.to_string())
    }
}
