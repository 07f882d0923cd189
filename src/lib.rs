//! The whole Horoscoper mesh in one process: `--workers` workers,
//! `--batchers` batchers (every one using every worker) and the gateway,
//! each on its own loopback port, with real gRPC between them. This is what
//! `cargo run --release` starts.
//!
//! - [`Args`]: the flags (each also an env var), gathered from the services'
//!   own flag groups.
//! - [`run`]: starts the services, serves until the shutdown future resolves,
//!   then drains front to back: the gateway's open streams finish, then the
//!   batchers stop, then the workers. `/metrics` on the gateway's port shows
//!   every service's metrics.

use horoscoper_batcher::{Batching, BatchingArgs};
use horoscoper_runtime::{
    StartError,
    args::ProcessArgs,
    process::{Binary, Started},
    telemetry,
    tls::PublicTlsArgs,
};
use horoscoper_worker::{Generation, GenerationArgs};
use prometheus_client::registry::Registry;
use std::{future::Future, sync::Arc};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

/// Flags of the one-process mesh.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "horoscoper",
    version,
    about = "The whole Horoscoper mesh in one process",
    mut_arg("listen", |arg| arg.required(false).default_value("127.0.0.1:8080"))
)]
pub struct Args {
    /// How many workers to start.
    #[arg(long, env = "HOROSCOPER_WORKERS", default_value_t = 2)]
    pub workers: usize,
    /// How many batchers to start; the gateway spreads requests over them.
    #[arg(long, env = "HOROSCOPER_BATCHERS", default_value_t = 1)]
    pub batchers: usize,
    #[command(flatten)]
    pub batching: BatchingArgs,
    #[command(flatten)]
    pub generation: GenerationArgs,
    #[command(flatten)]
    pub access: horoscoper_gateway::AccessArgs,
    #[command(flatten)]
    pub tls: PublicTlsArgs,
    /// Where the gateway listens (the other services take loopback ports),
    /// and how the process runs.
    #[command(flatten)]
    pub process: ProcessArgs,
}

/// Most workers one process starts.
pub const MAX_WORKERS: usize = 256;
/// Most batchers one process starts.
pub const MAX_BATCHERS: usize = 16;

/// The mesh's configuration, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub workers: usize,
    pub batchers: usize,
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
    pub fn into_config(self) -> Result<Config, StartError> {
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return Err(StartError::Config(format!(
                "--workers is {}; it must be between 1 and {MAX_WORKERS}",
                self.workers
            )));
        }
        if !(1..=MAX_BATCHERS).contains(&self.batchers) {
            return Err(StartError::Config(format!(
                "--batchers is {}; it must be between 1 and {MAX_BATCHERS}",
                self.batchers
            )));
        }
        Ok(Config {
            workers: self.workers,
            batchers: self.batchers,
            batching: self.batching.validate()?,
            // One flag for the whole mesh: the workers batch as the batchers do.
            // A worker has as many slots as a batch holds.
            generation: Generation {
                batching: self.batching.batching,
                slots: self.batching.batch_size,
                ..self.generation.load()?
            },
            drain_grace: self.process.drain_grace(),
            access: self.access.validate()?,
            tls: self.tls.load()?,
        })
    }
}

impl Binary for Args {
    const NAME: &'static str = "horoscoper";
    const SERVICES: &'static [telemetry::Service] =
        &[telemetry::GATEWAY, telemetry::BATCHER, telemetry::WORKER];

    fn process(&self) -> &ProcessArgs {
        &self.process
    }

    /// `/metrics` shows on the gateway's port only (and on `--metrics-listen`).
    async fn start(self, mut started: Started) -> Result<(), StartError> {
        let config = self.into_config()?;
        let metrics = Metrics::default();
        let registry = started.metrics(|registry| metrics.register(registry));
        run_with(
            config,
            metrics,
            registry,
            started.listener,
            started.shutdown.cancelled_owned(),
        )
        .await
    }
}

