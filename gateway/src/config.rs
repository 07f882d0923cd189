//! The gateway's command-line flags (each also an environment variable) and
//! the validated configuration [`crate::run`] takes.

use crate::{Error, Metrics};
use horoscoper_proto::{metrics::SharedRegistry, shutdown::DrainArgs, telemetry::LogArgs};
use std::{net::SocketAddr, time::Duration};
use tonic::transport::Uri;

/// Flags of the standalone `gateway` binary.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "gateway",
    version,
    about = "Horoscoper gateway: the public gRPC and gRPC-Web endpoint"
)]
pub struct Args {
    /// Address to serve gRPC, gRPC-Web, reflection and health on.
    #[arg(long, env = "HOROSCOPER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The batcher's URL.
    #[arg(
        long,
        env = "HOROSCOPER_BATCHER",
        default_value = "http://127.0.0.1:50052"
    )]
    pub batcher: String,
    /// Address to serve Prometheus metrics on, at /metrics (the main port
    /// serves them too).
    #[arg(
        long,
        env = "HOROSCOPER_METRICS_LISTEN",
        default_value = "127.0.0.1:9103"
    )]
    pub metrics_listen: SocketAddr,
    #[command(flatten)]
    pub drain: DrainArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Everything [`crate::run`] needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub batcher: Uri,
    pub metrics: Metrics,
    /// What `/metrics` on the main port shows: the gateway's metrics, and in
    /// the one-process mesh every service's. `None`: no `/metrics` there.
    pub registry: Option<SharedRegistry>,
    /// How long open streams may go on after the drain begins.
    pub drain_grace: Duration,
}

impl Args {
    /// Validates the flags into a configuration.
    pub fn into_config(&self) -> Result<Config, Error> {
        let invalid = |why: &str| {
            Error::Config(format!(
                "--batcher {:?} {why}; expected http://HOST:PORT",
                self.batcher
            ))
        };
        let batcher: Uri = self
            .batcher
            .trim()
            .parse()
            .map_err(|_| invalid("is not a URL"))?;
        if !matches!(batcher.scheme_str(), Some("http" | "https")) {
            return Err(invalid("has no http:// or https:// scheme"));
        }
        if batcher.port_u16().is_none() {
            return Err(invalid("has no port"));
        }
        Ok(Config {
            batcher,
            metrics: Metrics::default(),
            registry: None,
            drain_grace: self.drain.grace(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_and_validation() {
        let args = Args::try_parse_from(["gateway"]).unwrap();
        assert_eq!(args.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            args.into_config().unwrap().batcher,
            "http://127.0.0.1:50052"
        );
        let args = Args::try_parse_from(["gateway", "--batcher", "batcher:50052"]).unwrap();
        assert!(
            args.into_config()
                .unwrap_err()
                .to_string()
                .contains("scheme")
        );
    }
}
