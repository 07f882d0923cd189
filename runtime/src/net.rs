//! Both ends of a hop between services, with the same socket and HTTP/2
//! settings everywhere, and the limits tonic leaves unbounded set
//! explicitly: concurrent streams per connection, keepalive, header list
//! size, reset-stream floods, and every message size.

use crate::coalesce::Coalesced;
use std::{io, net::SocketAddr, time::Duration};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Endpoint, Server, Uri, server::TcpIncoming};

/// Streams one client may have open at once on one connection to the
/// public port.
pub const PUBLIC_MAX_STREAMS: u32 = 1024;
/// Largest header block a server accepts (tonic: 16 MiB).
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Streams a peer may reset before being accepted, then the connection is
/// closed (HTTP/2 rapid reset).
pub const MAX_PENDING_RESETS: usize = 20;
/// HTTP/2 connection window on the hops inside the mesh (hyper's defaults
/// are 1 and 5 MiB). h2 closes a connection (GOAWAY ENHANCE_YOUR_CALM
/// "too_many_data_frames", failing every request on it) once the small
/// frames it holds unread exceed half its window, and one connection carries
/// a step's tokens for thousands of requests (`docs/performance.md`). The
/// window is credit, not memory: only frames sent and not yet read take any.
pub const MESH_CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;
/// Keepalive on every hop: a PING this often on an idle connection, and the
/// connection is dropped when its answer takes longer than the timeout.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A server inside the mesh (batcher, worker): the common settings and the
/// mesh's connection window.
pub fn mesh_server(max_streams: u32) -> Server {
    server(max_streams).initial_connection_window_size(MESH_CONNECTION_WINDOW)
}

/// A server with the common settings, allowing `max_streams` concurrent
/// streams per connection.
pub fn server(max_streams: u32) -> Server {
    Server::builder()
        .max_concurrent_streams(max_streams)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESETS))
        .tcp_keepalive(Some(Duration::from_secs(60)))
}

/// Accepts on `listener` with TCP_NODELAY, so that a token goes out when it
/// is written rather than after the peer's delayed ACK (some 40 ms a hop).
/// Every service serves a listener it is handed (port 0 in tests), so tonic
/// does not set this itself. Each connection's writes are [`Coalesced`].
pub fn incoming(
    listener: TcpListener,
) -> impl Stream<Item = io::Result<Coalesced<TcpStream>>> + Send + 'static {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(|accepted| accepted.map(Coalesced::new))
}

/// The client side of an internal hop (gateway → batcher, batcher →
/// worker): TCP_NODELAY, a connect timeout short enough to fail fast when the
/// peer is down, HTTP/2 keepalive to notice a peer that vanished, and the
/// mesh's connection window.
pub fn endpoint(uri: Uri) -> Endpoint {
    Endpoint::from(uri)
        .initial_connection_window_size(MESH_CONNECTION_WINDOW)
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
}

/// A URL's host, as a name or an address: an IPv6 literal without its
/// brackets (what DNS, IP parsing and TLS server names want).
pub fn host(url: &Uri) -> &str {
    url.host().unwrap_or_default().trim_matches(['[', ']'])
}

/// Whether tonic made `status` on this side from a transport error (it
/// carries the error as its source), rather than receiving it from the peer.
pub fn is_transport_error(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// The id a service shows when none is given: its listen address, or, when
/// it listens on every interface (a container, a pod), its host name and
/// port, so that replicas behind one name tell apart.
pub fn service_id(local_addr: SocketAddr) -> String {
    if !local_addr.ip().is_unspecified() {
        return local_addr.to_string();
    }
    match std::fs::read_to_string("/proc/sys/kernel/hostname") {
        Ok(name) if !name.trim().is_empty() => format!("{}:{}", name.trim(), local_addr.port()),
        _ => local_addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_the_brackets_of_ipv6_literals() {
        assert_eq!(host(&Uri::from_static("http://[::1]:7")), "::1");
        assert_eq!(host(&Uri::from_static("https://batcher:7")), "batcher");
        assert_eq!(host(&Uri::from_static("http://127.0.0.1:7")), "127.0.0.1");
    }

    #[test]
    fn only_statuses_made_from_transport_errors_are_transport_errors() {
        assert!(!is_transport_error(&tonic::Status::unavailable(
            "from the peer"
        )));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(is_transport_error(&tonic::Status::from_error(Box::new(io))));
    }

    #[test]
    fn a_service_on_every_interface_is_named_after_its_host() {
        assert_eq!(
            service_id("127.0.0.1:50051".parse().unwrap()),
            "127.0.0.1:50051"
        );
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(
            service_id("0.0.0.0:50051".parse().unwrap()),
            format!("{}:50051", host.trim())
        );
        assert_eq!(
            service_id("[::]:7".parse().unwrap()),
            format!("{}:7", host.trim())
        );
    }
}
