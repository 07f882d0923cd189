//! The standalone worker, for containers: `worker --listen ADDR`.

use clap::Parser;
use horoscoper_proto::{
    process::{self, Process},
    telemetry,
};
use horoscoper_worker::Args;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    let process = Process {
        name: "worker",
        services: &[telemetry::WORKER],
        log_format: args.log.log_format,
        runtime: args.runtime.clone(),
        listen: args.listen,
        metrics_listen: Some(args.metrics_listen),
    };
    process::main(process, |mut started| async move {
        let config = args.into_config()?;
        started.metrics(|registry| config.metrics.register(registry));
        horoscoper_worker::run(config, started.listener, started.shutdown.cancelled_owned()).await
    })
}
