//! Why a service could not start, or stopped serving: errors no request
//! meets, so none becomes a gRPC status. A binary prints it and exits
//! non-zero.

use std::net::SocketAddr;

/// A service's start-up (or serving) failure.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A flag, or a rule across flags, is wrong.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A TLS certificate, key or CA cannot be used.
    #[error("{0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the listener's address: {0}")]
    Listen(#[source] std::io::Error),
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot build server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("server failed: {}", chain(.0))]
    Serve(#[source] tonic::transport::Error),
    /// A service of the one-process mesh ended while the gateway served.
    #[error("the {0} stopped unexpectedly")]
    Stopped(&'static str),
}

/// An error with its chain of sources, `outer: inner: innermost`: tonic's
/// transport errors say only "transport error" on their own.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
