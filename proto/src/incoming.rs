//! The connections a service accepts: every service serves a listener it is
//! handed (port 0 in tests), with the socket options tonic would set had it
//! bound the port itself.

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// Accepts on `listener` with TCP_NODELAY, so that a token goes out when it
/// is written rather than after the peer's delayed ACK (some 40 ms a hop).
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}
