//! The gateway's command-line flags (each also an environment variable) and
//! the validated configuration [`crate::run`] takes.

use crate::Metrics;
use axum::http::HeaderValue;
use horoscoper_runtime::{
    StartError,
    args::{ProcessArgs, ServiceArgs},
    metrics::SharedRegistry,
    process::{Binary, Started},
    resolve::Resolver,
    telemetry,
    tls::{MeshTls, PublicTlsArgs},
};
use std::{sync::Arc, time::Duration};
use tonic::transport::ServerTlsConfig;
use tonic::transport::Uri;

/// Flags of the standalone `gateway` binary.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "gateway",
    version,
    about = "Horoscoper gateway: the public gRPC and gRPC-Web endpoint",
    mut_arg("listen", |arg| arg.required(false).default_value("127.0.0.1:8080"))
)]
pub struct Args {
    /// A batcher's URL; a name with several addresses (a headless Service,
    /// Compose replicas) is a batcher per address. Repeat the flag (or
    /// separate with commas in the env var) for several.
    #[arg(
        long = "batcher",
        env = "HOROSCOPER_BATCHER",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50052"
    )]
    pub batchers: Vec<String>,
    /// How often the batcher name is resolved again, in milliseconds: new
    /// addresses take requests, vanished ones take no new one.
    #[arg(long, env = "HOROSCOPER_RESOLVE_INTERVAL_MS", default_value_t = 5000)]
    pub resolve_interval_ms: u64,
    #[command(flatten)]
    pub access: AccessArgs,
    #[command(flatten)]
    pub tls: PublicTlsArgs,
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// Who may call the public port: shared by the `gateway` binary and the
/// one-process mesh. Both are off by default.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AccessArgs {
    /// Require `authorization: Bearer <TOKEN>` on every call (gRPC, gRPC-Web
    /// and the SSE endpoint; health, reflection and the page stay open).
    /// Prefer the env var: flags show in `ps`.
    #[arg(long, env = "HOROSCOPER_BEARER_TOKEN", hide_env_values = true)]
    pub bearer_token: Option<String>,
    /// Origins browsers may call from (gRPC-Web, SSE), e.g.
    /// https://app.example.com; repeat the flag, or separate with commas in
    /// the env var. Default: any origin.
    #[arg(
        long = "cors-origin",
        env = "HOROSCOPER_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
}

/// [`AccessArgs`], validated.
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub bearer_token: Option<Arc<str>>,
    /// Empty: any origin.
    pub cors_origins: Vec<HeaderValue>,
}

