//! The standalone batcher, for containers: `batcher --listen ADDR --worker URL...`.

use clap::Parser;
use horoscoper_batcher::Args;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    horoscoper_proto::process::main("batcher", args.listen, |listener, shutdown| async move {
        horoscoper_batcher::run(args.into_config()?, listener, shutdown).await
    })
}
