//! Both ends of a hop between services, with the same socket and HTTP/2
//! settings everywhere.

use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::{Endpoint, Uri, server::TcpIncoming};

/// Accepts on `listener` with TCP_NODELAY, so that a token goes out when it
/// is written rather than after the peer's delayed ACK (some 40 ms a hop).
/// Every service serves a listener it is handed (port 0 in tests), so tonic
/// does not set this itself.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The client side of an internal hop (gateway → batcher, batcher →
/// worker): TCP_NODELAY, a connect timeout short enough to fail fast when the
/// peer is down, and HTTP/2 keepalive to notice a peer that vanished.
pub fn endpoint(uri: Uri) -> Endpoint {
    Endpoint::from(uri)
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
}
