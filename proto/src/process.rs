//! What every service binary does around its library's `run`: install logging,
//! bind the listener, run until Ctrl-C or SIGTERM, report a failure and exit
//! non-zero.

use std::{fmt::Display, future::Future, net::SocketAddr, process::ExitCode};
use tokio::net::TcpListener;

/// Binds `listen` and runs `serve(listener)` on a multi-threaded runtime.
/// `serve` receives the listener and the drain signal.
pub fn main<F, Fut, E>(name: &str, listen: SocketAddr, serve: F) -> ExitCode
where
    F: FnOnce(TcpListener, crate::shutdown::Signal) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    crate::logging::init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(name, format!("cannot start the runtime: {error}")),
    };
    runtime.block_on(async {
        let listener = match TcpListener::bind(listen).await {
            Ok(listener) => listener,
            Err(error) => return fail(name, format!("cannot listen on {listen}: {error}")),
        };
        match serve(listener, crate::shutdown::signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(name, error),
        }
    })
}

fn fail(name: &str, error: impl Display) -> ExitCode {
    tracing::error!("{name} failed: {error}");
    eprintln!("{name}: {error}");
    ExitCode::FAILURE
}
