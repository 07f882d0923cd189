//! The batcher's command-line flags (each also an environment variable) and
//! the validated configuration [`crate::run`] takes.

use crate::{Metrics, Resolver, queue::Policy};
use horoscoper_runtime::{
    StartError,
    args::{BatchingMode, ProcessArgs, ServiceArgs},
    metrics::SharedRegistry,
    process::{Binary, Started},
    telemetry,
    tls::MeshTls,
};
use std::time::Duration;
use tonic::transport::Uri;

/// Flags of the standalone `batcher` binary.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "batcher",
    version,
    about = "Horoscoper batcher: static batches fanned out to workers",
    mut_arg("listen", |arg| arg.required(false).default_value("127.0.0.1:50052"))
)]
pub struct Args {
    /// A worker's URL, e.g. http://127.0.0.1:50051; repeat the flag (or
    /// separate with commas in the env var) for several.
    #[arg(
        long = "worker",
        env = "HOROSCOPER_WORKER_URLS",
        value_delimiter = ',',
        required = true
    )]
    pub workers: Vec<String>,
    /// How often worker names are resolved again, in milliseconds: new
    /// addresses join, vanished ones are drained.
    #[arg(long, env = "HOROSCOPER_RESOLVE_INTERVAL_MS", default_value_t = 5000)]
    pub resolve_interval_ms: u64,
    /// Id in the batcher's load reports, traces and metrics (default: the
    /// listen address, or the host name and port when listening on 0.0.0.0
    /// or [::]).
    #[arg(long, env = "HOROSCOPER_BATCHER_ID")]
    pub batcher_id: Option<String>,
    #[command(flatten)]
    pub batching: BatchingArgs,
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// How the batcher batches: shared by the `batcher` binary and the
/// one-process mesh.
#[derive(Clone, Debug, clap::Args)]
pub struct BatchingArgs {
    /// Most requests in one batch.
    #[arg(long, env = "HOROSCOPER_BATCH_SIZE", default_value_t = 4)]
    pub batch_size: usize,
    /// How long the oldest queued request waits for its batch to fill, in
    /// milliseconds.
    #[arg(long, env = "HOROSCOPER_BATCH_WINDOW_MS", default_value_t = 250)]
    pub batch_window_ms: u64,
    /// How long a request may wait for a free worker before it fails with
    /// DEADLINE_EXCEEDED, in milliseconds (the client's deadline, if shorter,
    /// wins).
    #[arg(long, env = "HOROSCOPER_REQUEST_TTL_MS", default_value_t = 7000)]
    pub request_ttl_ms: u64,
    /// Most requests the batcher holds at once, queued or running; past it a
    /// request fails at once with RESOURCE_EXHAUSTED rather than waiting out
    /// its time to live.
    #[arg(long, env = "HOROSCOPER_MAX_REQUESTS", default_value_t = 16384)]
    pub max_requests: usize,
    /// Least time between two reports of the queue's length to a gateway,
    /// in milliseconds (a drain is reported at once). Gateways choose a
    /// batcher by these reports; the simulation measures how stale they may
    /// grow (`just simulate`).
    #[arg(long, env = "HOROSCOPER_LOAD_INTERVAL_MS", default_value_t = 5)]
    pub load_interval_ms: u64,
    /// How requests share a worker: `static` batches (formed by size and
    /// window, each run to its end before the worker takes another) or
    /// `continuous` batching (up to --batch-size requests on a worker at
    /// once, each joining as a slot frees). The workers must say the same.
    #[arg(long, env = "HOROSCOPER_BATCHING", value_enum, default_value_t = BatchingMode::Static)]
    pub batching: BatchingMode,
}

/// The drain grace period of a configuration made by [`Config::new`].
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(25);

/// Largest batch a worker is asked to run.
pub const MAX_BATCH_SIZE: usize = 4096;

// A batch of the most requests, each of the largest size admitted (and the
// few bytes that frame each in the batch), fits a worker's message limit.
const _: () = assert!(
    MAX_BATCH_SIZE * (horoscoper_proto::limits::MAX_ITEM_BYTES + 16)
        <= horoscoper_proto::limits::MAX_BATCH_BYTES
);

impl BatchingArgs {
    /// Checks the flags.
    pub fn validate(&self) -> Result<Batching, StartError> {
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(StartError::Config(format!(
                "--batch-size is {}; it must be between 1 and {MAX_BATCH_SIZE}",
                self.batch_size
            )));
        }
        if self.request_ttl_ms == 0 {
            return Err(StartError::Config(
                "--request-ttl-ms must be at least 1".into(),
            ));
        }
        if self.max_requests == 0 {
            return Err(StartError::Config(
                "--max-requests must be at least 1".into(),
            ));
        }
        Ok(Batching {
            policy: Policy {
                batch_size: self.batch_size,
                window: Duration::from_millis(self.batch_window_ms),
                mode: self.batching,
            },
            time_to_live: Duration::from_millis(self.request_ttl_ms),
            max_requests: self.max_requests,
            load_every: Duration::from_millis(self.load_interval_ms),
        })
    }
}

/// How the batcher batches, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    pub policy: Policy,
    pub time_to_live: Duration,
    /// Most requests held at once, queued or running.
    pub max_requests: usize,
    /// Least time between two load reports on a session.
    pub load_every: Duration,
}

