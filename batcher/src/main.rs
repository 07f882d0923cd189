//! The standalone batcher, for containers: `batcher --listen ADDR --worker URL...`.

use clap::Parser;
use horoscoper_batcher::Args;
use horoscoper_proto::{
    process::{self, Process},
    telemetry,
};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    let process = Process {
        name: "batcher",
        services: &[telemetry::BATCHER],
        log_format: args.log.log_format,
        runtime: args.runtime.clone(),
        listen: args.listen,
        metrics_listen: Some(args.metrics_listen),
    };
    process::main(process, |mut started| async move {
        let config = args.into_config()?;
        started.metrics(|registry| config.metrics.register(registry));
        horoscoper_batcher::run(config, started.listener, started.shutdown.cancelled_owned()).await
    })
}
