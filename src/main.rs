//! `cargo run --release`: the whole mesh in one process.

use clap::Parser;
use horoscoper::Args;
use horoscoper_proto::{
    process::{self, Process},
    telemetry,
};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    let process = Process {
        name: "horoscoper",
        services: &[telemetry::GATEWAY, telemetry::BATCHER, telemetry::WORKER],
        log_format: args.log.log_format,
        runtime: args.runtime.clone(),
        listen: args.listen,
        metrics_listen: None,
    };
    process::main(process, |started| async move {
        horoscoper::run(
            args.into_config()?,
            started.listener,
            started.shutdown.cancelled_owned(),
        )
        .await
    })
}
