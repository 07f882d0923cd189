//! The standalone batcher, for containers: `batcher --listen ADDR --worker URL...`.

use clap::Parser;
use horoscoper_batcher::Args;
use horoscoper_proto::{
    process::{self, Process},
    telemetry,
};
use prometheus_client::registry::Registry;
use std::{process::ExitCode, sync::Arc};

fn main() -> ExitCode {
    let args = Args::parse();
    let process = Process {
        name: "batcher",
        services: &[telemetry::BATCHER],
        log_format: args.log.log_format,
        listen: args.listen,
        metrics_listen: Some(args.metrics_listen),
    };
    process::main(process, |mut started| async move {
        let config = args.into_config()?;
        let mut registry = Registry::default();
        config.metrics.register(&mut registry);
        started.serve_metrics(Arc::new(registry));
        horoscoper_batcher::run(config, started.listener, started.shutdown.cancelled_owned()).await
    })
}
