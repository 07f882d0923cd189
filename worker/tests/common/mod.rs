//! Starting a worker on a loopback port and opening Generate streams to it,
//! as a batcher does.

#![allow(dead_code)]

use horoscoper_proto::mesh::{
    GenerateRequest, GenerateResponse, worker_service_client::WorkerServiceClient,
};
use horoscoper_runtime::args::BatchingMode;
use horoscoper_worker::{Config, Generation, GenerationArgs};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

/// A worker `worker_id` on port 0 in `batching` with `slots`, whose batches
/// (or requests alone) take exactly `delay_ms`, until `stop`; its url.
pub async fn start(
    worker_id: &str,
    delay_ms: u64,
    batching: BatchingMode,
    slots: usize,
    stop: &CancellationToken,
) -> String {
    let generation = GenerationArgs {
        min_delay_ms: delay_ms,
        max_delay_ms: delay_ms,
        corpus: None,
        seed: Some(1),
    };
    let config = Config {
        worker_id: Some(worker_id.into()),
        generation: Generation {
            batching,
            slots,
            ..generation.load().unwrap()
        },
        metrics: Default::default(),
        registry: None,
        drain_grace: std::time::Duration::from_secs(30),
        mesh_tls: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(horoscoper_worker::run(
        config,
        listener,
        stop.clone().cancelled_owned(),
    ));
    url
}

/// A Generate stream to the worker at `url`: what goes down, and what
/// comes up (its Ready first, not yet read).
pub async fn connect(url: &str) -> (mpsc::Sender<GenerateRequest>, Streaming<GenerateResponse>) {
    let mut client = WorkerServiceClient::connect(url.to_owned()).await.unwrap();
    let (down, receiver) = mpsc::channel(8);
    let up = client
        .generate(ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    (down, up)
}
