//! `cargo run --release`: the whole mesh in one process.

horoscoper_runtime::use_jemalloc!();

fn main() -> std::process::ExitCode {
    horoscoper_runtime::process::main::<horoscoper::Args>()
}
