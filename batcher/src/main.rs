//! The standalone batcher, for containers (`batcher --help` lists its flags).

horoscoper_runtime::use_jemalloc!();

fn main() -> std::process::ExitCode {
    horoscoper_runtime::process::main::<horoscoper_batcher::Args>()
}