/// Every service's metrics, in one registry.
#[derive(Clone, Debug, Default)]
struct Metrics {
    gateway: horoscoper_gateway::Metrics,
    batcher: horoscoper_batcher::Metrics,
    worker: horoscoper_worker::Metrics,
}

impl Metrics {
    fn register(&self, registry: &mut Registry) {
        self.gateway.register(registry);
        self.batcher.register(registry);
        self.worker.register(registry);
    }
}

/// Serves the mesh with its gateway on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    run_with(config, metrics, Arc::new(registry), listener, shutdown).await
}

async fn run_with(
    config: Config,
    metrics: Metrics,
    registry: horoscoper_runtime::metrics::SharedRegistry,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let workers_stop = CancellationToken::new();
    let mut workers = JoinSet::new();
    let mut worker_urls = Vec::with_capacity(config.workers);
    for index in 0..config.workers {
        let listener = loopback().await?;
        let addr = listener.local_addr().map_err(StartError::Listen)?;
        worker_urls.push(format!("http://{addr}").parse().expect("a loopback URL"));
        let mut generation = config.generation.clone();
        generation.seed = generation.seed.map(|seed| seed.wrapping_add(index as u64));
        let worker = horoscoper_worker::Config {
            worker_id: Some(format!("worker-{}", index + 1)),
            generation,
            metrics: metrics.worker.clone(),
            registry: None,
            drain_grace: config.drain_grace,
            mesh_tls: None,
        };
        workers.spawn(horoscoper_worker::run(
            worker,
            listener,
            workers_stop.clone().cancelled_owned(),
        ));
    }

    let batchers_stop = CancellationToken::new();
    let mut batchers = JoinSet::new();
    let mut batcher_addrs = Vec::with_capacity(config.batchers);
    for index in 0..config.batchers {
        let listener = loopback().await?;
        batcher_addrs.push(listener.local_addr().map_err(StartError::Listen)?);
        let mut batcher = horoscoper_batcher::Config::new(
            worker_urls.clone(),
            config.batching,
            metrics.batcher.clone(),
        );
        batcher.batcher_id = Some(format!("batcher-{}", index + 1));
        batcher.drain_grace = config.drain_grace;
        batchers.spawn(horoscoper_batcher::run(
            batcher,
            listener,
            batchers_stop.clone().cancelled_owned(),
        ));
    }
    let gateway_config = horoscoper_gateway::Config {
        batchers: batcher_addrs
            .iter()
            .map(|addr| format!("http://{addr}").parse().expect("a loopback URL"))
            .collect(),
        resolve_interval: std::time::Duration::from_secs(5),
        resolver: Default::default(),
        metrics: metrics.gateway,
        registry: Some(registry),
        drain_grace: config.drain_grace,
        access: config.access,
        tls: config.tls,
        mesh_tls: None,
    };
    let gateway = horoscoper_gateway::run(gateway_config, listener, shutdown);

    // Until the gateway is done, any other service stopping is a failure.
    let result = tokio::select! {
        result = gateway => result,
        Some(joined) = batchers.join_next() => Err(joined_error(joined.ok(), "batcher")),
        Some(joined) = workers.join_next() => Err(joined_error(joined.ok(), "worker")),
    };

    batchers_stop.cancel();
    while let Some(joined) = batchers.join_next().await {
        if let Ok(Err(error)) = joined {
            tracing::error!(%error, "batcher failed while draining");
        }
    }
    workers_stop.cancel();
    while let Some(joined) = workers.join_next().await {
        if let Ok(Err(error)) = joined {
            tracing::error!(%error, "worker failed while draining");
        }
    }
    result
}

fn joined_error(joined: Option<Result<(), StartError>>, service: &'static str) -> StartError {
    match joined {
        Some(Err(error)) => error,
        _ => StartError::Stopped(service),
    }
}

async fn loopback() -> Result<TcpListener, StartError> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}
