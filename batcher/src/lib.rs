//! Horoscoper's batcher: requests queue in arrival order and leave in static
//! batches, each to a free worker, or in continuous batching join a worker's
//! free slots one by one; their tokens stream back per request.
//!
//! - `queue`: the queue and the batching decisions (synchronous).
//! - `dispatcher`: the task that owns the queue and the free workers.
//! - `calls`: which shared workers are sent the demand (synchronous).
//! - `slots`: continuous batching: each worker's requests and room (synchronous).
//! - `discovery`: worker names resolved periodically, a connection per address.
//! - `connection`: one task per worker: its Generate stream.
//! - `running`: the table of a running batch: which request gets which
//!   token, what was delivered, what to run again (synchronous).
//! - `service`: `BatcherService.Session`.
//! - `admission`: which request joins the queue, under what limits.
//! - `session`: one gateway's session: its requests up, their tokens down.
//! - `request`: a request as the batcher holds it.
//! - `metrics`: the batcher's Prometheus metrics.
//! - `config`: command-line flags and the validated configuration.
//! - `error`: the crate's error type and its gRPC status.
//! - [`fuzzing`] (feature `fuzzing`): a session driven from memory.
//!
//! [`run`] serves the batcher on a listener until the shutdown future resolves.

mod admission;
mod calls;
mod config;
mod connection;
mod discovery;
mod dispatcher;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod metrics;
mod queue;
mod request;
mod running;
mod service;
mod session;
mod slots;

pub use config::{Args, Batching, BatchingArgs, Config};
pub use error::Error;
pub use horoscoper_runtime::resolve::{Lookup, Resolver};
pub use metrics::{Meters, Metrics};

use horoscoper_proto::{
    limits,
    mesh::{self, batcher_service_server::BatcherServiceServer},
};
use horoscoper_runtime::{StartError, drain::Drain, net, serve::Port, transport::Listener};
use std::future::Future;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Streams one connection may have open: a gateway's session, health
/// watches, reflection. Requests do not take streams of their own: they
/// travel on their session.
const MAX_STREAMS: u32 = 256;

/// Serves the batcher on `listener` until `shutdown` resolves; then drains:
/// NOT_SERVING, new requests refused, the open ones finish (or end with
/// UNAVAILABLE once `drain_grace` is over), the worker streams close, it
/// returns.
pub async fn run(
    config: Config,
    listener: impl Into<Listener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let listener = listener.into();
    let local_addr = listener.local_addr().map_err(StartError::Listen)?;
    let batcher_id: std::sync::Arc<str> = config
        .batcher_id
        .clone()
        .unwrap_or_else(|| net::service_id(local_addr))
        .into();
    let stop = CancellationToken::new();
    let dispatcher = dispatcher::Dispatcher::spawn(
        config.batching.policy,
        config.metrics.of(&batcher_id),
        stop.clone(),
    );
    let connections = TaskTracker::new();
    let discovery = discovery::Discovery {
        urls: config.workers.clone(),
        interval: config.resolve_interval,
        resolver: config.resolver.clone(),
        tls: config.mesh_tls.clone(),
        dialer: listener.dialer(),
        dispatcher: dispatcher.clone(),
        stop: stop.clone(),
        connections: connections.clone(),
    };
    tracing::info!(%batcher_id, workers = config.workers.len(), "batcher starting");
    tokio::spawn(discovery.run());

    // Past the grace period, `stop` ends what is still queued or running
    // with UNAVAILABLE, which ends the streams.
    let drain = Drain::start(shutdown, config.drain_grace);
    tokio::spawn({
        let (cut, stop) = (drain.cut().clone(), stop.clone());
        async move {
            tokio::select! {
                () = cut.cancelled() => stop.cancel(),
                () = stop.cancelled() => {}
            }
        }
    });
    let admission = admission::Admission::new(
        dispatcher,
        config.batching,
        drain.clone(),
        batcher_id.clone(),
    );
    let api = BatcherServiceServer::new(service::Batcher::new(admission))
        .max_decoding_message_size(limits::MAX_REQUEST_BYTES)
        .max_encoding_message_size(limits::MAX_STEP_BYTES);
    let served = Port::new("batcher", api, &[mesh::FILE_DESCRIPTOR_SET])
        .metrics(config.registry)
        .tls(config.mesh_tls.as_ref().map(|tls| tls.server()))
        .serve(net::mesh_server(MAX_STREAMS), listener, &drain)
        .await;
    stop.cancel();
    // Each worker connection ends its stream and waits for the worker to end
    // its side, so that no worker reads a connection broken by this exit.
    connections.close();
    if tokio::time::timeout(connection::GOODBYE, connections.wait())
        .await
        .is_err()
    {
        tracing::debug!("a worker did not end its stream in time");
    }
    served?;
    tracing::info!("batcher stopped");
    Ok(())
}
