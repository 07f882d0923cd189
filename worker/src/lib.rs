//! Horoscoper's worker: the stand-in for a model. It answers every prompt with
//! a deterministic horoscope, one word per generation step, every prompt of a
//! batch in lockstep, with delays like a real model's.
//!
//! - `corpus`: the horoscopes (the built-in set, or a CSV in the original's
//!   format) and the twelve signs.
//! - `choice`: which horoscope a prefix gets (blake3; the rule is in the README).
//! - `schedule`: how a batch's total time is split into per-step delays.
//! - `batch`: one batch's requests and the tokens each step emits.
//! - `engine`: continuous batching: requests join and leave at every step.
//! - `continuous`: the engine's task, shared by every batcher stream.
//! - `offers`: the one place for a batch, offered to one batcher at a time.
//! - `service`: the `WorkerService.Generate` stream that runs batches.
//! - `metrics`: the worker's Prometheus metrics.
//! - `config`: command-line flags and the validated configuration.
//! - `error`: the crate's error type and its gRPC status.
//!
//! [`run`] serves the worker on a listener until the shutdown future resolves.

mod batch;
mod choice;
mod config;
mod continuous;
mod corpus;
mod engine;
mod error;
mod metrics;
mod offers;
mod schedule;
mod service;

pub use batch::{Lockstep, token_count};
pub use choice::choose;
pub use config::{Args, Config, Generation, GenerationArgs};
pub use corpus::{Corpus, CorpusError, Sign};
pub use error::Error;
pub use metrics::Metrics;

use horoscoper_proto::{
    limits,
    mesh::{self, worker_service_server::WorkerServiceServer},
};
use horoscoper_runtime::{StartError, drain::Drain, net, serve::Port, transport::Listener};
use std::future::Future;

/// Serves the worker on `listener` until `shutdown` resolves, then drains:
/// NOT_SERVING, no new stream, the batches under way finish (cut with
/// UNAVAILABLE once `drain_grace` is over), the streams end, it returns.
pub async fn run(
    config: Config,
    listener: impl Into<Listener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let listener = listener.into();
    let local_addr = listener.local_addr().map_err(StartError::Listen)?;
    let worker_id = config
        .worker_id
        .clone()
        .unwrap_or_else(|| net::service_id(local_addr));
    tracing::info!(%worker_id, "worker starting");
    let drain = Drain::start(shutdown, config.drain_grace);
    let worker = service::Worker::new(
        worker_id.clone(),
        config.generation,
        config.metrics,
        drain.clone(),
    );
    let api = WorkerServiceServer::new(worker)
        .max_decoding_message_size(limits::MAX_BATCH_BYTES)
        .max_encoding_message_size(limits::MAX_STEP_BYTES);
    Port::new("worker", api, &[mesh::FILE_DESCRIPTOR_SET])
        .metrics(config.registry)
        .tls(config.mesh_tls.map(|tls| tls.server()))
        .serve(net::mesh_server(WORKER_MAX_STREAMS), listener, &drain)
        .await?;
    tracing::info!(%worker_id, "worker stopped");
    Ok(())
}

/// Concurrent streams per connection to a worker: each batcher opens one
/// Generate stream per worker address.
const WORKER_MAX_STREAMS: u32 = 16;
