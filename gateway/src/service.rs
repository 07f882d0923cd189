//! `horoscoper.v1.Horoscoper.Infer`: validate, forward to the batcher with the
//! time the client left, stream the tokens back as they arrive.

use crate::{
    Error,
    metrics::{Metered, Metrics},
    response::{self, ResponseStream},
    upstream::Upstream,
};
use horoscoper_proto::{
    deadline::{self, ClientDeadline},
    limits,
    mesh::SubmitRequest,
    v1::{InferRequest, MAX_PREFIX_CHARS, horoscoper_server::Horoscoper},
};
use horoscoper_runtime::{
    drain::{Drain, UntilCut},
    interrupt::Interrupted,
    trace,
};
use prost::Message as _;
use std::{
    hash::{BuildHasher, RandomState},
    pin::Pin,
    sync::Arc,
    time::Duration,
};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, metadata::MetadataMap};

/// How long a survey waits for a batcher it has no session with to say
/// its load.
const SURVEY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The public service.
#[derive(Clone)]
pub struct Gateway {
    batcher: Upstream,
    metrics: Metrics,
    /// Once it begins, new requests are refused; once it cuts, open streams
    /// end with UNAVAILABLE.
    drain: Drain,
    /// The token every call must bear, if one is configured.
    bearer_token: Option<Arc<str>>,
}

impl Gateway {
    pub fn new(
        batcher: Upstream,
        metrics: Metrics,
        drain: Drain,
        bearer_token: Option<Arc<str>>,
    ) -> Gateway {
        Gateway {
            batcher,
            metrics,
            drain,
            bearer_token,
        }
    }

    /// Whether the call bears the configured token (any call does when none
    /// is configured).
    /// What every batcher last said of itself (see [`Upstream::survey`]).
    pub async fn survey(&self) -> Vec<horoscoper_proto::mesh::Load> {
        self.batcher.survey(SURVEY_WAIT).await
    }

    pub fn authorize(&self, metadata: &MetadataMap) -> Result<(), Error> {
        let Some(expected) = &self.bearer_token else {
            return Ok(());
        };
        let presented = metadata
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or_default();
        if same(presented.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(Error::Unauthenticated)
        }
    }
}

