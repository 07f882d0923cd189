//! `horoscoper.v1.Horoscoper.Infer`: validate, forward to the batcher with the
//! time the client left, stream the tokens back as they arrive.

use crate::Error;
use horoscoper_proto::{
    deadline,
    mesh::{self, SubmitRequest, SubmitResponse, batcher_service_client::BatcherServiceClient},
    v1::{BatchInfo, InferRequest, InferResponse, MAX_PREFIX_CHARS, horoscoper_server::Horoscoper},
};
use std::{pin::Pin, time::Duration};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, transport::Channel};

/// The public service.
#[derive(Clone)]
pub struct Gateway {
    batcher: BatcherServiceClient<Channel>,
    batcher_url: String,
}

impl Gateway {
    pub fn new(batcher: Channel, batcher_url: String) -> Gateway {
        Gateway {
            batcher: BatcherServiceClient::new(batcher),
            batcher_url,
        }
    }
}

/// Refuses a prefix over the limit, counted in characters, not bytes.
pub fn validate(request: &InferRequest) -> Result<(), Error> {
    // Counting stops just past the limit: a huge prefix costs no more.
    let chars = request.prefix.chars().take(MAX_PREFIX_CHARS + 1).count();
    if chars > MAX_PREFIX_CHARS {
        return Err(Error::PrefixTooLong {
            chars: request.prefix.chars().count(),
        });
    }
    Ok(())
}

/// A request's tokens as the public API shows them.
pub type InferStream = Pin<Box<dyn Stream<Item = Result<InferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Horoscoper for Gateway {
    type InferStream = InferStream;

    async fn infer(&self, request: Request<InferRequest>) -> Result<Response<InferStream>, Status> {
        let client_deadline = deadline::from_metadata(request.metadata());
        let stream = self.stream(request.into_inner(), client_deadline).await?;
        Ok(Response::new(stream))
    }
}

impl Gateway {
    /// Validates a request and forwards it to the batcher with the time the
    /// client left; every front end (gRPC, gRPC-Web, SSE) goes through here.
    pub async fn stream(
        &self,
        request: InferRequest,
        client_deadline: Option<Duration>,
    ) -> Result<InferStream, Error> {
        validate(&request)?;
        let mut submit = Request::new(SubmitRequest {
            prefix: request.prefix,
        });
        if let Some(remaining) = client_deadline {
            submit.set_timeout(remaining);
        }
        let tokens = self
            .batcher
            .clone()
            .submit(submit)
            .await
            .map_err(|status| self.upstream(status))?
            .into_inner();
        Ok(Box::pin(tokens.map(|token| {
            token
                .map(public)
                .map_err(|status| Error::Upstream(status).into())
        })))
    }

    fn upstream(&self, status: Status) -> Error {
        if status.code() == tonic::Code::Unavailable {
            Error::BatcherUnavailable {
                url: self.batcher_url.clone(),
                message: status.message().to_string(),
            }
        } else {
            Error::Upstream(status)
        }
    }
}

/// A batcher token as the public API shows it.
fn public(token: SubmitResponse) -> InferResponse {
    InferResponse {
        text: token.text,
        last: token.last,
        batch: token.batch.map(|batch: mesh::BatchInfo| BatchInfo {
            batch_id: batch.batch_id,
            batch_size: batch.batch_size,
            worker_id: batch.worker_id,
            queue_time: batch.queue_time,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(prefix: String) -> InferRequest {
        InferRequest { prefix }
    }

    #[test]
    fn counts_characters_not_bytes() {
        assert!(validate(&prefix("é".repeat(1024))).is_ok());
        assert!(validate(&prefix("🦀".repeat(1024))).is_ok());
        assert!(validate(&prefix(String::new())).is_ok());
        let error = validate(&prefix("🦀".repeat(1025))).unwrap_err();
        assert_eq!(
            error.to_string(),
            "prefix has 1025 characters, at most 1024 are allowed"
        );
        assert_eq!(Status::from(error).code(), tonic::Code::InvalidArgument);
    }
}
