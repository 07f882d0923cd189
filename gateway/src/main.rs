//! The standalone gateway, for containers (`gateway --help` lists its flags).

horoscoper_runtime::use_jemalloc!();

fn main() -> std::process::ExitCode {
    horoscoper_runtime::process::main::<horoscoper_gateway::Args>()
}
