//! Horoscoper's worker: the stand-in for a model. It answers every prompt with
//! a deterministic horoscope, one word per generation step, every prompt of a
//! batch in lockstep, with delays like a real model's.
//!
//! - `corpus`: the horoscopes (the built-in set, or a CSV in the original's
//!   format) and the twelve signs.
//! - `choice`: which horoscope a prefix gets (blake3; the rule is in the README).
//! - `schedule`: how a batch's total time is split into per-step delays.
//! - `batch`: one batch's requests and the tokens each step emits.
//! - `service`: the `WorkerService.Generate` stream that runs batches.
//! - `metrics`: the worker's Prometheus metrics.
//! - `config`: command-line flags and the validated configuration.
//! - `error`: the crate's error type and its gRPC status.
//!
//! [`run`] serves the worker on a listener until the shutdown future resolves.

mod batch;
mod choice;
mod config;
mod corpus;
mod error;
mod metrics;
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
use horoscoper_runtime::{StartError, drain::Drain, net, serve::Port};
use std::{future::Future, net::SocketAddr};
use tokio::net::TcpListener;

/// Serves the worker on `listener` until `shutdown` resolves, then drains:
/// NOT_SERVING, no new stream, the batches under way finish (cut with
/// UNAVAILABLE once `drain_grace` is over), the streams end, it returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let local_addr = listener.local_addr().map_err(StartError::Listen)?;
    let worker_id = config
        .worker_id
        .clone()
        .unwrap_or_else(|| default_id(local_addr));
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

/// The id a worker shows when none is given: its listen address, or, when
/// it listens on every interface (a container, a pod), its host name and
/// port, so that replicas behind one name tell apart.
fn default_id(local_addr: SocketAddr) -> String {
    if !local_addr.ip().is_unspecified() {
        return local_addr.to_string();
    }
    match std::fs::read_to_string("/proc/sys/kernel/hostname") {
        Ok(name) if !name.trim().is_empty() => format!("{}:{}", name.trim(), local_addr.port()),
        _ => local_addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_on_every_interface_is_named_after_its_host() {
        assert_eq!(
            default_id("127.0.0.1:50051".parse().unwrap()),
            "127.0.0.1:50051"
        );
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(
            default_id("0.0.0.0:50051".parse().unwrap()),
            format!("{}:50051", host.trim())
        );
        assert_eq!(
            default_id("[::]:7".parse().unwrap()),
            format!("{}:7", host.trim())
        );
    }
}
