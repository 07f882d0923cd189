//! `just simulate`: the mesh at a size no test machine holds (a thousand
//! workers, up to eight batchers, a hundred thousand streams), run by the
//! real gateway, batcher and worker code on tokio's paused clock.
//!
//! What is simulated is time and the network, nothing else: the services
//! are the crates' own `run(config, listener, shutdown)`, on
//! [`horoscoper_runtime::memory`]'s in-memory network (tokio duplex pipes
//! under the same HTTP/2 and tonic code as TCP), and clients call the
//! gateway with the client generated from the public proto. Time advances
//! to the next timer whenever every task waits, so a minute of traffic takes
//! as long as its CPU work does.
//!
//! - [`mesh`]: the simulated mesh: hosts, names, kills.
//! - [`load`]: Poisson arrivals, the clients, and what each request saw.
//! - [`scenarios`]: what is run and what must hold.
//! - [`report`]: a run summed up as a row of `target/sim/results.md`.
//! - [`stats`], [`plot`]: the bench's percentiles and SVG plots.
//!
//! `cargo bench --bench sim -- --help`.

horoscoper_runtime::use_jemalloc!();

mod load;
mod mesh;
#[path = "../mesh/plot.rs"]
#[allow(dead_code)]
mod plot;
mod report;
mod scenarios;
#[path = "../mesh/stats.rs"]
#[allow(dead_code)]
mod stats;

use clap::Parser;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "simulate",
    about = "Horoscoper at scale, on a simulated clock and network"
)]
struct Args {
    /// Run only these scenarios (1 load, 2 concurrent streams, 3 faults,
    /// 4 stale reports); repeat the flag. Default: all.
    #[arg(long = "only", value_parser = clap::value_parser!(u8).range(1..=4))]
    only: Vec<u8>,
    /// A short form, as CI runs it: fewer requests and rows, the same
    /// checks. Its figures are not to quote.
    #[arg(long)]
    quick: bool,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let out = PathBuf::from(env!("CARGO_BIN_EXE_horoscoper"))
        .parent()
        .and_then(|profile| profile.parent())
        .expect("binaries live in target/<profile>/")
        .join("sim");
    std::fs::create_dir_all(&out).expect("target/sim is writable");
    let only = |n: u8| args.only.is_empty() || args.only.contains(&n);
    if !scenarios::run(&out, args.quick, only) {
        std::process::exit(1);
    }
}
