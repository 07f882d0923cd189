//! The standalone worker, for containers (`worker --help` lists its flags).

horoscoper_runtime::use_jemalloc!();

fn main() -> std::process::ExitCode {
    horoscoper_runtime::process::main::<horoscoper_worker::Args>()
}
