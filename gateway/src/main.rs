//! The standalone gateway, for containers: `gateway --listen ADDR --batcher URL`.

use clap::Parser;
use horoscoper_gateway::Args;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    horoscoper_proto::process::main("gateway", args.listen, |listener, shutdown| async move {
        horoscoper_gateway::run(args.into_config()?, listener, shutdown).await
    })
}