/// Everything [`crate::run`] needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Its id; `None`: the listen address, or the host name and port when
    /// listening on every interface.
    pub batcher_id: Option<String>,
    /// Worker URLs; a name may resolve to several workers.
    pub workers: Vec<Uri>,
    /// How often worker names are resolved again.
    pub resolve_interval: Duration,
    pub resolver: Resolver,
    pub batching: Batching,
    pub metrics: Metrics,
    /// What `/metrics` on the batcher's port shows; `None`: no `/metrics`.
    pub registry: Option<SharedRegistry>,
    /// How long open requests may go on after the drain begins.
    pub drain_grace: Duration,
    /// Mutual TLS with the gateway and the workers, if configured.
    pub mesh_tls: Option<MeshTls>,
}

impl Config {
    /// A configuration for these workers with the defaults for the rest.
    pub fn new(workers: Vec<Uri>, batching: Batching, metrics: Metrics) -> Config {
        Config {
            batcher_id: None,
            workers,
            resolve_interval: Duration::from_secs(5),
            resolver: Resolver::default(),
            batching,
            metrics,
            registry: None,
            drain_grace: DEFAULT_DRAIN_GRACE,
            mesh_tls: None,
        }
    }
}

impl Args {
    /// Validates the flags into a configuration.
    pub fn into_config(self) -> Result<Config, StartError> {
        if self.resolve_interval_ms == 0 {
            return Err(StartError::Config(
                "--resolve-interval-ms must be at least 1".into(),
            ));
        }
        let workers = self
            .workers
            .iter()
            .map(|url| parse_worker_url(url))
            .collect::<Result<_, _>>()?;
        let mut config = Config::new(workers, self.batching.validate()?, Metrics::default());
        config.resolve_interval = Duration::from_millis(self.resolve_interval_ms);
        config.batcher_id = self.batcher_id;
        config.drain_grace = self.service.process.drain_grace();
        config.mesh_tls = self.service.mesh_tls.load()?;
        let wanted = if config.mesh_tls.is_some() {
            "https"
        } else {
            "http"
        };
        if let Some(url) = config
            .workers
            .iter()
            .find(|url| url.scheme_str() != Some(wanted))
        {
            return Err(StartError::Config(format!(
                "--worker {url} must be {wanted}:// {}",
                if wanted == "https" {
                    "with --mesh-tls-*"
                } else {
                    "without --mesh-tls-* (https:// needs them)"
                }
            )));
        }
        Ok(config)
    }
}

/// A worker URL: `http://HOST:PORT` (or https).
pub fn parse_worker_url(url: &str) -> Result<Uri, StartError> {
    let invalid = |why: &str| {
        StartError::Config(format!("--worker {url:?} {why}; expected http://HOST:PORT"))
    };
    let uri: Uri = url.trim().parse().map_err(|_| invalid("is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid("has no http:// or https:// scheme")),
    }
    if uri.port_u16().is_none() {
        return Err(invalid("has no port"));
    }
    Ok(uri)
}

impl Binary for Args {
    const NAME: &'static str = "batcher";
    const SERVICES: &'static [telemetry::Service] = &[telemetry::BATCHER];

    fn process(&self) -> &ProcessArgs {
        &self.service.process
    }

    async fn start(self, mut started: Started) -> Result<(), StartError> {
        let mut config = self.into_config()?;
        config.registry = Some(started.metrics(|registry| config.metrics.register(registry)));
        crate::run(config, started.listener, started.shutdown.cancelled_owned()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let args = Args::try_parse_from(args).map_err(|e| e.to_string())?;
        args.into_config().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_match_the_design() {
        let config = parse(&["batcher", "--worker", "http://127.0.0.1:50051"]).unwrap();
        assert_eq!(config.batching.policy.batch_size, 4);
        assert_eq!(config.batching.policy.window, Duration::from_millis(250));
        assert_eq!(config.batching.time_to_live, Duration::from_secs(7));
    }

    #[test]
    fn takes_several_workers() {
        let config = parse(&[
            "batcher",
            "--worker",
            "http://a:1",
            "--worker",
            "http://b:2",
        ])
        .unwrap();
        assert_eq!(config.workers.len(), 2);
        // https:// is for mutual TLS, which needs its three flags.
        let message = parse(&["batcher", "--worker", "https://b:2"]).unwrap_err();
        assert!(message.contains("without --mesh-tls-*"), "{message}");
        let message = parse(&[
            "batcher",
            "--worker",
            "http://b:2",
            "--mesh-tls-cert",
            "c.pem",
        ])
        .unwrap_err();
        assert!(message.contains("--mesh-tls-key"), "{message}");
    }

    #[test]
    fn refuses_bad_values() {
        assert!(parse(&["batcher"]).unwrap_err().contains("--worker"));
        let message = parse(&["batcher", "--worker", "127.0.0.1:50051"]).unwrap_err();
        assert!(
            message.contains("no http:// or https:// scheme"),
            "{message}"
        );
        let message = parse(&["batcher", "--worker", "http://worker"]).unwrap_err();
        assert!(message.contains("has no port"), "{message}");
        let message =
            parse(&["batcher", "--worker", "http://w:1", "--batch-size", "0"]).unwrap_err();
        assert!(message.contains("--batch-size is 0"), "{message}");
        let message =
            parse(&["batcher", "--worker", "http://w:1", "--request-ttl-ms", "0"]).unwrap_err();
        assert!(message.contains("--request-ttl-ms"), "{message}");
    }
}
