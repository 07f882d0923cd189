//! The one way every service serves its port: its gRPC API with the
//! standard health service (tied to the drain) and server reflection beside
//! it, plain HTTP routes such as `/metrics`, on the tuned listener, until
//! the drain settles.

use crate::{
    StartError, coalesce::Coalesced, drain::Drain, metrics::SharedRegistry, net,
    transport::Listener,
};
use std::{convert::Infallible, io};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::{Stream, StreamExt};
use tonic::{
    body::Body,
    server::NamedService,
    service::Routes,
    transport::{Server, ServerTlsConfig},
};
use tonic_health::ServingStatus;
use tower::Service;

/// A service's port, built up and then [served](Port::serve).
pub struct Port {
    /// The service's name in log lines: `gateway`, `batcher`, `worker`.
    name: &'static str,
    /// The API's gRPC service name, for health.
    api: &'static str,
    grpc: Routes,
    descriptor_sets: Vec<&'static [u8]>,
    layer: Box<dyn FnOnce(axum::Router) -> axum::Router + Send>,
    http: axum::Router,
    tls: Option<ServerTlsConfig>,
}

impl Port {
    /// A port that serves `api`, whose protos `descriptor_sets` describe
    /// (for reflection).
    pub fn new<S>(name: &'static str, api: S, descriptor_sets: &[&'static [u8]]) -> Port
    where
        S: Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        Port {
            name,
            api: S::NAME,
            grpc: Routes::new(api),
            descriptor_sets: descriptor_sets.to_vec(),
            layer: Box::new(|router| router),
            http: axum::Router::new(),
            tls: None,
        }
    }

    /// Layers around the gRPC routes only (health and reflection among them),
    /// not the plain HTTP ones: gRPC-Web, CORS, checks on arrival.
    pub fn grpc_layer(
        mut self,
        layer: impl FnOnce(axum::Router) -> axum::Router + Send + 'static,
    ) -> Port {
        self.layer = Box::new(layer);
        self
    }

    /// Plain HTTP routes beside the gRPC ones.
    pub fn http(mut self, routes: axum::Router) -> Port {
        self.http = self.http.merge(routes);
        self
    }

    /// `/metrics` from `registry`, when there is one.
    pub fn metrics(self, registry: Option<SharedRegistry>) -> Port {
        match registry {
            Some(registry) => self.http(crate::metrics::router(registry)),
            None => self,
        }
    }

    /// TLS on this port, when configured.
    pub fn tls(mut self, tls: Option<ServerTlsConfig>) -> Port {
        self.tls = tls;
        self
    }

    /// Serves on `listener` with `server`'s settings until `drain` settles,
    /// then closes the connections and returns.
    pub async fn serve(
        self,
        mut server: Server,
        listener: impl Into<Listener>,
        drain: &Drain,
    ) -> Result<(), StartError> {
        let listener = listener.into();
        let local_addr = listener.local_addr().map_err(StartError::Listen)?;
        let health = health(self.api, drain).await;
        let grpc = self
            .grpc
            .add_service(health)
            .add_service(reflection(&self.descriptor_sets).build_v1()?)
            // v1alpha too: the only version grpcurl 1.8 speaks.
            .add_service(reflection(&self.descriptor_sets).build_v1alpha()?)
            .into_axum_router();
        let routes = (self.layer)(grpc).merge(self.http);
        if let Some(tls) = self.tls {
            server = server.tls_config(tls).map_err(StartError::Serve)?;
        }
        tracing::info!(%local_addr, "{} listening", self.name);
        let server = server.accept_http1(true);
        match listener {
            Listener::Tcp(listener) => serve(server, routes, net::incoming(listener), drain).await,
            Listener::Memory(listener) => {
                let incoming = listener
                    .incoming()
                    .map(|accepted| accepted.map(Coalesced::new));
                serve(server, routes, incoming, drain).await
            }
        }
    }
}

/// Serves `routes` on the connections from `incoming` until `drain` settles.
async fn serve<IO>(
    mut server: Server,
    routes: axum::Router,
    incoming: impl Stream<Item = io::Result<IO>> + Send + 'static,
    drain: &Drain,
) -> Result<(), StartError>
where
    IO: AsyncRead + AsyncWrite + tonic::transport::server::Connected + Unpin + Send + 'static,
{
    let served = server
        .add_routes(Routes::from(routes))
        .serve_with_incoming_shutdown(incoming, drain.settled_owned());
    if let Some(served) = drain.serve(served).await {
        served.map_err(StartError::Serve)?;
    }
    Ok(())
}

/// `grpc.health.v1` for the service named `api` and for the server as a
/// whole (the empty name, what probes and load balancers ask by default):
/// SERVING now, both NOT_SERVING as soon as `drain` begins.
async fn health(
    api: &'static str,
    drain: &Drain,
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    for name in [api, ""] {
        reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let begun = drain.begun().clone();
    tokio::spawn(async move {
        begun.cancelled().await;
        for name in [api, ""] {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
    });
    service
}

/// Server reflection over the given encoded descriptor sets and the health
/// service's.
fn reflection(descriptor_sets: &[&'static [u8]]) -> tonic_reflection::server::Builder<'static> {
    descriptor_sets.iter().fold(
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
        |builder, set| builder.register_encoded_file_descriptor_set(set),
    )
}
