//! The standalone gateway, for containers: `gateway --listen ADDR --batcher URL`.

use clap::Parser;
use horoscoper_gateway::Args;
use horoscoper_proto::{
    process::{self, Process},
    telemetry,
};
use prometheus_client::registry::Registry;
use std::{process::ExitCode, sync::Arc};

fn main() -> ExitCode {
    let args = Args::parse();
    let process = Process {
        name: "gateway",
        services: &[telemetry::GATEWAY],
        log_format: args.log.log_format,
        listen: args.listen,
        metrics_listen: Some(args.metrics_listen),
    };
    process::main(process, |mut started| async move {
        let mut config = args.into_config()?;
        let mut registry = Registry::default();
        config.metrics.register(&mut registry);
        let registry = Arc::new(registry);
        config.registry = Some(registry.clone());
        started.serve_metrics(registry);
        horoscoper_gateway::run(config, started.listener, started.shutdown.cancelled_owned()).await
    })
}
