//! Calls whose deadline has passed on arrival: refused with
//! DEADLINE_EXCEEDED before their body is read.
//!
//! tonic times every call's `grpc-timeout` itself, from before the handler
//! has its request message, and answers CANCELLED ("Timeout expired") when
//! it runs out first. A timeout under a millisecond (`1n`, `0S`) runs out
//! at tokio's next timer tick, so whether the client got that or the
//! gateway's own DEADLINE_EXCEEDED depended on whether the request's body
//! had arrived with its headers. Here, inside tonic's timer but before
//! anything waits, such a call gets DEADLINE_EXCEEDED at once.

use crate::{Error, Metrics};
use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use horoscoper_proto::{deadline, v1::horoscoper_server::SERVICE_NAME};
use std::time::Duration;
use tokio::time::Instant;
use tonic::Status;

/// Timeouts shorter than this have passed by the time a call is read.
pub const ON_ARRIVAL: Duration = Duration::from_millis(1);

/// Whether `path` is the `Infer` method's, whose refusals are counted as
/// requests.
fn is_infer(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|path| path.strip_prefix(SERVICE_NAME))
        == Some("/Infer")
}

/// Refuses a call whose `grpc-timeout` is under [`ON_ARRIVAL`]; passes on
/// any other.
pub async fn refuse(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let limit = request
        .headers()
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(deadline::parse)
        .filter(|limit| *limit < ON_ARRIVAL);
    let Some(limit) = limit else {
        return next.run(request).await;
    };
    let status = Status::from(Error::DeadlinePassedOnArrival { limit });
    if is_infer(request.uri().path()) {
        metrics.failed(&status, Instant::now());
    }
    tracing::info!(path = request.uri().path(), code = ?status.code(), message = status.message(), "request refused");
    status.into_http::<axum::body::Body>().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_infer_method_counts_as_a_request() {
        assert!(is_infer("/horoscoper.v1.Horoscoper/Infer"));
        assert!(!is_infer("/horoscoper.v1.Horoscoper/InferMore"));
        assert!(!is_infer("/grpc.health.v1.Health/Check"));
        assert!(!is_infer("horoscoper.v1.Horoscoper/Infer"));
    }
}
