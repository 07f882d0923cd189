//! `just bench`: the mesh against its limits, with the real binaries on
//! loopback and a load generator written for it.
//!
//! - [`load`]: the closed-loop load generator (time to first token, whole
//!   response, tokens per second, errors).
//! - [`reference`]: the single-hop tonic server the mesh is measured against.
//! - [`services`]: the gateway, batcher and workers as processes, and their
//!   memory.
//! - [`scenarios`]: what is measured, and the targets.
//! - [`ghz`]: ghz against `Infer`, a second opinion on scenario 1.
//! - [`stats`], [`plot`], [`machine`]: percentiles and histograms; the SVG
//!   plots; the machine the figures come from.
//!
//! Writes `target/bench/results.md`, the plots beside it and each service's
//! log under `target/bench/logs/`. `cargo bench --bench mesh -- --help`.

// The same allocator as the services: the reference server runs in this
// binary, and must not be slower than the mesh for a reason of its own.
horoscoper_runtime::use_jemalloc!();

mod ghz;
mod load;
mod machine;
mod plot;
/// The tests' helpers for the release binaries (where they are, a free port).
#[path = "../../tests/common/processes.rs"]
#[allow(dead_code)]
mod processes;
mod reference;
mod scenarios;
mod services;
mod stats;

use clap::Parser;
use std::{net::SocketAddr, path::PathBuf};

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Horoscoper's benchmark: the mesh against its limits"
)]
struct Args {
    /// Run only these scenarios (1–7); repeat the flag. Default: all.
    #[arg(long = "only", value_parser = clap::value_parser!(u8).range(1..=7))]
    only: Vec<u8>,
    /// Shorter windows: a smoke run, not figures to quote.
    #[arg(long)]
    quick: bool,
    /// Concurrent streams of scenario 4.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// The concurrency scenario 1 sweeps (comma-separated): fewer points
    /// for a quicker comparison of two builds.
    #[arg(long, value_delimiter = ',', default_values_t = scenarios::EFFICIENCY_CLIENTS)]
    clients: Vec<usize>,
    /// The ghz binary for the second opinion on scenario 1.
    #[arg(long, env = "HOROSCOPER_GHZ", default_value = "ghz")]
    ghz: PathBuf,
    /// Serve the single-hop reference on this address (how the bench starts
    /// it in a process of its own).
    #[arg(long, hide = true)]
    serve_reference: Option<SocketAddr>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = Args::parse();
    // One thread, for the load generator and for the reference alike: on a
    // thread per core the load generator spent its time waking and parking
    // its own threads, and the reference peaks as high on one
    // (`docs/performance.md` has the figures).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Some(addr) = args.serve_reference {
        return runtime.block_on(reference::serve(addr));
    }
    let out = PathBuf::from(env!("CARGO_BIN_EXE_horoscoper"))
        .parent()
        .and_then(|release| release.parent())
        .expect("binaries live in target/<profile>/")
        .join("bench");
    std::fs::create_dir_all(&out).expect("target/bench is writable");
    let bench = scenarios::Bench::new(out, args.quick, args.ghz, args.streams, args.clients);
    let only = |n: u8| args.only.is_empty() || args.only.contains(&n);
    if !runtime.block_on(bench.run(only)) {
        std::process::exit(1);
    }
}
