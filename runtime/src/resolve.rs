//! Finding the peers behind a name: a host is looked up (DNS, /etc/hosts, or
//! a function in tests) to all of its addresses, and each address gets an
//! endpoint of its own, so that a headless Service or a Compose service with
//! replicas fans out to every replica. The batcher finds its workers so, and
//! the gateway its batchers.

use crate::tls::MeshTls;
use std::{
    collections::BTreeSet,
    fmt,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
};
use tonic::transport::{Endpoint, Uri};

/// Looks a host up: its addresses, for a port.
pub type Lookup = Arc<
    dyn Fn(String, u16) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>
        + Send
        + Sync,
>;

/// How names are resolved: by the system's resolver (DNS, /etc/hosts),
/// or by a function (tests).
#[derive(Clone)]
pub struct Resolver(Lookup);

impl Resolver {
    /// A resolver backed by `lookup`.
    pub fn new(lookup: Lookup) -> Resolver {
        Resolver(lookup)
    }

    /// The addresses of `url`'s host (an IP address is its own).
    pub async fn resolve(&self, url: &Uri) -> io::Result<BTreeSet<SocketAddr>> {
        let host = crate::net::host(url);
        let port = url.port_u16().unwrap_or(80);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(BTreeSet::from([SocketAddr::new(ip, port)]));
        }
        Ok((self.0)(host.to_string(), port)
            .await?
            .into_iter()
            .collect())
    }
}

impl Default for Resolver {
    fn default() -> Resolver {
        Resolver(Arc::new(|host, port| {
            Box::pin(async move {
                Ok(tokio::net::lookup_host((host.as_str(), port))
                    .await?
                    .collect())
            })
        }))
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

/// The endpoint of one address of a URL: same scheme, the address in place
/// of the name; with TLS, the peer's certificate is checked against the
/// name.
pub fn endpoint(
    url: &Uri,
    addr: SocketAddr,
    tls: Option<&MeshTls>,
) -> Result<Endpoint, tonic::transport::Error> {
    let scheme = url.scheme_str().unwrap_or("http");
    let uri: Uri = format!("{scheme}://{addr}")
        .parse()
        .expect("a scheme and an address make a URI");
    let endpoint = crate::net::endpoint(uri);
    match tls {
        Some(tls) => {
            let name = crate::net::host(url);
            endpoint.tls_config(tls.client(name))
        }
        None => Ok(endpoint),
    }
}
