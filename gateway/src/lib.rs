//! Horoscoper's gateway: the public face of the mesh. One port serves
//! `horoscoper.v1.Horoscoper` over gRPC and gRPC-Web (with CORS), server
//! reflection (v1 and v1alpha), `grpc.health.v1`, the web page at `/` and the
//! original's SSE endpoint `POST /api/v1/infer`.
//!
//! - `service`: `Infer`: validation, forwarding to the batcher, streaming back.
//! - `response`: a request's tokens as the public API shows them.
//! - `upstream`: the batchers, found by name; which one a request goes to,
//!   and moving requests from a lost one.
//! - `session`: the session with one batcher that its requests travel on.
//! - `route`: one request's way back to its client, from any batcher.
//! - `http`: the web page and the SSE endpoint.
//! - `metrics`: the gateway's Prometheus metrics and the per-request meter.
//! - `expired`: calls whose deadline passed on arrival, refused at once.
//! - `config`: command-line flags and the validated configuration.
//! - `error`: the crate's error type and its gRPC status.
//!
//! [`run`] serves the gateway on a listener until the shutdown future resolves.

mod config;
mod error;
mod expired;
mod http;
mod metrics;
mod response;
mod route;
mod service;
mod session;
mod upstream;

pub use config::{Access, AccessArgs, Args, Config};
pub use error::Error;
pub use metrics::Metrics;
pub use service::validate;

use axum::http::{HeaderName, Method};
use horoscoper_proto::{
    limits,
    v1::{self, horoscoper_server::HoroscoperServer},
};
use horoscoper_runtime::{StartError, drain::Drain, net, serve::Port, transport::Listener};
use std::{future::Future, time::Duration};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Serves the gateway on `listener` until `shutdown` resolves, then drains:
/// NOT_SERVING, new requests refused, open streams finish (or end with
/// UNAVAILABLE once `drain_grace` is over), it returns.
pub async fn run(
    config: Config,
    listener: impl Into<Listener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let listener = listener.into();
    // The gateway starts without its batchers, answers UNAVAILABLE at once
    // while they are down, and reconnects when they are back.
    let batchers = upstream::Upstream::start(upstream::Discovery {
        urls: config.batchers.clone(),
        interval: config.resolve_interval,
        resolver: config.resolver.clone(),
        tls: config.mesh_tls.clone(),
        dialer: listener.dialer(),
        moved: config.metrics.moved.clone(),
    })
    .await;
    let drain = Drain::start(shutdown, config.drain_grace);
    let metrics = config.metrics;
    let gateway = service::Gateway::new(
        batchers,
        metrics.clone(),
        drain.clone(),
        config.access.bearer_token.clone(),
    );
    tracing::info!(batchers = ?config.batchers, "gateway starting");
    let api = HoroscoperServer::new(gateway.clone())
        .max_decoding_message_size(limits::MAX_REQUEST_BYTES)
        .max_encoding_message_size(limits::MAX_TOKEN_BYTES);
    let cors = cors(&config.access.cors_origins);
    Port::new("gateway", api, &[v1::FILE_DESCRIPTOR_SET])
        .grpc_layer(move |grpc| {
            grpc.layer(axum::middleware::from_fn_with_state(
                metrics,
                expired::refuse,
            ))
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(cors)
        })
        .http(http::router(gateway))
        .metrics(config.registry)
        .tls(config.tls)
        .serve(net::server(net::PUBLIC_MAX_STREAMS), listener, &drain)
        .await?;
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
