//! Horoscoper's gateway: the public face of the mesh. One port serves
//! `horoscoper.v1.Horoscoper` over gRPC and gRPC-Web (with CORS), server
//! reflection (v1 and v1alpha), `grpc.health.v1`, the web page at `/` and the
//! original's SSE endpoint `POST /api/v1/infer`.
//!
//! - [`service`]: `Infer`: validation, forwarding to the batcher, streaming back.
//! - [`upstream`]: the session with the batcher that every request travels on.
//! - [`http`]: the web page and the SSE endpoint.
//! - [`metrics`]: the gateway's Prometheus metrics and the per-request meter.
//! - [`expired`]: calls whose deadline passed on arrival, refused at once.
//! - [`config`]: command-line flags and the validated configuration.
//! - [`error`]: the crate's error type and its gRPC status.
//!
//! [`run`] serves the gateway on a listener until the shutdown future resolves.

pub mod config;
pub mod error;
pub mod expired;
pub mod http;
pub mod metrics;
pub mod service;
pub mod upstream;

pub use config::{Access, AccessArgs, Args, Config};
pub use error::Error;
pub use metrics::Metrics;

use axum::http::{HeaderName, Method};
use horoscoper_proto::{
    net, serving,
    shutdown::Drain,
    v1::{self, horoscoper_server::HoroscoperServer},
};
use std::{future::Future, time::Duration};
use tokio::net::TcpListener;
use tonic::service::Routes;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Serves the gateway on `listener` until `shutdown` resolves, then drains:
/// NOT_SERVING, new requests refused, open streams finish (or end with
/// UNAVAILABLE once `drain_grace` is over), it returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let local_addr = listener.local_addr().map_err(Error::Listen)?;
    // Lazy: the gateway starts without its batcher, answers UNAVAILABLE at
    // once while it is down, and reconnects when it is back.
    let mut batcher = net::endpoint(config.batcher.clone());
    if let Some(tls) = &config.mesh_tls {
        let name = config
            .batcher
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']']);
        batcher = batcher.tls_config(tls.client(name)).map_err(Error::Serve)?;
    }
    let batcher = batcher.connect_lazy();
    let drain = Drain::start(shutdown, config.drain_grace);
    let metrics = config.metrics;
    let gateway = service::Gateway::new(
        batcher,
        config.batcher.to_string(),
        metrics.clone(),
        drain.clone(),
        config.access.bearer_token.clone(),
    );

    let health = serving::health::<HoroscoperServer<service::Gateway>>(&drain).await;
    let reflection_v1 =
        serving::reflection(&[v1::FILE_DESCRIPTOR_SET]).map_err(Error::Reflection)?;
    let reflection_v1alpha =
        serving::reflection_v1alpha(&[v1::FILE_DESCRIPTOR_SET]).map_err(Error::Reflection)?;

    let mut pages = http::router(gateway.clone());
    if let Some(registry) = config.registry {
        pages = pages.merge(horoscoper_proto::metrics::router(registry));
    }
    let grpc = Routes::new(
        HoroscoperServer::new(gateway)
            .max_decoding_message_size(net::MAX_REQUEST_BYTES)
            .max_encoding_message_size(net::MAX_TOKEN_BYTES),
    )
    .add_service(health)
    .add_service(reflection_v1)
    .add_service(reflection_v1alpha)
    .into_axum_router()
    .layer(axum::middleware::from_fn_with_state(
        metrics.clone(),
        expired::refuse,
    ))
    .layer(tonic_web::GrpcWebLayer::new())
    .layer(cors(&config.access.cors_origins))
    .merge(pages);

    tracing::info!(%local_addr, batcher = %config.batcher, "gateway listening");
    let mut server = net::server(net::PUBLIC_MAX_STREAMS);
    if let Some(tls) = config.tls.clone() {
        server = server.tls_config(tls).map_err(Error::Serve)?;
    }
    let served = server
        .accept_http1(true)
        .add_routes(Routes::from(grpc))
        .serve_with_incoming_shutdown(net::incoming(listener), drain.settled_owned());
    if let Some(served) = drain.serve(served).await {
        served.map_err(Error::Serve)?;
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// CORS for browsers calling over gRPC-Web: the configured origins (any,
/// when none is), the gRPC-Web headers in, the status trailers out.
fn cors(origins: &[axum::http::HeaderValue]) -> CorsLayer {
    let allowed = if origins.is_empty() {
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(origins.iter().cloned())
    };
    CorsLayer::new()
        .allow_origin(allowed)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            HeaderName::from_static("content-type"),
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
            HeaderName::from_static("authorization"),
            HeaderName::from_static("traceparent"),
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
        ])
        .max_age(Duration::from_secs(24 * 60 * 60))
}
