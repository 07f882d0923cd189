//! Prometheus metrics: each service registers its own into a registry; this
//! serves a registry in the text exposition format at `/metrics`.

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use prometheus_client::{encoding::text::encode, registry::Registry};
use std::{future::Future, sync::Arc};
use tokio::net::TcpListener;

/// A registry shared by the services of a process and its `/metrics` routes.
pub type SharedRegistry = Arc<Registry>;

/// The `/metrics` route over `registry`, to merge into a service's router.
pub fn router(registry: SharedRegistry) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(registry)
}

async fn metrics(State(registry): State<SharedRegistry>) -> impl IntoResponse {
    let mut body = String::new();
    encode(&mut body, &registry).expect("writing to a String cannot fail");
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// Serves `/metrics` on a listener of its own until `shutdown` resolves.
pub async fn serve(
    registry: SharedRegistry,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(local_addr = %listener.local_addr()?, "metrics at /metrics");
    axum::serve(listener, router(registry))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Histogram buckets for durations from 1 ms to about 30 s.
pub fn duration_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 16)
}
