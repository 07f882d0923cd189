//! The standalone gateway, for containers: `gateway --listen ADDR --batcher URL`.

use clap::Parser;
use horoscoper_gateway::Args;
use horoscoper_proto::{
    process::{self, Process},
    telemetry,
};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    let process = Process {
        name: "gateway",
        services: &[telemetry::GATEWAY],
        log_format: args.log.log_format,
        runtime: args.runtime.clone(),
        listen: args.listen,
        metrics_listen: Some(args.metrics_listen),
    };
    process::main(process, |mut started| async move {
        let mut config = args.into_config()?;
        config.registry = Some(started.metrics(|registry| config.metrics.register(registry)));
        horoscoper_gateway::run(config, started.listener, started.shutdown.cancelled_owned()).await
    })
}
