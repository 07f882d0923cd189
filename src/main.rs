//! `cargo run --release`: the whole mesh in one process.

use clap::Parser;
use horoscoper::Args;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    horoscoper_proto::process::main("horoscoper", args.listen, |listener, shutdown| async move {
        horoscoper::run(args.into_config()?, listener, shutdown).await
    })
}
