//! Horoscoper's worker: the stand-in for a model. It answers every prompt with
//! a deterministic horoscope, one word per generation step, every prompt of a
//! batch in lockstep, with delays like a real model's.
//!
//! - [`corpus`]: the horoscopes (the built-in set, or a CSV in the original's
//!   format) and the twelve signs.
//! - [`choice`]: which horoscope a prefix gets (blake3, as DESIGN.md states).
//! - [`schedule`]: how a batch's total time is split into per-step delays.
//! - [`batch`]: one batch's requests and the tokens each step emits.
//! - [`service`]: the `WorkerService.Generate` stream that runs batches.
//! - [`metrics`]: the worker's Prometheus metrics.
//! - [`config`]: command-line flags and the validated configuration.
//! - [`error`]: the crate's error type and its gRPC status.
//!
//! [`run`] serves the worker on a listener until the shutdown future resolves.

pub mod batch;
pub mod choice;
pub mod config;
pub mod corpus;
pub mod error;
pub mod metrics;
pub mod schedule;
pub mod service;

pub use config::{Args, Config, Generation, GenerationArgs};
pub use error::Error;
pub use metrics::Metrics;

use horoscoper_proto::{
    mesh::{self, worker_service_server::WorkerServiceServer},
    net, serving,
    shutdown::Drain,
};
use std::{future::Future, net::SocketAddr};
use tokio::net::TcpListener;

/// Serves the worker on `listener` until `shutdown` resolves, then drains:
/// NOT_SERVING, no new stream, the batches under way finish (cut with
/// UNAVAILABLE once `drain_grace` is over), the streams end, it returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let local_addr = listener.local_addr().map_err(Error::Listen)?;
    let worker_id = config
        .worker_id
        .clone()
        .unwrap_or_else(|| default_id(local_addr));
    let drain = Drain::start(shutdown, config.drain_grace);
    let worker = service::Worker::new(
        worker_id.clone(),
        config.generation,
        config.metrics,
        drain.clone(),
    );
    let health = serving::health::<WorkerServiceServer<service::Worker>>(&drain).await;
    let reflection =
        serving::reflection(&[mesh::FILE_DESCRIPTOR_SET]).map_err(Error::Reflection)?;

    tracing::info!(%local_addr, %worker_id, "worker listening");
    // A batcher holds one stream per worker address; a few batchers at most.
    let mut server = net::mesh_server(WORKER_MAX_STREAMS);
    if let Some(tls) = &config.mesh_tls {
        server = server.tls_config(tls.server()).map_err(Error::Serve)?;
    }
    let served = server
        .add_service(health)
        .add_service(reflection)
        .add_service(
            WorkerServiceServer::new(worker)
                .max_decoding_message_size(net::MAX_BATCH_BYTES)
                .max_encoding_message_size(net::MAX_STEP_BYTES),
        )
        .serve_with_incoming_shutdown(net::incoming(listener), drain.settled_owned());
    if let Some(served) = drain.serve(served).await {
        served.map_err(Error::Serve)?;
    }
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
