//! What every service binary does around its library's `run`: set up logs and
//! traces inside the runtime, bind its listeners, turn Ctrl-C or SIGTERM into
//! a drain, serve `/metrics`, report a failure and exit non-zero.

use crate::{
    metrics::SharedRegistry,
    telemetry::{self, LogFormat, Service},
};
use prometheus_client::registry::Registry;
use std::{
    fmt::Display, future::Future, io, net::SocketAddr, num::NonZeroUsize, process::ExitCode,
    sync::Arc,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The flags every binary takes for its runtime.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct RuntimeArgs {
    /// Threads that serve: one per core by default. With 1, everything runs
    /// on one thread and no task moves between threads: the cheapest way to
    /// serve when a container gets one core, or when the services share a
    /// few cores (`just bench` runs each so).
    #[arg(long, env = "HOROSCOPER_THREADS")]
    pub threads: Option<NonZeroUsize>,
}

impl RuntimeArgs {
    /// The runtime these flags ask for.
    pub fn runtime(&self) -> io::Result<tokio::runtime::Runtime> {
        let mut builder = match self.threads.map(NonZeroUsize::get) {
            Some(1) => tokio::runtime::Builder::new_current_thread(),
            Some(threads) => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(threads);
                builder
            }
            None => tokio::runtime::Builder::new_multi_thread(),
        };
        builder.enable_all().build()
    }
}

/// What a binary is and where it listens.
pub struct Process {
    /// For messages: `worker`, `batcher`, `gateway`, `horoscoper`.
    pub name: &'static str,
    /// The services whose spans this process exports (the first one owns
    /// spans of shared code).
    pub services: &'static [Service],
    pub log_format: LogFormat,
    pub runtime: RuntimeArgs,
    pub listen: SocketAddr,
    /// Where to serve `/metrics` on a port of its own, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
}

/// What the binary's `run` gets: its listener and the drain signal.
pub struct Started {
    pub listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    /// Cancelled on Ctrl-C or SIGTERM.
    pub shutdown: CancellationToken,
}

impl Started {
    /// A registry that `register` fills, served at `/metrics` on the metrics
    /// port until the drain.
    pub fn metrics(&mut self, register: impl FnOnce(&mut Registry)) -> SharedRegistry {
        let mut registry = Registry::default();
        register(&mut registry);
        let registry = Arc::new(registry);
        self.serve_metrics(registry.clone());
        registry
    }

    /// Serves `/metrics` from `registry` on the metrics port, if there is one,
    /// until the drain.
    fn serve_metrics(&mut self, registry: SharedRegistry) {
        if let Some(listener) = self.metrics_listener.take() {
            let shutdown = self.shutdown.clone().cancelled_owned();
            tokio::spawn(async move {
                if let Err(error) = crate::metrics::serve(registry, listener, shutdown).await {
                    tracing::error!(%error, "the metrics server failed");
                }
            });
        }
    }
}

/// Runs `serve` on the runtime asked for, with logs, traces and listeners
/// set up; exits non-zero with the error's message when it fails.
pub fn main<F, Fut, E>(process: Process, serve: F) -> ExitCode
where
    F: FnOnce(Started) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let runtime = match process.runtime.runtime() {
        Ok(runtime) => runtime,
        Err(error) => return fail(process.name, format!("cannot start the runtime: {error}")),
    };
    runtime.block_on(async {
        let _telemetry = telemetry::init(process.log_format, process.services);
        let listener = match bind(process.listen).await {
            Ok(listener) => listener,
            Err(error) => return fail(process.name, error),
        };
        let metrics_listener = match process.metrics_listen {
            Some(addr) => match bind(addr).await {
                Ok(listener) => Some(listener),
                Err(error) => return fail(process.name, error),
            },
            None => None,
        };
        let shutdown = CancellationToken::new();
        let signalled = shutdown.clone();
        tokio::spawn(async move {
            crate::shutdown::signal().await;
            signalled.cancel();
        });
        let started = Started {
            listener,
            metrics_listener,
            shutdown,
        };
        match serve(started).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(process.name, error),
        }
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| format!("cannot listen on {addr}: {error}"))
}

fn fail(name: &str, error: impl Display) -> ExitCode {
    eprintln!("{name}: {error}");
    ExitCode::FAILURE
}

/// An error with its chain of sources, `outer: inner: innermost`: tonic's
/// transport errors say only "transport error" on their own.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use tokio::runtime::RuntimeFlavor;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        runtime: RuntimeArgs,
    }

    fn flavor(args: &[&str]) -> Result<RuntimeFlavor, clap::Error> {
        let flags = Flags::try_parse_from([&["binary"], args].concat())?;
        let runtime = flags.runtime.runtime().unwrap();
        Ok(runtime.handle().runtime_flavor())
    }

    #[test]
    fn one_thread_is_a_current_thread_runtime() {
        assert_eq!(
            flavor(&["--threads", "1"]).unwrap(),
            RuntimeFlavor::CurrentThread
        );
        assert_eq!(
            flavor(&["--threads", "3"]).unwrap(),
            RuntimeFlavor::MultiThread
        );
        assert_eq!(flavor(&[]).unwrap(), RuntimeFlavor::MultiThread);
        let zero = flavor(&["--threads", "0"]).unwrap_err().to_string();
        assert!(zero.contains("--threads"), "{zero}");
    }
}