impl AccessArgs {
    pub fn validate(&self) -> Result<Access, StartError> {
        let bearer_token = match &self.bearer_token {
            Some(token) if token.trim().is_empty() => {
                return Err(StartError::Config("--bearer-token is empty".into()));
            }
            Some(token) => Some(Arc::from(token.trim())),
            None => None,
        };
        let cors_origins = self
            .cors_origins
            .iter()
            .map(|origin| {
                let origin = origin.trim().trim_end_matches('/');
                if !(origin.starts_with("http://") || origin.starts_with("https://")) {
                    return Err(StartError::Config(format!(
                        "--cors-origin {origin:?} is not an origin; expected e.g. https://app.example.com"
                    )));
                }
                HeaderValue::from_str(origin).map_err(|_| {
                    StartError::Config(format!("--cors-origin {origin:?} is not a valid header value"))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Access {
            bearer_token,
            cors_origins,
        })
    }
}

/// Everything [`crate::run`] needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The batchers' URLs; a host may resolve to several.
    pub batchers: Vec<Uri>,
    /// How often the batcher name is resolved again.
    pub resolve_interval: Duration,
    pub resolver: Resolver,
    pub metrics: Metrics,
    /// What `/metrics` on the main port shows: the gateway's metrics, and in
    /// the one-process mesh every service's. `None`: no `/metrics` there.
    pub registry: Option<SharedRegistry>,
    /// How long open streams may go on after the drain begins.
    pub drain_grace: Duration,
    pub access: Access,
    /// TLS on the public port, if configured.
    pub tls: Option<ServerTlsConfig>,
    /// Mutual TLS with the batcher, if configured.
    pub mesh_tls: Option<MeshTls>,
}

impl Args {
    /// Validates the flags into a configuration.
    pub fn into_config(&self) -> Result<Config, StartError> {
        let tls = self.service.mesh_tls.mesh_tls_cert.is_some();
        let batchers = self
            .batchers
            .iter()
            .map(|url| parse_batcher_url(url, tls))
            .collect::<Result<Vec<_>, _>>()?;
        if self.resolve_interval_ms == 0 {
            return Err(StartError::Config(
                "--resolve-interval-ms must be at least 1".into(),
            ));
        }
        Ok(Config {
            batchers,
            resolve_interval: Duration::from_millis(self.resolve_interval_ms),
            resolver: Resolver::default(),
            metrics: Metrics::default(),
            registry: None,
            drain_grace: self.service.process.drain_grace(),
            access: self.access.validate()?,
            tls: self.tls.load()?,
            mesh_tls: self.service.mesh_tls.load()?,
        })
    }
}

/// A batcher URL: `http://HOST:PORT`, or https with mesh TLS.
fn parse_batcher_url(url: &str, tls: bool) -> Result<Uri, StartError> {
    let invalid = |why: &str| {
        StartError::Config(format!(
            "--batcher {url:?} {why}; expected http://HOST:PORT"
        ))
    };
    let batcher: Uri = url.trim().parse().map_err(|_| invalid("is not a URL"))?;
    if !matches!(batcher.scheme_str(), Some("http" | "https")) {
        return Err(invalid("has no http:// or https:// scheme"));
    }
    if batcher.port_u16().is_none() {
        return Err(invalid("has no port"));
    }
    let wanted = if tls { "https" } else { "http" };
    if batcher.scheme_str() != Some(wanted) {
        return Err(invalid(if tls {
            "must be https:// with --mesh-tls-*"
        } else {
            "must be http:// without --mesh-tls-* (https:// needs them)"
        }));
    }
    Ok(batcher)
}

impl Binary for Args {
    const NAME: &'static str = "gateway";
    const SERVICES: &'static [telemetry::Service] = &[telemetry::GATEWAY];

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
    fn defaults_and_validation() {
        let args = Args::try_parse_from(["gateway"]).unwrap();
        assert_eq!(
            args.service.process.listen,
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            args.into_config().unwrap().batchers,
            ["http://127.0.0.1:50052"]
        );
        let args = Args::try_parse_from([
            "gateway",
            "--batcher",
            "http://10.0.0.1:1",
            "--batcher",
            "http://batchers:2",
        ])
        .unwrap();
        assert_eq!(args.into_config().unwrap().batchers.len(), 2);
        let args = Args::try_parse_from(["gateway", "--batcher", "batcher:50052"]).unwrap();
        assert!(
            args.into_config()
                .unwrap_err()
                .to_string()
                .contains("scheme")
        );
    }
}

#[cfg(test)]
mod access_tests {
    use super::*;

    #[test]
    fn access_is_off_by_default_and_checked_when_on() {
        let none = AccessArgs::default().validate().unwrap();
        assert!(none.bearer_token.is_none() && none.cors_origins.is_empty());
        let empty = AccessArgs {
            bearer_token: Some("  ".into()),
            cors_origins: vec![],
        };
        assert!(empty.validate().unwrap_err().to_string().contains("empty"));
        let bad = AccessArgs {
            bearer_token: None,
            cors_origins: vec!["allowed.example".into()],
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("not an origin")
        );
        let good = AccessArgs {
            bearer_token: Some("t".into()),
            cors_origins: vec!["https://a.example/".into(), "http://b.example:8080".into()],
        };
        let access = good.validate().unwrap();
        assert_eq!(access.cors_origins[0], "https://a.example");
        assert_eq!(access.cors_origins[1], "http://b.example:8080");
    }
}
