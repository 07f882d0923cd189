//! What every binary does around its service's `run`: start the runtime its
//! flags ask for, set up logs and traces inside it, bind its listeners,
//! turn Ctrl-C or SIGTERM into a drain, serve `/metrics` on a port of its
//! own when asked, report a failure and exit non-zero.

use crate::{
    StartError,
    args::ProcessArgs,
    metrics::SharedRegistry,
    telemetry::{self, Service},
};
use prometheus_client::registry::Registry;
use std::{future::Future, net::SocketAddr, process::ExitCode, sync::Arc};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the binary's `run` gets: its listener and the drain signal.
pub struct Started {
    pub listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    /// Cancelled on Ctrl-C or SIGTERM.
    pub shutdown: CancellationToken,
}

impl Started {
    /// A registry that `register` fills, for the service to serve at
    /// `/metrics`; also served on `--metrics-listen`, if given, until the
    /// drain.
    pub fn metrics(&mut self, register: impl FnOnce(&mut Registry)) -> SharedRegistry {
        let mut registry = Registry::default();
        register(&mut registry);
        let registry = Arc::new(registry);
        if let Some(listener) = self.metrics_listener.take() {
            let shutdown = self.shutdown.clone().cancelled_owned();
            let served = registry.clone();
            tokio::spawn(async move {
                if let Err(error) = crate::metrics::serve(served, listener, shutdown).await {
                    tracing::error!(%error, "the metrics server failed");
                }
            });
        }
        registry
    }
}

/// A binary's flags, and how it starts its service once they are parsed.
pub trait Binary: clap::Parser {
    /// For messages: `worker`, `batcher`, `gateway`, `horoscoper`.
    const NAME: &'static str;
    /// The services whose spans this process exports (the first one owns
    /// the spans of shared code).
    const SERVICES: &'static [Service];

    /// The flags every binary shares.
    fn process(&self) -> &ProcessArgs;

    /// Validates the flags and serves until `started.shutdown` and the drain
    /// it starts are over.
    fn start(self, started: Started) -> impl Future<Output = Result<(), StartError>>;
}

/// The whole `main` of binary `B`: parses its flags, then starts it on the
/// runtime they ask for, with logs, traces and listeners set up; exits
/// non-zero with the error's message when it fails.
pub fn main<B: Binary>() -> ExitCode {
    let binary = B::parse();
    let args = binary.process().clone();
    let result = args.runtime().and_then(|runtime| {
        runtime.block_on(async {
            let _telemetry = telemetry::init(args.log_format, B::SERVICES);
            let listener = bind(args.listen).await?;
            let metrics_listener = match args.metrics_listen {
                Some(addr) => Some(bind(addr).await?),
                None => None,
            };
            let shutdown = CancellationToken::new();
            let signalled = shutdown.clone();
            tokio::spawn(async move {
                crate::signal::signal().await;
                signalled.cancel();
            });
            binary
                .start(Started {
                    listener,
                    metrics_listener,
                    shutdown,
                })
                .await
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}: {error}", B::NAME);
            ExitCode::FAILURE
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}
