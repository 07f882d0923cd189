//! The worker's command-line flags (each also an environment variable) and the
//! validated configuration [`crate::run`] takes.

use crate::{Metrics, corpus::Corpus, schedule::DelayRange};
use horoscoper_runtime::{
    StartError,
    args::{BatchingMode, ProcessArgs, ServiceArgs},
    metrics::SharedRegistry,
    process::{Binary, Started},
    telemetry,
    tls::MeshTls,
};
use std::{path::PathBuf, sync::Arc, time::Duration};

/// Flags of the standalone `worker` binary.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "worker",
    version,
    about = "Horoscoper worker: streams horoscopes for batches",
    mut_arg("listen", |arg| arg.required(false).default_value("127.0.0.1:50051"))
)]
pub struct Args {
    /// Id shown to clients in BatchInfo (default: the listen address, or the
    /// host name and port when listening on 0.0.0.0 or [::]).
    #[arg(long, env = "HOROSCOPER_WORKER_ID")]
    pub worker_id: Option<String>,
    /// How requests share the worker: `static` batches, one at a time, or
    /// `continuous` batching, requests joining and leaving at every step.
    /// Its batchers must say the same.
    #[arg(long, env = "HOROSCOPER_BATCHING", value_enum, default_value_t = BatchingMode::Static)]
    pub batching: BatchingMode,
    /// In continuous batching, the most requests that generate at once,
    /// from every batcher together.
    #[arg(long, env = "HOROSCOPER_SLOTS", default_value_t = DEFAULT_SLOTS)]
    pub slots: usize,
    #[command(flatten)]
    pub generation: GenerationArgs,
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// How a worker generates: shared by the `worker` binary and the one-process
/// mesh.
#[derive(Clone, Debug, clap::Args)]
pub struct GenerationArgs {
    /// Least time a whole batch takes, in milliseconds.
    #[arg(long, env = "HOROSCOPER_MIN_DELAY_MS", default_value_t = 500)]
    pub min_delay_ms: u64,
    /// Most time a whole batch takes, in milliseconds.
    #[arg(long, env = "HOROSCOPER_MAX_DELAY_MS", default_value_t = 3000)]
    pub max_delay_ms: u64,
    /// CSV of horoscopes in the original's format (`;`-delimited, columns
    /// `sign` and `text`) instead of the built-in corpus.
    #[arg(long, env = "HOROSCOPER_CORPUS")]
    pub corpus: Option<PathBuf>,
    /// Seed for the delay draws, to make them reproducible.
    #[arg(long, env = "HOROSCOPER_SEED")]
    pub seed: Option<u64>,
}

impl GenerationArgs {
    /// Checks the flags and loads the corpus.
    pub fn load(&self) -> Result<Generation, StartError> {
        if self.min_delay_ms > self.max_delay_ms {
            return Err(StartError::Config(format!(
                "--min-delay-ms ({}) must not be greater than --max-delay-ms ({})",
                self.min_delay_ms, self.max_delay_ms
            )));
        }
        let corpus = match &self.corpus {
            Some(path) => {
                Corpus::load(path).map_err(|error| StartError::Config(error.to_string()))?
            }
            None => Corpus::built_in(),
        };
        Ok(Generation {
            corpus: Arc::new(corpus),
            delays: DelayRange {
                min: Duration::from_millis(self.min_delay_ms),
                max: Duration::from_millis(self.max_delay_ms),
            },
            seed: self.seed,
            batching: BatchingMode::Static,
            slots: DEFAULT_SLOTS,
        })
    }
}

/// How a worker generates, validated.
#[derive(Clone, Debug)]
pub struct Generation {
    pub corpus: Arc<Corpus>,
    pub delays: DelayRange,
    /// Seed for the delay draws; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// Static batches, or continuous batching ([`crate::engine`]).
    pub batching: BatchingMode,
    /// In continuous batching, the most requests generating at once.
    pub slots: usize,
}

/// Slots of a worker of continuous batching when no flag says.
pub const DEFAULT_SLOTS: usize = 4;
/// Most slots a worker may have (as many as a batcher's largest batch).
pub const MAX_SLOTS: usize = 4096;

/// Everything [`crate::run`] needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Id shown to clients; `None`: the listen address, or the host name
    /// and port when listening on every interface.
    pub worker_id: Option<String>,
    pub generation: Generation,
    pub metrics: Metrics,
    /// What `/metrics` on the worker's port shows; `None`: no `/metrics`.
    pub registry: Option<SharedRegistry>,
    /// How long a batch may go on after the drain begins before it is cut.
    pub drain_grace: Duration,
    /// Mutual TLS with the batchers, if configured.
    pub mesh_tls: Option<MeshTls>,
}

impl Args {
    /// Validates the flags into a configuration.
    pub fn into_config(self) -> Result<Config, StartError> {
        if !(1..=MAX_SLOTS).contains(&self.slots) {
            return Err(StartError::Config(format!(
                "--slots is {}; it must be between 1 and {MAX_SLOTS}",
                self.slots
            )));
        }
        Ok(Config {
            worker_id: self.worker_id,
            generation: Generation {
                batching: self.batching,
                slots: self.slots,
                ..self.generation.load()?
            },
            metrics: Metrics::default(),
            registry: None,
            drain_grace: self.service.process.drain_grace(),
            mesh_tls: self.service.mesh_tls.load()?,
        })
    }
}

impl Binary for Args {
    const NAME: &'static str = "worker";
    const SERVICES: &'static [telemetry::Service] = &[telemetry::WORKER];

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

    #[test]
    fn defaults_match_the_design() {
        let args = Args::try_parse_from(["worker"]).unwrap();
        assert_eq!(
            args.service.process.listen,
            "127.0.0.1:50051".parse().unwrap()
        );
        assert_eq!(args.generation.min_delay_ms, 500);
        assert_eq!(args.generation.max_delay_ms, 3000);
        let config = args.into_config().unwrap();
        assert_eq!(config.generation.delays.max, Duration::from_secs(3));
        assert_eq!(config.generation.slots, 4);
    }

    #[test]
    fn refuses_a_worker_without_slots() {
        let args = Args::try_parse_from(["worker", "--slots", "0"]).unwrap();
        assert_eq!(
            args.into_config().unwrap_err().to_string(),
            "invalid configuration: --slots is 0; it must be between 1 and 4096"
        );
    }

    #[test]
    fn refuses_an_inverted_delay_range() {
        let args = Args::try_parse_from(["worker", "--min-delay-ms", "10", "--max-delay-ms", "5"])
            .unwrap();
        assert_eq!(
            args.into_config().unwrap_err().to_string(),
            "invalid configuration: --min-delay-ms (10) must not be greater than --max-delay-ms (5)"
        );
    }
}
