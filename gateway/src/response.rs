//! A request's tokens as the public API shows them.

use horoscoper_proto::{
    mesh::{self, SubmitResponse},
    v1::{BatchInfo, Batching, InferResponse},
};
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::Status;

/// A request's responses, whatever stands between them and the batcher.
pub type ResponseStream = Pin<Box<dyn Stream<Item = Result<InferResponse, Status>> + Send>>;

/// A batcher token as the public API shows it.
pub fn public(token: SubmitResponse) -> InferResponse {
    InferResponse {
        text: token.text,
        last: token.last,
        batch: token.batch.map(|batch: mesh::BatchInfo| BatchInfo {
            batch_id: batch.batch_id,
            batch_size: batch.batch_size,
            worker_id: batch.worker_id,
            queue_time: batch.queue_time,
            max_shared: batch.max_shared,
            batching: if batch.continuous {
                Batching::Continuous
            } else {
                Batching::Static
            }
            .into(),
        }),
    }
}
