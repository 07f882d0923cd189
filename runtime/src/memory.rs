//! An in-memory network, for the simulation (`benches/sim`): hosts known by a
//! socket address, each connection a pair of tokio duplex pipes under the
//! same tonic server and channel code as TCP (as tonic's own mock example
//! does), and hosts that can be cut off at once, which is how a crash looks
//! to their peers: every connection to or from them breaks, and a dial to
//! them is refused.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf},
    sync::mpsc,
};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::Connected;

/// Bytes a pipe holds in each direction before its writer waits, like a
/// socket's buffers.
const PIPE_BYTES: usize = 256 * 1024;

/// The hosts of one in-memory network.
#[derive(Clone, Debug, Default)]
pub struct Network {
    hosts: Arc<Mutex<HashMap<SocketAddr, Listening>>>,
}

#[derive(Debug)]
struct Listening {
    accept: mpsc::UnboundedSender<Link>,
    down: CancellationToken,
}

impl Network {
    /// A host at `addr` that listens there (the address must be free).
    pub fn listen(&self, addr: SocketAddr) -> io::Result<Listener> {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        if hosts.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is taken"),
            ));
        }
        let (accept, accepted) = mpsc::unbounded_channel();
        let down = CancellationToken::new();
        hosts.insert(
            addr,
            Listening {
                accept,
                down: down.clone(),
            },
        );
        Ok(Listener {
            host: Host {
                network: self.clone(),
                addr,
                down,
            },
            accepted,
        })
    }

    /// A host at `addr` that only dials out (a client).
    pub fn client(&self, addr: SocketAddr) -> Host {
        Host {
            network: self.clone(),
            addr,
            down: CancellationToken::new(),
        }
    }

    /// Cuts the host at `addr` off, as a crash would: its connections break
    /// on both ends and no one reaches it again.
    pub fn cut(&self, addr: SocketAddr) {
        let removed = self
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&addr);
        if let Some(host) = removed {
            host.down.cancel();
        }
    }
}

/// One host of a [`Network`]: where its connections come from.
#[derive(Clone, Debug)]
pub struct Host {
    network: Network,
    addr: SocketAddr,
    down: CancellationToken,
}

impl Host {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A connection to the host listening at `to`; refused when none does.
    pub fn dial(&self, to: SocketAddr) -> io::Result<Link> {
        if self.down.is_cancelled() {
            return Err(io::Error::new(
                io::ErrorKind::NetworkUnreachable,
                format!("{} is cut off", self.addr),
            ));
        }
        let hosts = self
            .network
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let refused = || io::Error::new(io::ErrorKind::ConnectionRefused, format!("{to}: refused"));
        let peer = hosts.get(&to).ok_or_else(refused)?;
        let (near, far) = tokio::io::duplex(PIPE_BYTES);
        let near = Link::new(near, &self.down, &peer.down);
        let far = Link::new(far, &peer.down, &self.down);
        peer.accept.send(far).map_err(|_| refused())?;
        Ok(near)
    }
}

/// A host's listening side: the connections dialled to it.
#[derive(Debug)]
pub struct Listener {
    host: Host,
    accepted: mpsc::UnboundedReceiver<Link>,
}

impl Listener {
    pub fn local_addr(&self) -> SocketAddr {
        self.host.addr
    }

    /// The host, to dial out from.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The connections as they arrive; ends when the host is cut off (the
    /// network drops its end of the queue).
    pub fn incoming(self) -> impl tokio_stream::Stream<Item = io::Result<Link>> + Send + 'static {
        tokio_stream::StreamExt::map(
            tokio_stream::wrappers::UnboundedReceiverStream::new(self.accepted),
            Ok,
        )
    }
}

/// One end of an in-memory connection: a duplex pipe that fails once either
/// of its hosts is cut off.
pub struct Link {
    pipe: DuplexStream,
    near_down: Pin<Box<WaitForCancellationFutureOwned>>,
    far_down: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Link")
    }
}

impl Link {
    fn new(pipe: DuplexStream, near: &CancellationToken, far: &CancellationToken) -> Link {
        Link {
            pipe,
            near_down: Box::pin(near.clone().cancelled_owned()),
            far_down: Box::pin(far.clone().cancelled_owned()),
        }
    }

    /// An error once either host is cut off (and the task is woken when one
    /// is).
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.near_down.as_mut().poll(cx).is_ready() || self.far_down.as_mut().poll(cx).is_ready()
        {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the peer is cut off",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for Link {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.pipe).poll_read(cx, buf)
    }
}

impl AsyncWrite for Link {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.pipe).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.pipe).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.pipe).poll_shutdown(cx)
    }
}

impl Connected for Link {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[tokio::test]
    async fn a_dial_reaches_the_listener_and_a_cut_breaks_both_ends() {
        let network = Network::default();
        let listener = network.listen(addr(1)).unwrap();
        let client = network.client(addr(2));
        assert_eq!(
            client.dial(addr(3)).unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
        let mut near = client.dial(addr(1)).unwrap();
        let mut incoming = Box::pin(listener.incoming());
        let mut far = incoming.next().await.unwrap().unwrap();
        near.write_all(b"hi").await.unwrap();
        let mut got = [0; 2];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hi");

        let reading = tokio::spawn(async move { near.read(&mut [0; 8]).await });
        tokio::task::yield_now().await;
        network.cut(addr(1));
        let read = reading.await.unwrap();
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
        assert!(far.write_all(b"x").await.is_err());
        assert!(incoming.next().await.is_none(), "the listener ends");
        assert!(client.dial(addr(1)).is_err(), "no one reaches it again");
        assert!(network.listen(addr(1)).is_ok(), "its address is free again");
    }
}
