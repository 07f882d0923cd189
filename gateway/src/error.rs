//! The gateway's errors, and the one place they become gRPC statuses.

use horoscoper_proto::v1::MAX_PREFIX_CHARS;
use tonic::{Code, Status};

/// What can go wrong with a request in the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("prefix has {chars} characters, at most {MAX_PREFIX_CHARS} are allowed")]
    PrefixTooLong { chars: usize },
    #[error("the batcher at {url} is unavailable: {message}")]
    BatcherUnavailable { url: String, message: String },
    #[error("the connection to the batcher at {url} broke mid-stream: {message}")]
    BatcherLost { url: String, message: String },
    #[error(
        "the request is {bytes} bytes with its ids and trace context, at most {} are allowed",
        horoscoper_proto::limits::MAX_ITEM_BYTES
    )]
    RequestTooLarge { bytes: usize },
    #[error("the gateway is draining: it takes no new request")]
    Draining,
    #[error("missing or invalid bearer token: send `authorization: Bearer <token>`")]
    Unauthenticated,
    #[error("the client's deadline of {} ms passed before the last token", .limit.as_millis())]
    DeadlinePassed { limit: std::time::Duration },
    #[error("the client's deadline of {limit:?} had passed when the request arrived")]
    DeadlinePassedOnArrival { limit: std::time::Duration },
    #[error(
        "grpc-timeout {value:?} is malformed: expected at most 8 digits and a unit, one of H M S m u n"
    )]
    MalformedTimeout { value: String },
    #[error("the gateway is shutting down: its drain grace period ended this stream")]
    ShuttingDown,
    /// A status from the batcher, passed on as it is.
    #[error("{}", .0.message())]
    Upstream(Status),
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = match &error {
            Error::PrefixTooLong { .. }
            | Error::MalformedTimeout { .. }
            | Error::RequestTooLarge { .. } => Code::InvalidArgument,
            Error::DeadlinePassed { .. } | Error::DeadlinePassedOnArrival { .. } => {
                Code::DeadlineExceeded
            }
            Error::Unauthenticated => Code::Unauthenticated,
            Error::BatcherUnavailable { .. }
            | Error::BatcherLost { .. }
            | Error::Draining
            | Error::ShuttingDown => Code::Unavailable,
            Error::Upstream(status) => return status.clone(),
        };
        Status::new(code, error.to_string())
    }
}
