//! Where a service listens and how it dials its peers: TCP, as in
//! production, or an in-memory [`Network`](crate::memory::Network), as in
//! the simulation. A service dials from where it listens, so the same
//! `run(config, listener, shutdown)` serves either way, and everything above
//! the bytes (HTTP/2, tonic, the services) is the same code.

use crate::memory;
use hyper_util::rt::TokioIo;
use std::{io, net::SocketAddr};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint, Uri};

/// A service's listener.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Memory(memory::Listener),
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Listener {
        Listener::Tcp(listener)
    }
}

impl From<memory::Listener> for Listener {
    fn from(listener: memory::Listener) -> Listener {
        Listener::Memory(listener)
    }
}

impl Listener {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Listener::Tcp(listener) => listener.local_addr(),
            Listener::Memory(listener) => Ok(listener.local_addr()),
        }
    }

    /// How the service dials its peers: over TCP, or from its host on the
    /// in-memory network.
    pub fn dialer(&self) -> Dialer {
        match self {
            Listener::Tcp(_) => Dialer::Tcp,
            Listener::Memory(listener) => Dialer::Memory(listener.host().clone()),
        }
    }
}

/// How a service dials its peers.
#[derive(Clone, Debug, Default)]
pub enum Dialer {
    #[default]
    Tcp,
    Memory(memory::Host),
}

impl Dialer {
    /// A channel that connects when first used (and again after a failure).
    pub fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        match self {
            Dialer::Tcp => endpoint.connect_lazy(),
            Dialer::Memory(host) => endpoint.connect_with_connector_lazy(connector(host.clone())),
        }
    }

    /// A channel, connected now.
    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        match self {
            Dialer::Tcp => endpoint.connect().await,
            Dialer::Memory(host) => {
                endpoint
                    .connect_with_connector(connector(host.clone()))
                    .await
            }
        }
    }
}

/// Dials the address in a URI from `host`.
fn connector(
    host: memory::Host,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<memory::Link>,
    Error = io::Error,
    Future = std::future::Ready<io::Result<TokioIo<memory::Link>>>,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |uri: Uri| {
        let to = format!(
            "{}:{}",
            crate::net::host(&uri),
            uri.port_u16().unwrap_or(80)
        )
        .parse::<SocketAddr>()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: no address")));
        std::future::ready(to.and_then(|to| host.dial(to)).map(TokioIo::new))
    })
}