/// Compares in time that depends on the lengths only, not on where the
/// bytes first differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The request's id: the client's `x-request-id` when it sent a sensible
/// one, else a fresh random one.
fn request_id(metadata: &MetadataMap) -> String {
    metadata
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|id| (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(
            || format!("{:016x}", RandomState::new().hash_one(Instant::now())),
            str::to_owned,
        )
}

/// Refuses a prefix over the limit, counted in characters, not bytes;
/// returns its length in characters.
pub fn validate(request: &InferRequest) -> Result<usize, Error> {
    // Counting stops just past the limit: a huge prefix costs no more.
    let chars = request.prefix.chars().take(MAX_PREFIX_CHARS + 1).count();
    if chars > MAX_PREFIX_CHARS {
        return Err(Error::PrefixTooLong {
            chars: request.prefix.chars().count(),
        });
    }
    Ok(chars)
}

#[tonic::async_trait]
impl Horoscoper for Gateway {
    type InferStream = Pin<Box<Metered>>;

    async fn infer(
        &self,
        request: Request<InferRequest>,
    ) -> Result<Response<Self::InferStream>, Status> {
        let (metadata, _, request) = request.into_parts();
        let stream = self.infer(request, &metadata).await?;
        Ok(Response::new(Box::pin(stream)))
    }
}

impl Gateway {
    /// Serves one request, whatever its front end (gRPC, gRPC-Web, SSE):
    /// its span (a child of the caller's `traceparent`, if any), validation,
    /// forwarding with the time the client left, and its metrics.
    pub async fn infer(
        &self,
        request: InferRequest,
        metadata: &MetadataMap,
    ) -> Result<Metered, Status> {
        let started = Instant::now();
        let request_id = request_id(metadata);
        let span = tracing::info_span!(
            "infer",
            otel.kind = "server",
            request_id = %request_id,
            trace_id = tracing::field::Empty,
            prefix_chars = tracing::field::Empty,
            batcher = tracing::field::Empty,
        );
        trace::set_parent_from(&span, metadata);
        span.record("trace_id", trace::trace_id(&span));
        let client_deadline = deadline::read(metadata)
            .map(|limit| limit.map(|limit| ClientDeadline::starting(started, limit)));
        let forwarded =
            span.in_scope(|| self.forward(request, request_id, metadata, client_deadline, &span));
        match forwarded {
            Ok(stream) => Ok(self.metrics.meter(stream, started, span)),
            Err(error) => {
                let status = Status::from(error);
                self.metrics.failed(&status, started);
                span.in_scope(|| tracing::info!(code = ?status.code(), message = status.message(), "request refused"));
                Err(status)
            }
        }
    }

    /// Refuses it while draining, without the bearer token, with a
    /// malformed deadline or prefix; forwards it to the batcher otherwise.
    fn forward(
        &self,
        request: InferRequest,
        request_id: String,
        metadata: &MetadataMap,
        client_deadline: Result<Option<ClientDeadline>, String>,
        span: &tracing::Span,
    ) -> Result<ResponseStream, Error> {
        if self.drain.is_draining() {
            return Err(Error::Draining);
        }
        self.authorize(metadata)?;
        let client_deadline = client_deadline.map_err(|value| Error::MalformedTimeout { value })?;
        let chars = tracing::info_span!(target: horoscoper_runtime::trace_only!(), "validate")
            .in_scope(|| validate(&request))?;
        span.record("prefix_chars", chars);
        // What is left of it, for the next hop.
        let time_left = client_deadline.map(|deadline| deadline.time_left(Instant::now()));
        let submit = SubmitRequest {
            prefix: request.prefix,
            log_id: request_id,
            id: 0,
            trace_context: trace::to_map(span),
            time_left,
            delivered: 0,
        };
        // It shares its session with every other request: one that would not
        // fit fails here, alone. Its id is chosen by the session, later.
        let bytes = submit.encoded_len() + limits::MAX_ID_BYTES;
        if bytes > limits::MAX_ITEM_BYTES {
            return Err(Error::RequestTooLarge { bytes });
        }
        let tokens = self
            .batcher
            .submit(submit, client_deadline, span.clone())
            .map(|token| token.map(response::public));
        let tokens: ResponseStream = match client_deadline {
            // A stream still running at the client's deadline ends there,
            // whatever the client enforces itself; dropping the upstream
            // cancels the request all the way down.
            Some(deadline) => Box::pin(Interrupted::new(
                tokens,
                tokio::time::sleep_until(deadline.at + BACKSTOP),
                Error::DeadlinePassed {
                    limit: deadline.limit,
                }
                .into(),
            )),
            None => Box::pin(tokens),
        };
        Ok(Box::pin(UntilCut::new(
            tokens,
            &self.drain,
            Error::ShuttingDown.into(),
        )))
    }
}

/// How long after the client's deadline the gateway ends a stream itself.
/// The batcher enforces the deadline first, with the time remaining that
/// the gateway passes on, and says what the request was waiting for; the
/// gateway is the backstop should the batcher not answer.
const BACKSTOP: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(prefix: String) -> InferRequest {
        InferRequest { prefix }
    }

    #[test]
    fn counts_characters_not_bytes() {
        assert!(validate(&prefix("é".repeat(1024))).is_ok());
        assert!(validate(&prefix("🦀".repeat(1024))).is_ok());
        assert!(validate(&prefix(String::new())).is_ok());
        let error = validate(&prefix("🦀".repeat(1025))).unwrap_err();
        assert_eq!(
            error.to_string(),
            "prefix has 1025 characters, at most 1024 are allowed"
        );
        assert_eq!(Status::from(error).code(), tonic::Code::InvalidArgument);
    }
}
