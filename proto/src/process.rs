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
    eprintln!("{name}: {error}");
    ExitCode::FAILURE
}

/// An error with its chain of sources, `outer: inner: innermost`: tonic's
/// transport errors say only "transport error" on their own.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
