//! The single-hop reference: one tonic server that streams the same tokens
//! the mesh would (the worker's own corpus, choice and token split) straight
//! to the load generator, as fast as the connection takes them. The mesh's
//! throughput is measured against it.
//!
//! It runs in a process of its own, as each service of the mesh does: the
//! bench starts itself again with `--serve-reference ADDR`.

use horoscoper_proto::{
    mesh::{Batch, BatchItem},
    v1::{
        BatchInfo, InferRequest, InferResponse,
        horoscoper_server::{Horoscoper, HoroscoperServer},
    },
};
use horoscoper_worker::{Corpus, Lockstep};
use std::{
    net::SocketAddr,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

struct Reference {
    corpus: Corpus,
    batches: AtomicU64,
}

type Tokens = Pin<Box<dyn Stream<Item = Result<InferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Horoscoper for Reference {
    type InferStream = Tokens;

    async fn infer(&self, request: Request<InferRequest>) -> Result<Response<Tokens>, Status> {
        let batch_id = self.batches.fetch_add(1, Relaxed);
        let batch = Batch {
            batch_id,
            items: vec![BatchItem {
                prefix: request.into_inner().prefix,
                ..Default::default()
            }],
        };
        let mut running =
            Lockstep::start(batch, &self.corpus).map_err(|e| Status::internal(e.to_string()))?;
        let mut responses = Vec::with_capacity(running.steps());
        while !running.is_done() {
            for token in running.step() {
                responses.push(Ok(InferResponse {
                    text: token.text,
                    last: token.last,
                    batch: token.last.then(|| BatchInfo {
                        batch_id,
                        batch_size: 1,
                        worker_id: "reference".into(),
                        queue_time: Some(Default::default()),
                        max_shared: 1,
                        batching: horoscoper_proto::v1::Batching::Static.into(),
                    }),
                }));
            }
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(responses))))
    }
}

/// Serves the reference on `addr` until the process is stopped.
pub async fn serve(addr: SocketAddr) {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|error| panic!("cannot listen on {addr}: {error}"));
    let reference = Reference {
        corpus: Corpus::built_in(),
        batches: AtomicU64::new(0),
    };
    horoscoper_runtime::net::server(horoscoper_runtime::net::PUBLIC_MAX_STREAMS)
        .add_service(HoroscoperServer::new(reference))
        .serve_with_incoming(horoscoper_runtime::net::incoming(listener))
        .await
        .expect("the reference server failed");
}
