//! The flags every binary shares, flattened into each one's own: how it
//! runs and serves ([`ProcessArgs`]), and for the standalone services, mutual
//! TLS between them ([`ServiceArgs`]). Each binary sets its own default
//! `--listen` (`#[command(mut_arg("listen", ...))]`).

use crate::{StartError, tls::MeshTlsArgs};
use std::{net::SocketAddr, num::NonZeroUsize, time::Duration};

/// How a binary runs and serves.
#[derive(Clone, Debug, clap::Args)]
pub struct ProcessArgs {
    /// Address to serve on: the gRPC API, health, reflection, and Prometheus
    /// metrics at /metrics.
    #[arg(long, env = "HOROSCOPER_LISTEN")]
    pub listen: SocketAddr,
    /// Also serve /metrics on a port of its own (the main port serves them
    /// anyway): for a scraper that must not reach the API.
    #[arg(long, env = "HOROSCOPER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Threads that serve: one per core by default. With 1, everything runs
    /// on one thread and no task moves between threads: the cheapest way to
    /// serve when a container gets one core, or when the services share a
    /// few cores (`just bench` runs the batcher and workers so).
    #[arg(long, env = "HOROSCOPER_THREADS")]
    pub threads: Option<NonZeroUsize>,
    /// Log format: readable `text`, or `json` lines for machines. `RUST_LOG`
    /// filters either.
    #[arg(long, env = "HOROSCOPER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// After SIGTERM or Ctrl-C, how long open streams may go on before they
    /// are cut with UNAVAILABLE, in milliseconds. Keep it below the
    /// orchestrator's kill timeout (Kubernetes: 30 s).
    #[arg(long, env = "HOROSCOPER_DRAIN_GRACE_MS", default_value_t = 25_000)]
    pub drain_grace_ms: u64,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable text (colored on a terminal).
    #[default]
    Text,
    /// One JSON object per line, with the fields of every enclosing span.
    Json,
}

/// How requests share a worker (`--batching`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BatchingMode {
    /// A batch is formed, runs to its last token, and only then does the
    /// worker take another.
    #[default]
    Static,
    /// Requests join and leave the worker's steps one by one: a slot freed
    /// is reused the next step.
    Continuous,
}

impl BatchingMode {
    pub fn is_continuous(self) -> bool {
        self == BatchingMode::Continuous
    }
}

impl std::fmt::Display for BatchingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BatchingMode::Static => "static",
            BatchingMode::Continuous => "continuous",
        })
    }
}

impl ProcessArgs {
    /// How long open streams may go on after the drain begins.
    pub fn drain_grace(&self) -> Duration {
        Duration::from_millis(self.drain_grace_ms)
    }

    /// The runtime these flags ask for.
    pub fn runtime(&self) -> Result<tokio::runtime::Runtime, StartError> {
        let mut builder = match self.threads.map(NonZeroUsize::get) {
            Some(1) => tokio::runtime::Builder::new_current_thread(),
            Some(threads) => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(threads);
                builder
            }
            None => tokio::runtime::Builder::new_multi_thread(),
        };
        builder.enable_all().build().map_err(StartError::Runtime)
    }
}

/// The flags of a standalone service (gateway, batcher, worker).
#[derive(Clone, Debug, clap::Args)]
pub struct ServiceArgs {
    #[command(flatten)]
    pub process: ProcessArgs,
    #[command(flatten)]
    pub mesh_tls: MeshTlsArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use tokio::runtime::RuntimeFlavor;

    #[derive(Parser)]
    #[command(mut_arg("listen", |arg| arg.required(false).default_value("127.0.0.1:7")))]
    struct Flags {
        #[command(flatten)]
        service: ServiceArgs,
    }

    fn parse(args: &[&str]) -> Result<Flags, clap::Error> {
        Flags::try_parse_from([&["binary"], args].concat())
    }

    fn flavor(args: &[&str]) -> Result<RuntimeFlavor, clap::Error> {
        let runtime = parse(args)?.service.process.runtime().unwrap();
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

    #[test]
    fn each_binary_gives_its_own_listen_default_and_metrics_port_is_opt_in() {
        let flags = parse(&[]).unwrap().service.process;
        assert_eq!(flags.listen, "127.0.0.1:7".parse().unwrap());
        assert_eq!(flags.metrics_listen, None);
        assert_eq!(flags.drain_grace(), Duration::from_secs(25));
        let flags = parse(&["--listen", "0.0.0.0:9", "--metrics-listen", "0.0.0.0:10"])
            .unwrap()
            .service
            .process;
        assert_eq!(flags.listen.port(), 9);
        assert_eq!(flags.metrics_listen.unwrap().port(), 10);
    }
}
