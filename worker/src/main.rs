//! The standalone worker, for containers: `worker --listen ADDR`.

use clap::Parser;
use horoscoper_proto::{
    process::{self, Process},
    telemetry,
};
use horoscoper_worker::Args;
use prometheus_client::registry::Registry;
use std::{process::ExitCode, sync::Arc};

fn main() -> ExitCode {
    let args = Args::parse();
    let process = Process {
        name: "worker",
        services: &[telemetry::WORKER],
        log_format: args.log.log_format,
        listen: args.listen,
        metrics_listen: Some(args.metrics_listen),
    };
    process::main(process, |mut started| async move {
        let config = args.into_config()?;
        let mut registry = Registry::default();
        config.metrics.register(&mut registry);
        started.serve_metrics(Arc::new(registry));
        horoscoper_worker::run(config, started.listener, started.shutdown.cancelled_owned()).await
    })
}
