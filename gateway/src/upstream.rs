//! The batcher's side of one request: its `Submit` call, opened when the
//! response stream is first polled, and the tokens that come back.
//!
//! Opening it lazily lets the gateway's handler answer at once: tonic's own
//! `grpc-timeout` timer covers only the handler, and when it fires it
//! answers CANCELLED ("Timeout expired"), which a client cannot tell from
//! its own cancellation. With the handler done at once, the client's
//! deadline is enforced on the stream instead, as DEADLINE_EXCEEDED.

use crate::Error;
use horoscoper_proto::deadline::ClientDeadline;
use horoscoper_proto::mesh::{
    SubmitRequest, SubmitResponse, batcher_service_client::BatcherServiceClient,
};
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::time::Instant;
use tokio_stream::Stream;
use tonic::{Request, Status, Streaming, transport::Channel};

type Opening = Pin<Box<dyn Future<Output = Result<Streaming<SubmitResponse>, Status>> + Send>>;

/// One request's tokens from the batcher, or the error that ended them.
pub struct Upstream {
    url: String,
    deadline: Option<ClientDeadline>,
    state: State,
}

enum State {
    Opening(Opening),
    Open(Box<Streaming<SubmitResponse>>),
    Done,
}

impl Upstream {
    /// Calls `Submit` on `batcher` (at `url`, for messages) when first polled.
    pub fn new(
        mut batcher: BatcherServiceClient<Channel>,
        url: String,
        request: Request<SubmitRequest>,
        deadline: Option<ClientDeadline>,
    ) -> Upstream {
        let opening = Box::pin(async move {
            batcher
                .submit(request)
                .await
                .map(tonic::Response::into_inner)
        });
        Upstream {
            url,
            deadline,
            state: State::Opening(opening),
        }
    }
}

impl Stream for Upstream {
    type Item = Result<SubmitResponse, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match &mut self.state {
                State::Opening(opening) => match std::task::ready!(opening.as_mut().poll(cx)) {
                    Ok(tokens) => self.state = State::Open(Box::new(tokens)),
                    Err(status) => {
                        self.state = State::Done;
                        let error = match self.deadline {
                            // tonic's client enforces the grpc-timeout it
                            // sends, and calls it CANCELLED.
                            Some(deadline) if deadline.at <= Instant::now() => {
                                Error::DeadlinePassed {
                                    limit: deadline.limit,
                                }
                            }
                            _ => refused(status, &self.url),
                        };
                        return Poll::Ready(Some(Err(error)));
                    }
                },
                State::Open(tokens) => {
                    let item = std::task::ready!(Pin::new(&mut **tokens).poll_next(cx));
                    return Poll::Ready(match item {
                        Some(Ok(token)) => Some(Ok(token)),
                        Some(Err(status)) => {
                            self.state = State::Done;
                            Some(Err(broke(status, &self.url)))
                        }
                        None => {
                            self.state = State::Done;
                            None
                        }
                    });
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

/// Whether tonic made `status` here from a transport error (it carries the
/// error as its source), rather than receiving it from the batcher.
fn made_here(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// A status that refused the call. One made here (hyper calls a call on a
/// closing connection CANCELLED) means the batcher is unreachable.
fn refused(status: Status, url: &str) -> Error {
    if status.code() == tonic::Code::Unavailable || made_here(&status) {
        Error::BatcherUnavailable {
            url: url.to_string(),
            message: status.message().to_string(),
        }
    } else {
        Error::Upstream(status)
    }
}

/// A status that ends the stream after it began. One the batcher sent is
/// passed on as it is; one made here because the connection broke means the
/// batcher is gone.
fn broke(status: Status, url: &str) -> Error {
    if made_here(&status) {
        Error::BatcherLost {
            url: url.to_string(),
            message: status.message().to_string(),
        }
    } else {
        Error::Upstream(status)
    }
}
