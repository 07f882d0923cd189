//! The standalone worker, for containers: `worker --listen ADDR`.

use clap::Parser;
use horoscoper_worker::Args;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    horoscoper_proto::process::main("worker", args.listen, |listener, shutdown| async move {
        horoscoper_worker::run(args.into_config()?, listener, shutdown).await
    })
}
