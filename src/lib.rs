//! The whole Horoscoper mesh in one process: `--workers` workers, a batcher
//! and the gateway, each on its own loopback port, with real gRPC between
//! them. This is what `cargo run --release` starts.
//!
//! - [`Args`]: the flags (each also an env var), gathered from the services'
//!   own flag groups.
//! - [`run`]: starts the services, serves until the shutdown future resolves,
//!   then drains front to back: the gateway's open streams finish, then the
//!   batcher stops, then the workers. `/metrics` on the gateway's port shows
//!   every service's metrics.

use horoscoper_batcher::{Batching, BatchingArgs};
use horoscoper_proto::{process::RuntimeArgs, shutdown::DrainArgs, telemetry::LogArgs};
use horoscoper_worker::{Generation, GenerationArgs};
use prometheus_client::registry::Registry;
use std::{future::Future, net::SocketAddr, sync::Arc};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

/// Flags of the one-process mesh.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "horoscoper",
    version,
    about = "The whole Horoscoper mesh in one process"
)]
pub struct Args {
    /// Address of the gateway: gRPC, gRPC-Web, reflection and health.
    #[arg(long, env = "HOROSCOPER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// How many workers to start.
    #[arg(long, env = "HOROSCOPER_WORKERS", default_value_t = 2)]
    pub workers: usize,
    #[command(flatten)]
    pub batching: BatchingArgs,
    #[command(flatten)]
    pub generation: GenerationArgs,
    #[command(flatten)]
    pub access: horoscoper_gateway::AccessArgs,
    #[command(flatten)]
    pub tls: horoscoper_proto::tls::PublicTlsArgs,
    #[command(flatten)]
    pub drain: DrainArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// The mesh's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--workers is {0}; it must be between 1 and {MAX_WORKERS}")]
    Workers(usize),
    #[error(transparent)]
    Worker(#[from] horoscoper_worker::Error),
    #[error(transparent)]
    Batcher(#[from] horoscoper_batcher::Error),
    #[error(transparent)]
    Gateway(#[from] horoscoper_gateway::Error),
    #[error("cannot listen on a loopback port: {0}")]
    Bind(#[source] std::io::Error),
    #[error("the {0} stopped unexpectedly")]
    Stopped(&'static str),
    #[error("{0}")]
    Tls(String),
}

/// Most workers one process starts.
pub const MAX_WORKERS: usize = 256;

/// The mesh's configuration, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub workers: usize,
    pub batching: Batching,
    pub generation: Generation,
    /// Each service's drain grace period.
    pub drain_grace: std::time::Duration,
    /// Who may call the gateway.
    pub access: horoscoper_gateway::Access,
    /// TLS on the gateway's port.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
}

impl Args {
    /// Validates the flags and loads the corpus.
    pub fn into_config(self) -> Result<Config, Error> {
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return Err(Error::Workers(self.workers));
        }
        Ok(Config {
            workers: self.workers,
            batching: self.batching.validate()?,
            generation: self.generation.load()?,
            drain_grace: self.drain.grace(),
            access: self.access.validate()?,
            tls: self.tls.load().map_err(Error::Tls)?,
        })
    }
}

/// Serves the mesh with its gateway on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    // One registry for every service, shown at /metrics on the gateway's port.
    let mut registry = Registry::default();
    let gateway_metrics = horoscoper_gateway::Metrics::default();
    let batcher_metrics = horoscoper_batcher::Metrics::default();
    let worker_metrics = horoscoper_worker::Metrics::default();
    gateway_metrics.register(&mut registry);
    batcher_metrics.register(&mut registry);
    worker_metrics.register(&mut registry);

    let workers_stop = CancellationToken::new();
    let mut workers = JoinSet::new();
    let mut worker_urls = Vec::with_capacity(config.workers);
    for index in 0..config.workers {
        let listener = loopback().await?;
        let addr = listener.local_addr().map_err(Error::Bind)?;
        worker_urls.push(format!("http://{addr}").parse().expect("a loopback URL"));
        let mut generation = config.generation.clone();
        generation.seed = generation.seed.map(|seed| seed.wrapping_add(index as u64));
        let worker = horoscoper_worker::Config {
            worker_id: Some(format!("worker-{}", index + 1)),
            generation,
            metrics: worker_metrics.clone(),
            drain_grace: config.drain_grace,
            mesh_tls: None,
        };
        workers.spawn(horoscoper_worker::run(
            worker,
            listener,
            workers_stop.clone().cancelled_owned(),
        ));
    }

    let batcher_stop = CancellationToken::new();
    let batcher_listener = loopback().await?;
    let batcher_url = format!(
        "http://{}",
        batcher_listener.local_addr().map_err(Error::Bind)?
    );
    let mut batcher_config =
        horoscoper_batcher::Config::new(worker_urls, config.batching, batcher_metrics);
    batcher_config.drain_grace = config.drain_grace;
    let mut batcher = tokio::spawn(horoscoper_batcher::run(
        batcher_config,
        batcher_listener,
        batcher_stop.clone().cancelled_owned(),
    ));

    let gateway_config = horoscoper_gateway::Config {
        batcher: batcher_url.parse().expect("a loopback URL"),
        metrics: gateway_metrics,
        registry: Some(Arc::new(registry)),
        drain_grace: config.drain_grace,
        access: config.access,
        tls: config.tls,
        mesh_tls: None,
    };
    let gateway = horoscoper_gateway::run(gateway_config, listener, shutdown);

    // Until the gateway is done, any other service stopping is a failure.
    let mut batcher_done = false;
    let result = tokio::select! {
        result = gateway => result.map_err(Error::from),
        joined = &mut batcher => {
            batcher_done = true;
            Err(joined_error(joined.ok(), "batcher"))
        }
        Some(joined) = workers.join_next() => Err(joined_error(joined.ok(), "worker")),
    };

    batcher_stop.cancel();
    if !batcher_done && let Ok(Err(error)) = batcher.await {
        tracing::error!(%error, "batcher failed while draining");
    }
    workers_stop.cancel();
    while let Some(joined) = workers.join_next().await {
        if let Ok(Err(error)) = joined {
            tracing::error!(%error, "worker failed while draining");
        }
    }
    result
}

fn joined_error<E: Into<Error>>(joined: Option<Result<(), E>>, service: &'static str) -> Error {
    match joined {
        Some(Err(error)) => error.into(),
        _ => Error::Stopped(service),
    }
}

async fn loopback() -> Result<TcpListener, Error> {
    TcpListener::bind("127.0.0.1:0").await.map_err(Error::Bind)
}
