//! Both ends of a hop between services, with the same socket and HTTP/2
//! settings everywhere, and the limits tonic leaves unbounded set
//! explicitly: concurrent streams per connection, keepalive, header list
//! size, reset-stream floods, and every message size.

use crate::coalesce::Coalesced;
use std::{io, time::Duration};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Endpoint, Server, Uri, server::TcpIncoming};

/// Largest request the public API decodes: an `InferRequest` (a prefix of
/// at most 1024 characters is at most 4 KiB of UTF-8) with room to spare.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Largest token message anyone encodes or decodes (one word and its batch).
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// Largest `GenerateRequest`: a batch of up to 4096 requests, each with a
/// prefix of up to 4 KiB, its trace context and ids.
pub const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;
/// Largest `GenerateResponse` (one step, a token for each of up to 4096
/// requests) or `SessionResponse` (the replies a session sends at once).
pub const MAX_STEP_BYTES: usize = 4 * 1024 * 1024;

/// Streams one client may have open at once on one connection to the
/// public port.
pub const PUBLIC_MAX_STREAMS: u32 = 1024;
/// Largest header block a server accepts (tonic: 16 MiB).
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Streams a peer may reset before being accepted, then the connection is
/// closed (HTTP/2 rapid reset).
pub const MAX_PENDING_RESETS: usize = 20;
/// HTTP/2 connection window on the hops inside the mesh (64 MiB; hyper's
/// defaults are 1 MiB for servers and 5 MiB for clients). One connection
/// carries every request between gateway and batcher, and the tokens of a
/// whole step reach their streams at once, one small DATA frame each: h2
/// closes a connection (GOAWAY ENHANCE_YOUR_CALM "too_many_data_frames",
/// every request on it failing) once the small frames received but not yet
/// read count for more than half its connection window, at about 230 bytes
/// each. With 10,000 streams open that happened at the default windows, and
/// at 16 MiB when the gateway fell behind. The window is credit, not memory:
/// only frames sent and not yet read take any.
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
